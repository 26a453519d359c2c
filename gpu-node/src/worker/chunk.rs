//! One chunk of a title, on whichever node claimed it: fetch the source, encode the chunk's
//! span with the title's settings at its aim, store the bitstream at the job's output key and
//! the result beside it for the title's node ([`ChunkResult`]). A failure is stored too, so the
//! title's node decides whether the chunk runs again.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use kiln_protocol::{ChunkTask, JobErrorCode, JobSpec, NodeEventKind, Store};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use super::execute::{local_source, media_failure, Cleanup, JobFailure};
use super::WorkerConfig;
use crate::media::chunked::encode::{encode_counted, title_rate, Shape};
use crate::media::chunked::ChunkSpan;
use crate::media::{self, MediaError};

/// What a chunk's node tells the title's node, as JSON at the chunk's `result_key`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ChunkResult {
    pub index: u32,
    pub round: u32,
    pub node: String,
    /// The chunk job's attempt (2 and up where a node died holding it).
    pub attempt: u32,
    pub outcome: ChunkOutcome,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub(super) enum ChunkOutcome {
    /// Its node started it (the title's node times its deadline from seeing this).
    Running {
        since_ms: i64,
    },
    Done {
        frames: u64,
        video_bytes: u64,
        encoder: String,
        /// Encodes it took on that node (a frame count off is encoded once more).
        encodes: u32,
        secs: f64,
    },
    Failed {
        code: JobErrorCode,
        message: String,
    },
}

/// The span a chunk task covers.
pub(super) fn span_of(c: &ChunkTask) -> ChunkSpan {
    ChunkSpan {
        index: c.index as usize,
        start_s: c.start_s,
        end_s: c.end_s.unwrap_or(f64::INFINITY),
        frames: c.frames,
        on_keyframe: false,
        at_scene: false,
    }
}

/// Run chunk `c` (job `job`) and store its result.
pub(super) async fn execute(
    store: &Arc<dyn Store>,
    config: &WorkerConfig,
    job: &JobSpec,
    c: &ChunkTask,
    cancel: &Arc<AtomicBool>,
) -> Result<NodeEventKind, JobFailure> {
    let running = ChunkResult {
        index: c.index,
        round: c.round,
        node: config.node_id.clone(),
        attempt: job.attempt,
        outcome: ChunkOutcome::Running {
            since_ms: kiln_protocol::now_ms(),
        },
    };
    put_json(store.as_ref(), &c.result_key, &running)
        .await
        .map_err(|e| (JobErrorCode::StorageFailed, e.to_string()))?;
    let r = encode(store, config, job, c, cancel).await;
    let outcome = match &r {
        Ok((o, _)) => o.clone(),
        // A cancelled chunk leaves nothing: its title is gone.
        Err(_) if cancel.load(std::sync::atomic::Ordering::SeqCst) => return r.map(|(_, e)| e),
        Err((code, message)) => ChunkOutcome::Failed {
            code: *code,
            message: message.clone(),
        },
    };
    let result = ChunkResult {
        index: c.index,
        round: c.round,
        node: config.node_id.clone(),
        attempt: job.attempt,
        outcome,
    };
    put_json(store.as_ref(), &c.result_key, &result)
        .await
        .map_err(|e| (JobErrorCode::StorageFailed, e.to_string()))?;
    r.map(|(_, e)| e)
}

async fn encode(
    store: &Arc<dyn Store>,
    config: &WorkerConfig,
    job: &JobSpec,
    c: &ChunkTask,
    cancel: &Arc<AtomicBool>,
) -> Result<(ChunkOutcome, NodeEventKind), JobFailure> {
    let storage_err = |e: kiln_protocol::StoreError| (JobErrorCode::StorageFailed, e.to_string());
    let stem = format!("{}-{}", job.id, job.attempt);
    let scratch_in = config.scratch_dir.join(format!("{stem}.src"));
    let scratch_out = config.scratch_dir.join(format!("{stem}.mp4"));
    let _cleanup = Cleanup(vec![scratch_in.clone(), scratch_out.clone()]);
    // Each chunk fetches the whole source (a local store is read in place).
    let input = local_source(store, job, &scratch_in).await?;
    let started = Instant::now();
    let (task, out, cancel2) = (c.clone(), scratch_out.clone(), cancel.clone());
    let encoded = super::on_gpu(config, job, move || {
        encode_blocking(&input, &out, &task, &cancel2)
    })
    .await
    .map_err(|_| (JobErrorCode::Internal, "the chunk's encode panicked".into()))?
    .map_err(media_failure)?;
    let (frames, video_bytes, encoder, encodes) = encoded;
    let size = store
        .put_file(&job.output_key, &scratch_out)
        .await
        .map_err(storage_err)?;
    tracing::info!(job = %job.id, title = %c.parent_id, chunk = c.index, frames, size, "chunk encoded");
    let outcome = ChunkOutcome::Done {
        frames,
        video_bytes,
        encoder: encoder.to_string(),
        encodes,
        secs: started.elapsed().as_secs_f64(),
    };
    let event = NodeEventKind::Completed {
        output_key: job.output_key.clone(),
        output_size: size,
        width: 0,
        height: 0,
        duration_s: 0.0,
        report: Default::default(),
    };
    Ok((outcome, event))
}

/// The chunk's encode at its aim; a frame count off is encoded once more, then refused.
fn encode_blocking(
    input: &Path,
    out: &Path,
    c: &ChunkTask,
    cancel: &AtomicBool,
) -> Result<(u64, u64, &'static str, u32), MediaError> {
    let (rate, shape) = match c.ladder {
        Some(l) => crate::media::ladder::chunked::piece_encode(&c.params, &l)?,
        None => {
            let info = media::probe(input)?;
            (
                title_rate(&c.params, &info)?.chunk(c.aim_bps.unwrap_or(0.0)),
                Shape::Title {
                    longest: c.longest.unwrap_or(c.frames),
                },
            )
        }
    };
    let span = span_of(c);
    let (o, encodes) = encode_counted(
        input,
        out,
        &c.params,
        &span,
        shape,
        cancel,
        &mut |_| {},
        &mut |_| rate,
    )?;
    Ok((o.frames, o.video_bytes, o.encoder, encodes))
}

/// Store `value` as JSON at `key`.
pub(super) async fn put_json<T: Serialize>(
    store: &dyn Store,
    key: &str,
    value: &T,
) -> Result<u64, kiln_protocol::StoreError> {
    let bytes = serde_json::to_vec(value).expect("plain data serialises");
    store
        .put_stream(key, &mut std::io::Cursor::new(bytes), u64::MAX)
        .await
}

/// Read the JSON at `key`; `Ok(None)` where there is none yet.
pub(super) async fn get_json<T: serde::de::DeserializeOwned>(
    store: &dyn Store,
    key: &str,
) -> Result<Option<T>, kiln_protocol::StoreError> {
    let (mut reader, _) = match store.open(key).await {
        Ok(r) => r,
        Err(kiln_protocol::StoreError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes).await?;
    Ok(serde_json::from_slice(&bytes).ok())
}
