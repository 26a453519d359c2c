//! Klipfast's jobs and usage.
//!
//! `quality` maps onto Kiln's H.264 settings: `fast` (quality 26, preset veryfast), `balanced`
//! (the default: 23, medium), `high` (20, slow). `estimated_seconds` is the source's duration
//! over the speed this server measured on its recent encodes (seconds of video per second),
//! 1× before it has any.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::{kiln_id, public_id, Error, ErrorBody};
use crate::api::native::jobs::{decode_cursor, encode_cursor};
use crate::auth::Auth;
use crate::db::{JobRow, JobStatus};
use crate::dialect::Dialect;
use crate::error::ApiError;
use crate::submission::params::video_params;
use crate::submission::{self, Output, Source, Submission, Webhook};
use crate::time::{month_bounds, rfc3339};
use crate::views::usage::DEFAULT_PLAN;
use crate::webhooks::payload::absolute_download;
use crate::AppState;

/// `POST /process`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = KlipfastProcess)]
pub struct ProcessRequest {
    pub video_url: String,
    /// fast, balanced (default) or high.
    #[serde(default)]
    pub quality: Option<String>,
    /// Accepted and ignored (captions are not a transcoder's).
    #[serde(default)]
    pub caption_style: Option<String>,
    /// Accepted and ignored.
    #[serde(default)]
    pub language: Option<String>,
    /// Anything else; listed in `warnings`.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub other: std::collections::HashMap<String, Value>,
}

/// `POST /process`'s answer.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = KlipfastQueued)]
pub struct Queued {
    pub job_id: String,
    /// `queued`.
    pub status: String,
    pub created_at: String,
    pub estimated_seconds: i64,
    pub warnings: Vec<String>,
}

/// A job.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = KlipfastJob)]
pub struct Job {
    pub job_id: String,
    /// queued, processing, completed, failed or cancelled.
    pub status: String,
    /// 0–100.
    pub progress: f64,
    pub video_url: Option<String>,
    pub quality: Option<String>,
    pub created_at: String,
    pub completed_at: Option<String>,
    /// The transcoded video: absolute, works without a key until it expires.
    pub download_url: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    /// Always empty: clip extraction is not a transcoder's.
    #[schema(value_type = Vec<Object>)]
    pub clips: Vec<Value>,
    pub error: Option<super::ErrorDetail>,
    pub warnings: Vec<String>,
}

/// A job in a list.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = KlipfastJobSummary)]
pub struct Summary {
    pub job_id: String,
    pub status: String,
    pub created_at: String,
}

/// `GET /jobs`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = KlipfastJobList)]
pub struct JobList {
    pub jobs: Vec<Summary>,
    pub next_cursor: Option<String>,
    pub has_more: bool,
}

/// `GET /usage`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = KlipfastUsage)]
pub struct Usage {
    pub plan: String,
    pub period_start: String,
    pub period_end: String,
    /// Minutes of video made this month.
    pub minutes_used: f64,
    /// Null: no limit.
    pub minutes_limit: Option<f64>,
    pub storage_used_mb: f64,
    /// Null: no limit.
    pub storage_limit_mb: Option<f64>,
    /// Null: unmetered.
    pub credits_remaining: Option<i64>,
}

/// Klipfast's status of a job.
fn status(s: JobStatus) -> &'static str {
    match s {
        JobStatus::Pending => "queued",
        JobStatus::Processing => "processing",
        JobStatus::Completed => "completed",
        JobStatus::Failed => "failed",
        JobStatus::Cancelled => "cancelled",
    }
}

/// `POST /process`: transcode a video from its URL.
#[utoipa::path(post, path = "/klipfast/api/v1/process", tag = "klipfast", request_body = ProcessRequest,
    responses((status = 202, body = Queued),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 402, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn process(
    State(state): State<AppState>,
    auth: Auth,
    body: Result<Json<ProcessRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Error> {
    let principal = auth.require("jobs:create")?.clone();
    let Json(req) = body?;
    let quality = req.quality.clone().unwrap_or_else(|| "balanced".into());
    let (q, preset) = match quality.as_str() {
        "fast" => ("26", "veryfast"),
        "balanced" => ("23", "medium"),
        "high" => ("20", "slow"),
        other => {
            return Err(ApiError::BadRequest(format!(
                "quality must be fast, balanced or high, got {other:?}"
            ))
            .into())
        }
    };
    let mut warnings = Vec::new();
    if req.caption_style.is_some() {
        warnings
            .push("caption_style is ignored: this server transcodes, it does not caption".into());
    }
    if req.language.is_some() {
        warnings.push("language is ignored: this server transcodes, it does not transcribe".into());
    }
    let mut others: Vec<&String> = req.other.keys().collect();
    others.sort();
    for k in others {
        warnings.push(format!("{k} is ignored by this server"));
    }
    let fields = [("codec", "h264"), ("quality", q), ("preset", preset)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let params = video_params(&fields).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let accepted = submission::submit(
        &state,
        Submission {
            account_id: principal.account_id.clone(),
            sources: vec![Source::Url(req.video_url.clone())],
            outputs: vec![Output::Video(params)].into(),
            dialect: Dialect::Klipfast,
            dialect_data: Some(
                serde_json::json!({"video_url": req.video_url, "quality": quality, "warnings": warnings})
                    .to_string(),
            ),
            webhook: Webhook::default(),
            destination: None,
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
    let speed = state.db.realtime_factor().await?.unwrap_or(1.0).max(0.01);
    let duration = accepted.source_durations.first().copied().flatten();
    Ok((
        StatusCode::ACCEPTED,
        Json(Queued {
            job_id: public_id(&job.id),
            status: "queued".into(),
            created_at: rfc3339(job.created_at),
            estimated_seconds: duration.map_or(60, |d| (d / speed).ceil().max(1.0) as i64),
            warnings,
        }),
    )
        .into_response())
}

fn job_view(state: &AppState, job: &JobRow, headers: &HeaderMap) -> Job {
    let kept: Value = job
        .dialect_data
        .as_deref()
        .and_then(|d| serde_json::from_str(d).ok())
        .unwrap_or(Value::Null);
    let done = job.status == JobStatus::Completed;
    Job {
        job_id: public_id(&job.id),
        status: status(job.status).into(),
        progress: (job.progress * 10.0).round() / 10.0,
        video_url: kept["video_url"].as_str().map(str::to_string),
        quality: kept["quality"].as_str().map(str::to_string),
        created_at: rfc3339(job.created_at),
        completed_at: job.completed_at.map(rfc3339),
        download_url: absolute_download(state, job, Some(headers)),
        output: done.then(|| {
            serde_json::json!({
                "size_bytes": job.output_size,
                "duration_seconds": job.output_duration,
                "width": job.output_width,
                "height": job.output_height,
                "expires_at": job.expires_at.map(rfc3339),
            })
        }),
        clips: Vec::new(),
        error: matches!(job.status, JobStatus::Failed | JobStatus::Cancelled).then(|| {
            super::ErrorDetail {
                code: job.error_code.clone().unwrap_or_else(|| "failed".into()),
                message: job.error_message.clone().unwrap_or_default(),
            }
        }),
        warnings: serde_json::from_value(kept["warnings"].clone()).unwrap_or_default(),
    }
}

/// `GET /jobs/{job_id}`.
#[utoipa::path(get, path = "/klipfast/api/v1/jobs/{job_id}", tag = "klipfast",
    params(("job_id" = String, Path, description = "Job id (`job_…`)")),
    responses((status = 200, body = Job), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    Path(job_id): Path<String>,
) -> Result<Json<Job>, Error> {
    let job = crate::api::native::jobs::load(&state, &auth, kiln_id(&job_id), "jobs:read").await?;
    Ok(Json(job_view(&state, &job, &headers)))
}

/// Query of `GET /jobs`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// 1–100, default 20.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// `GET /jobs`: the jobs made through this API, newest first.
#[utoipa::path(get, path = "/klipfast/api/v1/jobs", tag = "klipfast", params(ListQuery),
    responses((status = 200, body = JobList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<ListQuery>,
) -> Result<Json<JobList>, Error> {
    let principal = auth.require("jobs:read")?;
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(
            ApiError::BadRequest(format!("limit must be from 1 to 100, got {limit}")).into(),
        );
    }
    let before = q
        .cursor
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(decode_cursor)
        .transpose()?;
    let mut rows = state
        .db
        .list_dialect_jobs(
            &principal.account_id,
            Dialect::Klipfast.name(),
            before.as_deref(),
            limit + 1,
        )
        .await?;
    let has_more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    Ok(Json(JobList {
        next_cursor: has_more
            .then(|| rows.last().map(|j| encode_cursor(&j.id)))
            .flatten(),
        has_more,
        jobs: rows
            .iter()
            .map(|j| Summary {
                job_id: public_id(&j.id),
                status: status(j.status).into(),
                created_at: rfc3339(j.created_at),
            })
            .collect(),
    }))
}

/// `GET /usage`: this month.
#[utoipa::path(get, path = "/klipfast/api/v1/usage", tag = "klipfast",
    responses((status = 200, body = Usage), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn usage(State(state): State<AppState>, auth: Auth) -> Result<Json<Usage>, Error> {
    let principal = auth.require("usage:read")?;
    let now = kiln_protocol::now_ms();
    let (from, to) = month_bounds(now);
    let used = state.db.usage(&principal.account_id, from, to).await?;
    let account = state
        .db
        .get_account(&principal.account_id)
        .await?
        .ok_or_else(|| ApiError::internal("account of a valid key is missing"))?;
    let stored = state.db.bytes_stored(&principal.account_id, now).await?;
    Ok(Json(Usage {
        plan: account.plan.unwrap_or_else(|| DEFAULT_PLAN.into()),
        period_start: rfc3339(from),
        period_end: rfc3339(to),
        minutes_used: (used.encoded_seconds / 60.0 * 100.0).round() / 100.0,
        minutes_limit: None,
        storage_used_mb: (stored as f64 / 1e6 * 100.0).round() / 100.0,
        storage_limit_mb: None,
        credits_remaining: account.credits,
    }))
}
