//! `POST /api/v1/compress`: Konvrt-compatible video submission (multipart `file`, `codec`,
//! `quality`, `resolution`, `method`, …). The upload streams straight to storage; the rest is
//! the submission service's.

use std::collections::HashMap;

use axum::extract::{Multipart, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::api::docs::Error;
use crate::api::multipart;
use crate::auth::Auth;
use crate::dialect::Dialect;
use crate::error::ApiError;
use crate::submission::params::{video_params, webhook_options};
use crate::submission::{self, Accepted, Output, Source, Submission};
use crate::views::AcceptedView;
use crate::AppState;

/// `POST /compress` (Konvrt): accept a video, store it, record and enqueue the job: 202
/// with its id. Multipart fields: `file` and the settings above, `webhook_url`,
/// `webhook_events` (comma-separated, e.g. `job.progress`).
#[utoipa::path(post, path = "/api/v1/compress", tag = "konvrt",
    request_body(content_type = "multipart/form-data", description = "`file` and the settings: codec, quality, method, bitrate, target_size_mb, target_vmaf, encoder_crf, resolution, preset, format, hardware, allow_upscale, allow_larger, chunk_secs (encode in chunks of about that many seconds, 2 to 300; 0 never; a bitrate or size is met over the whole title, its bits shared by each chunk's complexity; a target_vmaf title searches one CRF for the whole title and encodes every chunk at it; a ladder (format hls, dash or cmaf) is cut on whole segments and each chunk of each rendition encoded apart), the edits start, end, crop (x,y,w,h or an aspect like 9:16), crop_gravity, watermark (an upload id), watermark_position, watermark_margin, watermark_opacity, watermark_width, subtitles (an upload id), webhook_url, webhook_events"),
    responses((status = 202, body = AcceptedView),
        (status = 400, body = Error), (status = 401, body = Error),
        (status = 402, body = Error), (status = 403, body = Error),
        (status = 413, body = Error), (status = 415, body = Error),
        (status = 422, body = Error), (status = 429, body = Error)))]
pub async fn compress(
    State(state): State<AppState>,
    auth: Auth,
    mut multipart: Multipart,
) -> Result<Response, ApiError> {
    let principal = auth.require("jobs:create")?.clone();
    let job_id = uuid::Uuid::now_v7().to_string();
    let source_key = format!("sources/{job_id}");

    let result: Result<Accepted, ApiError> = async {
        let mut upload: Option<(u64, Option<String>)> = None;
        let mut fields = HashMap::new();
        while let Some(field) = multipart.next_field().await? {
            let name = field.name().unwrap_or_default().to_string();
            if name == "file" {
                if upload.is_some() {
                    return Err(ApiError::BadRequest("send exactly one `file` field".into()));
                }
                upload = Some(multipart::store_file_field(&state, field, &source_key).await?);
            } else {
                fields.insert(name.clone(), multipart::small_field(field, &name).await?);
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
        // `format=hls|dash|cmaf` asks for a ladder; anything else is one progressive file.
        let output = match fields
            .get("format")
            .and_then(|f| crate::submission::ladder::packaging_for_format(f))
        {
            Some(packaging) => Output::Ladder(crate::submission::ladder::ladder_from_fields(
                &fields, packaging,
            )?),
            None => Output::Video(video_params(&fields)?),
        };
        let events: Vec<String> = fields
            .get("webhook_events")
            .map(|e| {
                e.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let webhook = webhook_options(
            &state.url_policy,
            fields.get("webhook_url").map(String::as_str),
            &events,
        )?;
        let accepted = submission::submit(
            &state,
            Submission {
                account_id: principal.account_id.clone(),
                sources: vec![Source::Stored {
                    key: source_key.clone(),
                    size,
                    name: filename,
                }],
                outputs: vec![output].into(),
                dialect: Dialect::Native,
                dialect_data: None,
                webhook,
                destination: None,
                archive: false,
                batch: false,
                job_id: Some(job_id.clone()),
            },
        )
        .await?;
        Ok(accepted)
    }
    .await;

    let accepted = match result {
        Ok(a) => a,
        Err(e) => {
            if matches!(e, ApiError::PayloadTooLarge(_)) {
                multipart::drain(&mut multipart).await;
            }
            if let Err(del) = state.store.delete(&source_key).await {
                tracing::warn!(key = %source_key, error = %del, "could not remove refused upload");
            }
            return Err(e);
        }
    };
    let status_url = format!("/api/v1/status/{job_id}");
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, status_url.clone())],
        Json(AcceptedView {
            success: true,
            job_id,
            credits_charged: accepted.cost,
            status: "pending".into(),
            status_url,
            message: "Video accepted for processing".into(),
        }),
    )
        .into_response())
}
