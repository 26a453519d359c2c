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
        "node_id": job.node_id,
        "dead_letter": job.status == JobStatus::Failed && job.error_code.as_deref() == Some("dead_letter"),
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

/// Current status, progress and result of a job. A pending job whose requirements no live
/// node meets says so in `waiting_reason` instead of waiting silently.
pub async fn status(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let job = load(&state, &auth, &id).await?;
    let mut doc = job_json(&job);
    if job.status == JobStatus::Pending {
        if let (Ok(spec), Ok(nodes)) = (
            serde_json::from_str::<JobSpec>(&job.spec),
            state.queue.nodes().await,
        ) {
            doc["waiting_reason"] = json!(kiln_protocol::node::unschedulable_reason(
                &spec.class(),
                &nodes,
                state.config.node_live_ms()
            ));
        }
    }
    Ok(Json(doc))
}

/// A single byte range from a `Range` header, resolved against `size`: `Ok(None)` means
/// "send the whole object" (no header, or a form Kiln does not serve, such as several ranges),
/// `Err` means unsatisfiable (416).
pub fn parse_range(header: Option<&str>, size: u64) -> Result<Option<std::ops::Range<u64>>, ()> {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        // The last `b` bytes.
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 {
            return Err(());
        }
        size.saturating_sub(n)..size
    } else {
        let start: u64 = a.parse().map_err(|_| ())?;
        let end = if b.is_empty() {
            size
        } else {
            let last: u64 = b.parse().map_err(|_| ())?;
            if last < start {
                return Err(());
            }
            (last + 1).min(size)
        };
        start..end
    };
    if range.start >= size {
        return Err(());
    }
    Ok(Some(range))
}

/// Stream a completed job's output.
pub async fn download(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let job = load(&state, &auth, &id).await?;
    if job.status != JobStatus::Completed {
        return Err(ApiError::Conflict(format!(
            "job is {}; the output can be downloaded once it is completed",
            job.status.as_str()
        )));
    }
    let gone = |e: StoreError| match e {
        StoreError::NotFound(_) => ApiError::NotFound("the output is no longer stored".into()),
        other => ApiError::internal(other),
    };
    let size = state.store.size(&job.output_key).await.map_err(gone)?;
    let range = parse_range(
        headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
        size,
    )
    .map_err(|()| ApiError::RangeNotSatisfiable { size })?;
    let (reader, len) = match &range {
        Some(r) => state.store.open_range(&job.output_key, r.clone()).await,
        None => state.store.open(&job.output_key).await,
    }
    .map_err(gone)?;
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
    let mut resp = (
        [
            (header::CONTENT_TYPE, container.mime().to_string()),
            (header::CONTENT_LENGTH, len.to_string()),
            (header::ACCEPT_RANGES, "bytes".to_string()),
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
        .into_response();
    if let Some(r) = range {
        *resp.status_mut() = axum::http::StatusCode::PARTIAL_CONTENT;
        resp.headers_mut().insert(
            header::CONTENT_RANGE,
            format!("bytes {}-{}/{size}", r.start, r.end - 1)
                .parse()
                .expect("ASCII header"),
        );
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    type Case<'a> = (Option<&'a str>, Result<Option<std::ops::Range<u64>>, ()>);

    #[test]
    fn ranges() {
        let size = 1000;
        // (header, expected)
        let cases: &[Case] = &[
            (None, Ok(None)),
            (Some("bytes=0-99"), Ok(Some(0..100))),
            (Some("bytes=900-"), Ok(Some(900..1000))),
            (Some("bytes=-100"), Ok(Some(900..1000))),
            (Some("bytes=-5000"), Ok(Some(0..1000))),
            (Some("bytes=990-5000"), Ok(Some(990..1000))),
            (Some("bytes=0-0"), Ok(Some(0..1))),
            (Some("bytes=0-1,5-6"), Ok(None)),
            (Some("items=0-5"), Ok(None)),
            (Some("bytes=1000-"), Err(())),
            (Some("bytes=5-2"), Err(())),
            (Some("bytes=-0"), Err(())),
            (Some("bytes=a-b"), Err(())),
        ];
        for (h, want) in cases {
            assert_eq!(parse_range(*h, size), *want, "{h:?}");
        }
    }
}
