//! What a webhook delivery carries, per scheme:
//! - Kiln's (`kiln`): `{id, type, created_at, data: <the job document>}`, and beside them
//!   Konvrt's flat fields — `event`, `job_id`, `status`, `output: {download_url, size_bytes,
//!   expires_at}`, `error` (a string), `timestamp` — so receivers written for either work;
//!   signed `Kiln-Signature: t=…,v1=…`.
//! - Convertrilo's (`convertrilo`, its managed webhooks): `{event, timestamp, data: {jobId,
//!   status, …}}`, signed `X-Webhook-Signature: hex(HMAC-SHA256(secret, body))`; the one-off
//!   `webhook` URL of an encode gets the same body unsigned (`convertrilo-unsigned`), as its
//!   docs say.

use serde_json::{json, Value};

use crate::db::{JobRow, JobStatus};
use crate::signing::signed_download_path;
use crate::time::rfc3339;
use crate::views::JobView;
use crate::AppState;

/// How a delivery is shaped and signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Kiln,
    Convertrilo,
    ConvertriloUnsigned,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kiln => "kiln",
            Self::Convertrilo => "convertrilo",
            Self::ConvertriloUnsigned => "convertrilo-unsigned",
        }
    }

    pub fn parse(s: &str) -> Self {
        match s {
            "convertrilo" => Self::Convertrilo,
            "convertrilo-unsigned" => Self::ConvertriloUnsigned,
            _ => Self::Kiln,
        }
    }
}

/// An absolute link that downloads `job`'s output without a key until it expires, on the
/// host the request came to (`headers`), or the configured one.
pub fn absolute_download(
    state: &AppState,
    job: &JobRow,
    headers: Option<&axum::http::HeaderMap>,
) -> Option<String> {
    let expires = job.expires_at?;
    (job.status == JobStatus::Completed && !job.is_expired(kiln_protocol::now_ms())).then(|| {
        format!(
            "{}{}",
            state.public_base(headers),
            signed_download_path(&state.signing_key, &job.id, expires)
        )
    })
}

/// Kiln's body, with Konvrt's fields beside.
pub fn kiln(state: &AppState, job: &JobRow, event: &str, id: &str, now: i64) -> Value {
    let view = JobView::new(job, &state.signing_key, now);
    let completed = job.status == JobStatus::Completed;
    json!({
        "id": id,
        "type": event,
        "created_at": rfc3339(now),
        "data": view,
        "event": event,
        "job_id": job.id,
        "status": job.status.as_str(),
        "output": completed.then(|| json!({
            "download_url": absolute_download(state, job, None),
            "size_bytes": job.output_size,
            "expires_at": job.expires_at.map(rfc3339),
        })),
        "error": view.error.as_ref().map(|e| format!("{}: {}", e.code, e.message)),
        "timestamp": rfc3339(now),
    })
}

/// Convertrilo's name of a Kiln event (`None`: Convertrilo has no such event).
pub fn convertrilo_event(event: &str) -> Option<&'static str> {
    match event {
        "job.completed" => Some("job.completed"),
        "job.failed" => Some("job.failed"),
        "job.cancelled" => Some("job.canceled"),
        _ => None,
    }
}

/// Convertrilo's status of a job (`queued`, `processing`, `success`, `failed`, `canceled`).
pub fn convertrilo_status(s: JobStatus) -> &'static str {
    match s {
        JobStatus::Pending => "queued",
        JobStatus::Processing => "processing",
        JobStatus::Completed => "success",
        JobStatus::Failed => "failed",
        JobStatus::Cancelled => "canceled",
    }
}

/// Convertrilo's body.
pub fn convertrilo(state: &AppState, job: &JobRow, event: &str, now: i64) -> Value {
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
    let failed = matches!(job.status, JobStatus::Failed | JobStatus::Cancelled);
    json!({
        "event": event,
        "timestamp": rfc3339(now),
        "data": {
            "jobId": job.id,
            "externalId": kept["externalId"],
            "metadata": kept["metadata"],
            "userId": job.account_id,
            "status": convertrilo_status(job.status),
            "encoder": report["encoder"],
            "durationSec": job.output_duration,
            "downloadUrl": absolute_download(state, job, None),
            "error": failed.then(|| job.error_message.clone()).flatten(),
            "failureCode": failed.then(|| job.error_code.clone()).flatten(),
        },
    })
}
