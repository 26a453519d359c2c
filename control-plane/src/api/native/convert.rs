//! `POST /api/v1/convert`: synchronous image conversion and resize (Konvrt's shape). The
//! answer is the image itself; asked for JSON (`Accept: application/json`, the Konvrt blog's
//! flow), the result is kept as a completed job and the answer says where to download it.

use std::collections::BTreeMap;
use std::time::Instant;

use axum::extract::multipart::Field;
use axum::extract::{Multipart, State};
use axum::http::{header, HeaderMap, HeaderName};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kiln_gpu_node::imaging::Limits;
use kiln_gpu_node::imaging::{self, params::apply_field, ConvertParams, Converted, ImagingError};
use serde::Serialize;

use crate::api::docs::Error;
use crate::api::multipart;
use crate::auth::Auth;
use crate::dialect::Dialect;
use crate::error::ApiError;
use crate::submission::finished::{self, Kept};
use crate::AppState;

pub mod gate;

/// The JSON answer of `/convert` (Konvrt's blog spells it `jobId`/`downloadUrl`, its docs
/// `job_id`/`download_url`: both are here).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConvertedJob {
    #[serde(rename = "jobId")]
    pub job_id_camel: String,
    pub job_id: String,
    /// `completed`.
    pub status: String,
    /// `GET /api/v1/download/{jobId}` (with the key).
    #[serde(rename = "downloadUrl")]
    pub download_url_camel: String,
    pub download_url: String,
    /// The same, working without a key until `expires_at`.
    pub signed_download_url: Option<String>,
    pub expires_at: Option<String>,
    pub format: String,
    pub size_bytes: i64,
    pub width: u32,
    pub height: u32,
}

/// `POST /convert` (Konvrt): convert one image and answer with its bytes (synchronous;
/// `POST /jobs` with an image output queues the same work on a node instead), or, with
/// `Accept: application/json`, keep it as a completed job and answer where it is.
#[utoipa::path(post, path = "/api/v1/convert", tag = "konvrt",
    request_body(content_type = "multipart/form-data", description = "`file` and: format, quality, width, height, maxWidth, maxHeight, fit, gravity, background, kernel, lossless"),
    responses((status = 200, description = "The converted image (X-Original-Size, X-Output-Size, X-Output-Format, X-Output-Width, X-Output-Height headers), or with `Accept: application/json` the job it was kept as", content(
            ("image/*"),
            (ConvertedJob = "application/json"))),
        (status = 400, body = Error), (status = 401, body = Error),
        (status = 403, body = Error), (status = 413, body = Error),
        (status = 415, body = Error), (status = 422, body = Error), (status = 429, body = Error),
        (status = 503, body = Error, description = "Every image worker is busy and the queue is full: retry after `Retry-After` seconds")))]
pub async fn convert(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    mut multipart: Multipart,
) -> Result<Response, ApiError> {
    let principal = auth.require("jobs:create")?.clone();
    let mut file: Option<(Vec<u8>, Option<String>)> = None;
    let mut params = convert_params(&state);
    let mut fields = BTreeMap::new();
    while let Some(field) = multipart.next_field().await? {
        let name = field.name().unwrap_or_default().to_string();
        if name == "file" {
            let filename = field.file_name().map(str::to_string);
            match read_image(&state, field).await {
                Ok(bytes) => file = Some((bytes, filename)),
                Err(e) => {
                    if matches!(e, ApiError::PayloadTooLarge(_)) {
                        multipart::drain(&mut multipart).await;
                    }
                    return Err(e);
                }
            }
            continue;
        }
        let value = multipart::small_field(field, &name).await?;
        apply_field(&mut params, &name, value.trim()).map_err(ApiError::BadRequest)?;
        fields.insert(name, value.trim().to_string());
    }
    let (input, filename) = file.ok_or_else(|| {
        ApiError::BadRequest("missing `file` field: send the image as multipart form data".into())
    })?;
    if input.is_empty() {
        return Err(ApiError::BadRequest("the uploaded file is empty".into()));
    }
    let original_size = input.len();
    let started = Instant::now();
    let (input, out) = run(&state, input, params).await?;
    if wants_json(&headers) {
        let job = finished::keep(
            &state,
            Kept {
                account_id: &principal.account_id,
                input: &input,
                input_name: filename.as_deref(),
                fields,
                output: &out,
                encode_ms: started.elapsed().as_millis() as i64,
                dialect: Dialect::Native,
            },
        )
        .await?;
        let view = crate::views::JobView::new(&job, &state.signing_key, kiln_protocol::now_ms());
        let download = format!("/api/v1/download/{}", job.id);
        return Ok(Json(ConvertedJob {
            job_id_camel: job.id.clone(),
            job_id: job.id.clone(),
            status: "completed".into(),
            download_url_camel: download.clone(),
            download_url: download,
            signed_download_url: view.signed_download_url,
            expires_at: view.expires_at,
            format: out.format.as_str().into(),
            size_bytes: out.bytes.len() as i64,
            width: out.width,
            height: out.height,
        })
        .into_response());
    }
    let backend = out.resized_on.map_or("none", |b| b.as_str());
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

/// Whether the client asked for a JSON answer.
fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"))
}

/// Conversion settings with the server's limits.
pub(crate) fn convert_params(state: &AppState) -> ConvertParams {
    ConvertParams {
        limits: Limits {
            max_pixels: state.config.max_image_pixels,
            max_frames: state.config.max_image_frames,
            max_animation_pixels: state.config.max_image_pixels,
        },
        ..ConvertParams::default()
    }
}

/// Read an image field whole (images are small: `KILN_MAX_IMAGE_BYTES`), refusing it past the
/// limit (the caller then drains what the client is still sending).
pub(crate) async fn read_image(
    state: &AppState,
    mut field: Field<'_>,
) -> Result<Vec<u8>, ApiError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await? {
        if (bytes.len() + chunk.len()) as u64 > state.config.max_image_bytes {
            return Err(ApiError::PayloadTooLarge(format!(
                "images are limited to {} bytes",
                state.config.max_image_bytes
            )));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// Convert `input` on a blocking thread, in the bounded pool ([`gate`]: 503 `overloaded` with
/// `Retry-After` when its queue is full); the input comes back with the result.
pub(crate) async fn run(
    state: &AppState,
    input: Vec<u8>,
    params: ConvertParams,
) -> Result<(Vec<u8>, Converted), ApiError> {
    let Some(_pass) = state.convert_gate.enter().await else {
        state.metrics.convert_refused.inc();
        return Err(ApiError::Overloaded {
            message: format!(
                "every image worker is busy and {} requests are waiting; retry shortly",
                state.convert_gate.queue()
            ),
            retry_after: 1,
        });
    };
    let (input, result) = tokio::task::spawn_blocking(move || {
        let r = imaging::convert(&input, &params);
        (input, r)
    })
    .await
    .map_err(ApiError::internal)?;
    match result {
        Ok(out) => {
            let backend = out.resized_on.map_or("none", |b| b.as_str());
            state
                .metrics
                .images_converted
                .with_label_values(&["ok", backend])
                .inc();
            Ok((input, out))
        }
        Err(e) => {
            state
                .metrics
                .images_converted
                .with_label_values(&["refused", "none"])
                .inc();
            Err(match e {
                ImagingError::UnsupportedFormat => ApiError::UnsupportedMedia(e.to_string()),
                ImagingError::TooManyPixels { .. } | ImagingError::TooManyFrames { .. } => {
                    ApiError::PayloadTooLarge(e.to_string())
                }
                ImagingError::Corrupt(_) => ApiError::Unprocessable(e.to_string()),
                ImagingError::Encode(_) | ImagingError::Resize(_) => ApiError::internal(e),
            })
        }
    }
}
