//! The OpenAPI 3.1 document, served at `/api/v1/openapi.json`. Paths come from the handlers'
//! `#[utoipa::path]` attributes, registered with their routes in one place (`api::router`),
//! so a route cannot exist without being documented. The response shapes below are the
//! documents the handlers build; `tests/api.rs` checks every documented operation's real
//! answers against them.

#![allow(dead_code)]

use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// Every error: `{"error": {"code", "message"}}`.
#[derive(Serialize, ToSchema)]
pub struct Error {
    pub error: ErrorBody,
}

/// Stable `code` (bad_request, unauthorized, forbidden, not_found, conflict, gone,
/// payment_required, payload_too_large, range_not_satisfiable, unsupported_media,
/// unprocessable, rate_limited, unavailable, internal) and a message for people.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

/// `POST /compress`'s answer (Konvrt's shape).
#[derive(Serialize, ToSchema)]
pub struct Accepted {
    pub success: bool,
    pub job_id: String,
    pub status: String,
    pub status_url: String,
    pub credits_charged: i64,
}

/// The source as received.
#[derive(Serialize, ToSchema)]
pub struct JobInput {
    pub filename: Option<String>,
    pub size_bytes: i64,
}

/// A completed job's output.
#[derive(Serialize, ToSchema)]
pub struct JobOutput {
    pub filename: String,
    pub size_bytes: Option<i64>,
    /// Percent smaller than the input (Konvrt's meaning).
    pub compression_ratio: Option<i64>,
    pub download_url: Option<String>,
    /// Works without a key until `expires_at`.
    pub signed_download_url: Option<String>,
    pub expires_at: Option<String>,
    pub expired: bool,
    pub width: Option<i64>,
    pub height: Option<i64>,
    pub duration: Option<f64>,
    pub format: String,
    pub size: Option<i64>,
}

/// A job's failure.
#[derive(Serialize, ToSchema)]
pub struct JobError {
    pub code: String,
    pub message: String,
}

/// A job: one source, one output.
#[derive(Serialize, ToSchema)]
pub struct Job {
    pub job_id: String,
    pub id: String,
    pub batch_id: Option<String>,
    /// `video` or `image`.
    pub kind: String,
    /// pending, processing, completed, failed or cancelled.
    pub status: String,
    pub progress: f64,
    pub fps: Option<f64>,
    pub eta_seconds: Option<f64>,
    pub input: JobInput,
    pub input_size: i64,
    pub output_size: Option<i64>,
    /// Input size / output size.
    pub compression_ratio: Option<f64>,
    pub codec: Option<String>,
    pub method: Option<String>,
    pub quality: Option<i64>,
    /// For `encoder_crf` outputs: the CRF on the encoder's own scale.
    pub encoder_crf: Option<i64>,
    pub bitrate: Option<i64>,
    pub target_size: Option<i64>,
    /// The VMAF a `target_vmaf` output asked for.
    pub target_vmaf: Option<f64>,
    /// For `target_vmaf` outputs once done: `{target, crf, achieved, achieved_p5, predicted,
    /// predicted_size_bytes, met, probes}` — `achieved` is the whole output's VMAF
    /// (vmaf_v0.6.1, pooled mean) measured against the source.
    #[schema(value_type = Option<Object>)]
    pub vmaf: Option<Value>,
    pub format: String,
    pub output: Option<JobOutput>,
    /// How the output was made (encoder, decoder, hardware, passes…).
    #[schema(value_type = Option<Object>)]
    pub encoding: Option<Value>,
    pub download_url: Option<String>,
    pub signed_download_url: Option<String>,
    pub expires_at: Option<String>,
    /// `{status: delivered|failed, error}` when an S3 destination was asked for.
    #[schema(value_type = Option<Object>)]
    pub destination: Option<Value>,
    pub credits_charged: i64,
    pub attempts: i64,
    pub node_id: Option<String>,
    pub dead_letter: bool,
    pub error: Option<JobError>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    /// Pending jobs: why no node has taken it, if no live node can.
    pub waiting_reason: Option<String>,
    /// Jobs with a webhook: the URL and every delivery's attempts.
    #[schema(value_type = Option<Object>)]
    pub webhook: Option<Value>,
}

/// A page of jobs.
#[derive(Serialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<Job>,
    /// Pass as `cursor` for the next page.
    pub next_cursor: Option<String>,
    pub has_more: bool,
}

/// `POST /jobs` and `POST /batches`' answer.
#[derive(Serialize, ToSchema)]
pub struct Submitted {
    pub batch_id: String,
    pub status_url: String,
    pub credits_charged: i64,
    pub jobs: Vec<Job>,
}

/// A batch and its jobs.
#[derive(Serialize, ToSchema)]
pub struct Batch {
    pub batch_id: String,
    /// pending, processing, completed, partial, failed or cancelled.
    pub status: String,
    #[schema(value_type = Object)]
    pub counts: Value,
    pub jobs: Vec<Job>,
    pub archive_url: Option<String>,
}

/// `POST /uploads`' answer.
#[derive(Serialize, ToSchema)]
pub struct Upload {
    pub upload_id: String,
    pub size: i64,
    pub filename: Option<String>,
    pub expires_at: String,
}

/// `GET /usage`.
#[derive(Serialize, ToSchema)]
pub struct Usage {
    pub account_id: String,
    pub period: Period,
    pub jobs: UsageJobs,
    pub input_bytes: i64,
    pub output_bytes: i64,
    pub encoded_minutes: f64,
    pub gpu_seconds: f64,
    pub cpu_seconds: f64,
    pub credits_used: i64,
    pub credits_remaining: Option<i64>,
    pub monthly_job_quota: Option<i64>,
    pub jobs_this_month: i64,
}

/// A `[from, to)` period.
#[derive(Serialize, ToSchema)]
pub struct Period {
    pub from: String,
    pub to: String,
}

/// Jobs of a period by status.
#[derive(Serialize, ToSchema)]
pub struct UsageJobs {
    pub total: i64,
    pub pending: i64,
    pub processing: i64,
    pub completed: i64,
    pub failed: i64,
    pub cancelled: i64,
}

/// A new key (the key itself is shown only here).
#[derive(Serialize, ToSchema)]
pub struct NewKey {
    pub key: String,
    #[serde(flatten)]
    pub info: crate::db::keys::KeyInfo,
}

/// Keys.
#[derive(Serialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<crate::db::keys::KeyInfo>,
}

/// `GET /nodes`.
#[derive(Serialize, ToSchema)]
pub struct NodeList {
    #[schema(value_type = Vec<Object>)]
    pub nodes: Vec<Value>,
}

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

/// The document's fixed parts; paths are added by the router.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Kiln",
        description = "Self-hosted GPU media transcoding. Authenticate with `Authorization: Bearer <key>` or `X-API-Key`. Every response to a keyed request carries `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset` (seconds); 429 carries `Retry-After`. Errors are `{\"error\": {\"code\", \"message\"}}`.",
    ),
    modifiers(&Security),
    security(("bearer" = []), ("api_key" = [])),
    components(schemas(Error, Job, JobList, Submitted, Batch, Upload, Usage, NewKey, KeyList, NodeList, Accepted)),
    tags(
        (name = "konvrt", description = "Konvrt-compatible endpoints"),
        (name = "jobs", description = "Kiln's jobs API"),
        (name = "admin", description = "Keys, accounts and nodes (admin scope)"),
    )
)]
pub struct ApiDoc;
