//! Keys and accounts: `POST/GET /keys`, `DELETE /keys/{id}`, `POST /accounts`,
//! `PATCH /accounts/{id}` (admin scope), `GET /account` (the caller's own), and `GET /usage`.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::Row;

use super::time::{month_bounds, parse_date, rfc3339};
use crate::auth::Auth;
use crate::db::keys::{generate_key, Account, RateLimits, ALL_SCOPES};
use crate::error::ApiError;
use crate::AppState;

/// `POST /keys`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKeyRequest {
    /// A label for people.
    pub name: String,
    /// Any of jobs:create, jobs:read, jobs:cancel, usage:read, admin.
    pub scopes: Vec<String>,
    /// The account the key acts for; omitted: a new account named `account_name`.
    #[serde(default)]
    pub account_id: Option<String>,
    #[serde(default)]
    pub account_name: Option<String>,
    /// Per-minute limits for this key instead of the server's defaults.
    #[serde(default)]
    pub rate_limits: Option<RateLimits>,
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
    responses((status = 201, body = crate::api::docs::NewKey), (status = 400, body = crate::api::docs::Error),
        (status = 401, body = crate::api::docs::Error), (status = 403, body = crate::api::docs::Error), (status = 404, body = crate::api::docs::Error)))]
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
    let key = generate_key();
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
    let mut doc = serde_json::to_value(&info).map_err(ApiError::internal)?;
    doc["key"] = json!(key);
    Ok((StatusCode::CREATED, Json(doc)).into_response())
}

/// Query of `GET /keys`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct KeysQuery {
    /// Only this account's keys.
    pub account_id: Option<String>,
}

/// `GET /keys`: every key (never the keys themselves), newest first.
#[utoipa::path(get, path = "/api/v1/keys", tag = "admin", params(KeysQuery),
    responses((status = 200, body = crate::api::docs::KeyList), (status = 401, body = crate::api::docs::Error), (status = 403, body = crate::api::docs::Error)))]
pub async fn list_keys(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<KeysQuery>,
) -> Result<Json<Value>, ApiError> {
    auth.require("admin")?;
    let keys = state.db.list_keys(q.account_id.as_deref()).await?;
    Ok(Json(json!({ "keys": keys })))
}

/// `DELETE /keys/{id}`: revoke a key; it is refused from then on.
#[utoipa::path(delete, path = "/api/v1/keys/{id}", tag = "admin",
    params(("id" = String, Path, description = "Key id")),
    responses((status = 200, description = "Revoked", body = crate::db::keys::KeyInfo), (status = 401, body = crate::api::docs::Error),
        (status = 403, body = crate::api::docs::Error), (status = 404, body = crate::api::docs::Error)))]
pub async fn revoke_key(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    auth.require("admin")?;
    if !state.db.revoke_key(&id).await? {
        return Err(ApiError::NotFound(format!("no key {id:?}")));
    }
    let key = state
        .db
        .list_keys(None)
        .await?
        .into_iter()
        .find(|k| k.id == id)
        .ok_or_else(|| ApiError::internal("revoked key not found"))?;
    Ok(Json(serde_json::to_value(key).map_err(ApiError::internal)?))
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
}

/// `POST /accounts`: a new account (its webhook secret is in the answer).
#[utoipa::path(post, path = "/api/v1/accounts", tag = "admin", request_body = AccountRequest,
    responses((status = 201, body = Account), (status = 400, body = crate::api::docs::Error),
        (status = 401, body = crate::api::docs::Error), (status = 403, body = crate::api::docs::Error)))]
pub async fn create_account(
    State(state): State<AppState>,
    auth: Auth,
    body: Result<Json<AccountRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    auth.require("admin")?;
    let Json(req) = body?;
    let name = req
        .name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::BadRequest("name is required".into()))?;
    let credits = req.credits.flatten().or(req.add_credits);
    let account = state
        .db
        .create_account(name, credits, req.monthly_job_quota.flatten())
        .await?;
    Ok((StatusCode::CREATED, Json(account)).into_response())
}

/// `PATCH /accounts/{id}`: set or add credits, set the quota.
#[utoipa::path(patch, path = "/api/v1/accounts/{id}", tag = "admin", request_body = AccountRequest,
    params(("id" = String, Path, description = "Account id")),
    responses((status = 200, body = Account), (status = 400, body = crate::api::docs::Error),
        (status = 401, body = crate::api::docs::Error), (status = 403, body = crate::api::docs::Error), (status = 404, body = crate::api::docs::Error)))]
pub async fn update_account(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    body: Result<Json<AccountRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Account>, ApiError> {
    auth.require("admin")?;
    let Json(req) = body?;
    let account = state
        .db
        .update_account(&id, req.credits, req.add_credits, req.monthly_job_quota)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no account {id:?}")))?;
    Ok(Json(account))
}

/// `GET /account`: the caller's account; the webhook secret only to keys that can create jobs.
#[utoipa::path(get, path = "/api/v1/account", tag = "jobs",
    responses((status = 200, body = Account), (status = 401, body = crate::api::docs::Error)))]
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
    responses((status = 200, body = Account), (status = 401, body = crate::api::docs::Error), (status = 403, body = crate::api::docs::Error)))]
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

/// Query of `GET /usage`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct UsageQuery {
    /// `YYYY-MM-DD` (UTC), inclusive; default the first of this month.
    pub from: Option<String>,
    /// `YYYY-MM-DD` (UTC), exclusive; default the first of next month.
    pub to: Option<String>,
}

/// `GET /usage`: the account's jobs, bytes, encoded minutes, GPU and CPU seconds and credits
/// over a period (jobs counted by when they were submitted).
#[utoipa::path(get, path = "/api/v1/usage", tag = "konvrt", params(UsageQuery),
    responses((status = 200, body = crate::api::docs::Usage), (status = 400, body = crate::api::docs::Error),
        (status = 401, body = crate::api::docs::Error), (status = 403, body = crate::api::docs::Error)))]
pub async fn usage(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<UsageQuery>,
) -> Result<Json<Value>, ApiError> {
    let principal = auth.require("usage:read")?;
    let now = kiln_protocol::now_ms();
    let (month_from, month_to) = month_bounds(now);
    let date = |v: &Option<String>, default: i64, name: &str| -> Result<i64, ApiError> {
        match v.as_deref().filter(|s| !s.is_empty()) {
            None => Ok(default),
            Some(s) => parse_date(s).ok_or_else(|| {
                ApiError::BadRequest(format!("{name} must be a date like 2026-11-01, got {s:?}"))
            }),
        }
    };
    let from = date(&q.from, month_from, "from")?;
    let to = date(&q.to, month_to, "to")?;
    if to <= from {
        return Err(ApiError::BadRequest("`to` must be after `from`".into()));
    }
    let rows = sqlx::query(
        "SELECT status, COUNT(*) AS n,
                CAST(COALESCE(SUM(input_size), 0) AS BIGINT) AS input_bytes,
                CAST(COALESCE(SUM(CASE WHEN status = 'completed' THEN output_size ELSE 0 END), 0) AS BIGINT) AS output_bytes,
                COALESCE(SUM(CASE WHEN status = 'completed' THEN output_duration ELSE 0.0 END), 0.0) AS seconds,
                CAST(COALESCE(SUM(CASE WHEN gpu = 1 THEN encode_ms ELSE 0 END), 0) AS BIGINT) AS gpu_ms,
                CAST(COALESCE(SUM(CASE WHEN gpu = 0 THEN encode_ms ELSE 0 END), 0) AS BIGINT) AS cpu_ms,
                CAST(COALESCE(SUM(credits_charged - credits_refunded), 0) AS BIGINT) AS credits
         FROM jobs WHERE account_id = $1 AND created_at >= $2 AND created_at < $3
         GROUP BY status",
    )
    .bind(&principal.account_id)
    .bind(from)
    .bind(to)
    .fetch_all(&state.db.pool)
    .await
    .map_err(ApiError::internal)?;
    let mut jobs = serde_json::Map::new();
    for s in ["pending", "processing", "completed", "failed", "cancelled"] {
        jobs.insert(s.into(), json!(0));
    }
    let (mut total, mut input, mut output, mut seconds, mut gpu, mut cpu, mut credits) =
        (0i64, 0i64, 0i64, 0f64, 0i64, 0i64, 0i64);
    for r in &rows {
        let status: String = r.try_get("status").map_err(ApiError::internal)?;
        let n: i64 = r.try_get("n").map_err(ApiError::internal)?;
        jobs.insert(status, json!(n));
        total += n;
        input += r
            .try_get::<i64, _>("input_bytes")
            .map_err(ApiError::internal)?;
        output += r
            .try_get::<i64, _>("output_bytes")
            .map_err(ApiError::internal)?;
        seconds += r.try_get::<f64, _>("seconds").map_err(ApiError::internal)?;
        gpu += r.try_get::<i64, _>("gpu_ms").map_err(ApiError::internal)?;
        cpu += r.try_get::<i64, _>("cpu_ms").map_err(ApiError::internal)?;
        credits += r.try_get::<i64, _>("credits").map_err(ApiError::internal)?;
    }
    jobs.insert("total".into(), json!(total));
    let account = state
        .db
        .get_account(&principal.account_id)
        .await?
        .ok_or_else(|| ApiError::internal("account of a valid key is missing"))?;
    let month = state
        .db
        .jobs_created_between(&principal.account_id, month_from, month_to)
        .await?;
    Ok(Json(json!({
        "account_id": principal.account_id,
        "period": {"from": rfc3339(from), "to": rfc3339(to)},
        "jobs": jobs,
        "input_bytes": input,
        "output_bytes": output,
        "encoded_minutes": (seconds / 60.0 * 100.0).round() / 100.0,
        "gpu_seconds": gpu as f64 / 1000.0,
        "cpu_seconds": cpu as f64 / 1000.0,
        "credits_used": credits,
        "credits_remaining": account.credits,
        "monthly_job_quota": account.monthly_job_quota,
        "jobs_this_month": month,
    })))
}
