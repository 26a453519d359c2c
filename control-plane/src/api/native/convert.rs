//! `POST /api/v1/convert`: synchronous image conversion and resize (Konvrt's shape).

use axum::extract::{Multipart, State};
use axum::http::{header, HeaderName};
use axum::response::{IntoResponse, Response};
use kiln_gpu_node::imaging::{self, params::apply_field, ConvertParams, ImagingError, Limits};

use crate::api::docs::Error;
use crate::api::multipart;
use crate::auth::Auth;
use crate::error::ApiError;
use crate::AppState;

/// `POST /convert` (Konvrt): convert one image and answer with its bytes (synchronous;
/// `POST /jobs` with an image output queues the same work on a node instead).
#[utoipa::path(post, path = "/api/v1/convert", tag = "konvrt",
    request_body(content_type = "multipart/form-data", description = "`file` and: format, quality, width, height, maxWidth, maxHeight, fit, gravity, background, kernel, lossless"),
    responses((status = 200, description = "The converted image; X-Original-Size, X-Output-Size, X-Output-Format, X-Output-Width, X-Output-Height headers", content_type = "image/*"),
        (status = 400, body = Error), (status = 401, body = Error),
        (status = 403, body = Error), (status = 413, body = Error),
        (status = 415, body = Error), (status = 422, body = Error), (status = 429, body = Error)))]
pub async fn convert(
    State(state): State<AppState>,
    auth: Auth,
    mut multipart: Multipart,
) -> Result<Response, ApiError> {
    auth.require("jobs:create")?;
    let mut file: Option<Vec<u8>> = None;
    let mut params = ConvertParams {
        limits: Limits {
            max_pixels: state.config.max_image_pixels,
            max_frames: state.config.max_image_frames,
            max_animation_pixels: state.config.max_image_pixels,
        },
        ..ConvertParams::default()
    };
    while let Some(mut field) = multipart.next_field().await? {
        let name = field.name().unwrap_or_default().to_string();
        if name == "file" {
            let mut bytes = Vec::new();
            while let Some(chunk) = field.chunk().await? {
                if (bytes.len() + chunk.len()) as u64 > state.config.max_image_bytes {
                    drop(field);
                    multipart::drain(&mut multipart).await;
                    return Err(ApiError::PayloadTooLarge(format!(
                        "images are limited to {} bytes",
                        state.config.max_image_bytes
                    )));
                }
                bytes.extend_from_slice(&chunk);
            }
            file = Some(bytes);
            continue;
        }
        let value = multipart::small_field(field, &name).await?;
        apply_field(&mut params, &name, value.trim()).map_err(ApiError::BadRequest)?;
    }
    let input = file.ok_or_else(|| {
        ApiError::BadRequest("missing `file` field: send the image as multipart form data".into())
    })?;
    if input.is_empty() {
        return Err(ApiError::BadRequest("the uploaded file is empty".into()));
    }
    let original_size = input.len();
    let result = tokio::task::spawn_blocking(move || imaging::convert(&input, &params))
        .await
        .map_err(ApiError::internal)?;
    let out = match result {
        Ok(out) => out,
        Err(e) => {
            state
                .metrics
                .images_converted
                .with_label_values(&["refused", "none"])
                .inc();
            return Err(match e {
                ImagingError::UnsupportedFormat => ApiError::UnsupportedMedia(e.to_string()),
                ImagingError::TooManyPixels { .. } | ImagingError::TooManyFrames { .. } => {
                    ApiError::PayloadTooLarge(e.to_string())
                }
                ImagingError::Corrupt(_) => ApiError::Unprocessable(e.to_string()),
                ImagingError::Encode(_) | ImagingError::Resize(_) => ApiError::internal(e),
            });
        }
    };
    let backend = out.resized_on.map_or("none", |b| b.as_str());
    state
        .metrics
        .images_converted
        .with_label_values(&["ok", backend])
        .inc();
    let h = |n: &'static str| HeaderName::from_static(n);
    Ok((
        [
            (header::CONTENT_TYPE, out.format.mime().to_string()),
            (h("x-original-size"), original_size.to_string()),
            (h("x-output-size"), out.bytes.len().to_string()),
            (h("x-output-format"), out.format.as_str().to_string()),
            (h("x-output-width"), out.width.to_string()),
            (h("x-output-height"), out.height.to_string()),
            (h("x-resize-backend"), backend.to_string()),
            (h("x-shrink-on-load"), out.shrink_on_load.to_string()),
            (h("x-output-frames"), out.frames.to_string()),
        ],
        out.bytes,
    )
        .into_response())
}
