//! Downloads: `GET /download/{id}` (Konvrt's; with a key, or a pre-signed link and no key)
//! and `GET /jobs/{id}/download`, streamed from the store, honouring `Range`.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use kiln_protocol::StoreError;
use tokio_util::io::ReaderStream;

use crate::api::docs::Error;
use crate::auth::Auth;
use crate::db::{JobRow, JobStatus};
use crate::error::ApiError;
use crate::signing;
use crate::AppState;

/// Query of a pre-signed download link.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct SignedQuery {
    /// Unix seconds after which the link is dead.
    pub expires: Option<i64>,
    /// HMAC of the job id and `expires`, from `signed_download_url`.
    pub signature: Option<String>,
}

/// A `Range` the object cannot satisfy (answered 416).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsatisfiable;

/// A single byte range from a `Range` header, resolved against `size`: `Ok(None)` means
/// "send the whole object" (no header, or a form Kiln does not serve, such as several ranges),
/// `Err` means unsatisfiable (416).
pub fn parse_range(
    header: Option<&str>,
    size: u64,
) -> Result<Option<std::ops::Range<u64>>, Unsatisfiable> {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(Unsatisfiable)?;
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        // The last `b` bytes.
        let n: u64 = b.parse().map_err(|_| Unsatisfiable)?;
        if n == 0 {
            return Err(Unsatisfiable);
        }
        size.saturating_sub(n)..size
    } else {
        let start: u64 = a.parse().map_err(|_| Unsatisfiable)?;
        let end = if b.is_empty() {
            size
        } else {
            let last: u64 = b.parse().map_err(|_| Unsatisfiable)?;
            if last < start {
                return Err(Unsatisfiable);
            }
            // `last` can be u64::MAX: its successor must not overflow.
            last.saturating_add(1).min(size)
        };
        start..end
    };
    if range.start >= size {
        return Err(Unsatisfiable);
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
        (status = 401, body = Error), (status = 403, body = Error),
        (status = 404, body = Error), (status = 409, body = Error),
        (status = 410, body = Error), (status = 416, body = Error)))]
pub async fn download(
    State(state): State<AppState>,
    auth: Result<Auth, Response>,
    Path(id): Path<String>,
    Query(signed): Query<SignedQuery>,
    headers: axum::http::HeaderMap,
) -> Result<Response, Response> {
    download_with(&state, auth, &id, &signed, &headers)
        .await
        .map_err(IntoResponse::into_response)
}

/// The download of `id`, with a key or a pre-signed link (shared with the dialects, whose
/// links point here).
pub async fn download_with(
    state: &AppState,
    auth: Result<Auth, Response>,
    id: &str,
    signed: &SignedQuery,
    headers: &axum::http::HeaderMap,
) -> Result<Response, DownloadError> {
    let state = state.clone();
    let id = id.to_string();
    let job = match (&signed.signature, auth) {
        (Some(sig), _) => {
            let expires = signed.expires;
            let expires = expires.ok_or_else(|| {
                ApiError::BadRequest("a signed link needs `expires` and `signature`".into())
            })?;
            if !signing::verify_download_signature(&state.signing_key, &id, expires, sig) {
                return Err(ApiError::Forbidden("invalid download signature".into()).into());
            }
            if expires * 1000 <= kiln_protocol::now_ms() {
                return Err(ApiError::Gone("this download link has expired".into()).into());
            }
            state
                .db
                .get_job_any(&id)
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("no job {id:?}")))?
        }
        (None, Ok(auth)) => super::jobs::load(&state, &auth, &id, "jobs:read").await?,
        (None, Err(missing_key)) => return Err(DownloadError::Response(missing_key)),
    };
    Ok(stream_output(&state, &job, headers).await?)
}

/// A download refused: an error, or the missing-key answer already made.
pub enum DownloadError {
    Api(ApiError),
    Response(Response),
}

impl From<ApiError> for DownloadError {
    fn from(e: ApiError) -> Self {
        Self::Api(e)
    }
}

impl From<crate::db::DbError> for DownloadError {
    fn from(e: crate::db::DbError) -> Self {
        Self::Api(e.into())
    }
}

impl IntoResponse for DownloadError {
    fn into_response(self) -> Response {
        match self {
            Self::Api(e) => e.into_response(),
            Self::Response(r) => r,
        }
    }
}

/// `GET /jobs/{id}/download`: the same as `GET /download/{id}`.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/download", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, description = "The output file", content_type = "application/octet-stream"),
        (status = 206, description = "Part of the output file (Range)"),
        (status = 401, body = Error), (status = 404, body = Error),
        (status = 409, body = Error), (status = 410, body = Error),
        (status = 416, body = Error)))]
pub async fn job_download(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let job = super::jobs::load(&state, &auth, &id, "jobs:read").await?;
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
    if job.is_expired(kiln_protocol::now_ms()) {
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
    .map_err(|_| ApiError::RangeNotSatisfiable { size })?;
    let (reader, len) = match &range {
        Some(r) => state.store.open_range(&job.output_key, r.clone()).await,
        None => state.store.open(&job.output_key).await,
    }
    .map_err(gone)?;
    let (ext, mime) = job.output_format();
    let safe = job.download_stem();
    let mut resp = (
        [
            (header::CONTENT_TYPE, mime.to_string()),
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
    use super::{parse_range, Unsatisfiable};

    type Case<'a> = (
        Option<&'a str>,
        Result<Option<std::ops::Range<u64>>, Unsatisfiable>,
    );

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
            (Some("bytes=1000-"), Err(Unsatisfiable)),
            (Some("bytes=5-2"), Err(Unsatisfiable)),
            (Some("bytes=-0"), Err(Unsatisfiable)),
            (Some("bytes=a-b"), Err(Unsatisfiable)),
            // The largest last-byte position is the whole object, not an overflow (a panic in
            // debug builds, a bogus range in release ones).
            (Some("bytes=0-18446744073709551615"), Ok(Some(0..1000))),
            (Some("bytes=990-18446744073709551615"), Ok(Some(990..1000))),
            (Some("bytes=18446744073709551615-"), Err(Unsatisfiable)),
            (Some("bytes=-18446744073709551615"), Ok(Some(0..1000))),
            (Some("bytes=0-18446744073709551616"), Err(Unsatisfiable)),
        ];
        for (h, want) in cases {
            assert_eq!(parse_range(*h, size), *want, "{h:?}");
        }
    }
}
