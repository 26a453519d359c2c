//! Submitting through the jobs API: `POST /jobs` (one source, one job per output) and
//! `POST /batches` (sources × formats × qualities × sizes, Convertly's batch form). A
//! submission of N outputs creates N jobs sharing a `batch_id`, validated, charged and queued
//! together or not at all (the submission service).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use crate::api::docs::Error;
use crate::auth::Auth;
use crate::dialect::Dialect;
use crate::error::ApiError;
use crate::sources::S3Location;
use crate::submission::params::{batch_outputs, parse_output, webhook_options};
use crate::submission::{self, Source, Submission};
use crate::views::{JobView, SubmittedView};
use crate::AppState;

/// Where a job's source comes from: exactly one of the three.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// An id from `POST /uploads`.
    #[serde(default)]
    pub upload_id: Option<String>,
    /// An https URL Kiln fetches (public addresses only, unless allow-listed).
    #[serde(default)]
    pub url: Option<String>,
    /// An object in the caller's S3-compatible bucket (`key` required).
    #[serde(default)]
    pub s3: Option<S3Location>,
}

/// Where outputs go besides Kiln's own store.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DestinationSpec {
    /// Copy each output into this bucket when it completes.
    pub s3: S3Location,
}

/// `POST /jobs`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobsRequest {
    pub source: SourceSpec,
    /// One entry per output. Video outputs take the fields of `POST /compress` (`codec`,
    /// `quality`, `method`, `bitrate`, `target_size_mb`, `target_vmaf`, `resolution`, `preset`, `format`,
    /// `hardware`, …); image outputs those of `POST /convert` (`format` required, `width`,
    /// `height`, `quality`, `fit`, …). `type` (`video` or `image`) may be omitted when the
    /// fields say which. Video outputs also take edits: `start`/`end` (seconds or
    /// `HH:MM:SS.mmm`, frame-accurate), `crop` (`{x, y, width, height}`, or `{aspect: "9:16",
    /// gravity}`), `watermark` (`{upload, position, margin, opacity, width}`: an uploaded
    /// image, `width` a fraction of the output's) and `subtitles` (`{upload}`: SRT or WebVTT,
    /// timed against the source). `type` `ladder`, `thumbnails` and `storyboard` make folders.
    #[schema(value_type = Vec<Object>)]
    pub outputs: Vec<serde_json::Map<String, Value>>,
    /// POSTed signed events when a job finishes (and on progress, if asked).
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// `job.completed`, `job.failed` and `job.cancelled` are always sent; add `job.progress`.
    #[serde(default)]
    pub webhook_events: Vec<String>,
    /// Also copy outputs to the caller's bucket.
    #[serde(default)]
    pub output: Option<DestinationSpec>,
    /// Offer a zip of all outputs at `GET /batches/{id}/archive`.
    #[serde(default)]
    pub archive: bool,
}

/// `POST /batches`: every source × format × quality × size.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    pub sources: Vec<SourceSpec>,
    /// Image formats (`webp`, `jpg`, …) and/or video codecs (`h264`, `av1`, …).
    pub formats: Vec<String>,
    /// Image quality (1–100) or video quality (CRF, 18–51); empty for the default.
    #[serde(default)]
    pub qualities: Vec<u8>,
    /// `WxH`, `W` (images: a width), `720p` (video); empty keeps the source size.
    #[serde(default)]
    pub sizes: Vec<String>,
    #[serde(default)]
    pub webhook_url: Option<String>,
    #[serde(default)]
    pub webhook_events: Vec<String>,
    #[serde(default)]
    pub output: Option<DestinationSpec>,
    #[serde(default)]
    pub archive: bool,
}

impl SourceSpec {
    /// The source this names (exactly one of the three).
    pub fn into_source(self) -> Result<Source, ApiError> {
        match (self.upload_id, self.url, self.s3) {
            (Some(id), None, None) => Ok(Source::Upload(id)),
            (None, Some(url), None) => Ok(Source::Url(url)),
            (None, None, Some(loc)) => Ok(Source::S3(loc)),
            _ => Err(ApiError::BadRequest(
                "a source is exactly one of upload_id, url or s3".into(),
            )),
        }
    }
}

/// The 202 answer of a jobs-API submission.
pub fn submitted(state: &AppState, accepted: submission::Accepted) -> SubmittedView {
    let now = kiln_protocol::now_ms();
    let batch_id = accepted.batch_id.unwrap_or_default();
    SubmittedView {
        status_url: format!("/api/v1/batches/{batch_id}"),
        batch_id,
        credits_charged: accepted.cost,
        jobs: accepted
            .jobs
            .iter()
            .map(|j| JobView::new(j, &state.signing_key, now))
            .collect(),
    }
}

/// `POST /jobs`: one source, one job per output.
#[utoipa::path(post, path = "/api/v1/jobs", tag = "jobs", request_body = JobsRequest,
    responses((status = 202, body = SubmittedView),
        (status = 400, body = Error), (status = 401, body = Error),
        (status = 402, body = Error), (status = 403, body = Error),
        (status = 404, body = Error), (status = 410, body = Error),
        (status = 413, body = Error), (status = 415, body = Error),
        (status = 422, body = Error), (status = 429, body = Error)))]
pub async fn create_jobs(
    State(state): State<AppState>,
    auth: Auth,
    body: Result<Json<JobsRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let principal = auth.require("jobs:create")?.clone();
    let Json(req) = body?;
    let outputs = req
        .outputs
        .iter()
        .enumerate()
        .map(|(i, o)| parse_output(i, o))
        .collect::<Result<Vec<_>, _>>()?;
    let webhook = webhook_options(
        &state.url_policy,
        req.webhook_url.as_deref(),
        &req.webhook_events,
    )?;
    let accepted = submission::submit(
        &state,
        Submission {
            account_id: principal.account_id.clone(),
            sources: vec![req.source.into_source()?],
            outputs: outputs.into(),
            dialect: Dialect::Native,
            dialect_data: None,
            webhook,
            destination: req.output.map(|d| d.s3),
            archive: req.archive,
            batch: true,
            job_id: None,
        },
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(submitted(&state, accepted))).into_response())
}

/// `POST /batches`: every source × format × quality × size.
#[utoipa::path(post, path = "/api/v1/batches", tag = "jobs", request_body = BatchRequest,
    responses((status = 202, body = SubmittedView),
        (status = 400, body = Error), (status = 401, body = Error),
        (status = 402, body = Error), (status = 403, body = Error),
        (status = 404, body = Error), (status = 410, body = Error),
        (status = 413, body = Error), (status = 422, body = Error),
        (status = 429, body = Error)))]
pub async fn create_batch(
    State(state): State<AppState>,
    auth: Auth,
    body: Result<Json<BatchRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let principal = auth.require("jobs:create")?.clone();
    let Json(req) = body?;
    let outputs = batch_outputs(&req.formats, &req.qualities, &req.sizes)?;
    let webhook = webhook_options(
        &state.url_policy,
        req.webhook_url.as_deref(),
        &req.webhook_events,
    )?;
    let sources = req
        .sources
        .into_iter()
        .map(SourceSpec::into_source)
        .collect::<Result<Vec<_>, _>>()?;
    let accepted = submission::submit(
        &state,
        Submission {
            account_id: principal.account_id.clone(),
            sources,
            outputs: outputs.into(),
            dialect: Dialect::Native,
            dialect_data: None,
            webhook,
            destination: req.output.map(|d| d.s3),
            archive: req.archive,
            batch: true,
            job_id: None,
        },
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(submitted(&state, accepted))).into_response())
}
