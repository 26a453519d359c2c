//! `POST /api/v1/compress`: Konvrt-compatible video submission (multipart `file`, `codec`,
//! `quality`, `resolution`, `method`). The upload streams straight to storage.

use std::collections::HashMap;

use axum::extract::{Multipart, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::TryStreamExt;
use kiln_gpu_node::media::{self, MediaError};
use kiln_protocol::{JobSpec, Resolution, StoreError, Task, VideoCodec, VideoParams};
use serde_json::json;
use tokio_util::io::StreamReader;

use crate::auth::Auth;
use crate::db::jobs::NewJob;
use crate::error::ApiError;
use crate::AppState;

/// Default CRF when `quality` is not given (x264's own default).
const DEFAULT_CRF: u8 = 23;

/// Validated settings from the text fields.
fn video_params(fields: &HashMap<String, String>) -> Result<VideoParams, ApiError> {
    let get = |k: &str| fields.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let codec = match get("codec") {
        None => VideoCodec::H264,
        Some(c) => VideoCodec::parse(c).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "unsupported codec {c:?}: supported codecs are h264"
            ))
        })?,
    };
    let crf = match get("quality") {
        None => DEFAULT_CRF,
        Some(q) => match q.parse::<u8>() {
            Ok(v) if v <= 51 => v,
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "quality must be a CRF between 0 and 51 (lower is better), got {q:?}"
                )))
            }
        },
    };
    if let Some(m) = get("method") {
        if !m.eq_ignore_ascii_case("crf") {
            return Err(ApiError::BadRequest(format!(
                "unsupported method {m:?}: supported methods are crf"
            )));
        }
    }
    let resolution = Resolution::parse(get("resolution").unwrap_or(""))
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok(VideoParams {
        codec,
        crf,
        resolution,
    })
}

/// Accept a video, store it, record and enqueue the job: 202 with its id.
pub async fn compress(
    State(state): State<AppState>,
    auth: Auth,
    mut multipart: Multipart,
) -> Result<Response, ApiError> {
    let principal = auth.require("jobs:create")?.clone();
    let job_id = uuid::Uuid::now_v7().to_string();
    let source_key = format!("sources/{job_id}");

    let result = async {
        let mut upload: Option<(u64, Option<String>)> = None;
        let mut fields = HashMap::new();
        while let Some(field) = multipart.next_field().await? {
            let name = field.name().unwrap_or_default().to_string();
            if name == "file" {
                if upload.is_some() {
                    return Err(ApiError::BadRequest("send exactly one `file` field".into()));
                }
                let filename = field.file_name().map(str::to_string);
                let mut reader = StreamReader::new(field.map_err(std::io::Error::other));
                let size = state
                    .store
                    .put_stream(&source_key, &mut reader, state.config.max_upload_bytes)
                    .await
                    .map_err(upload_error)?;
                upload = Some((size, filename));
            } else {
                fields.insert(name.clone(), super::small_field(field, &name).await?);
            }
        }
        let (size, filename) = upload.ok_or_else(|| {
            ApiError::BadRequest(
                "missing `file` field: send the video as multipart form data".into(),
            )
        })?;
        if size == 0 {
            return Err(ApiError::BadRequest("the uploaded file is empty".into()));
        }
        let params = video_params(&fields)?;
        check_media(&state, &source_key).await?;

        let spec = JobSpec {
            id: job_id.clone(),
            attempt: 1,
            source_key: source_key.clone(),
            output_key: format!("outputs/{job_id}.mp4"),
            task: Task::Video(params),
        };
        let spec_json = serde_json::to_string(&spec).map_err(ApiError::internal)?;
        state
            .db
            .insert_job(&NewJob {
                id: &job_id,
                account_id: &principal.account_id,
                kind: "video",
                spec: &spec_json,
                source_key: &source_key,
                output_key: &spec.output_key,
                input_name: filename.as_deref(),
                input_size: size as i64,
            })
            .await?;
        if let Err(e) = state.queue.enqueue(&spec).await {
            // Not queued means not accepted: undo the record rather than keep a job that
            // would never run.
            let _ = sqlx::query("DELETE FROM jobs WHERE id = $1")
                .bind(&job_id)
                .execute(&state.db.pool)
                .await;
            return Err(ApiError::Unavailable(format!("job queue unavailable: {e}")));
        }
        Ok(())
    }
    .await;

    if let Err(e) = result {
        if matches!(e, ApiError::PayloadTooLarge(_)) {
            super::drain(&mut multipart).await;
        }
        if let Err(del) = state.store.delete(&source_key).await {
            tracing::warn!(key = %source_key, error = %del, "could not remove refused upload");
        }
        return Err(e);
    }
    state
        .metrics
        .jobs_submitted
        .with_label_values(&["video"])
        .inc();
    let status_url = format!("/api/v1/status/{job_id}");
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, status_url.clone())],
        Json(json!({
            "job_id": job_id,
            "status": "pending",
            "status_url": status_url,
            "message": "Video accepted for processing",
        })),
    )
        .into_response())
}

fn upload_error(e: StoreError) -> ApiError {
    match e {
        StoreError::TooLarge { limit } => {
            ApiError::PayloadTooLarge(format!("upload exceeds the limit of {limit} bytes"))
        }
        StoreError::Io(io)
            if io
                .get_ref()
                .is_some_and(|inner| inner.is::<axum::extract::multipart::MultipartError>()) =>
        {
            ApiError::BadRequest(format!("upload interrupted or malformed: {io}"))
        }
        other => ApiError::internal(other),
    }
}

/// Refuse what FFmpeg cannot open before a job is created, so the caller learns at once.
async fn check_media(state: &AppState, key: &str) -> Result<(), ApiError> {
    let Some(path) = state.store.local_path(key) else {
        // Remote stores: the node probes when it runs the job.
        return Ok(());
    };
    let probed = tokio::task::spawn_blocking(move || media::probe(&path))
        .await
        .map_err(ApiError::internal)?;
    match probed {
        Ok(_) => Ok(()),
        Err(MediaError::NoVideoStream) => Err(ApiError::UnsupportedMedia(
            "the uploaded file has no video stream".into(),
        )),
        Err(e @ MediaError::InvalidMedia(_)) => Err(ApiError::Unprocessable(e.to_string())),
        Err(e) => Err(ApiError::internal(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_and_validation() {
        let p = video_params(&fields(&[])).unwrap();
        assert_eq!((p.codec, p.crf, p.resolution), (VideoCodec::H264, 23, None));
        let p = video_params(&fields(&[("quality", "28"), ("resolution", "720p")])).unwrap();
        assert_eq!(p.crf, 28);
        assert_eq!(p.resolution, Some(Resolution::Height { height: 720 }));
        for bad in [
            vec![("codec", "h266")],
            vec![("quality", "52")],
            vec![("quality", "high")],
            vec![("resolution", "huge")],
            vec![("method", "bitrate")],
        ] {
            assert!(
                matches!(video_params(&fields(&bad)), Err(ApiError::BadRequest(_))),
                "{bad:?}"
            );
        }
    }
}
