//! `POST /api/v1/convert`: synchronous image conversion and resize (Konvrt's shape).

use axum::extract::{Multipart, State};
use axum::http::{header, HeaderName};
use axum::response::{IntoResponse, Response};
use kiln_gpu_node::gpu::Filter;
use kiln_gpu_node::imaging::{
    self, ConvertParams, Fit, Gravity, ImagingError, Limits, OutputFormat,
};

use crate::auth::Auth;
use crate::error::ApiError;
use crate::AppState;

/// Apply one form field. Names follow Konvrt (`format`, `quality`, `width`, `height`) with the
/// blog's `maxWidth`/`maxHeight` and sharp's `fit`, `position`/`gravity`, `background`,
/// `kernel`/`filter`, `lossless`.
fn apply_field(params: &mut ConvertParams, name: &str, v: &str) -> Result<(), ApiError> {
    if v.is_empty() {
        return Ok(());
    }
    let bad = |what: &str| ApiError::BadRequest(format!("{name}: {what}, got {v:?}"));
    match name {
        "format" => {
            params.format = Some(
                OutputFormat::parse(v)
                    .ok_or_else(|| bad("use jpg, png, webp, avif, gif or tiff"))?,
            )
        }
        "quality" => {
            params.quality = match v.parse::<u8>() {
                Ok(q) if (1..=100).contains(&q) => Some(q),
                _ => return Err(bad("quality is a whole number between 1 and 100")),
            }
        }
        "width" | "w" => params.width = Some(parse_side(name, v)?),
        "height" | "h" => params.height = Some(parse_side(name, v)?),
        "maxWidth" | "max_width" => {
            params.width = Some(parse_side(name, v)?);
            params.fit = Fit::Inside;
        }
        "maxHeight" | "max_height" => {
            params.height = Some(parse_side(name, v)?);
            params.fit = Fit::Inside;
        }
        "fit" => {
            params.fit = Fit::parse(v).ok_or_else(|| bad("use inside, cover, contain or fill"))?
        }
        "gravity" | "position" | "crop" => {
            params.gravity = Gravity::parse(v).ok_or_else(|| {
                bad("use center, north, south, east, west, north_east, north_west, south_east, south_west or entropy")
            })?
        }
        "background" => params.background = Some(parse_colour(v).ok_or_else(|| bad("use #rrggbb, #rrggbbaa, white, black or transparent"))?),
        "kernel" | "filter" => {
            params.filter = Filter::parse(v)
                .ok_or_else(|| bad("use lanczos3, mitchell, catmull_rom, bilinear or box"))?
        }
        "lossless" => {
            params.lossless = match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" => false,
                _ => return Err(bad("use true or false")),
            }
        }
        _ => {}
    }
    Ok(())
}

/// `#rgb`, `#rrggbb`, `#rrggbbaa` (with or without `#`) or a few names.
fn parse_colour(v: &str) -> Option<[u8; 4]> {
    match v.to_ascii_lowercase().as_str() {
        "white" => return Some([255, 255, 255, 255]),
        "black" => return Some([0, 0, 0, 255]),
        "transparent" => return Some([0, 0, 0, 0]),
        _ => {}
    }
    let hex = v.trim_start_matches('#');
    if !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).ok();
    match hex.len() {
        3 => {
            let d = |i: usize| u8::from_str_radix(&hex[i..i + 1], 16).ok().map(|n| n * 17);
            Some([d(0)?, d(1)?, d(2)?, 255])
        }
        6 => Some([byte(0)?, byte(2)?, byte(4)?, 255]),
        8 => Some([byte(0)?, byte(2)?, byte(4)?, byte(6)?]),
        _ => None,
    }
}

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
        apply_field(&mut params, &name, value.trim())?;
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
