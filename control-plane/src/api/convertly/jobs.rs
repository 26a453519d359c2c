//! Convertly's async jobs: `POST /api/jobs` stores the files (streamed) and submits one Kiln
//! batch — a job per file with that file's settings; `GET /api/jobs/{id}` is the batch seen the
//! Convertly way; `DELETE /api/jobs/{id}` cancels a job none of whose files has started (409
//! otherwise, as Convertly's docs say).

use axum::extract::{Multipart, Path, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Serialize;
use tokio::io::AsyncReadExt;
use utoipa::ToSchema;

use super::form::{Kind, Settings};
use super::{Error, ErrorBody};
use crate::api::multipart;
use crate::auth::Auth;
use crate::db::{JobRow, JobStatus};
use crate::dialect::Dialect;
use crate::error::ApiError;
use crate::submission::{self, Outputs, Source, Submission, Webhook};
use crate::time::rfc3339;
use crate::views::BatchStatus;
use crate::AppState;

/// `POST /api/jobs`' answer.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ConvertlyQueued)]
pub struct Queued {
    #[serde(rename = "jobId")]
    pub job_id: String,
    /// `pending`.
    pub status: String,
}

/// One file's result.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ConvertlyResult)]
#[serde(rename_all = "camelCase")]
pub struct FileResult {
    /// The output's file name.
    pub filename: String,
    pub original_filename: Option<String>,
    /// pending, processing, completed, failed or cancelled.
    pub status: String,
    pub original_size: i64,
    pub final_size: Option<i64>,
    pub saved_percent: Option<i64>,
    pub mime_type: String,
    /// Absolute; works without a key until it expires.
    pub download_url: Option<String>,
    pub error: Option<String>,
}

/// `GET /api/jobs/{id}`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ConvertlyJob)]
#[serde(rename_all = "camelCase")]
pub struct JobDetail {
    pub job_id: String,
    /// convert or compress.
    pub job_type: String,
    /// pending, processing, completed or failed.
    pub status: String,
    pub total_files: usize,
    pub completed_files: usize,
    pub failed_files: usize,
    /// 0–100.
    pub progress: i64,
    pub error_message: Option<String>,
    pub results: Vec<FileResult>,
    /// With `createArchive=true`, once every file finished: a zip of the outputs (key needed).
    pub archive_url: Option<String>,
    pub created_at: String,
    pub completed_at: Option<String>,
}

/// `DELETE /api/jobs/{id}`'s answer.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ConvertlyCancelled)]
pub struct Cancelled {
    #[serde(rename = "jobId")]
    pub job_id: String,
    /// `cancelled`.
    pub status: String,
}

/// `POST /api/jobs`: store the files and queue them as one job.
#[utoipa::path(post, path = "/convertly/api/jobs", tag = "convertly",
    request_body(content_type = "multipart/form-data", description = "`files` (repeated), jobType (convert|compress), format or formats (JSON array, one per file), compression or compressions, resize or resizes, resizeWidth(s), resizeHeight(s), saveToStorage, createArchive"),
    responses((status = 200, body = Queued),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 402, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    auth: Auth,
    mut multipart: Multipart,
) -> Result<Json<Queued>, Error> {
    let principal = auth.require("jobs:create")?.clone();
    let mut stored: Vec<(String, u64, Option<String>)> = Vec::new();
    let result = async {
        let mut fields = std::collections::HashMap::new();
        while let Some(field) = multipart.next_field().await? {
            let name = field.name().unwrap_or_default().to_string();
            if name == "files" || name.starts_with("files[") || name == "files.items" {
                let key = format!("sources/{}", uuid::Uuid::now_v7());
                let (size, filename) = multipart::store_file_field(&state, field, &key).await?;
                stored.push((key, size, filename));
            } else {
                fields.insert(name.clone(), multipart::small_field(field, &name).await?);
            }
        }
        let settings = Settings(fields);
        if stored.is_empty() {
            return Err(ApiError::BadRequest("send the files as `files` fields".into()).into());
        }
        if stored.iter().any(|(_, size, _)| *size == 0) {
            return Err(ApiError::BadRequest("an uploaded file is empty".into()).into());
        }
        settings.refuse_unsupported(stored.len())?;
        let compress = match settings.0.get("jobType").map(|s| s.trim()) {
            None | Some("" | "convert") => false,
            Some("compress") => true,
            Some(other) => {
                return Err(ApiError::BadRequest(format!(
                    "jobType must be convert or compress, got {other:?}"
                ))
                .into())
            }
        };
        let mut kinds = Vec::new();
        for (key, _, _) in &stored {
            kinds.push(Kind::sniff(&head(&state, key).await?));
        }
        let outputs = settings.outputs(compress, &kinds)?;
        let accepted = submission::submit(
            &state,
            Submission {
                account_id: principal.account_id.clone(),
                sources: stored
                    .iter()
                    .map(|(key, size, name)| Source::Stored {
                        key: key.clone(),
                        size: *size,
                        name: name.clone(),
                    })
                    .collect(),
                outputs: Outputs::PerSource(outputs.into_iter().map(|o| vec![o]).collect()),
                dialect: Dialect::Convertly,
                dialect_data: Some(
                    serde_json::json!({"jobType": if compress { "compress" } else { "convert" }})
                        .to_string(),
                ),
                webhook: Webhook::default(),
                destination: None,
                archive: settings.flag("createArchive", false)?,
                batch: true,
                job_id: None,
            },
        )
        .await?;
        Ok::<_, Error>(accepted)
    }
    .await;
    match result {
        Ok(accepted) => Ok(Json(Queued {
            job_id: accepted.batch_id.unwrap_or_default(),
            status: "pending".into(),
        })),
        Err(e) => {
            if matches!(e.error, ApiError::PayloadTooLarge(_)) {
                multipart::drain(&mut multipart).await;
            }
            for (key, _, _) in &stored {
                let _ = state.store.delete(key).await;
            }
            Err(e)
        }
    }
}

/// The first bytes of a stored file (enough to tell an image's format).
async fn head(state: &AppState, key: &str) -> Result<Vec<u8>, ApiError> {
    let size = state.store.size(key).await?;
    let (mut r, _) = state.store.open_range(key, 0..size.min(64)).await?;
    let mut buf = Vec::new();
    r.read_to_end(&mut buf).await.map_err(ApiError::internal)?;
    Ok(buf)
}

async fn load(state: &AppState, auth: &Auth, id: &str, scope: &str) -> Result<Vec<JobRow>, Error> {
    let principal = auth.require(scope)?;
    let missing = || ApiError::NotFound(format!("no job {id:?}"));
    if uuid::Uuid::parse_str(id).is_err() {
        return Err(missing().into());
    }
    state
        .db
        .get_batch(&principal.account_id, id)
        .await?
        .ok_or_else(missing)?;
    Ok(state.db.batch_jobs(&principal.account_id, id).await?)
}

fn file_result(state: &AppState, job: &JobRow, headers: &HeaderMap) -> FileResult {
    let (ext, mime) = job.output_format();
    let done = job.status == JobStatus::Completed;
    FileResult {
        filename: format!(
            "{}.{ext}",
            job.input_stem().unwrap_or_else(|| job.id.clone())
        ),
        original_filename: job.input_name.clone(),
        status: job.status.as_str().into(),
        original_size: job.input_size,
        final_size: job.output_size.filter(|_| done),
        saved_percent: job
            .output_size
            .filter(|_| done && job.input_size > 0)
            .map(|o| ((1.0 - o as f64 / job.input_size as f64) * 100.0).round() as i64),
        mime_type: mime.into(),
        download_url: crate::webhooks::payload::absolute_download(state, job, Some(headers)),
        error: matches!(job.status, JobStatus::Failed | JobStatus::Cancelled)
            .then(|| job.error_message.clone())
            .flatten(),
    }
}

/// `GET /api/jobs/{id}`.
#[utoipa::path(get, path = "/convertly/api/jobs/{id}", tag = "convertly",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, body = JobDetail), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<JobDetail>, Error> {
    let jobs = load(&state, &auth, &id, "jobs:read").await?;
    let batch = state
        .db
        .get_batch(&auth.0.account_id, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no job {id:?}")))?;
    let n = jobs.len();
    let count = |s: JobStatus| jobs.iter().filter(|j| j.status == s).count();
    let (completed, failed) = (
        count(JobStatus::Completed),
        count(JobStatus::Failed) + count(JobStatus::Cancelled),
    );
    let (status, error) = match BatchStatus::of(&jobs) {
        BatchStatus::Pending => ("pending", None),
        BatchStatus::Processing => ("processing", None),
        BatchStatus::Completed => ("completed", None),
        BatchStatus::Partial => ("completed", Some(format!("{failed} of {n} files failed"))),
        BatchStatus::Failed => ("failed", jobs.iter().find_map(|j| j.error_message.clone())),
        BatchStatus::Cancelled => ("failed", Some("the job was cancelled".into())),
    };
    let progress = if n == 0 {
        0
    } else {
        (jobs.iter().map(|j| j.progress).sum::<f64>() / n as f64).round() as i64
    };
    let finished = !jobs.iter().any(|j| j.status.is_live());
    let kept: serde_json::Value = jobs
        .first()
        .and_then(|j| j.dialect_data.as_deref())
        .and_then(|d| serde_json::from_str(d).ok())
        .unwrap_or_default();
    Ok(Json(JobDetail {
        job_id: id.clone(),
        job_type: kept["jobType"].as_str().unwrap_or("convert").into(),
        status: status.into(),
        total_files: n,
        completed_files: completed,
        failed_files: failed,
        progress,
        error_message: error,
        results: jobs
            .iter()
            .map(|j| file_result(&state, j, &headers))
            .collect(),
        archive_url: (batch.archive && finished && completed > 0).then(|| {
            format!(
                "{}/api/v1/batches/{id}/archive",
                state.public_base(Some(&headers))
            )
        }),
        created_at: rfc3339(batch.created_at),
        completed_at: finished
            .then(|| jobs.iter().filter_map(|j| j.completed_at).max())
            .flatten()
            .map(rfc3339),
    }))
}

/// `DELETE /api/jobs/{id}`: cancel a job whose files are all still waiting.
#[utoipa::path(delete, path = "/convertly/api/jobs/{id}", tag = "convertly",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, body = Cancelled), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Cancelled>, Error> {
    let jobs = load(&state, &auth, &id, "jobs:cancel").await?;
    if jobs.iter().any(|j| j.status != JobStatus::Pending) {
        return Err(ApiError::Conflict(
            "only a pending job can be cancelled; processing, completed and failed jobs cannot"
                .into(),
        )
        .into());
    }
    for job in &jobs {
        crate::api::native::jobs::cancel_job(&state, job).await?;
    }
    Ok(Json(Cancelled {
        job_id: id,
        status: "cancelled".into(),
    }))
}
