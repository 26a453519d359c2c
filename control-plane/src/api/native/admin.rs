//! Keys and accounts: `POST/GET /keys`, `DELETE /keys/{id}`, `POST /accounts`,
//! `PATCH /accounts/{id}` (admin scope), `GET /account` (the caller's own).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use crate::api::docs::Error;
use crate::auth::Auth;
use crate::db::accounts::AccountChange;
use crate::db::keys::{
    generate_key, validate_imported_key, Account, KeyInfo, RateLimits, Revoked, ALL_SCOPES,
};
use crate::error::ApiError;
use crate::views::{KeyList, NewKeyView};
use crate::AppState;

/// `POST /keys`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKeyRequest {
    /// A label for people.
    pub name: String,
    /// Any of jobs:create, jobs:read, jobs:cancel, usage:read, credentials:manage,
    /// webhooks:manage, admin.
    pub scopes: Vec<String>,
    /// The account the key acts for; omitted: a new account named `account_name`.
    #[serde(default)]
    pub account_id: Option<String>,
    #[serde(default)]
    pub account_name: Option<String>,
    /// Per-minute limits for this key instead of the server's defaults.
    #[serde(default)]
    pub rate_limits: Option<RateLimits>,
    /// An existing key to import (a client moving from another service keeps its key, e.g.
    /// `kvrt_` + 32 alphanumerics); omitted, Kiln generates one. Only its hash is stored.
    #[serde(default)]
    pub key: Option<String>,
}

/// Check a scope list.
pub fn validate_scopes(scopes: &[String]) -> Result<(), String> {
    if scopes.is_empty() {
        return Err("scopes: give at least one".into());
    }
    match scopes.iter().find(|s| !ALL_SCOPES.contains(&s.as_str())) {
        Some(s) => Err(format!(
            "unknown scope {s:?}: scopes are {}",
            ALL_SCOPES.join(", ")
        )),
        None => Ok(()),
    }
}

/// `POST /keys`: create a key (shown once), for an existing account or a new one.
#[utoipa::path(post, path = "/api/v1/keys", tag = "admin", request_body = NewKeyRequest,
    responses((status = 201, body = NewKeyView), (status = 400, body = Error),
        (status = 401, body = Error), (status = 403, body = Error), (status = 404, body = Error),
        (status = 409, body = Error)))]
pub async fn create_key(
    State(state): State<AppState>,
    auth: Auth,
    body: Result<Json<NewKeyRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    auth.require("admin")?;
    let Json(req) = body?;
    validate_scopes(&req.scopes).map_err(ApiError::BadRequest)?;
    if req.name.trim().is_empty() || req.name.len() > 200 {
        return Err(ApiError::BadRequest("name: 1 to 200 characters".into()));
    }
    let limits = req.rate_limits.unwrap_or_default();
    if [limits.submit, limits.read]
        .iter()
        .flatten()
        .any(|n| *n < 0)
    {
        return Err(ApiError::BadRequest(
            "rate_limits must not be negative".into(),
        ));
    }
    let account = match &req.account_id {
        Some(id) => state
            .db
            .get_account(id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no account {id:?}")))?,
        None => {
            state
                .db
                .create_account(req.account_name.as_deref().unwrap_or(&req.name), None, None)
                .await?
        }
    };
    let key = match req.key {
        Some(k) => {
            validate_imported_key(&k).map_err(ApiError::BadRequest)?;
            if state.db.authenticate(&k).await?.is_some() {
                return Err(ApiError::Conflict("this key is already in use".into()));
            }
            k
        }
        None => generate_key(),
    };
    let id = state
        .db
        .insert_key(&account.id, req.name.trim(), &key, &req.scopes, &limits)
        .await?;
    let info = state
        .db
        .list_keys(Some(&account.id))
        .await?
        .into_iter()
        .find(|k| k.id == id)
        .ok_or_else(|| ApiError::internal("new key not found"))?;
    Ok((StatusCode::CREATED, Json(NewKeyView { key, info })).into_response())
}

/// Query of `GET /keys`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct KeysQuery {
    /// Only this account's keys.
    pub account_id: Option<String>,
}

/// `GET /keys`: every key (never the keys themselves), newest first.
#[utoipa::path(get, path = "/api/v1/keys", tag = "admin", params(KeysQuery),
    responses((status = 200, body = KeyList), (status = 401, body = Error), (status = 403, body = Error)))]
pub async fn list_keys(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<KeysQuery>,
) -> Result<Json<KeyList>, ApiError> {
    auth.require("admin")?;
    let keys = state.db.list_keys(q.account_id.as_deref()).await?;
    Ok(Json(KeyList { keys }))
}

/// `DELETE /keys/{id}`: revoke a key; it is refused from then on. The last live admin key
/// cannot be revoked (409): nobody could manage the server over the API after it.
#[utoipa::path(delete, path = "/api/v1/keys/{id}", tag = "admin",
    params(("id" = String, Path, description = "Key id")),
    responses((status = 200, description = "Revoked", body = KeyInfo), (status = 401, body = Error),
        (status = 403, body = Error), (status = 404, body = Error), (status = 409, body = Error)))]
pub async fn revoke_key(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<KeyInfo>, ApiError> {
    auth.require("admin")?;
    match state.db.revoke_key(&id).await? {
        Revoked::Done => {}
        Revoked::NoSuchKey => return Err(ApiError::NotFound(format!("no key {id:?}"))),
        Revoked::LastAdmin => {
            return Err(ApiError::Conflict(
                "this is the last admin key: create another admin key before revoking it".into(),
            ))
        }
    }
    let key = state
        .db
        .list_keys(None)
        .await?
        .into_iter()
        .find(|k| k.id == id)
        .ok_or_else(|| ApiError::internal("revoked key not found"))?;
    Ok(Json(key))
}

/// A field that may be absent (`None`), null (`Some(None)`) or a value.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<i64>>, D::Error> {
    Option::<i64>::deserialize(d).map(Some)
}

/// `POST /accounts` and `PATCH /accounts/{id}`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountRequest {
    #[serde(default)]
    pub name: Option<String>,
    /// Set the credit balance (null: unmetered).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    pub credits: Option<Option<i64>>,
    /// Add to the balance (negative to take away).
    #[serde(default)]
    pub add_credits: Option<i64>,
    /// Jobs per calendar month (null: no quota).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    pub monthly_job_quota: Option<Option<i64>>,
    /// A plan label shown in usage documents (null: none).
    #[serde(default, deserialize_with = "present_string")]
    #[schema(value_type = Option<String>)]
    pub plan: Option<Option<String>>,
}

/// The largest balance or single credit change an admin may set (a trillion): far beyond any
/// account, and small enough that no sum of them overflows the database's 64-bit integers
/// (SQLite would otherwise turn the sum into a float and the account would no longer read).
pub const MAX_CREDITS: i64 = 1_000_000_000_000;
/// The largest monthly job quota.
pub const MAX_QUOTA: i64 = 1_000_000_000;

impl AccountRequest {
    /// Refuse numbers outside what an account can hold.
    fn check(&self) -> Result<(), ApiError> {
        let within = |v: Option<i64>, lo: i64, hi: i64, name: &str| match v {
            Some(n) if n < lo || n > hi => Err(ApiError::BadRequest(format!(
                "{name} must be from {lo} to {hi}, got {n}"
            ))),
            _ => Ok(()),
        };
        within(self.credits.flatten(), 0, MAX_CREDITS, "credits")?;
        within(self.add_credits, -MAX_CREDITS, MAX_CREDITS, "add_credits")?;
        within(
            self.monthly_job_quota.flatten(),
            0,
            MAX_QUOTA,
            "monthly_job_quota",
        )
    }
}

/// A string field that may be absent, null or a value.
fn present_string<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// `POST /accounts`: a new account (its webhook secret is in the answer).
#[utoipa::path(post, path = "/api/v1/accounts", tag = "admin", request_body = AccountRequest,
    responses((status = 201, body = Account), (status = 400, body = Error),
        (status = 401, body = Error), (status = 403, body = Error)))]
pub async fn create_account(
    State(state): State<AppState>,
    auth: Auth,
    body: Result<Json<AccountRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    auth.require("admin")?;
    let Json(req) = body?;
    req.check()?;
    let name = req
        .name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::BadRequest("name is required".into()))?;
    let credits = req.credits.flatten().or(req.add_credits);
    let mut account = state
        .db
        .create_account(name, credits, req.monthly_job_quota.flatten())
        .await?;
    if let Some(plan) = req.plan {
        let change = AccountChange {
            plan: Some(plan),
            ..AccountChange::default()
        };
        account = state
            .db
            .update_account(&account.id, &change)
            .await?
            .ok_or_else(|| ApiError::internal("new account not found"))?;
    }
    Ok((StatusCode::CREATED, Json(account)).into_response())
}

/// `PATCH /accounts/{id}`: set or add credits, set the quota.
#[utoipa::path(patch, path = "/api/v1/accounts/{id}", tag = "admin", request_body = AccountRequest,
    params(("id" = String, Path, description = "Account id")),
    responses((status = 200, body = Account), (status = 400, body = Error),
        (status = 401, body = Error), (status = 403, body = Error), (status = 404, body = Error)))]
pub async fn update_account(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    body: Result<Json<AccountRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Account>, ApiError> {
    auth.require("admin")?;
    let Json(req) = body?;
    req.check()?;
    let account = state
        .db
        .update_account(
            &id,
            &AccountChange {
                credits: req.credits,
                add_credits: req.add_credits,
                quota: req.monthly_job_quota,
                plan: req.plan,
            },
        )
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no account {id:?}")))?;
    Ok(Json(account))
}

/// `GET /account`: the caller's account; the webhook secret only to keys that can create jobs.
#[utoipa::path(get, path = "/api/v1/account", tag = "jobs",
    responses((status = 200, body = Account), (status = 401, body = Error)))]
pub async fn own_account(
    State(state): State<AppState>,
    auth: Auth,
) -> Result<Json<Account>, ApiError> {
    let mut account = state
        .db
        .get_account(&auth.0.account_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such account".into()))?;
    if !auth.0.has("jobs:create") {
        account.webhook_secret = None;
    }
    Ok(Json(account))
}

/// `POST /account/webhook-secret`: replace the caller's webhook secret (scope `jobs:create`).
/// Deliveries from then on, retries included, are signed with the new secret.
#[utoipa::path(post, path = "/api/v1/account/webhook-secret", tag = "jobs",
    responses((status = 200, body = Account), (status = 401, body = Error), (status = 403, body = Error)))]
pub async fn rotate_webhook_secret(
    State(state): State<AppState>,
    auth: Auth,
) -> Result<Json<Account>, ApiError> {
    let principal = auth.require("jobs:create")?;
    let account = state
        .db
        .rotate_webhook_secret(&principal.account_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such account".into()))?;
    Ok(Json(account))
}
