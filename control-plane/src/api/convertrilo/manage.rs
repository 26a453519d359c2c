//! What a Convertrilo account manages: saved S3 credentials (`credentials:manage`; the secret
//! sealed with the server's key and never returned), managed webhooks (`webhooks:manage`; the
//! signing secret shown once), and Google Drive credentials (422: not supported).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{google_drive_refused, Error, ErrorBody};
use crate::auth::Auth;
use crate::db::credentials::SavedCredential;
use crate::db::endpoints::Endpoint;
use crate::error::ApiError;
use crate::time::rfc3339;
use crate::AppState;

/// `POST /ondemand/credentials/s3`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = ConvertriloCredentialRequest)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CredentialRequest {
    /// How `outputS3.credential` / `sourceS3.credential` name it.
    pub name: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub endpoint: Option<String>,
}

/// A saved credential (never its secret).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ConvertriloCredential)]
#[serde(rename_all = "camelCase")]
pub struct Credential {
    pub id: String,
    pub name: String,
    pub access_key_id: String,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub created_at: String,
}

impl From<SavedCredential> for Credential {
    fn from(c: SavedCredential) -> Self {
        Self {
            id: c.id,
            name: c.name,
            access_key_id: c.access_key_id,
            region: c.region,
            endpoint: c.endpoint,
            created_at: rfc3339(c.created_at),
        }
    }
}

/// `GET /ondemand/credentials/s3`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ConvertriloCredentials)]
pub struct Credentials {
    pub credentials: Vec<Credential>,
}

/// `DELETE …/{id}`'s answer.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ConvertriloDeleted)]
pub struct Deleted {
    pub ok: bool,
}

/// `POST /ondemand/credentials/s3`: save a credential by name.
#[utoipa::path(post, path = "/convertrilo/ondemand/credentials/s3", tag = "convertrilo", request_body = CredentialRequest,
    responses((status = 201, body = Credential), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_credential(
    State(state): State<AppState>,
    auth: Auth,
    body: Result<Json<CredentialRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Error> {
    let principal = auth.require("credentials:manage")?.clone();
    let Json(req) = body?;
    let name = req.name.trim();
    if name.is_empty() || name.len() > 100 || req.access_key_id.trim().is_empty() {
        return Err(ApiError::BadRequest(
            "name (1–100 characters), accessKeyId and secretAccessKey are required".into(),
        )
        .into());
    }
    if let Some(e) = &req.endpoint {
        state
            .url_policy
            .check(e)
            .map_err(|m| ApiError::BadRequest(format!("endpoint: {m}")))?;
    }
    let id = uuid::Uuid::now_v7().to_string();
    let saved = SavedCredential {
        secret_sealed: state.db.sealer.seal(&req.secret_access_key, &id),
        id,
        account_id: principal.account_id.clone(),
        name: name.to_string(),
        access_key_id: req.access_key_id.trim().to_string(),
        region: req.region,
        endpoint: req.endpoint,
        created_at: kiln_protocol::now_ms(),
    };
    if !state.db.insert_credential(&saved).await? {
        return Err(ApiError::Conflict(format!("a credential named {name:?} exists")).into());
    }
    Ok((StatusCode::CREATED, Json(Credential::from(saved))).into_response())
}

/// `GET /ondemand/credentials/s3`: the account's saved credentials.
#[utoipa::path(get, path = "/convertrilo/ondemand/credentials/s3", tag = "convertrilo",
    responses((status = 200, body = Credentials), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_credentials(
    State(state): State<AppState>,
    auth: Auth,
) -> Result<Json<Credentials>, Error> {
    let principal = auth.require("credentials:manage")?;
    let credentials = state.db.credentials(&principal.account_id).await?;
    Ok(Json(Credentials {
        credentials: credentials.into_iter().map(Credential::from).collect(),
    }))
}

/// `DELETE /ondemand/credentials/s3/{id}` (by id or name).
#[utoipa::path(delete, path = "/convertrilo/ondemand/credentials/s3/{id}", tag = "convertrilo",
    params(("id" = String, Path, description = "Credential id or name")),
    responses((status = 200, body = Deleted), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_credential(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Deleted>, Error> {
    let principal = auth.require("credentials:manage")?;
    if !state
        .db
        .delete_credential(&principal.account_id, &id)
        .await?
    {
        return Err(ApiError::NotFound(format!("no saved credential {id:?}")).into());
    }
    Ok(Json(Deleted { ok: true }))
}

/// `POST /ondemand/credentials/google-drive`: not supported.
#[utoipa::path(post, path = "/convertrilo/ondemand/credentials/google-drive", tag = "convertrilo",
    responses((status = 422, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn google_drive(auth: Auth) -> Result<Response, Error> {
    auth.require("credentials:manage")?;
    Err(google_drive_refused())
}

/// Events a managed webhook takes.
pub const EVENTS: &[&str] = &["job.completed", "job.failed", "job.canceled"];

/// `POST /webhooks`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = ConvertriloWebhookRequest)]
#[serde(deny_unknown_fields)]
pub struct WebhookRequest {
    pub url: String,
    /// Any of job.completed, job.failed, job.canceled.
    pub events: Vec<String>,
}

/// A managed webhook.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ConvertriloWebhook)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    /// Signs `X-Webhook-Signature` (hex HMAC-SHA256 of the body): only in the creation's
    /// answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub is_active: bool,
    pub created_at: String,
}

impl Webhook {
    fn of(e: Endpoint, with_secret: bool) -> Self {
        Self {
            id: e.id,
            url: e.url,
            events: e.events,
            secret: with_secret.then_some(e.secret),
            is_active: e.active,
            created_at: rfc3339(e.created_at),
        }
    }
}

/// `GET /webhooks`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ConvertriloWebhooks)]
pub struct Webhooks {
    pub webhooks: Vec<Webhook>,
}

/// `POST /webhooks`: a managed webhook; the answer carries its secret, once.
#[utoipa::path(post, path = "/convertrilo/webhooks", tag = "convertrilo", request_body = WebhookRequest,
    responses((status = 200, body = Webhook), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn create_webhook(
    State(state): State<AppState>,
    auth: Auth,
    body: Result<Json<WebhookRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Webhook>, Error> {
    let principal = auth.require("webhooks:manage")?.clone();
    let Json(req) = body?;
    state
        .url_policy
        .check(&req.url)
        .map_err(|m| ApiError::BadRequest(format!("url: {m}")))?;
    if req.events.is_empty() {
        return Err(ApiError::BadRequest("events: give at least one".into()).into());
    }
    if let Some(bad) = req.events.iter().find(|e| !EVENTS.contains(&e.as_str())) {
        return Err(
            ApiError::BadRequest(format!("unknown event {bad:?}: {}", EVENTS.join(", "))).into(),
        );
    }
    let endpoint = Endpoint {
        id: uuid::Uuid::now_v7().to_string(),
        account_id: principal.account_id.clone(),
        url: req.url,
        events: req.events,
        secret: crate::db::accounts::generate_webhook_secret(),
        active: true,
        created_at: kiln_protocol::now_ms(),
    };
    state.db.insert_endpoint(&endpoint).await?;
    Ok(Json(Webhook::of(endpoint, true)))
}

/// `GET /webhooks`: the account's managed webhooks (without their secrets).
#[utoipa::path(get, path = "/convertrilo/webhooks", tag = "convertrilo",
    responses((status = 200, body = Webhooks), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_webhooks(
    State(state): State<AppState>,
    auth: Auth,
) -> Result<Json<Webhooks>, Error> {
    let principal = auth.require("webhooks:manage")?;
    let endpoints = state.db.endpoints(&principal.account_id).await?;
    Ok(Json(Webhooks {
        webhooks: endpoints
            .into_iter()
            .map(|e| Webhook::of(e, false))
            .collect(),
    }))
}

/// `DELETE /webhooks/{id}`.
#[utoipa::path(delete, path = "/convertrilo/webhooks/{id}", tag = "convertrilo",
    params(("id" = String, Path, description = "Webhook id")),
    responses((status = 204, description = "Deleted"), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_webhook(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, Error> {
    let principal = auth.require("webhooks:manage")?;
    if !state.db.delete_endpoint(&principal.account_id, &id).await? {
        return Err(ApiError::NotFound(format!("no webhook {id:?}")).into());
    }
    Ok(StatusCode::NO_CONTENT)
}
