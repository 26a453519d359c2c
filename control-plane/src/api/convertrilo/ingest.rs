//! Convertrilo's folder ingest: `POST /ondemand/ingest/folder` lists `sourceS3.prefix` in the
//! caller's bucket with their credentials (every page of the listing, through Kiln's
//! outbound guard), keeps the files with video extensions, honours `maxFiles`, and submits one
//! job per file — its output copied to `outputS3.prefix` + the file's name when the output
//! destination is `s3`. 404 `no_video_files_found` when the prefix holds no video.
//!
//! Each file is copied into Kiln's store while the request runs (as every S3 source is), so a
//! folder of many large files makes a long request; the answer lists every job queued.

use std::collections::HashMap;

use axum::extract::State;
use axum::Json;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::encode::{kept, settings};
use super::{google_drive_refused, Error, ErrorBody, S3};
use crate::auth::Auth;
use crate::dialect::Dialect;
use crate::error::{ApiError, DialectError};
use crate::sources::S3Location;
use crate::submission::{self, Output, Source, Submission, Webhook};
use crate::AppState;

/// Extensions of the files a folder ingest takes.
pub const VIDEO_EXTENSIONS: &[&str] = &[
    "mp4", "m4v", "mov", "mkv", "webm", "avi", "mpg", "mpeg", "ts", "mts", "m2ts", "wmv", "flv",
    "3gp", "ogv",
];

/// The most files one ingest queues (Convertrilo's `maxFiles` ceiling).
pub const MAX_FILES: usize = 1000;

/// `POST /ondemand/ingest/folder`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = ConvertriloIngest)]
#[serde(rename_all = "camelCase")]
pub struct IngestRequest {
    #[serde(default, rename = "sourceS3")]
    pub source_s3: Option<S3>,
    /// cdn (default: Kiln keeps the outputs) or s3.
    #[serde(default)]
    pub output_destination: Option<String>,
    #[serde(default, rename = "outputS3")]
    pub output_s3: Option<S3>,
    /// At most this many files (1–1000).
    #[serde(default)]
    pub max_files: Option<usize>,
    #[serde(default)]
    pub codec: Option<String>,
    #[serde(default)]
    pub resolution: Option<String>,
    #[serde(default)]
    pub quality: Option<String>,
    #[serde(default)]
    pub preset: Option<String>,
    #[serde(default)]
    pub container: Option<String>,
    /// Each job's externalId is `<externalIdPrefix>:<file name>`.
    #[serde(default)]
    pub external_id_prefix: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub other: HashMap<String, Value>,
}

/// One queued file.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ConvertriloIngested)]
#[serde(rename_all = "camelCase")]
pub struct Ingested {
    pub job_id: String,
    pub external_id: Option<String>,
    pub file_name: String,
}

/// The ingest's answer.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ConvertriloIngestAnswer)]
pub struct IngestAnswer {
    pub message: String,
    pub jobs: Vec<Ingested>,
}

/// `POST /ondemand/ingest/folder`: one encode per video under a prefix.
#[utoipa::path(post, path = "/convertrilo/ondemand/ingest/folder", tag = "convertrilo", request_body = IngestRequest,
    responses((status = 200, body = IngestAnswer),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 402, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn folder(
    State(state): State<AppState>,
    auth: Auth,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<axum::response::Response, Error> {
    let principal = auth.require("jobs:create")?.clone();
    let req: IngestRequest = super::json_body(&body)?;
    super::idempotent(
        &state,
        &principal.account_id,
        &headers,
        "/ondemand/ingest/folder",
        &body,
        || ingest(&state, &principal, req),
    )
    .await
}

async fn ingest(
    state: &AppState,
    principal: &crate::auth::Principal,
    mut req: IngestRequest,
) -> Result<Json<IngestAnswer>, Error> {
    let state = state.clone();
    for drive in [
        "sourceGoogleDrive",
        "sourceGoogleDriveFiles",
        "outputGoogleDrive",
    ] {
        if req.other.remove(drive).is_some() {
            return Err(google_drive_refused());
        }
    }
    let source = req
        .source_s3
        .as_ref()
        .ok_or_else(|| ApiError::BadRequest("sourceS3 {bucket, prefix, …} is required".into()))?;
    let output = match req.output_destination.as_deref().unwrap_or("cdn") {
        "cdn" => None,
        "s3" => Some(req.output_s3.as_ref().ok_or_else(|| {
            ApiError::BadRequest("outputDestination s3 needs outputS3 {bucket, prefix}".into())
        })?),
        "google-drive" => return Err(google_drive_refused()),
        other => {
            return Err(ApiError::BadRequest(format!(
                "outputDestination must be cdn or s3, got {other:?}"
            ))
            .into())
        }
    };
    let max = match req.max_files {
        None => MAX_FILES,
        Some(n) if (1..=MAX_FILES).contains(&n) => n,
        Some(n) => {
            return Err(
                ApiError::BadRequest(format!("maxFiles must be 1–{MAX_FILES}, got {n}")).into(),
            )
        }
    };
    let (params, warnings) = settings(
        req.codec.as_deref(),
        req.resolution.as_deref(),
        req.quality.as_deref(),
        req.preset.as_deref(),
        req.container.as_deref(),
        &req.other,
    )?;
    let src = source.location(&state, &principal.account_id).await?;
    let files = list_videos(&state, &src, max).await?;
    if files.is_empty() {
        return Err(DialectError::coded(
            ApiError::NotFound(format!(
                "no video files under {:?} in bucket {:?}",
                src.prefix.clone().unwrap_or_default(),
                src.bucket
            )),
            "no_video_files_found",
        ));
    }
    let out_loc = match output {
        Some(o) => Some(o.location(&state, &principal.account_id).await?),
        None => None,
    };
    let mut jobs = Vec::with_capacity(files.len());
    for key in files {
        let file_name = key.rsplit('/').next().unwrap_or(&key).to_string();
        let external_id = req
            .external_id_prefix
            .as_ref()
            .map(|p| format!("{p}:{file_name}"));
        let destination = out_loc.clone().map(|mut o| {
            o.key = Some(format!(
                "{}{file_name}",
                o.prefix.clone().unwrap_or_else(|| "outputs/".into())
            ));
            o
        });
        let accepted = submission::submit(
            &state,
            Submission {
                account_id: principal.account_id.clone(),
                sources: vec![Source::S3(S3Location {
                    key: Some(key.clone()),
                    prefix: None,
                    ..src.clone()
                })],
                outputs: vec![Output::Video(params.clone())].into(),
                dialect: Dialect::Convertrilo,
                dialect_data: Some(kept(
                    external_id.as_deref(),
                    req.metadata.as_ref(),
                    &warnings,
                )),
                webhook: Webhook::default(),
                destination,
                archive: false,
                batch: false,
                job_id: None,
            },
        )
        .await?;
        for job in accepted.jobs {
            jobs.push(Ingested {
                job_id: job.id,
                external_id: external_id.clone(),
                file_name: file_name.clone(),
            });
        }
    }
    Ok(Json(IngestAnswer {
        message: format!("{} video file(s) queued", jobs.len()),
        jobs,
    }))
}

/// The video files under `loc.prefix`, in key order, at most `max` (the listing follows every
/// page the bucket returns).
async fn list_videos(state: &AppState, loc: &S3Location, max: usize) -> Result<Vec<String>, Error> {
    let bucket = loc.connect(state).await?;
    let prefix = loc.prefix.clone().unwrap_or_default();
    let prefix_path = object_store::path::Path::from(prefix.trim_matches('/'));
    let mut listing = bucket.list((!prefix.is_empty()).then_some(&prefix_path));
    let mut keys = Vec::new();
    while let Some(meta) = listing
        .try_next()
        .await
        .map_err(|e| ApiError::Unprocessable(format!("listing the source bucket failed: {e}")))?
    {
        let key = meta.location.to_string();
        let ext = key
            .rsplit('.')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if key.contains('.') && VIDEO_EXTENSIONS.contains(&ext.as_str()) && meta.size > 0 {
            keys.push(key);
        }
    }
    keys.sort();
    keys.truncate(max);
    Ok(keys)
}
