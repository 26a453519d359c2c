//! Convertrilo's API under `/convertrilo` (a client's base URL becomes
//! `https://kiln.example/convertrilo`, its `X-API-Key` a Kiln key): on-demand encodes from a URL
//! (`ondemand/encode`, `ondemand/status/{jobId}`, `DELETE ondemand/{jobId}`), folder ingest
//! from the caller's bucket, the token balance, saved S3 credentials (`credentials:manage`)
//! and managed webhooks (`webhooks:manage`, signed `X-Webhook-Signature`). Errors are
//! `{code, message}` at the top level; the dialect is limited to 100 requests a minute per key,
//! 10 of them encodes (`auth`). Google Drive is answered 501.

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

/// Google Drive is not something Kiln reaches.
pub fn google_drive_refused() -> Error {
    DialectError::coded(
        ApiError::NotImplemented(
            "Google Drive sources and destinations are not supported by this server; use a URL or an S3-compatible bucket".into(),
        ),
        "google_drive_not_supported",
    )
}
