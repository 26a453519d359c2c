//! Reading and cancelling jobs: `GET /status/{id}` and `GET /download/{id}` (Konvrt's shape),
//! `GET /jobs`, `GET /jobs/{id}`, `DELETE /jobs/{id}`, `GET /jobs/{id}/download`, and the
//! status document they all share.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hmac::{Hmac, Mac};
use kiln_gpu_node::imaging::OutputFormat;
use kiln_protocol::video::BYTES_PER_MB;
use kiln_protocol::{Container, JobSpec, StoreError, Task};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio_util::io::ReaderStream;

use super::time::rfc3339;
use crate::auth::Auth;
use crate::db::{JobRow, JobStatus};
use crate::error::ApiError;
use crate::AppState;

/// What a job writes: its extension and Content-Type.
pub fn output_format(job: &JobRow) -> (String, String) {
    match serde_json::from_str::<JobSpec>(&job.spec).map(|s| s.task) {
        Ok(Task::Video(p)) => (
            p.container.extension().to_string(),
            p.container.mime().to_string(),
        ),
        Ok(Task::Image(p)) => {
            let f = p
                .fields
                .get("format")
                .and_then(|f| OutputFormat::parse(f))
                .unwrap_or(OutputFormat::Jpeg);
            (f.as_str().to_string(), f.mime().to_string())
        }
        Err(_) => {
            let c = Container::default();
            (c.extension().to_string(), c.mime().to_string())
        }
    }
}

/// HMAC-SHA256 of `<job id>.<expires>` with the server's signing key, hex.
pub fn download_signature(key: &str, job_id: &str, expires: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("any key length");
    mac.update(format!("{job_id}.{expires}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// A download link that needs no key, valid until `expires_ms`.
pub fn signed_download_url(state: &AppState, job_id: &str, expires_ms: i64) -> String {
    let expires = expires_ms / 1000;
    format!(
        "/api/v1/download/{job_id}?expires={expires}&signature={}",
        download_signature(&state.signing_key, job_id, expires)
    )
}

/// The status document of a job (the same for `/status/{id}`, `/jobs/{id}`, lists and
/// webhooks).
pub fn job_json(state: &AppState, job: &JobRow) -> Value {
    let spec: Value = serde_json::from_str(&job.spec).unwrap_or(Value::Null);
    let task = &spec["task"];
    let (ext, _) = output_format(job);
    let report: Value = job
        .report
        .as_deref()
        .and_then(|r| serde_json::from_str(r).ok())
        .unwrap_or(Value::Null);
    let now = kiln_protocol::now_ms();
    let completed = job.status == JobStatus::Completed;
    let expired = completed && (job.swept_at.is_some() || job.expires_at.is_some_and(|e| e <= now));
    let ratio = match job.output_size {
        Some(out) if completed && out > 0 => {
            Some(((job.input_size as f64 / out as f64) * 100.0).round() / 100.0)
        }
        _ => None,
    };
    let saved_percent = match job.output_size {
        Some(out) if completed && job.input_size > 0 => {
            Some(((1.0 - out as f64 / job.input_size as f64) * 100.0).round() as i64)
        }
        _ => None,
    };
    let error = job
        .error_code
        .as_ref()
        .filter(|_| matches!(job.status, JobStatus::Failed | JobStatus::Cancelled))
        .map(
            |code| json!({"code": code, "message": job.error_message.clone().unwrap_or_default()}),
        );
    let stem = download_stem(job);
    let download = (completed && !expired).then(|| format!("/api/v1/download/{}", job.id));
    let signed = (completed && !expired)
        .then(|| {
            job.expires_at
                .map(|e| signed_download_url(state, &job.id, e))
        })
        .flatten();
    let expires_at = job.expires_at.filter(|_| completed).map(rfc3339);
    let destination: Option<Value> = job
        .destination_status
        .as_ref()
        .map(|s| json!({"status": s, "error": job.destination_error}));
    json!({
        "job_id": job.id,
        "id": job.id,
        "batch_id": job.batch_id,
        "kind": job.kind,
        "status": job.status.as_str(),
        "progress": (job.progress * 10.0).round() / 10.0,
        "fps": job.fps.filter(|_| job.status == JobStatus::Processing),
        "eta_seconds": job.eta_s.filter(|_| job.status == JobStatus::Processing),
        "input": {"filename": job.input_name, "size_bytes": job.input_size},
        "input_size": job.input_size,
        "output_size": job.output_size.filter(|_| completed),
        "compression_ratio": ratio,
        "codec": task["codec"],
        "method": task["rate"]["method"],
        "quality": task["rate"]["quality"],
        "encoder_crf": task["rate"]["crf"],
        "bitrate": task["rate"]["kbps"],
        "target_size": task["rate"]["target_mb"].as_f64().map(|mb| (mb * BYTES_PER_MB).round() as u64),
        "target_vmaf": task["rate"]["target"],
        "vmaf": report.get("vmaf"),
        "format": ext,
        "output": completed.then(|| json!({
            "filename": format!("{stem}_compressed.{ext}"),
            "size_bytes": job.output_size,
            "compression_ratio": saved_percent,
            "download_url": download,
            "signed_download_url": signed,
            "expires_at": expires_at,
            "expired": expired,
            "width": job.output_width,
            "height": job.output_height,
            "duration": job.output_duration,
            "format": ext,
            "size": job.output_size,
        })),
        "encoding": report,
        "download_url": download,
        "signed_download_url": signed,
        "expires_at": expires_at,
        "destination": destination,
        "credits_charged": job.credits_charged,
        "attempts": job.attempts,
        "node_id": job.node_id,
        "dead_letter": job.status == JobStatus::Failed && job.error_code.as_deref() == Some("dead_letter"),
        "error": error,
        "created_at": rfc3339(job.created_at),
        "started_at": job.started_at.map(rfc3339),
        "completed_at": job.completed_at.map(rfc3339),
    })
}

/// The source's file name without its extension, if the job has one.
pub fn input_stem(job: &JobRow) -> Option<String> {
    job.input_name
        .as_deref()
        .and_then(|n| std::path::Path::new(n).file_stem())
        .map(|s| s.to_string_lossy().into_owned())
}

/// The file-name stem downloads are offered under (the upload's name, made header-safe).
fn download_stem(job: &JobRow) -> String {
    let stem = input_stem(job).unwrap_or_else(|| job.id.clone());
    stem.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

async fn load(state: &AppState, auth: &Auth, id: &str, scope: &str) -> Result<JobRow, ApiError> {
    let principal = auth.require(scope)?;
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

/// The full document of one job: status, webhook deliveries, and why it waits.
pub async fn full_json(state: &AppState, job: &JobRow) -> Value {
    let mut doc = job_json(state, job);
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
    if let Some(url) = &job.webhook_url {
        doc["webhook"] = json!({
            "url": url,
            "deliveries": crate::webhooks::deliveries(state, &job.id).await,
        });
    }
    doc
}

/// `GET /status/{id}` (Konvrt) and `GET /jobs/{id}`: current status, progress and result of a
/// job. A pending job whose requirements no live node meets says so in `waiting_reason`.
#[utoipa::path(get, path = "/api/v1/status/{id}", tag = "konvrt",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, body = crate::api::docs::Job), (status = 401, body = crate::api::docs::Error), (status = 404, body = crate::api::docs::Error)))]
pub async fn status(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let job = load(&state, &auth, &id, "jobs:read").await?;
    Ok(Json(full_json(&state, &job).await))
}

/// `GET /jobs/{id}`.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, body = crate::api::docs::Job), (status = 401, body = crate::api::docs::Error), (status = 404, body = crate::api::docs::Error)))]
pub async fn get_job(
    state: State<AppState>,
    auth: Auth,
    id: Path<String>,
) -> Result<Json<Value>, ApiError> {
    status(state, auth, id).await
}

/// Query of `GET /jobs`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    /// 1–100, default 20.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only jobs in this status.
    pub status: Option<String>,
}

/// `GET /jobs`: the account's jobs, newest first, a page at a time.
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", params(ListQuery),
    responses((status = 200, body = crate::api::docs::JobList), (status = 400, body = crate::api::docs::Error), (status = 401, body = crate::api::docs::Error)))]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let principal = auth.require("jobs:read")?;
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be from 1 to 100, got {limit}"
        )));
    }
    let status = q
        .status
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| {
            JobStatus::parse_name(s).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "status must be pending, processing, completed, failed or cancelled, got {s:?}"
                ))
            })
        })
        .transpose()?;
    let before = q
        .cursor
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(decode_cursor)
        .transpose()?;
    let mut rows = state
        .db
        .list_jobs(&principal.account_id, before.as_deref(), status, limit + 1)
        .await?;
    let has_more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = has_more
        .then(|| rows.last().map(|j| encode_cursor(&j.id)))
        .flatten();
    Ok(Json(json!({
        "jobs": rows.iter().map(|j| job_json(&state, j)).collect::<Vec<_>>(),
        "next_cursor": next_cursor,
        "has_more": has_more,
    })))
}

/// Cursors are opaque to clients: the last job id of a page, tagged and hex-encoded.
pub fn encode_cursor(id: &str) -> String {
    hex::encode(format!("k1:{id}"))
}

fn decode_cursor(c: &str) -> Result<String, ApiError> {
    let bad = || ApiError::BadRequest("cursor is not one this API returned".into());
    let raw = hex::decode(c).map_err(|_| bad())?;
    let s = String::from_utf8(raw).map_err(|_| bad())?;
    let id = s.strip_prefix("k1:").ok_or_else(bad)?;
    uuid::Uuid::parse_str(id).map_err(|_| bad())?;
    Ok(id.to_string())
}

/// `DELETE /jobs/{id}`: cancel a pending or running job. A running encode stops on its node
/// within about a second and its partial output is removed; credits are refunded.
#[utoipa::path(delete, path = "/api/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, body = crate::api::docs::Job), (status = 401, body = crate::api::docs::Error), (status = 403, body = crate::api::docs::Error), (status = 404, body = crate::api::docs::Error), (status = 409, body = crate::api::docs::Error)))]
pub async fn cancel(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let job = load(&state, &auth, &id, "jobs:cancel").await?;
    if !job.status.is_live() {
        return Err(ApiError::Conflict(format!(
            "job is {}; only pending or processing jobs can be cancelled",
            job.status.as_str()
        )));
    }
    // The queue first, so a node that is about to start it, or is running it, stops.
    state
        .queue
        .cancel(&job.id)
        .await
        .map_err(|e| ApiError::Unavailable(format!("job queue unavailable: {e}")))?;
    if state.db.mark_cancelled(&job.id).await? {
        state.db.refund(&job.id).await?;
        state
            .metrics
            .jobs_finished
            .with_label_values(&["cancelled"])
            .inc();
        let _ = state.store.delete(&job.output_key).await;
    }
    let job = state
        .db
        .get_job_any(&job.id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no job {id:?}")))?;
    if job.status == JobStatus::Cancelled {
        if let Err(e) = crate::webhooks::record(&state, &job, "job.cancelled").await {
            tracing::warn!(job = %job.id, error = %e, "could not record the webhook");
        }
    }
    Ok(Json(full_json(&state, &job).await))
}

/// Query of a pre-signed download link.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct SignedQuery {
    /// Unix seconds after which the link is dead.
    pub expires: Option<i64>,
    /// HMAC of the job id and `expires`, from `signed_download_url`.
    pub signature: Option<String>,
}

/// A single byte range from a `Range` header, resolved against `size`: `Ok(None)` means
/// "send the whole object" (no header, or a form Kiln does not serve, such as several ranges),
/// `Err` means unsatisfiable (416).
pub(crate) fn parse_range(
    header: Option<&str>,
    size: u64,
) -> Result<Option<std::ops::Range<u64>>, ()> {
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

/// `GET /download/{id}` (Konvrt): stream a completed job's output, with a key, or with
/// `expires` and `signature` from `signed_download_url` and no key. Honours `Range`. 409
/// until the job completes, 410 once the output expired.
#[utoipa::path(get, path = "/api/v1/download/{id}", tag = "konvrt",
    params(("id" = String, Path, description = "Job id"), SignedQuery),
    responses((status = 200, description = "The output file", content_type = "application/octet-stream"),
        (status = 206, description = "Part of the output file (Range)"),
        (status = 401, body = crate::api::docs::Error), (status = 403, body = crate::api::docs::Error),
        (status = 404, body = crate::api::docs::Error), (status = 409, body = crate::api::docs::Error),
        (status = 410, body = crate::api::docs::Error), (status = 416, body = crate::api::docs::Error)))]
pub async fn download(
    State(state): State<AppState>,
    auth: Result<Auth, ApiError>,
    Path(id): Path<String>,
    Query(signed): Query<SignedQuery>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let job = match (&signed.signature, auth) {
        (Some(sig), _) => {
            let expires = signed.expires.ok_or_else(|| {
                ApiError::BadRequest("a signed link needs `expires` and `signature`".into())
            })?;
            let want = download_signature(&state.signing_key, &id, expires);
            // Compare in constant time: the signature is a secret-derived value.
            let ok = want.len() == sig.len()
                && want
                    .bytes()
                    .zip(sig.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0;
            if !ok {
                return Err(ApiError::Forbidden("invalid download signature".into()));
            }
            if expires * 1000 <= kiln_protocol::now_ms() {
                return Err(ApiError::Gone("this download link has expired".into()));
            }
            state
                .db
                .get_job_any(&id)
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("no job {id:?}")))?
        }
        (None, Ok(auth)) => load(&state, &auth, &id, "jobs:read").await?,
        (None, Err(e)) => return Err(e),
    };
    stream_output(&state, &job, &headers).await
}

/// `GET /jobs/{id}/download`: the same as `GET /download/{id}`.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/download", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, description = "The output file", content_type = "application/octet-stream"),
        (status = 206, description = "Part of the output file (Range)"),
        (status = 401, body = crate::api::docs::Error), (status = 404, body = crate::api::docs::Error),
        (status = 409, body = crate::api::docs::Error), (status = 410, body = crate::api::docs::Error),
        (status = 416, body = crate::api::docs::Error)))]
pub async fn job_download(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let job = load(&state, &auth, &id, "jobs:read").await?;
    stream_output(&state, &job, &headers).await
}

/// Answer with a job's output: 409 before completion, 410 after expiry, `Range` honoured.
pub async fn stream_output(
    state: &AppState,
    job: &JobRow,
    headers: &axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    if job.status != JobStatus::Completed {
        return Err(ApiError::Conflict(format!(
            "job is {}; the output can be downloaded once it is completed",
            job.status.as_str()
        )));
    }
    if job.swept_at.is_some() || job.expires_at.is_some_and(|e| e <= kiln_protocol::now_ms()) {
        return Err(ApiError::Gone(
            "the output has expired and is no longer stored".into(),
        ));
    }
    let gone = |e: StoreError| match e {
        StoreError::NotFound(_) => ApiError::Gone("the output is no longer stored".into()),
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
    let (ext, mime) = output_format(job);
    let safe = download_stem(job);
    let mut resp = (
        [
            (header::CONTENT_TYPE, mime),
            (header::CONTENT_LENGTH, len.to_string()),
            (header::ACCEPT_RANGES, "bytes".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{safe}_compressed.{ext}\""),
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
