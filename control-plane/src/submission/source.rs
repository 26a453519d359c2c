//! Resolving a submission's sources into objects in Kiln's store: an upload already there,
//! an upload from `POST /uploads`, or a URL or caller's bucket object copied in now; then
//! refusing media that cannot be done before anything is charged.

use kiln_gpu_node::media::{self, MediaError};
use kiln_protocol::video::{plan_size, BYTES_PER_MB};
use kiln_protocol::{LadderParams, RateControl, VideoParams};

use super::{Source, SubmitError};
use crate::sources;
use crate::AppState;

/// A source in Kiln's store.
#[derive(Debug, Clone)]
pub(super) struct Resolved {
    pub key: String,
    pub size: u64,
    pub name: Option<String>,
    /// Whether this submission copied it in (removed again if the submission fails).
    pub fetched: bool,
}

/// Resolve `src`; a fetched copy is written to `fetch_key`.
pub(super) async fn resolve(
    state: &AppState,
    account_id: &str,
    src: &Source,
    fetch_key: String,
) -> Result<Resolved, SubmitError> {
    let (size, name) = match src {
        Source::Stored { key, size, name } => {
            return Ok(Resolved {
                key: key.clone(),
                size: *size,
                name: name.clone(),
                fetched: false,
            })
        }
        Source::Upload(id) => {
            let up = usable_upload(state, account_id, id).await?;
            return Ok(Resolved {
                key: up.object_key,
                size: up.size as u64,
                name: up.filename,
                fetched: false,
            });
        }
        Source::Url(url) => sources::fetch_url(state, url, &fetch_key).await,
        Source::S3(loc) => sources::fetch_s3(state, loc, &fetch_key).await,
    }
    .inspect_err(|_| {
        // A copy cut off part-way may have left an object behind.
        let (store, key) = (state.store.clone(), fetch_key.clone());
        tokio::spawn(async move { store.delete(&key).await });
    })?;
    if size == 0 {
        remove(state, &fetch_key).await;
        return Err(SubmitError::Unprocessable("the source is empty".into()));
    }
    Ok(Resolved {
        key: fetch_key,
        size,
        name,
        fetched: true,
    })
}

/// The caller's upload `id`, refused when it is missing or no longer usable.
pub(super) async fn usable_upload(
    state: &AppState,
    account_id: &str,
    id: &str,
) -> Result<crate::db::uploads::UploadRow, SubmitError> {
    let up = state
        .db
        .get_upload(account_id, id)
        .await?
        .ok_or_else(|| SubmitError::NoUpload(id.to_string()))?;
    if !up.usable(kiln_protocol::now_ms()) {
        return Err(SubmitError::UploadExpired(id.to_string()));
    }
    Ok(up)
}

/// Remove an object this submission wrote, logging (not hiding) a failure.
pub(super) async fn remove(state: &AppState, key: &str) {
    if let Err(e) = state.store.delete(key).await {
        tracing::warn!(%key, error = %e, "could not remove a source copied in for a refused submission");
    }
}

/// Probe a stored source as video: `None` on remote stores (the node probes, and holds the
/// source to its limits, when it runs the job); refusals for files that are not video and for
/// sources past the server's limits (picture size, duration, stream count).
pub(super) async fn check_video_source(
    state: &AppState,
    key: &str,
) -> Result<Option<media::MediaInfo>, SubmitError> {
    let Some(path) = state.store.local_path(key) else {
        return Ok(None);
    };
    let probed = tokio::task::spawn_blocking(move || media::probe(&path))
        .await
        .map_err(|e| SubmitError::Internal(Box::new(e)))?;
    let info = match probed {
        Ok(info) => info,
        Err(MediaError::NoVideoStream) => return Err(SubmitError::NoVideoStream),
        Err(e @ MediaError::InvalidMedia(_)) => {
            return Err(SubmitError::Unprocessable(e.to_string()))
        }
        Err(e) => return Err(SubmitError::Internal(Box::new(e))),
    };
    state
        .config
        .limits
        .check(&info.shape())
        .map_err(SubmitError::SourceLimit)?;
    Ok(Some(info))
}

/// Refuse what cannot be done before a job is created, so the caller learns at once: what
/// FFmpeg cannot open, a source past the limits, an upscale not allowed, a target size the
/// duration cannot meet. Returns the source's duration (s) where it was probed.
pub(super) async fn check_media(
    state: &AppState,
    key: &str,
    params: &VideoParams,
) -> Result<Option<f64>, SubmitError> {
    super::edit::check_assets(state, &params.edit).await?;
    let Some(source) = check_video_source(state, key).await? else {
        return Ok(None);
    };
    let info = media::edited_info(&source, &params.edit).map_err(SubmitError::Unprocessable)?;
    media::geometry::plan(&info, params.resolution, params.allow_upscale)
        .map_err(SubmitError::Unprocessable)?;
    if matches!(params.rate, RateControl::Vmaf { .. }) && !params.edit.is_empty() {
        return Err(SubmitError::Unprocessable(
            "target_vmaf does not yet apply to trimmed, cropped, watermarked or subtitled outputs; use quality".into(),
        ));
    }
    if matches!(params.rate, RateControl::Vmaf { .. }) && info.rotation != 0 {
        return Err(SubmitError::Unprocessable(format!(
            "target_vmaf does not yet measure sources with a {}° display rotation; use quality",
            info.rotation
        )));
    }
    if let RateControl::Size { target_mb } = params.rate {
        // Refused only where even the audio shrunk to its least leaves the video too little.
        plan_size(
            target_mb * BYTES_PER_MB,
            info.duration_s,
            info.source_audio(),
        )
        .map_err(|e| SubmitError::Unprocessable(e.to_string()))?;
    }
    Ok((source.duration_s > 0.0).then_some(source.duration_s))
}

/// A ladder's edits against its source (where the store is local): the span and crop fit,
/// the files are what they say. Returns the source's duration where it was probed.
pub(super) async fn check_ladder(
    state: &AppState,
    key: &str,
    params: &LadderParams,
) -> Result<Option<f64>, SubmitError> {
    super::edit::check_assets(state, &params.edit).await?;
    let Some(source) = check_video_source(state, key).await? else {
        return Ok(None);
    };
    media::edited_info(&source, &params.edit).map_err(SubmitError::Unprocessable)?;
    if params.per_title.is_some() && source.rotation != 0 {
        return Err(SubmitError::Unprocessable(format!(
            "renditions \"auto\" does not yet measure sources with a {}° display rotation; give the rungs",
            source.rotation
        )));
    }
    Ok((source.duration_s > 0.0).then_some(source.duration_s))
}
