//! Convertrilo's API under `/convertrilo` (a client's base URL becomes
//! `https://kiln.example/convertrilo`, its `X-API-Key` a Kiln key): on-demand encodes from a URL
//! (`ondemand/encode`, `ondemand/status/{jobId}`, `DELETE ondemand/{jobId}`), folder ingest
//! from the caller's bucket, the token balance, saved S3 credentials (`credentials:manage`)
//! and managed webhooks (`webhooks:manage`, signed `X-Webhook-Signature`). Errors are
//! `{code, message}` at the top level; the dialect is limited to 100 requests a minute per key,
//! 10 of them encodes (`auth`). Google Drive is answered 422 (`google_drive_not_supported`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, DialectError, ErrorShape};
use crate::sources::{S3Credentials, S3Location};
use crate::AppState;

pub mod encode;
pub mod ingest;
pub mod manage;

/// Convertrilo's error answers.
pub struct Shape;

impl ErrorShape for Shape {
    const DIALECT: crate::dialect::Dialect = crate::dialect::Dialect::Convertrilo;
}

/// What Convertrilo's handlers fail with.
pub type Error = DialectError<Shape>;

/// Convertrilo's error body.
#[derive(Serialize, ToSchema)]
#[schema(as = ConvertriloError)]
pub struct ErrorBody {
    /// invalid_request, invalid_api_key, missing_required_scope, not_found,
    /// insufficient_tokens, rate_limit_exceeded, no_video_files_found,
    /// google_drive_not_supported, …
    pub code: String,
    pub message: String,
    /// With missing_required_scope: the scope to add.
    #[serde(rename = "requiredScope", skip_serializing_if = "Option::is_none")]
    pub required_scope: Option<String>,
}

/// Convertrilo's routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(encode::balance))
        .routes(routes!(encode::encode))
        .routes(routes!(encode::status))
        .routes(routes!(encode::cancel))
        .routes(routes!(ingest::folder))
        .routes(routes!(manage::create_credential, manage::list_credentials))
        .routes(routes!(manage::delete_credential))
        .routes(routes!(manage::google_drive))
        .routes(routes!(manage::create_webhook, manage::list_webhooks))
        .routes(routes!(manage::delete_webhook))
}

/// A bucket as Convertrilo's `outputS3`/`sourceS3` names it: inline keys, or a saved
/// credential by name.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ConvertriloS3)]
pub struct S3 {
    pub bucket: String,
    /// The object (an encode's output).
    #[serde(default)]
    pub key: Option<String>,
    /// Folder ingest: the prefix to list, or where outputs go (default `outputs/`).
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    /// An S3-compatible endpoint (R2, MinIO, …); default AWS.
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// Kiln addresses custom endpoints by path always.
    #[serde(default)]
    pub force_path_style: Option<bool>,
    /// A saved credential's name (`POST /ondemand/credentials/s3`) instead of inline keys.
    #[serde(default, alias = "credentialName")]
    pub credential: Option<String>,
}

impl S3 {
    /// The bucket as Kiln's S3 location, a saved credential opened with the server's key.
    pub async fn location(
        &self,
        state: &AppState,
        account_id: &str,
    ) -> Result<S3Location, ApiError> {
        let mut loc = S3Location {
            bucket: self.bucket.clone(),
            key: self.key.clone(),
            prefix: self.prefix.clone(),
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            credentials: None,
        };
        match (&self.credential, &self.access_key_id, &self.secret_access_key) {
            (Some(name), None, None) => {
                let saved = state
                    .db
                    .credential(account_id, name)
                    .await?
                    .ok_or_else(|| ApiError::NotFound(format!("no saved credential {name:?}")))?;
                let secret = state
                    .db
                    .sealer
                    .open(&saved.secret_sealed, &saved.id)
                    .map_err(ApiError::internal)?;
                loc.credentials = Some(S3Credentials {
                    access_key_id: saved.access_key_id,
                    secret_access_key: secret,
                    session_token: None,
                });
                loc.region = loc.region.or(saved.region);
                loc.endpoint = loc.endpoint.or(saved.endpoint);
            }
            (None, Some(id), Some(secret)) => {
                loc.credentials = Some(S3Credentials {
                    access_key_id: id.clone(),
                    secret_access_key: secret.clone(),
                    session_token: None,
                });
            }
            (None, None, None) => {}
            _ => {
                return Err(ApiError::BadRequest(
                    "give accessKeyId and secretAccessKey together, or a saved credential's name, not both".into(),
                ))
            }
        }
        Ok(loc)
    }
}

/// Run `run` once per `Idempotency-Key` (Convertrilo's header): the first answer is kept
/// for a day and replayed to a retry with the same body (`Idempotent-Replayed: true`); a
/// retry with another body is 409 `idempotency_conflict`, one while the first still runs 409
/// `idempotency_in_progress`. Without the header, `run` just runs.
pub async fn idempotent<T, Fut>(
    state: &AppState,
    account_id: &str,
    headers: &axum::http::HeaderMap,
    path: &str,
    body: &[u8],
    run: impl FnOnce() -> Fut,
) -> Result<axum::response::Response, Error>
where
    T: Serialize,
    Fut: std::future::Future<Output = Result<axum::Json<T>, Error>>,
{
    use axum::response::IntoResponse;
    use sha2::{Digest, Sha256};

    use crate::db::idempotency::Held;
    let Some(key) = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
    else {
        return run().await.map(IntoResponse::into_response);
    };
    if key.len() > 255 {
        return Err(
            ApiError::BadRequest("Idempotency-Key is at most 255 characters".into()).into(),
        );
    }
    let mut h = Sha256::new();
    h.update(path.as_bytes());
    h.update(b"\n");
    h.update(body);
    let hash = hex::encode(h.finalize());
    let json = |status: u16, body: String| {
        (
            axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::OK),
            [
                (axum::http::header::CONTENT_TYPE, "application/json"),
                (
                    axum::http::HeaderName::from_static("idempotent-replayed"),
                    "true",
                ),
            ],
            body,
        )
            .into_response()
    };
    match state.db.claim_idempotency(account_id, key, &hash).await? {
        Held::Claimed => match run().await {
            Ok(axum::Json(answer)) => {
                let text = serde_json::to_string(&answer).map_err(ApiError::internal)?;
                if let Err(e) = state
                    .db
                    .answer_idempotency(account_id, key, 200, &text)
                    .await
                {
                    tracing::warn!(error = %e, "could not keep an idempotent answer");
                }
                Ok((
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    text,
                )
                    .into_response())
            }
            Err(e) => {
                if let Err(r) = state.db.release_idempotency(account_id, key).await {
                    tracing::warn!(error = %r, "could not release an idempotency key");
                }
                Err(e)
            }
        },
        Held::Answered(status, body) => Ok(json(status, body)),
        Held::OtherRequest => Err(DialectError::coded(
            ApiError::Conflict("this Idempotency-Key was used with another request".into()),
            "idempotency_conflict",
        )),
        Held::InProgress => Err(DialectError::coded(
            ApiError::Conflict("a request with this Idempotency-Key is still running".into()),
            "idempotency_in_progress",
        )),
    }
}

/// A JSON body, as Convertrilo sends it (read as bytes for its Idempotency-Key).
pub fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|e| {
        DialectError::coded(
            ApiError::BadRequest(format!("malformed JSON body: {e}")),
            "invalid_body",
        )
    })
}

/// Google Drive is not something Kiln reaches.
pub fn google_drive_refused() -> Error {
    DialectError::coded(
        ApiError::Unsupported(
            "Google Drive sources and destinations are not supported by this server; use a URL or an S3-compatible bucket".into(),
        ),
        "google_drive_not_supported",
    )
}
