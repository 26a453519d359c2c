//! `GET /api/v1/status/{id}` and `GET /api/v1/download/{id}`.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use kiln_protocol::video::BYTES_PER_MB;
use kiln_protocol::{Container, JobSpec, StoreError, Task};
use serde_json::{json, Value};
use tokio_util::io::ReaderStream;

use super::time::rfc3339;
use crate::auth::Auth;
use crate::db::{JobRow, JobStatus};
use crate::error::ApiError;
use crate::AppState;

/// The container a job writes.
fn container_of(job: &JobRow) -> Container {
    serde_json::from_str::<JobSpec>(&job.spec)
        .ok()
        .map(|s| match s.task {
            Task::Video(p) => p.container,
        })
        .unwrap_or_default()
}

/// The status document of a job.
pub fn job_json(job: &JobRow) -> Value {
    let spec: Value = serde_json::from_str(&job.spec).unwrap_or(Value::Null);
    let task = &spec["task"];
    let container = container_of(job);
    let report: Value = job
        .report
        .as_deref()
        .and_then(|r| serde_json::from_str(r).ok())
        .unwrap_or(Value::Null);
    let completed = job.status == JobStatus::Completed;
    let ratio = match job.output_size {
        Some(out) if completed && out > 0 => {
            Some(((job.input_size as f64 / out as f64) * 100.0).round() / 100.0)
        }
        _ => None,
    };
    let error = job
        .error_code
        .as_ref()
        .filter(|_| job.status == JobStatus::Failed)
        .map(
            |code| json!({"code": code, "message": job.error_message.clone().unwrap_or_default()}),
        );
    json!({
        "job_id": job.id,
        "status": job.status.as_str(),
        "progress": (job.progress * 10.0).round() / 10.0,
        "fps": job.fps.filter(|_| job.status == JobStatus::Processing),
        "eta_seconds": job.eta_s.filter(|_| job.status == JobStatus::Processing),
        "input_size": job.input_size,
        "output_size": job.output_size.filter(|_| completed),
        "compression_ratio": ratio,
        "codec": task["codec"],
        "method": task["rate"]["method"],
        "quality": task["rate"]["quality"],
        "bitrate": task["rate"]["kbps"],
        "target_size": task["rate"]["target_mb"].as_f64().map(|mb| (mb * BYTES_PER_MB).round() as u64),
        "format": container.extension(),
        "output": completed.then(|| json!({
            "width": job.output_width,
            "height": job.output_height,
            "duration": job.output_duration,
            "format": container.extension(),
            "size": job.output_size,
        })),
        "encoding": report,
        "download_url": completed.then(|| format!("/api/v1/download/{}", job.id)),
        "attempts": job.attempts,
        "error": error,
        "created_at": rfc3339(job.created_at),
        "started_at": job.started_at.map(rfc3339),
        "completed_at": job.completed_at.map(rfc3339),
    })
}

async fn load(state: &AppState, auth: &Auth, id: &str) -> Result<JobRow, ApiError> {
    let principal = auth.require("jobs:read")?;
    // Ids are UUIDs; anything else cannot exist and need not reach the database.
    if uuid::Uuid::parse_str(id).is_err() {
        return Err(ApiError::NotFound(format!("no job {id:?}")));
    }
    state
        .db
        .get_job(&principal.account_id, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no job {id:?}")))
}

/// Current status, progress and result of a job.
pub async fn status(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(job_json(&load(&state, &auth, &id).await?)))
}

/// Stream a completed job's output.
pub async fn download(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = load(&state, &auth, &id).await?;
    if job.status != JobStatus::Completed {
        return Err(ApiError::Conflict(format!(
            "job is {}; the output can be downloaded once it is completed",
            job.status.as_str()
        )));
    }
    let (reader, size) = state
        .store
        .open(&job.output_key)
        .await
        .map_err(|e| match e {
            StoreError::NotFound(_) => ApiError::NotFound("the output is no longer stored".into()),
            other => ApiError::internal(other),
        })?;
    let container = container_of(&job);
    let stem = job
        .input_name
        .as_deref()
        .and_then(|n| std::path::Path::new(n).file_stem())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| job.id.clone());
    // Keep the suggested name to characters that need no quoting rules.
    let safe: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    Ok((
        [
            (header::CONTENT_TYPE, container.mime().to_string()),
            (header::CONTENT_LENGTH, size.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"{safe}_compressed.{}\"",
                    container.extension()
                ),
            ),
        ],
        Body::from_stream(ReaderStream::new(reader)),
    )
        .into_response())
}
