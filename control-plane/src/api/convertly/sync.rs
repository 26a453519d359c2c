//! Convertly's synchronous endpoints for images: `POST /api/convert` (to a format, resized)
//! and `POST /api/compress` (the same format, smaller: by `quality`, or `mode=target-size`
//! with `targetBytes`). Both answer `{files: [...], storage: {...}}`; each file's
//! `downloadUrl` is a `data:` URL, or with `saveToStorage=true` a link to the result kept as
//! a completed job (`storedFileId` is its id, `GET /api/v1/download/{id}` serves it).

use std::collections::BTreeMap;
use std::time::Instant;

use axum::extract::{Multipart, State};
use axum::Json;
use base64::Engine;
use kiln_gpu_node::imaging::params::from_fields;
use kiln_gpu_node::imaging::Converted;
use serde::Serialize;
use utoipa::ToSchema;

use super::form::{image_fields, Kind, Settings};
use super::{Error, ErrorBody};
use crate::api::multipart;
use crate::api::native::convert::{convert_params, read_image, run};
use crate::auth::Auth;
use crate::dialect::Dialect;
use crate::error::ApiError;
use crate::submission::finished::{self, Kept};
use crate::AppState;

/// One converted file.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ConvertlyFile)]
#[serde(rename_all = "camelCase")]
pub struct File {
    pub filename: String,
    pub original_size: i64,
    pub final_size: i64,
    pub saved_percent: i64,
    pub mime_type: String,
    /// A `data:` URL, or with `saveToStorage=true` an absolute link that needs no key.
    pub download_url: String,
    /// The quality the encoder used (1–100; lossless formats report 100).
    pub applied_quality: u8,
    /// With `saveToStorage=true`: the job the result is kept as.
    pub stored_file_id: Option<String>,
}

/// Whether results were kept.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ConvertlyStorage)]
pub struct Storage {
    pub saved: bool,
    pub notice: String,
}

/// `POST /api/convert` and `POST /api/compress`'s answer.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ConvertlyFiles)]
pub struct Files {
    pub files: Vec<File>,
    pub storage: Storage,
}

/// The request's files and settings (images are small: read whole, within the limit).
async fn read(
    state: &AppState,
    mut multipart: Multipart,
) -> Result<(Vec<(Vec<u8>, Option<String>)>, Settings), Error> {
    let mut files = Vec::new();
    let mut fields = std::collections::HashMap::new();
    while let Some(field) = multipart.next_field().await? {
        let name = field.name().unwrap_or_default().to_string();
        if name == "files" || name.starts_with("files[") || name == "files.items" {
            if files.len() == super::MAX_SYNC_FILES {
                return Err(ApiError::BadRequest(format!(
                    "at most {} files per synchronous request; queue more with POST /api/jobs",
                    super::MAX_SYNC_FILES
                ))
                .into());
            }
            let filename = field.file_name().map(str::to_string);
            match read_image(state, field).await {
                Ok(bytes) => files.push((bytes, filename)),
                Err(e) => {
                    if matches!(e, ApiError::PayloadTooLarge(_)) {
                        multipart::drain(&mut multipart).await;
                    }
                    return Err(e.into());
                }
            }
        } else {
            fields.insert(name.clone(), multipart::small_field(field, &name).await?);
        }
    }
    if files.is_empty() {
        return Err(ApiError::BadRequest("send the images as `files` fields".into()).into());
    }
    if files.iter().any(|(b, _)| b.is_empty()) {
        return Err(ApiError::BadRequest("an uploaded file is empty".into()).into());
    }
    Ok((files, Settings(fields)))
}

/// Convert one image with `fields`.
async fn convert_one(
    state: &AppState,
    input: Vec<u8>,
    fields: &BTreeMap<String, String>,
) -> Result<(Vec<u8>, Converted), Error> {
    let params = from_fields(fields, convert_params(state)).map_err(ApiError::BadRequest)?;
    Ok(run(state, input, params).await?)
}

/// One converted file, before it is answered.
struct Done {
    input: Vec<u8>,
    name: Option<String>,
    fields: BTreeMap<String, String>,
    out: Converted,
    ms: i64,
}

/// Answer for the converted files, keeping them when asked.
async fn answer(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    account_id: &str,
    done: Vec<Done>,
    keep: bool,
) -> Result<Files, Error> {
    let mut files = Vec::new();
    for Done {
        input,
        name,
        fields,
        out,
        ms,
    } in done
    {
        let stem = name
            .as_deref()
            .and_then(|n| std::path::Path::new(n).file_stem())
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".into());
        let quality = if out.format.lossy() {
            fields
                .get("quality")
                .and_then(|q| q.parse().ok())
                .unwrap_or(super::form::DEFAULT_COMPRESSION)
        } else {
            100
        };
        let (download_url, stored) = if keep {
            let job = finished::keep(
                state,
                Kept {
                    account_id,
                    input: &input,
                    input_name: name.as_deref(),
                    fields,
                    output: &out,
                    encode_ms: ms,
                    dialect: Dialect::Convertly,
                },
            )
            .await?;
            (
                crate::webhooks::payload::absolute_download(state, &job, Some(headers))
                    .unwrap_or_default(),
                Some(job.id),
            )
        } else {
            (
                format!(
                    "data:{};base64,{}",
                    out.format.mime(),
                    base64::engine::general_purpose::STANDARD.encode(&out.bytes)
                ),
                None,
            )
        };
        files.push(File {
            filename: format!("{stem}.{}", out.format.as_str()),
            original_size: input.len() as i64,
            final_size: out.bytes.len() as i64,
            saved_percent: ((1.0 - out.bytes.len() as f64 / input.len().max(1) as f64) * 100.0)
                .round() as i64,
            mime_type: out.format.mime().into(),
            download_url,
            applied_quality: quality,
            stored_file_id: stored,
        });
    }
    Ok(Files {
        files,
        storage: Storage {
            saved: keep,
            notice: if keep {
                "kept as completed jobs; links work until the output expires".into()
            } else {
                "not stored: download URLs are data URLs (send saveToStorage=true to keep the results)"
                    .into()
            },
        },
    })
}

/// `POST /api/convert`: convert images now.
#[utoipa::path(post, path = "/convertly/api/convert", tag = "convertly",
    request_body(content_type = "multipart/form-data", description = "`files` (repeated), format or formats, compression or compressions, resize or resizes, resizeWidth(s), resizeHeight(s), autoOrient, saveToStorage"),
    responses((status = 200, body = Files),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "Every image worker is busy and the queue is full: retry after `Retry-After` seconds")))]
pub async fn convert(
    State(state): State<AppState>,
    auth: Auth,
    headers: axum::http::HeaderMap,
    multipart: Multipart,
) -> Result<Json<Files>, Error> {
    let principal = auth.require("jobs:create")?.clone();
    let (files, settings) = read(&state, multipart).await?;
    settings.refuse_unsupported(files.len())?;
    let kinds: Vec<Kind> = files.iter().map(|(b, _)| Kind::sniff(b)).collect();
    if kinds.contains(&Kind::Video) {
        return Err(ApiError::UnsupportedMedia(
            "synchronous conversion takes images; queue video with POST /api/jobs".into(),
        )
        .into());
    }
    let outputs = settings.outputs(false, &kinds)?;
    let keep = settings.flag("saveToStorage", false)?;
    let mut done = Vec::new();
    for ((input, name), o) in files.into_iter().zip(outputs) {
        let fields = image_fields(&o).ok_or_else(|| {
            ApiError::UnsupportedMedia("synchronous conversion makes images".into())
        })?;
        let t = Instant::now();
        let (input, out) = convert_one(&state, input, &fields).await?;
        done.push(Done {
            input,
            name,
            fields,
            out,
            ms: t.elapsed().as_millis() as i64,
        });
    }
    Ok(Json(
        answer(&state, &headers, &principal.account_id, done, keep).await?,
    ))
}

/// `POST /api/compress`: the same format, smaller.
#[utoipa::path(post, path = "/convertly/api/compress", tag = "convertly",
    request_body(content_type = "multipart/form-data", description = "`files` (repeated), mode (quality|target-size), quality (1–100, default 82), targetBytes, lossless, stripMetadata, saveToStorage"),
    responses((status = 200, body = Files),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "Every image worker is busy and the queue is full: retry after `Retry-After` seconds")))]
pub async fn compress(
    State(state): State<AppState>,
    auth: Auth,
    headers: axum::http::HeaderMap,
    multipart: Multipart,
) -> Result<Json<Files>, Error> {
    let principal = auth.require("jobs:create")?.clone();
    let (files, settings) = read(&state, multipart).await?;
    let get = |k: &str| {
        settings
            .0
            .get(k)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let quality = match get("quality") {
        None => super::form::DEFAULT_COMPRESSION,
        Some(q) => q
            .parse::<u8>()
            .ok()
            .filter(|q| (1..=100).contains(q))
            .ok_or_else(|| ApiError::BadRequest(format!("quality must be 1–100, got {q:?}")))?,
    };
    let target = match get("mode").as_deref() {
        None | Some("quality") => None,
        Some("target-size") => Some(
            get("targetBytes")
                .and_then(|t| t.parse::<u64>().ok())
                .filter(|t| *t > 0)
                .ok_or_else(|| {
                    ApiError::BadRequest("mode=target-size needs targetBytes (a byte count)".into())
                })?,
        ),
        Some(m) => {
            return Err(ApiError::BadRequest(format!(
                "mode must be quality or target-size, got {m:?}"
            ))
            .into())
        }
    };
    let lossless = settings.flag("lossless", false)?;
    let keep = settings.flag("saveToStorage", false)?;
    let mut done = Vec::new();
    for (input, name) in files {
        let Kind::Image(format) = Kind::sniff(&input) else {
            return Err(ApiError::UnsupportedMedia(
                "synchronous compression takes images; queue video with POST /api/jobs".into(),
            )
            .into());
        };
        let mut fields = BTreeMap::new();
        fields.insert(
            "format".to_string(),
            kiln_gpu_node::imaging::OutputFormat::keep(format)
                .as_str()
                .to_string(),
        );
        if lossless {
            fields.insert("lossless".into(), "true".into());
        }
        let t = Instant::now();
        let (input, out, fields) = match target {
            None => {
                fields.insert("quality".into(), quality.to_string());
                let (i, o) = convert_one(&state, input, &fields).await?;
                (i, o, fields)
            }
            Some(bytes) => smallest_within(&state, input, fields, bytes).await?,
        };
        done.push(Done {
            input,
            name,
            fields,
            out,
            ms: t.elapsed().as_millis() as i64,
        });
    }
    Ok(Json(
        answer(&state, &headers, &principal.account_id, done, keep).await?,
    ))
}

/// The highest quality whose output fits in `target` bytes, by bisection over 1–100 (at most
/// seven encodes); 422 when even quality 1 does not fit.
async fn smallest_within(
    state: &AppState,
    mut input: Vec<u8>,
    mut fields: BTreeMap<String, String>,
    target: u64,
) -> Result<(Vec<u8>, Converted, BTreeMap<String, String>), Error> {
    let (mut lo, mut hi) = (1u8, 100u8);
    let mut best: Option<(Converted, u8)> = None;
    while lo <= hi {
        let q = lo + (hi - lo) / 2;
        fields.insert("quality".into(), q.to_string());
        let (i, out) = convert_one(state, input, &fields).await?;
        input = i;
        if out.bytes.len() as u64 <= target {
            best = Some((out, q));
            lo = q + 1;
        } else {
            if q == 1 {
                break;
            }
            hi = q - 1;
        }
        if !best.as_ref().is_some_and(|(o, _)| o.format.lossy()) && best.is_some() {
            // A lossless format does not get smaller with quality: one encode says it all.
            break;
        }
    }
    match best {
        Some((out, q)) => {
            fields.insert("quality".into(), q.to_string());
            Ok((input, out, fields))
        }
        None => Err(ApiError::Unprocessable(format!(
            "the image cannot be made as small as {target} bytes in its format"
        ))
        .into()),
    }
}
