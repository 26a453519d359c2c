//! Submitting work through the jobs API: `POST /uploads`, `POST /jobs` (one source, one or
//! more outputs), `POST /batches` (several sources × formats × qualities × sizes, Convertly's
//! batch form), `GET /batches/{id}` and `GET /batches/{id}/archive` (a zip of the results,
//! streamed as it is written).
//!
//! A job is one source and one output. A submission of N outputs creates N jobs sharing a
//! `batch_id`; all are validated, charged and queued together or not at all.

use std::collections::{BTreeMap, HashMap};

use axum::body::Body;
use axum::extract::{Multipart, Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kiln_gpu_node::imaging::{self, OutputFormat};
use kiln_protocol::{ImageParams, JobSpec, Task, VideoCodec};
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::Row;
use tokio_util::compat::TokioAsyncReadCompatExt;

use super::compress::{check_media, store_file_field, video_params};
use super::jobs::job_json;
use crate::auth::Auth;
use crate::db::jobs::NewJob;
use crate::db::{JobRow, JobStatus};
use crate::error::ApiError;
use crate::sources::{self, S3Location};
use crate::AppState;

/// Most jobs one submission may create.
pub const MAX_BATCH_JOBS: usize = 100;

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
    /// fields say which.
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

/// One validated output.
enum Output {
    Video(kiln_protocol::VideoParams),
    Image(BTreeMap<String, String>),
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => None,
        _ => Some(String::from("\u{0}")),
    }
}

/// Validate one output object.
fn parse_output(i: usize, o: &serde_json::Map<String, Value>) -> Result<Output, ApiError> {
    let mut fields = HashMap::new();
    for (k, v) in o {
        match scalar(v) {
            Some(s) if s.contains('\u{0}') => {
                return Err(ApiError::BadRequest(format!(
                    "outputs[{i}].{k} must be a string, number or boolean"
                )))
            }
            Some(s) => {
                fields.insert(k.clone(), s);
            }
            None => {}
        }
    }
    let ty = fields.remove("type");
    let is_image = match ty.as_deref() {
        Some("image") => true,
        Some("video") => false,
        Some(t) => {
            return Err(ApiError::BadRequest(format!(
                "outputs[{i}].type must be video or image, got {t:?}"
            )))
        }
        None => {
            !fields.contains_key("codec")
                && fields
                    .get("format")
                    .is_some_and(|f| OutputFormat::parse(f).is_some())
        }
    };
    let at = |e: ApiError| match e {
        ApiError::BadRequest(m) => ApiError::BadRequest(format!("outputs[{i}]: {m}")),
        other => other,
    };
    if is_image {
        let format = fields.get("format").cloned().unwrap_or_default();
        if OutputFormat::parse(&format).is_none() {
            return Err(ApiError::BadRequest(format!(
                "outputs[{i}]: image outputs need `format`: jpg, png, webp, avif, gif or tiff"
            )));
        }
        let fields: BTreeMap<String, String> = fields.into_iter().collect();
        imaging::params::from_fields(&fields, imaging::ConvertParams::default())
            .map_err(|m| ApiError::BadRequest(format!("outputs[{i}]: {m}")))?;
        Ok(Output::Image(fields))
    } else {
        Ok(Output::Video(video_params(&fields).map_err(at)?))
    }
}

/// Credits a job costs: an image 1; a video 1 per started 100 MB of source.
pub fn job_cost(video: bool, input_size: u64) -> i64 {
    if video {
        (input_size.div_ceil(100 << 20)).max(1) as i64
    } else {
        1
    }
}

/// Refuse a submission of `jobs` jobs costing `cost` past the account's monthly quota or
/// balance, then charge it. Returns whether credits were taken (to refund on a later error).
pub async fn charge(
    state: &AppState,
    account_id: &str,
    jobs: i64,
    cost: i64,
) -> Result<(), ApiError> {
    let account = state
        .db
        .get_account(account_id)
        .await?
        .ok_or_else(|| ApiError::internal("account of a valid key is missing"))?;
    if let Some(quota) = account.monthly_job_quota {
        let (from, to) = super::time::month_bounds(kiln_protocol::now_ms());
        let used = state.db.jobs_created_between(account_id, from, to).await?;
        if used + jobs > quota {
            return Err(ApiError::RateLimited {
                message: format!(
                    "monthly job quota reached: {used} of {quota} jobs used this month"
                ),
                retry_after: ((to - kiln_protocol::now_ms()) / 1000).max(1) as u64,
            });
        }
    }
    if account.credits.is_some() && cost > 0 {
        let r = sqlx::query(
            "UPDATE accounts SET credits = credits - $1 WHERE id = $2 AND credits >= $1",
        )
        .bind(cost)
        .bind(account_id)
        .execute(&state.db.pool)
        .await
        .map_err(ApiError::internal)?;
        if r.rows_affected() != 1 {
            return Err(ApiError::PaymentRequired(format!(
                "insufficient credits: this submission costs {cost}, the balance is {}",
                account.credits.unwrap_or(0)
            )));
        }
    }
    Ok(())
}

/// Give credits back (a submission refused after charging).
pub async fn uncharge(state: &AppState, account_id: &str, cost: i64) {
    if cost > 0 {
        let _ = sqlx::query(
            "UPDATE accounts SET credits = credits + $1 WHERE id = $2 AND credits IS NOT NULL",
        )
        .bind(cost)
        .bind(account_id)
        .execute(&state.db.pool)
        .await;
    }
}

/// Validate a webhook URL and its events; returns (url, progress wanted).
pub fn webhook_options(
    state: &AppState,
    url: Option<&str>,
    events: &[String],
) -> Result<(Option<String>, bool), ApiError> {
    let url = url.map(str::trim).filter(|u| !u.is_empty());
    if let Some(u) = url {
        state
            .url_policy
            .check(u)
            .map_err(|e| ApiError::BadRequest(format!("webhook_url: {e}")))?;
    }
    let mut progress = false;
    for e in events {
        match e.as_str() {
            "job.progress" => progress = true,
            "job.completed" | "job.failed" | "job.cancelled" => {}
            other => {
                return Err(ApiError::BadRequest(format!(
                    "webhook_events: unknown event {other:?} (job.completed, job.failed, job.cancelled, job.progress)"
                )))
            }
        }
    }
    if progress && url.is_none() {
        return Err(ApiError::BadRequest(
            "webhook_events needs a webhook_url".into(),
        ));
    }
    Ok((url.map(str::to_string), progress))
}

/// A source resolved into Kiln's store.
struct Source {
    key: String,
    size: u64,
    name: Option<String>,
    /// Whether Kiln fetched it for this submission (removed if the submission fails).
    fetched: bool,
}

async fn resolve_source(
    state: &AppState,
    account_id: &str,
    s: &SourceSpec,
    fetch_key: String,
) -> Result<Source, ApiError> {
    let given = [s.upload_id.is_some(), s.url.is_some(), s.s3.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if given != 1 {
        return Err(ApiError::BadRequest(
            "a source is exactly one of upload_id, url or s3".into(),
        ));
    }
    if let Some(id) = &s.upload_id {
        let row = sqlx::query(
            "SELECT object_key, size, filename, expires_at, swept_at FROM uploads WHERE id = $1 AND account_id = $2",
        )
        .bind(id)
        .bind(account_id)
        .fetch_optional(&state.db.pool)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::NotFound(format!("no upload {id:?}")))?;
        let expires: i64 = row.try_get("expires_at").map_err(ApiError::internal)?;
        let swept: Option<i64> =
            crate::db::opt_i64(&row, "swept_at").map_err(ApiError::internal)?;
        if swept.is_some() || expires <= kiln_protocol::now_ms() {
            return Err(ApiError::Gone(format!("upload {id:?} has expired")));
        }
        return Ok(Source {
            key: row.try_get("object_key").map_err(ApiError::internal)?,
            size: row.try_get::<i64, _>("size").map_err(ApiError::internal)? as u64,
            name: row.try_get("filename").map_err(ApiError::internal)?,
            fetched: false,
        });
    }
    let (size, name) = match (&s.url, &s.s3) {
        (Some(url), _) => sources::fetch_url(state, url, &fetch_key).await,
        (_, Some(loc)) => sources::fetch_s3(state, loc, &fetch_key).await,
        _ => unreachable!("exactly one source kind"),
    }
    .inspect_err(|_| {
        let (store, key) = (state.store.clone(), fetch_key.clone());
        tokio::spawn(async move { store.delete(&key).await });
    })?;
    if size == 0 {
        let _ = state.store.delete(&fetch_key).await;
        return Err(ApiError::Unprocessable("the source is empty".into()));
    }
    Ok(Source {
        key: fetch_key,
        size,
        name,
        fetched: true,
    })
}

/// Everything one submission asks for, validated.
struct Submission {
    sources: Vec<SourceSpec>,
    /// Per source, the outputs (the same list for every source).
    outputs: Vec<Output>,
    webhook_url: Option<String>,
    webhook_progress: bool,
    destination: Option<S3Location>,
    archive: bool,
}

/// Resolve sources, check media, charge, record and queue every job of a submission.
async fn submit(state: &AppState, account_id: &str, sub: Submission) -> Result<Value, ApiError> {
    let n_jobs = sub.sources.len() * sub.outputs.len();
    if n_jobs == 0 {
        return Err(ApiError::BadRequest(
            "nothing to do: give at least one source and one output".into(),
        ));
    }
    if n_jobs > MAX_BATCH_JOBS {
        return Err(ApiError::BadRequest(format!(
            "{n_jobs} jobs in one submission; the limit is {MAX_BATCH_JOBS}"
        )));
    }
    if let Some(d) = &sub.destination {
        if d.key.is_some() && n_jobs > 1 {
            return Err(ApiError::BadRequest(
                "output.s3.key names one object; use prefix for several outputs".into(),
            ));
        }
        // Checks the endpoint (and that it is one Kiln may reach) before any work.
        d.connect(state).await?;
    }
    let batch_id = uuid::Uuid::now_v7().to_string();
    let mut resolved: Vec<Source> = Vec::new();
    let cleanup = |resolved: Vec<Source>| {
        let store = state.store.clone();
        async move {
            for s in resolved.into_iter().filter(|s| s.fetched) {
                let _ = store.delete(&s.key).await;
            }
        }
    };
    for (i, s) in sub.sources.iter().enumerate() {
        match resolve_source(state, account_id, s, format!("sources/{batch_id}-{i}")).await {
            Ok(src) => resolved.push(src),
            Err(e) => {
                cleanup(resolved).await;
                return Err(e);
            }
        }
    }
    // Refuse what cannot be done before anything is charged or queued.
    for src in &resolved {
        for o in &sub.outputs {
            if let Output::Video(p) = o {
                if let Err(e) = check_media(state, &src.key, p).await {
                    cleanup(resolved).await;
                    return Err(e);
                }
            }
        }
    }
    let cost: i64 = resolved
        .iter()
        .flat_map(|s| {
            sub.outputs
                .iter()
                .map(move |o| job_cost(matches!(o, Output::Video(_)), s.size))
        })
        .sum();
    if let Err(e) = charge(state, account_id, n_jobs as i64, cost).await {
        cleanup(resolved).await;
        return Err(e);
    }
    let destination = sub
        .destination
        .as_ref()
        .map(|d| serde_json::to_string(d).expect("serialisable"));
    let result: Result<Vec<String>, ApiError> = async {
        sqlx::query(
            "INSERT INTO batches (id, account_id, archive, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&batch_id)
        .bind(account_id)
        .bind(sub.archive as i64)
        .bind(kiln_protocol::now_ms())
        .execute(&state.db.pool)
        .await
        .map_err(ApiError::internal)?;
        let mut specs = Vec::new();
        for src in &resolved {
            for o in &sub.outputs {
                let id = uuid::Uuid::now_v7().to_string();
                let (task, ext, kind, codec) = match o {
                    Output::Video(p) => (
                        Task::Video(p.clone()),
                        p.container.extension().to_string(),
                        "video",
                        Some(p.codec.as_str()),
                    ),
                    Output::Image(f) => (
                        Task::Image(ImageParams { fields: f.clone() }),
                        OutputFormat::parse(&f["format"])
                            .expect("validated")
                            .as_str()
                            .to_string(),
                        "image",
                        None,
                    ),
                };
                let spec = JobSpec {
                    id: id.clone(),
                    attempt: 1,
                    source_key: src.key.clone(),
                    output_key: format!("outputs/{id}.{ext}"),
                    task,
                };
                let spec_json = serde_json::to_string(&spec).map_err(ApiError::internal)?;
                state
                    .db
                    .insert_job(&NewJob {
                        id: &id,
                        account_id,
                        kind,
                        spec: &spec_json,
                        source_key: &src.key,
                        output_key: &spec.output_key,
                        input_name: src.name.as_deref(),
                        input_size: src.size as i64,
                        codec,
                        batch_id: Some(&batch_id),
                        webhook_url: sub.webhook_url.as_deref(),
                        webhook_progress: sub.webhook_progress,
                        destination: destination.as_deref(),
                        credits: job_cost(kind == "video", src.size),
                    })
                    .await?;
                specs.push(spec);
            }
        }
        for spec in &specs {
            state
                .queue
                .enqueue(spec)
                .await
                .map_err(|e| ApiError::Unavailable(format!("job queue unavailable: {e}")))?;
        }
        Ok(specs.into_iter().map(|s| s.id).collect())
    }
    .await;
    let ids = match result {
        Ok(ids) => ids,
        Err(e) => {
            // Not queued means not accepted: take back every job of the submission.
            for row in state
                .db
                .batch_jobs(account_id, &batch_id)
                .await
                .unwrap_or_default()
            {
                let _ = state.queue.cancel(&row.id).await;
            }
            let _ = sqlx::query("DELETE FROM jobs WHERE batch_id = $1")
                .bind(&batch_id)
                .execute(&state.db.pool)
                .await;
            let _ = sqlx::query("DELETE FROM batches WHERE id = $1")
                .bind(&batch_id)
                .execute(&state.db.pool)
                .await;
            uncharge(state, account_id, cost).await;
            cleanup(resolved).await;
            return Err(e);
        }
    };
    for o in &sub.outputs {
        let kind = if matches!(o, Output::Video(_)) {
            "video"
        } else {
            "image"
        };
        state
            .metrics
            .jobs_submitted
            .with_label_values(&[kind])
            .inc_by(resolved.len() as u64);
    }
    let rows = state.db.batch_jobs(account_id, &batch_id).await?;
    debug_assert_eq!(rows.len(), ids.len());
    Ok(json!({
        "batch_id": batch_id,
        "status_url": format!("/api/v1/batches/{batch_id}"),
        "credits_charged": cost,
        "jobs": rows.iter().map(|j| job_json(state, j)).collect::<Vec<_>>(),
    }))
}

/// `POST /jobs`: one source, one job per output.
#[utoipa::path(post, path = "/api/v1/jobs", tag = "jobs", request_body = JobsRequest,
    responses((status = 202, body = crate::api::docs::Submitted),
        (status = 400, body = crate::api::docs::Error), (status = 401, body = crate::api::docs::Error),
        (status = 402, body = crate::api::docs::Error), (status = 403, body = crate::api::docs::Error),
        (status = 404, body = crate::api::docs::Error), (status = 410, body = crate::api::docs::Error),
        (status = 413, body = crate::api::docs::Error), (status = 415, body = crate::api::docs::Error),
        (status = 422, body = crate::api::docs::Error), (status = 429, body = crate::api::docs::Error)))]
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
    let (webhook_url, webhook_progress) =
        webhook_options(&state, req.webhook_url.as_deref(), &req.webhook_events)?;
    let doc = submit(
        &state,
        &principal.account_id,
        Submission {
            sources: vec![req.source],
            outputs,
            webhook_url,
            webhook_progress,
            destination: req.output.map(|d| d.s3),
            archive: req.archive,
        },
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(doc)).into_response())
}

/// `POST /batches`: every source × format × quality × size.
#[utoipa::path(post, path = "/api/v1/batches", tag = "jobs", request_body = BatchRequest,
    responses((status = 202, body = crate::api::docs::Submitted),
        (status = 400, body = crate::api::docs::Error), (status = 401, body = crate::api::docs::Error),
        (status = 402, body = crate::api::docs::Error), (status = 403, body = crate::api::docs::Error),
        (status = 413, body = crate::api::docs::Error), (status = 422, body = crate::api::docs::Error),
        (status = 429, body = crate::api::docs::Error)))]
pub async fn create_batch(
    State(state): State<AppState>,
    auth: Auth,
    body: Result<Json<BatchRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let principal = auth.require("jobs:create")?.clone();
    let Json(req) = body?;
    if req.formats.is_empty() {
        return Err(ApiError::BadRequest("formats: give at least one".into()));
    }
    let qualities: Vec<Option<u8>> = if req.qualities.is_empty() {
        vec![None]
    } else {
        req.qualities.iter().copied().map(Some).collect()
    };
    let sizes: Vec<Option<&str>> = if req.sizes.is_empty() {
        vec![None]
    } else {
        req.sizes.iter().map(|s| Some(s.as_str())).collect()
    };
    let mut outputs = Vec::new();
    for f in &req.formats {
        let video = VideoCodec::parse(f).is_some();
        if !video && OutputFormat::parse(f).is_none() {
            return Err(ApiError::BadRequest(format!(
                "formats: {f:?} is neither an image format (jpg, png, webp, avif, gif, tiff) nor a video codec (h264, h265, av1, vp9)"
            )));
        }
        for q in &qualities {
            for size in &sizes {
                let mut o = serde_json::Map::new();
                if video {
                    o.insert("codec".into(), json!(f));
                    if let Some(size) = size {
                        o.insert("resolution".into(), json!(size));
                    }
                } else {
                    o.insert("type".into(), json!("image"));
                    o.insert("format".into(), json!(f));
                    if let Some(size) = size {
                        match size.split_once(['x', 'X']) {
                            Some((w, h)) => {
                                o.insert("width".into(), json!(w));
                                o.insert("height".into(), json!(h));
                            }
                            None => {
                                o.insert("width".into(), json!(size));
                            }
                        }
                    }
                }
                if let Some(q) = q {
                    o.insert("quality".into(), json!(q));
                }
                outputs.push(parse_output(outputs.len(), &o)?);
            }
        }
    }
    let (webhook_url, webhook_progress) =
        webhook_options(&state, req.webhook_url.as_deref(), &req.webhook_events)?;
    let doc = submit(
        &state,
        &principal.account_id,
        Submission {
            sources: req.sources,
            outputs,
            webhook_url,
            webhook_progress,
            destination: req.output.map(|d| d.s3),
            archive: req.archive,
        },
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(doc)).into_response())
}

async fn load_batch(
    state: &AppState,
    auth: &Auth,
    id: &str,
) -> Result<(bool, Vec<JobRow>), ApiError> {
    let principal = auth.require("jobs:read")?;
    let row = sqlx::query("SELECT archive FROM batches WHERE id = $1 AND account_id = $2")
        .bind(id)
        .bind(&principal.account_id)
        .fetch_optional(&state.db.pool)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::NotFound(format!("no batch {id:?}")))?;
    let archive: i64 = row.try_get("archive").map_err(ApiError::internal)?;
    let jobs = state.db.batch_jobs(&principal.account_id, id).await?;
    Ok((archive != 0, jobs))
}

/// The overall state of a batch from its jobs' states.
pub fn batch_status(jobs: &[JobRow]) -> &'static str {
    let count = |s: JobStatus| jobs.iter().filter(|j| j.status == s).count();
    let n = jobs.len();
    if jobs.iter().any(|j| j.status.is_live()) {
        if count(JobStatus::Pending) == n {
            "pending"
        } else {
            "processing"
        }
    } else if count(JobStatus::Completed) == n {
        "completed"
    } else if count(JobStatus::Completed) > 0 {
        "partial"
    } else if count(JobStatus::Cancelled) == n {
        "cancelled"
    } else {
        "failed"
    }
}

/// `GET /batches/{id}`.
#[utoipa::path(get, path = "/api/v1/batches/{id}", tag = "jobs",
    params(("id" = String, Path, description = "Batch id")),
    responses((status = 200, body = crate::api::docs::Batch), (status = 401, body = crate::api::docs::Error), (status = 404, body = crate::api::docs::Error)))]
pub async fn get_batch(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (archive, jobs) = load_batch(&state, &auth, &id).await?;
    let status = batch_status(&jobs);
    let mut counts = serde_json::Map::new();
    for s in ["pending", "processing", "completed", "failed", "cancelled"] {
        counts.insert(
            s.into(),
            json!(jobs.iter().filter(|j| j.status.as_str() == s).count()),
        );
    }
    let finished = !jobs.iter().any(|j| j.status.is_live());
    let any_done = jobs.iter().any(|j| j.status == JobStatus::Completed);
    Ok(Json(json!({
        "batch_id": id,
        "status": status,
        "counts": counts,
        "jobs": jobs.iter().map(|j| job_json(&state, j)).collect::<Vec<_>>(),
        "archive_url": (archive && finished && any_done).then(|| format!("/api/v1/batches/{id}/archive")),
    })))
}

/// `GET /batches/{id}/archive`: a zip (stored, not recompressed: media is compressed
/// already) of every completed output of a finished batch, streamed while it is written.
#[utoipa::path(get, path = "/api/v1/batches/{id}/archive", tag = "jobs",
    params(("id" = String, Path, description = "Batch id")),
    responses((status = 200, description = "A zip of the outputs", content_type = "application/zip"),
        (status = 401, body = crate::api::docs::Error), (status = 404, body = crate::api::docs::Error),
        (status = 409, body = crate::api::docs::Error), (status = 410, body = crate::api::docs::Error)))]
pub async fn archive(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (archive, jobs) = load_batch(&state, &auth, &id).await?;
    if !archive {
        return Err(ApiError::NotFound(
            "this batch was submitted without `archive: true`".into(),
        ));
    }
    if jobs.iter().any(|j| j.status.is_live()) {
        return Err(ApiError::Conflict(
            "the batch is still running; the archive is ready once every job has finished".into(),
        ));
    }
    let now = kiln_protocol::now_ms();
    let done: Vec<JobRow> = jobs
        .into_iter()
        .filter(|j| j.status == JobStatus::Completed)
        .collect();
    if done.is_empty() {
        return Err(ApiError::Conflict("no job of this batch completed".into()));
    }
    if done
        .iter()
        .any(|j| j.swept_at.is_some() || j.expires_at.is_some_and(|e| e <= now))
    {
        return Err(ApiError::Gone("the batch's outputs have expired".into()));
    }
    let (reader, writer) = tokio::io::duplex(256 << 10);
    let store = state.store.clone();
    tokio::spawn(async move {
        let mut zip = async_zip::base::write::ZipFileWriter::with_tokio(writer);
        for (i, job) in done.iter().enumerate() {
            let (ext, _) = super::jobs::output_format(job);
            let stem = super::jobs::input_stem(job).unwrap_or_else(|| "output".into());
            let name = format!("{:02}_{stem}_{}.{ext}", i + 1, &job.id[job.id.len() - 6..]);
            let entry =
                async_zip::ZipEntryBuilder::new(name.into(), async_zip::Compression::Stored);
            let result: anyhow::Result<()> = async {
                let (src, _) = store.open(&job.output_key).await?;
                let mut w = zip.write_entry_stream(entry).await?;
                futures::io::copy(src.compat(), &mut w).await?;
                w.close().await?;
                Ok(())
            }
            .await;
            if let Err(e) = result {
                tracing::warn!(batch = %job.batch_id.clone().unwrap_or_default(), error = %e, "archive stopped");
                return;
            }
        }
        if let Err(e) = zip.close().await {
            tracing::warn!(error = %e, "could not finish the archive");
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/zip".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"batch-{id}.zip\""),
            ),
        ],
        Body::from_stream(tokio_util::io::ReaderStream::new(reader)),
    )
        .into_response())
}

/// `POST /uploads`: store a file (multipart `file`, streamed) for later `POST /jobs`.
#[utoipa::path(post, path = "/api/v1/uploads", tag = "jobs",
    request_body(content_type = "multipart/form-data", description = "`file`: the media"),
    responses((status = 201, body = crate::api::docs::Upload),
        (status = 400, body = crate::api::docs::Error), (status = 401, body = crate::api::docs::Error),
        (status = 403, body = crate::api::docs::Error), (status = 413, body = crate::api::docs::Error)))]
pub async fn upload(
    State(state): State<AppState>,
    auth: Auth,
    mut multipart: Multipart,
) -> Result<Response, ApiError> {
    let principal = auth.require("jobs:create")?.clone();
    let id = uuid::Uuid::now_v7().to_string();
    let key = format!("uploads/{id}");
    let result: Result<(u64, Option<String>), ApiError> = async {
        let mut got = None;
        while let Some(field) = multipart.next_field().await? {
            let name = field.name().unwrap_or_default().to_string();
            if name != "file" {
                super::small_field(field, &name).await?;
                continue;
            }
            if got.is_some() {
                return Err(ApiError::BadRequest("send exactly one `file` field".into()));
            }
            got = Some(store_file_field(&state, field, &key).await?);
        }
        let (size, filename) = got.ok_or_else(|| {
            ApiError::BadRequest(
                "missing `file` field: send the file as multipart form data".into(),
            )
        })?;
        if size == 0 {
            return Err(ApiError::BadRequest("the uploaded file is empty".into()));
        }
        Ok((size, filename))
    }
    .await;
    let (size, filename) = match result {
        Ok(v) => v,
        Err(e) => {
            if matches!(e, ApiError::PayloadTooLarge(_)) {
                super::drain(&mut multipart).await;
            }
            let _ = state.store.delete(&key).await;
            return Err(e);
        }
    };
    let now = kiln_protocol::now_ms();
    let expires = now + state.config.upload_ttl_secs as i64 * 1000;
    sqlx::query(
        "INSERT INTO uploads (id, account_id, object_key, filename, size, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&id)
    .bind(&principal.account_id)
    .bind(&key)
    .bind(filename.as_deref())
    .bind(size as i64)
    .bind(now)
    .bind(expires)
    .execute(&state.db.pool)
    .await
    .map_err(ApiError::internal)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "upload_id": id,
            "size": size,
            "filename": filename,
            "expires_at": super::time::rfc3339(expires),
        })),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn outputs_are_typed_by_their_fields() {
        assert!(matches!(
            parse_output(
                0,
                &obj(json!({"codec": "h265", "quality": 28, "resolution": "720p"}))
            ),
            Ok(Output::Video(_))
        ));
        assert!(matches!(
            parse_output(0, &obj(json!({"format": "webp", "width": 300}))),
            Ok(Output::Image(_))
        ));
        assert!(matches!(
            parse_output(0, &obj(json!({"format": "mkv"}))),
            Ok(Output::Video(_))
        ));
        for bad in [
            json!({"codec": "h266"}),
            json!({"type": "audio"}),
            json!({"type": "image"}),
            json!({"format": "webp", "width": 0}),
            json!({"codec": "h264", "quality": [1]}),
            json!({"format": "png", "fit": "squash"}),
        ] {
            assert!(
                matches!(parse_output(3, &obj(bad.clone())), Err(ApiError::BadRequest(m)) if m.contains("outputs[3]")),
                "{bad}"
            );
        }
    }

    #[test]
    fn costs() {
        assert_eq!(job_cost(false, 10 << 30), 1);
        assert_eq!(job_cost(true, 1), 1);
        assert_eq!(job_cost(true, 100 << 20), 1);
        assert_eq!(job_cost(true, (100 << 20) + 1), 2);
    }
}
