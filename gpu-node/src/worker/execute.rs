//! The work of a job: fetch the source, transcode or convert, store the output.

use std::path::PathBuf;
use std::sync::Arc;

use kiln_protocol::edit::Asset;
use kiln_protocol::{
    Broker, JobErrorCode, JobSpec, LadderParams, NodeEventKind, Store, Task, VideoParams,
};
use tokio::sync::mpsc;

use super::{codec_label, Shared, Stop, WorkerConfig};
use crate::media::{self, MediaError};

pub(super) type JobFailure = (JobErrorCode, String);

/// Fetch, transcode, upload. Returns the `Completed` event or the failure.
pub(super) async fn execute(
    broker: &Broker,
    store: &Arc<dyn Store>,
    config: &WorkerConfig,
    shared: &Shared,
    job: &JobSpec,
    stop: &Stop,
) -> Result<NodeEventKind, JobFailure> {
    let cancel = &stop.flag;
    let events = &broker.events;
    let (params, ladder) = match &job.task {
        Task::Video(p) => (Some(p), None),
        Task::Ladder(p) => (None, Some(p)),
        Task::Image(p) => return execute_image(store, config, job, p).await,
        Task::Thumbnails(_) | Task::Storyboard(_) => {
            return execute_stills(store, config, job, stop).await
        }
        Task::Chunk(c) => return super::chunk::execute(store, config, job, c, cancel).await,
    };
    let storage_err = |e: kiln_protocol::StoreError| (JobErrorCode::StorageFailed, e.to_string());

    let stem = format!("{}-{}", job.id, job.attempt);
    let scratch_in = config.scratch_dir.join(format!("{stem}.src"));
    let scratch_out = match (params, ladder) {
        (Some(p), _) => config
            .scratch_dir
            .join(format!("{stem}.{}", p.container.extension())),
        _ => config.scratch_dir.join(format!("{stem}.ladder")),
    };
    let mut cleanup = Cleanup(vec![scratch_in.clone(), scratch_out.clone()]);

    let input = local_source(store, job, &scratch_in).await?;
    let work = match (params, ladder) {
        (Some(p), _) => rate_work(&p.rate),
        // Each rendition is an encode (the default ladder has up to five); a per-title ladder
        // first encodes and scores trial rungs.
        (_, Some(l)) => {
            let rungs = l.renditions.as_ref().map_or(5, |r| r.len().max(1)) as f64;
            rungs * if l.per_title.is_some() { 3.0 } else { 1.0 }
        }
        _ => 1.0,
    };
    let source = admit(config, stop, &input, work).await?;

    // The files an edit reads (a watermark image, subtitles) come to the scratch folder too.
    let mut files = media::EditFiles::default();
    let edit = params.map(|p| &p.edit).or(ladder.map(|l| &l.edit));
    if let Some(edit) = edit {
        let fetch = |what: &str, asset: &Asset| {
            let path = config.scratch_dir.join(format!("{stem}.{what}"));
            (path, asset.clone())
        };
        let wanted = [
            edit.watermark
                .as_ref()
                .map(|w| fetch("watermark", &w.image)),
            edit.subtitles.as_ref().map(|s| fetch("subtitles", &s.file)),
        ];
        for (i, (path, asset)) in wanted
            .into_iter()
            .enumerate()
            .filter_map(|(i, w)| Some((i, w?)))
        {
            let Asset::Key(key) = asset else {
                return Err((
                    JobErrorCode::InvalidSettings,
                    "an edit names an upload the control plane did not resolve".into(),
                ));
            };
            cleanup.0.push(path.clone());
            store
                .fetch_to_path(&key, &path)
                .await
                .map_err(storage_err)?;
            if i == 0 {
                files.watermark = Some(path);
            } else {
                files.subtitles = Some(path);
            }
        }
    }

    // Progress flows from the blocking encode thread through a channel to the queue.
    let (tx, mut rx) = mpsc::unbounded_channel::<media::Progress>();
    let forwarder = {
        let events = events.clone();
        let node = config.node_id.clone();
        let job = job.clone();
        let metrics = config.metrics.clone();
        tokio::spawn(async move {
            while let Some(p) = rx.recv().await {
                if let Some(m) = &metrics {
                    if p.fps > 0.0 {
                        m.encode_fps
                            .with_label_values(&[codec_label(&job)])
                            .observe(p.fps as f64);
                    }
                }
                let kind = NodeEventKind::Progress {
                    percent: p.percent,
                    fps: p.fps,
                    eta_s: p.eta_s,
                    chunks: p.chunks,
                };
                super::lease::publish(&events, &node, &job, kind).await;
            }
        })
    };

    let chunked = match (params, ladder) {
        (Some(p), _) => chunk_plan(config, p.chunk_secs, p.edit.is_empty(), source.as_ref()),
        (_, Some(l)) => chunk_plan(config, l.chunk_secs, l.edit.is_empty(), source.as_ref()),
        _ => None,
    };
    let ctx = super::title::Ctx {
        broker,
        store,
        config,
        shared,
    };
    let result = if let Some((secs, auto)) = chunked {
        // A title in chunks: its chunks go through the queue to the fleet.
        let r = match (params, ladder) {
            (Some(p), _) => {
                let p = VideoParams {
                    chunk_secs: Some(secs),
                    ..p.clone()
                };
                super::title::run(&ctx, job, &p, auto, &input, &scratch_out, cancel, &tx)
                    .await
                    .map(Encoded::File)
            }
            (_, Some(l)) => {
                let l = LadderParams {
                    chunk_secs: Some(secs),
                    ..l.clone()
                };
                super::title::run_ladder(&ctx, job, &l, auto, &input, &scratch_out, cancel, &tx)
                    .await
                    .map(Encoded::Tree)
            }
            _ => unreachable!("only video and ladder jobs are chunked"),
        };
        drop(tx);
        Ok(r)
    } else {
        let (params, ladder) = (params.cloned(), ladder.cloned());
        let out = scratch_out.clone();
        let cancel = cancel.clone();
        super::on_gpu(config, job, move || {
            let mut progress = |p| {
                let _ = tx.send(p);
            };
            match (params, ladder) {
                (Some(p), _) => {
                    media::transcode_edited(&input, &out, &p, &files, &cancel, &mut progress)
                        .map(Encoded::File)
                }
                (_, Some(l)) => {
                    media::encode_ladder_edited(&input, &out, &l, &files, &cancel, &mut progress)
                        .map(Encoded::Tree)
                }
                _ => unreachable!("a video or ladder task"),
            }
        })
        .await
        .map(|r| r.map_err(media_failure))
    };
    let _ = forwarder.await;

    let outcome = match result {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(failure)) => return Err(failure),
        Err(join) => {
            let what = if join.is_panic() {
                "the transcode panicked"
            } else {
                "the transcode was aborted"
            };
            return Err((JobErrorCode::Internal, what.to_string()));
        }
    };

    let (output_size, width, height, frames, duration_s, report) = match outcome {
        Encoded::File(o) => {
            let size = store
                .put_file(&job.output_key, &scratch_out)
                .await
                .map_err(storage_err)?;
            (size, o.width, o.height, o.frames, o.duration_s, o.report)
        }
        Encoded::Tree(o) => {
            let size = upload_tree(store.as_ref(), &job.output_key, &scratch_out, &o.files)
                .await
                .map_err(storage_err)?;
            (size, o.width, o.height, o.frames, o.duration_s, o.report)
        }
    };
    tracing::info!(job = %job.id, output_size, frames, "job completed");
    Ok(NodeEventKind::Completed {
        output_key: job.output_key.clone(),
        output_size,
        width,
        height,
        duration_s,
        report,
    })
}

/// Whether a video or ladder job goes in chunks, of how many seconds, and whether because its
/// source is long: as the job asks (`chunk_secs`; 0 never), or — asked nothing, `unedited` —
/// where its source is longer than the node's `chunk_auto_secs`, in chunks of
/// [`kiln_protocol::video::AUTO_CHUNK_SECS`].
fn chunk_plan(
    config: &WorkerConfig,
    chunk_secs: Option<f64>,
    unedited: bool,
    source: Option<&media::MediaInfo>,
) -> Option<(f64, bool)> {
    match chunk_secs {
        Some(c) if c > 0.0 => Some((c, false)),
        Some(_) => None,
        None => {
            if config.chunk_auto_secs <= 0.0 || !unedited {
                return None;
            }
            (source?.duration_s > config.chunk_auto_secs)
                .then_some((kiln_protocol::video::AUTO_CHUNK_SECS, true))
        }
    }
}

/// Units of work an encode with `rate` does, for its time budget: a size target encodes
/// twice, a VMAF target also searches sampled scenes.
fn rate_work(rate: &kiln_protocol::RateControl) -> f64 {
    match rate {
        kiln_protocol::RateControl::Size { .. } => 2.0,
        kiln_protocol::RateControl::Vmaf { .. } => 4.0,
        _ => 1.0,
    }
}

/// Hold the fetched source to this node's limits (the control plane could not probe a source
/// in a remote store) and give the job its time budget for `work` units. A source the probe
/// cannot read is left to the pipeline, which says why it failed.
async fn admit(
    config: &WorkerConfig,
    stop: &Stop,
    input: &std::path::Path,
    work: f64,
) -> Result<Option<media::MediaInfo>, JobFailure> {
    let path = input.to_path_buf();
    let Ok(Ok(info)) = tokio::task::spawn_blocking(move || media::probe(&path)).await else {
        return Ok(None);
    };
    let shape = info.shape();
    config
        .limits
        .check(&shape)
        .map_err(|m| (JobErrorCode::SourceLimitExceeded, m))?;
    if let Some(budget) = config.limits.budget(&shape, work) {
        stop.set_budget(std::time::Instant::now(), budget);
    }
    Ok(Some(info))
}

/// A video job's result: one file, or a ladder's tree.
enum Encoded {
    File(media::TranscodeOutcome),
    Tree(media::LadderOutcome),
}

/// Upload a ladder's folder beside `entry_key` (its entry manifest, written last, so a reader
/// who finds it finds every segment). What an earlier attempt left there goes first.
async fn upload_tree(
    store: &dyn Store,
    entry_key: &str,
    dir: &std::path::Path,
    files: &[PathBuf],
) -> Result<u64, kiln_protocol::StoreError> {
    let prefix = entry_key
        .rsplit_once('/')
        .map(|(p, _)| p)
        .ok_or_else(|| kiln_protocol::StoreError::InvalidKey(entry_key.to_string()))?;
    store.delete_tree(prefix).await?;
    let mut total = 0;
    for f in files {
        let key = format!("{prefix}/{}", f.to_string_lossy());
        total += store.put_file(&key, &dir.join(f)).await?;
    }
    Ok(total)
}

/// Thumbnails or a storyboard: fetch, decode once, write the tree, upload it.
async fn execute_stills(
    store: &Arc<dyn Store>,
    config: &WorkerConfig,
    job: &JobSpec,
    stop: &Stop,
) -> Result<NodeEventKind, JobFailure> {
    let storage_err = |e: kiln_protocol::StoreError| (JobErrorCode::StorageFailed, e.to_string());
    let stem = format!("{}-{}", job.id, job.attempt);
    let scratch_in = config.scratch_dir.join(format!("{stem}.src"));
    let scratch_out = config.scratch_dir.join(format!("{stem}.stills"));
    let _cleanup = Cleanup(vec![scratch_in.clone(), scratch_out.clone()]);
    let input = local_source(store, job, &scratch_in).await?;
    admit(config, stop, &input, 1.0).await?;
    let (task, out, cancel2) = (job.task.clone(), scratch_out.clone(), stop.flag.clone());
    let made = tokio::task::spawn_blocking(move || match &task {
        Task::Thumbnails(p) => media::stills::thumbnails(&input, &out, p, &cancel2),
        Task::Storyboard(p) => media::stills::storyboard(&input, &out, p, &cancel2),
        _ => unreachable!("a stills task"),
    })
    .await
    .map_err(|_| {
        (
            JobErrorCode::Internal,
            "the stills job panicked".to_string(),
        )
    })?
    .map_err(media_failure)?;
    let output_size = upload_tree(store.as_ref(), &job.output_key, &scratch_out, &made.files)
        .await
        .map_err(storage_err)?;
    Ok(NodeEventKind::Completed {
        output_key: job.output_key.clone(),
        output_size,
        width: made.width,
        height: made.height,
        duration_s: made.duration_s,
        report: kiln_protocol::EncodeReport {
            encoder: "stills".into(),
            decoder: "cpu".into(),
            passes: 1,
            audio: "none".into(),
            ..Default::default()
        },
    })
}

/// Largest image source a node reads into memory.
const MAX_IMAGE_SOURCE: u64 = 256 << 20;

/// Convert an image: read the source, convert on the GPU or CPU, store the result.
async fn execute_image(
    store: &Arc<dyn Store>,
    config: &WorkerConfig,
    job: &JobSpec,
    p: &kiln_protocol::ImageParams,
) -> Result<NodeEventKind, JobFailure> {
    use crate::imaging;
    use tokio::io::AsyncReadExt;
    let storage_err = |e: kiln_protocol::StoreError| (JobErrorCode::StorageFailed, e.to_string());
    let params = imaging::params::from_fields(&p.fields, imaging::ConvertParams::default())
        .map_err(|e| (JobErrorCode::InvalidSettings, e))?;
    let (mut reader, size) = store.open(&job.source_key).await.map_err(storage_err)?;
    if size > MAX_IMAGE_SOURCE {
        return Err((
            JobErrorCode::InvalidSettings,
            format!("images are limited to {MAX_IMAGE_SOURCE} bytes"),
        ));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    reader
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| storage_err(e.into()))?;
    let out = super::on_gpu(config, job, move || imaging::convert(&bytes, &params))
        .await
        .map_err(|_| {
            (
                JobErrorCode::Internal,
                "the conversion panicked".to_string(),
            )
        })?
        .map_err(|e| {
            tracing::info!(job = %job.id, reason = e.code(), error = %e, "image not converted");
            (e.job_code(), e.to_string())
        })?;
    let output_size = store
        .put_stream(
            &job.output_key,
            &mut std::io::Cursor::new(&out.bytes),
            u64::MAX,
        )
        .await
        .map_err(storage_err)?;
    Ok(NodeEventKind::Completed {
        output_key: job.output_key.clone(),
        output_size,
        width: out.width,
        height: out.height,
        duration_s: 0.0,
        report: kiln_protocol::EncodeReport {
            encoder: out.format.as_str().to_string(),
            decoder: "image".into(),
            // `wgpu` only when the shader ran on a real GPU (not lavapipe, the CPU driver):
            // usage counts GPU seconds by it.
            hwaccel: out
                .resized_on
                .filter(|b| *b == crate::gpu::ResizeBackend::Wgpu)
                .filter(|_| {
                    crate::gpu::choice()
                        .adapter
                        .as_ref()
                        .is_some_and(|a| a.device_type != "cpu")
                })
                .map(|b| b.as_str().to_string()),
            passes: 1,
            audio: "none".into(),
            ..Default::default()
        },
    })
}

/// The job's source as a local file: read in place from a local store, else fetched to
/// `scratch_in`.
pub(super) async fn local_source(
    store: &Arc<dyn Store>,
    job: &JobSpec,
    scratch_in: &std::path::Path,
) -> Result<PathBuf, JobFailure> {
    match store.local_path(&job.source_key) {
        Some(p) if tokio::fs::try_exists(&p).await.unwrap_or(false) => Ok(p),
        _ => {
            store
                .fetch_to_path(&job.source_key, scratch_in)
                .await
                .map_err(|e| (JobErrorCode::StorageFailed, e.to_string()))?;
            Ok(scratch_in.to_path_buf())
        }
    }
}

pub(super) fn media_failure(e: MediaError) -> JobFailure {
    (e.code(), e.to_string())
}

/// Removes scratch files when a job ends, however it ends.
pub(super) struct Cleanup(pub(super) Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            if p.is_dir() {
                let _ = std::fs::remove_dir_all(p);
            } else {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}
