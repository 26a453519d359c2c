//! Serving a ladder's tree to players: `GET /jobs/{id}/stream/{file}` with a key, and
//! `GET /stream/{id}/{expires}/{signature}/{file}` with none. The signature sits in the path,
//! not the query, so the relative URLs inside a manifest (`media_0.m3u8`,
//! `chunk-stream0-00001.m4s`) resolve to signed URLs too and a browser player needs no key.
//! Content types players expect, `Range`, and CORS for players on other origins.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use kiln_protocol::StoreError;
use tokio_util::io::ReaderStream;

use crate::api::docs::Error;
use crate::auth::Auth;
use crate::db::{JobRow, JobStatus};
use crate::error::ApiError;
use crate::signing;
use crate::AppState;

/// The Content-Type of a file in a ladder's tree.
pub fn content_type(file: &str) -> &'static str {
    match file.rsplit_once('.').map(|(_, e)| e) {
        Some("m3u8") => "application/vnd.apple.mpegurl",
        Some("mpd") => "application/dash+xml",
        // ISO BMFF media segments (RFC 8472 registers video/iso.segment; players and CDNs
        // take video/mp4 for init and media segments alike).
        Some("m4s") | Some("mp4") => "video/mp4",
        Some("vtt") => "text/vtt",
        Some("jpg") => "image/jpeg",
        Some("webp") => "image/webp",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

/// `GET /jobs/{id}/stream/{file}`: a file of a completed ladder job's tree (`master.m3u8`,
/// `manifest.mpd`, a media playlist or a segment), with a key.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/stream/{file}", tag = "jobs",
    params(("id" = String, Path, description = "Job id"),
        ("file" = String, Path, description = "`master.m3u8`, `manifest.mpd`, or a file they name")),
    responses((status = 200, description = "The file", content_type = "application/vnd.apple.mpegurl"),
        (status = 206, description = "Part of the file (Range)"),
        (status = 401, body = Error), (status = 404, body = Error),
        (status = 409, body = Error), (status = 410, body = Error),
        (status = 416, body = Error)))]
pub async fn job_stream(
    State(state): State<AppState>,
    auth: Auth,
    Path((id, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let job = super::jobs::load(&state, &auth, &id, "jobs:read").await?;
    serve(&state, &job, &file, &headers).await
}

/// `GET /stream/{id}/{expires}/{signature}/{file}`: the same with no key, from the job's
/// `streaming.signed_hls_url` / `signed_dash_url`; every file the manifests name resolves
/// under the same signed path.
#[utoipa::path(get, path = "/api/v1/stream/{id}/{expires}/{signature}/{file}", tag = "jobs",
    params(("id" = String, Path, description = "Job id"),
        ("expires" = i64, Path, description = "Unix seconds after which the link is dead"),
        ("signature" = String, Path, description = "HMAC of the job id and `expires`"),
        ("file" = String, Path, description = "`master.m3u8`, `manifest.mpd`, or a file they name")),
    responses((status = 200, description = "The file", content_type = "application/vnd.apple.mpegurl"),
        (status = 206, description = "Part of the file (Range)"),
        (status = 403, body = Error), (status = 404, body = Error),
        (status = 409, body = Error), (status = 410, body = Error),
        (status = 416, body = Error)))]
pub async fn signed_stream(
    State(state): State<AppState>,
    Path((id, expires, signature, file)): Path<(String, i64, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !signing::verify_stream_signature(&state.signing_key, &id, expires, &signature) {
        return Err(ApiError::Forbidden("invalid stream signature".into()));
    }
    if expires * 1000 <= kiln_protocol::now_ms() {
        return Err(ApiError::Gone("this stream link has expired".into()));
    }
    let job = state
        .db
        .get_job_any(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no job {id:?}")))?;
    serve(&state, &job, &file, &headers).await
}

async fn serve(
    state: &AppState,
    job: &JobRow,
    file: &str,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let Some(tree) = job.output_tree() else {
        return Err(ApiError::NotFound(
            "this job's output is one file, not a folder: use its download_url".into(),
        ));
    };
    if job.status != JobStatus::Completed {
        return Err(ApiError::Conflict(format!(
            "job is {}; the stream can be played once it is completed",
            job.status.as_str()
        )));
    }
    if job.is_expired(kiln_protocol::now_ms()) {
        return Err(ApiError::Gone(
            "the stream has expired and is no longer stored".into(),
        ));
    }
    let key = format!("{tree}/{file}");
    if file.contains('/') || kiln_protocol::storage::validate_key(&key).is_err() {
        return Err(ApiError::NotFound(format!(
            "no file {file:?} in this stream"
        )));
    }
    let missing = |e: StoreError| match e {
        StoreError::NotFound(_) => ApiError::NotFound(format!("no file {file:?} in this stream")),
        other => ApiError::internal(other),
    };
    let size = state.store.size(&key).await.map_err(missing)?;
    let range = super::download::parse_range(
        headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
        size,
    )
    .map_err(|_| ApiError::RangeNotSatisfiable { size })?;
    let (reader, len) = match &range {
        Some(r) => state.store.open_range(&key, r.clone()).await,
        None => state.store.open(&key).await,
    }
    .map_err(missing)?;
    let mut resp = (
        [
            (header::CONTENT_TYPE, content_type(file).to_string()),
            (header::CONTENT_LENGTH, len.to_string()),
            (header::ACCEPT_RANGES, "bytes".to_string()),
        ],
        Body::from_stream(ReaderStream::new(reader)),
    )
        .into_response();
    let h = resp.headers_mut();
    // Players on any origin may fetch: the URL itself is the credential.
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Content-Length, Content-Range, Accept-Ranges"),
    );
    if let Some(r) = range {
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
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
    use super::content_type;

    #[test]
    fn players_get_the_types_they_expect() {
        assert_eq!(content_type("master.m3u8"), "application/vnd.apple.mpegurl");
        assert_eq!(content_type("manifest.mpd"), "application/dash+xml");
        assert_eq!(content_type("chunk-stream0-00001.m4s"), "video/mp4");
        assert_eq!(content_type("init-stream0.m4s"), "video/mp4");
        assert_eq!(content_type("odd"), "application/octet-stream");
    }
}
