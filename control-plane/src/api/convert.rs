//! `POST /api/v1/convert`: synchronous image conversion and resize (Konvrt's shape).

use axum::extract::{Multipart, State};
use axum::http::{header, HeaderName};
use axum::response::{IntoResponse, Response};
use kiln_gpu_node::imaging::{self, ConvertParams, ImagingError, OutputFormat};

use crate::auth::Auth;
use crate::error::ApiError;
use crate::AppState;

const DEFAULT_QUALITY: u8 = 80;

fn parse_side(name: &str, v: &str) -> Result<u32, ApiError> {
    match v.trim().parse::<u32>() {
        Ok(n) if (1..=16_384).contains(&n) => Ok(n),
        _ => Err(ApiError::BadRequest(format!(
            "{name} must be a whole number of pixels between 1 and 16384, got {v:?}"
        ))),
    }
}

/// Convert one image and answer with its bytes.
pub async fn convert(
    State(state): State<AppState>,
    auth: Auth,
    mut multipart: Multipart,
) -> Result<Response, ApiError> {
    auth.require("jobs:create")?;
    let mut file: Option<Vec<u8>> = None;
    let mut params = ConvertParams {
        format: None,
        quality: DEFAULT_QUALITY,
        width: None,
        height: None,
        max_pixels: state.config.max_image_pixels,
    };
    while let Some(mut field) = multipart.next_field().await? {
        let name = field.name().unwrap_or_default().to_string();
        if name == "file" {
            let mut bytes = Vec::new();
            while let Some(chunk) = field.chunk().await? {
                if (bytes.len() + chunk.len()) as u64 > state.config.max_image_bytes {
                    drop(field);
                    super::drain(&mut multipart).await;
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
        let value = super::small_field(field, &name).await?;
        let v = value.trim();
        if v.is_empty() {
            continue;
        }
        match name.as_str() {
            "format" => {
                params.format = Some(OutputFormat::parse(v).ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "unsupported output format {v:?}: use jpg, png or webp"
                    ))
                })?)
            }
            "quality" => {
                params.quality = match v.parse::<u8>() {
                    Ok(q) if (1..=100).contains(&q) => q,
                    _ => {
                        return Err(ApiError::BadRequest(format!(
                            "quality must be between 1 and 100, got {v:?}"
                        )))
                    }
                }
            }
            "width" => params.width = Some(parse_side("width", v)?),
            "height" => params.height = Some(parse_side("height", v)?),
            _ => {}
        }
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
                ImagingError::TooManyPixels { .. } => ApiError::PayloadTooLarge(e.to_string()),
                ImagingError::Corrupt(_) => ApiError::Unprocessable(e.to_string()),
                ImagingError::Encode(_) => ApiError::internal(e),
            });
        }
    };
    let backend = match out.resized_on {
        Some(kiln_gpu_node::gpu::ResizeBackend::Wgpu) => "wgpu",
        Some(kiln_gpu_node::gpu::ResizeBackend::Cpu) => "cpu",
        None => "none",
    };
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
        ],
        out.bytes,
    )
        .into_response())
}
