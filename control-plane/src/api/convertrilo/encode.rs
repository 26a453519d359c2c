//! Convertrilo's on-demand encodes: `GET /tokens/balance`, `POST /ondemand/encode` (a Kiln
//! job from a URL, optionally copied to the caller's bucket), `GET /ondemand/status/{jobId}`,
//! `DELETE /ondemand/{jobId}`.
//!
//! Settings: `codec` h264|h265|av1 (h264); `resolution` 480p…2160p (1080p) as a ceiling —
//! Convertrilo's `no-upscale`, so a smaller source keeps its size; `quality` good|better|best
//! (better) as Kiln quality 28 / 23 / 19; `preset` fast|standard|slow (fast) as x264's
//! veryfast / medium / slow (SVT-AV1 10 / 8 / 5); `container` mp4|mkv|webm (mp4). Fields Kiln
//! does not act on (`fps`, `bitrateTier`, `audioPolicy`, …) are accepted and listed in the
//! answer's `warnings`.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::{google_drive_refused, Error, ErrorBody, S3};
use crate::auth::Auth;
use crate::db::{JobRow, JobStatus};
use crate::dialect::Dialect;
use crate::error::ApiError;
use crate::submission::params::{video_params, webhook_options};
use crate::submission::{self, Output, Source, Submission};
use crate::time::rfc3339;
use crate::webhooks::payload::{absolute_download, convertrilo_status};
use crate::AppState;

/// `GET /tokens/balance`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ConvertriloBalance)]
#[serde(rename_all = "camelCase")]
pub struct Balance {
    /// Credits left (null: the account is unmetered).
    pub available: Option<i64>,
    /// Credits held by unfinished jobs.
    pub reserved: i64,
    pub trial_grant_remaining: i64,
    pub trial_expires_at: Option<String>,
}

/// `POST /ondemand/encode`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = ConvertriloEncode)]
#[serde(rename_all = "camelCase")]
pub struct EncodeRequest {
    pub source_url: String,
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub codec: Option<String>,
    #[serde(default)]
    pub resolution: Option<String>,
    /// good, better or best.
    #[serde(default)]
    pub quality: Option<String>,
    /// fast, standard or slow.
    #[serde(default)]
    pub preset: Option<String>,
    /// mp4, mkv or webm.
    #[serde(default)]
    pub container: Option<String>,
    #[serde(default, rename = "outputS3")]
    pub output_s3: Option<S3>,
    /// Not supported (422).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub output_google_drive: Option<Value>,
    /// A one-off URL for the terminal event (unsigned, as Convertrilo's docs say).
    #[serde(default)]
    pub webhook: Option<String>,
    /// Anything else Convertrilo takes; listed in `warnings` when Kiln does not act on it.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub other: HashMap<String, Value>,
}

/// A field accepted but not acted on.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = ConvertriloWarning)]
pub struct Warning {
    pub code: String,
    pub message: String,
    pub severity: String,
}

/// `POST /ondemand/encode`'s answer.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ConvertriloEncoded)]
#[serde(rename_all = "camelCase")]
pub struct Encoded {
    pub job_id: String,
    pub external_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    pub source_filename: Option<String>,
    pub output_filename: Option<String>,
    /// `queued`.
    pub status: String,
    /// Seconds of source, where known.
    pub estimated_duration: Option<i64>,
    pub pricing: Pricing,
    /// Absolute URL of `GET /ondemand/status/{jobId}`.
    pub status_url: String,
    pub webhook: Option<String>,
    pub warnings: Vec<Warning>,
}

/// What the encode costs (Kiln's credits).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ConvertriloPricing)]
#[serde(rename_all = "camelCase")]
pub struct Pricing {
    pub total_neu: i64,
    pub reserved: i64,
    pub requested_passes: u8,
    pub effective_passes: u8,
}

/// `GET /ondemand/status/{jobId}`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ConvertriloStatus)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub job_id: String,
    pub external_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    pub source_filename: Option<String>,
    pub output_filename: Option<String>,
    /// queued, processing, success, failed or canceled.
    pub status: String,
    /// 0–100.
    pub progress: f64,
    pub encoder: Option<String>,
    /// Absolute, signed: works without a key until `expiresIn` runs out.
    pub download_url: Option<String>,
    pub expires_in: Option<i64>,
    #[schema(value_type = Option<Object>)]
    pub destination: Option<Value>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub failure_message: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub output_probe: Option<Value>,
    pub warnings: Vec<Warning>,
}

/// `DELETE /ondemand/{jobId}`'s answer.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ConvertriloCancelled)]
pub struct Cancelled {
    pub ok: bool,
    /// Credits given back.
    pub released: i64,
    /// When there was nothing to cancel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `GET /tokens/balance`: the account's credits.
#[utoipa::path(get, path = "/convertrilo/tokens/balance", tag = "convertrilo",
    responses((status = 200, body = Balance), (status = 401, body = ErrorBody)))]
pub async fn balance(State(state): State<AppState>, auth: Auth) -> Result<Json<Balance>, Error> {
    let account = state
        .db
        .get_account(&auth.0.account_id)
        .await?
        .ok_or_else(|| ApiError::internal("account of a valid key is missing"))?;
    let reserved = state.db.credits_held(&auth.0.account_id).await?;
    Ok(Json(Balance {
        available: account.credits,
        reserved,
        trial_grant_remaining: 0,
        trial_expires_at: None,
    }))
}

/// The Kiln settings of an encode, and what was accepted but not acted on.
pub fn settings(
    codec: Option<&str>,
    resolution: Option<&str>,
    quality: Option<&str>,
    preset: Option<&str>,
    container: Option<&str>,
    other: &HashMap<String, Value>,
) -> Result<(kiln_protocol::VideoParams, Vec<Warning>), ApiError> {
    let codec = codec.unwrap_or("h264");
    if !["h264", "h265", "av1"].contains(&codec) {
        return Err(ApiError::BadRequest(format!(
            "codec must be h264, h265 or av1, got {codec:?}"
        )));
    }
    let height = match resolution.unwrap_or("1080p") {
        r @ ("480p" | "720p" | "1080p" | "1440p" | "2160p" | "4320p") => {
            r.trim_end_matches('p').parse::<u32>().expect("listed")
        }
        r => {
            return Err(ApiError::BadRequest(format!(
                "resolution must be 480p, 720p, 1080p, 1440p or 2160p, got {r:?}"
            )))
        }
    };
    let q = match quality.unwrap_or("better") {
        "good" => "28",
        "better" => "23",
        "best" => "19",
        q => {
            return Err(ApiError::BadRequest(format!(
                "quality must be good, better or best, got {q:?}"
            )))
        }
    };
    let preset = match (preset.unwrap_or("fast"), codec) {
        ("fast", "av1") => "10",
        ("standard", "av1") => "8",
        ("slow", "av1") => "5",
        ("fast", _) => "veryfast",
        ("standard", _) => "medium",
        ("slow", _) => "slow",
        (p, _) => {
            return Err(ApiError::BadRequest(format!(
                "preset must be fast, standard or slow, got {p:?}"
            )))
        }
    };
    let container = container.unwrap_or("mp4");
    if container == "mov" {
        return Err(ApiError::BadRequest(
            "container mov is not supported: use mp4, mkv or webm".into(),
        ));
    }
    let fields: HashMap<String, String> = [
        ("codec", codec),
        ("quality", q),
        ("preset", preset),
        ("format", container),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let mut params = video_params(&fields).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    params.resolution = Some(kiln_protocol::Resolution::AtMost { height });
    let mut warnings = Vec::new();
    let mut ignored: Vec<&String> = other.keys().collect();
    ignored.sort();
    for k in ignored {
        if k == "sourceGoogleDrive" || k == "sourceGoogleDriveFiles" {
            continue;
        }
        warnings.push(Warning {
            code: "ignored_field".into(),
            message: format!("{k} is accepted but not acted on by this server"),
            severity: "info".into(),
        });
    }
    Ok((params, warnings))
}

/// What Kiln keeps of a Convertrilo request for its status and webhooks.
pub fn kept(external_id: Option<&str>, metadata: Option<&Value>, warnings: &[Warning]) -> String {
    serde_json::json!({"externalId": external_id, "metadata": metadata, "warnings": warnings})
        .to_string()
}

/// `POST /ondemand/encode`: encode a video from a URL.
#[utoipa::path(post, path = "/convertrilo/ondemand/encode", tag = "convertrilo", request_body = EncodeRequest,
    responses((status = 200, body = Encoded),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 402, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn encode(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<axum::response::Response, Error> {
    let principal = auth.require("jobs:create")?.clone();
    let req: EncodeRequest = super::json_body(&body)?;
    super::idempotent(
        &state,
        &principal.account_id,
        &headers,
        "/ondemand/encode",
        &body,
        || encode_now(&state, &principal.account_id, &headers, req),
    )
    .await
}

async fn encode_now(
    state: &AppState,
    account_id: &str,
    headers: &HeaderMap,
    req: EncodeRequest,
) -> Result<Json<Encoded>, Error> {
    if req.output_google_drive.is_some() {
        return Err(google_drive_refused());
    }
    let (params, warnings) = settings(
        req.codec.as_deref(),
        req.resolution.as_deref(),
        req.quality.as_deref(),
        req.preset.as_deref(),
        req.container.as_deref(),
        &req.other,
    )?;
    let ext = params.container.extension();
    let destination = match &req.output_s3 {
        Some(s3) => {
            if s3.key.is_none() && s3.prefix.is_none() {
                return Err(ApiError::BadRequest("outputS3 needs key (or prefix)".into()).into());
            }
            Some(s3.location(state, account_id).await?)
        }
        None => None,
    };
    let webhook = webhook_options(&state.url_policy, req.webhook.as_deref(), &[])?;
    let accepted = submission::submit(
        state,
        Submission {
            account_id: account_id.to_string(),
            sources: vec![Source::Url(req.source_url.clone())],
            outputs: vec![Output::Video(params)].into(),
            dialect: Dialect::Convertrilo,
            dialect_data: Some(kept(
                req.external_id.as_deref(),
                req.metadata.as_ref(),
                &warnings,
            )),
            webhook,
            destination,
            archive: false,
            batch: false,
            job_id: None,
        },
    )
    .await?;
    let job = accepted
        .jobs
        .first()
        .ok_or_else(|| ApiError::internal("a submission without its job"))?;
    Ok(Json(Encoded {
        job_id: job.id.clone(),
        external_id: req.external_id,
        metadata: req.metadata,
        source_filename: job.input_name.clone(),
        output_filename: Some(output_filename(job, ext)),
        status: "queued".into(),
        estimated_duration: accepted
            .source_durations
            .first()
            .copied()
            .flatten()
            .map(|d| d.ceil() as i64),
        pricing: Pricing {
            total_neu: accepted.cost,
            reserved: accepted.cost,
            requested_passes: 1,
            effective_passes: 1,
        },
        status_url: format!(
            "{}/convertrilo/ondemand/status/{}",
            state.public_base(Some(headers)),
            job.id
        ),
        webhook: req.webhook,
        warnings,
    }))
}

fn output_filename(job: &JobRow, ext: &str) -> String {
    format!(
        "{}.{ext}",
        job.input_stem().unwrap_or_else(|| job.id.clone())
    )
}

async fn load(state: &AppState, auth: &Auth, id: &str, scope: &str) -> Result<JobRow, Error> {
    Ok(crate::api::native::jobs::load(state, auth, id, scope).await?)
}

/// A Convertrilo status document of `job`.
pub fn status_of(state: &AppState, job: &JobRow, headers: &HeaderMap) -> Status {
    let kept: Value = job
        .dialect_data
        .as_deref()
        .and_then(|d| serde_json::from_str(d).ok())
        .unwrap_or(Value::Null);
    let report: Value = job
        .report
        .as_deref()
        .and_then(|r| serde_json::from_str(r).ok())
        .unwrap_or(Value::Null);
    let now = kiln_protocol::now_ms();
    let (ext, _) = job.output_format();
    let destination = job
        .destination_status
        .as_ref()
        .map(|s| serde_json::json!({"type": "s3", "status": s, "error": job.destination_error}))
        .or_else(|| Some(serde_json::json!({"type": "cdn"})));
    let done = job.status == JobStatus::Completed;
    Status {
        job_id: job.id.clone(),
        external_id: kept["externalId"].as_str().map(str::to_string),
        metadata: Some(kept["metadata"].clone()).filter(|m| !m.is_null()),
        source_filename: job.input_name.clone(),
        output_filename: Some(output_filename(job, ext)),
        status: convertrilo_status(job.status).into(),
        progress: (job.progress * 10.0).round() / 10.0,
        encoder: report["encoder"].as_str().map(str::to_string),
        download_url: absolute_download(state, job, Some(headers)),
        expires_in: job
            .expires_at
            .filter(|_| done)
            .map(|e| ((e - now) / 1000).max(0)),
        destination,
        created_at: rfc3339(job.created_at),
        started_at: job.started_at.map(rfc3339),
        finished_at: job.completed_at.map(rfc3339),
        failure_message: matches!(job.status, JobStatus::Failed | JobStatus::Cancelled)
            .then(|| job.error_message.clone())
            .flatten(),
        output_probe: done.then(|| {
            serde_json::json!({
                "durationSec": job.output_duration,
                "codec": report["encoder"],
                "width": job.output_width,
                "height": job.output_height,
                "container": ext,
            })
        }),
        warnings: serde_json::from_value(kept["warnings"].clone()).unwrap_or_default(),
    }
}

/// `GET /ondemand/status/{jobId}`.
#[utoipa::path(get, path = "/convertrilo/ondemand/status/{jobId}", tag = "convertrilo",
    params(("jobId" = String, Path, description = "Job id")),
    responses((status = 200, body = Status), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn status(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    Path(job_id): Path<String>,
) -> Result<Json<Status>, Error> {
    let job = load(&state, &auth, &job_id, "jobs:read").await?;
    Ok(Json(status_of(&state, &job, &headers)))
}

/// `DELETE /ondemand/{jobId}`: cancel an encode; a finished one is a no-op with a note.
#[utoipa::path(delete, path = "/convertrilo/ondemand/{jobId}", tag = "convertrilo",
    params(("jobId" = String, Path, description = "Job id")),
    responses((status = 200, body = Cancelled), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    auth: Auth,
    Path(job_id): Path<String>,
) -> Result<Json<Cancelled>, Error> {
    let job = load(&state, &auth, &job_id, "jobs:cancel").await?;
    if !job.status.is_live() {
        return Ok(Json(Cancelled {
            ok: true,
            released: 0,
            note: Some(format!(
                "the job is {}; nothing to cancel",
                convertrilo_status(job.status)
            )),
        }));
    }
    let after = crate::api::native::jobs::cancel_job(&state, &job).await?;
    Ok(Json(Cancelled {
        ok: after.status == JobStatus::Cancelled,
        released: if after.status == JobStatus::Cancelled {
            after.credits_charged
        } else {
            0
        },
        note: None,
    }))
}
