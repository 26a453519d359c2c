//! A ladder in chunks across the fleet, run by the node that holds its job: it chooses the
//! renditions (a per-title search here, where asked), cuts the title on whole segments, queues
//! one piece per chunk and rendition through [`super::round`], then joins each rendition,
//! packages them with the audio and measures the tree ([`ladder::chunked::finish`]). What
//! survives what is as for a title's chunks.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use kiln_protocol::video::AUTO_CHUNK_SECS;
use kiln_protocol::{ChunkCounts, ChunksReport, JobErrorCode, JobSpec, LadderParams};
use tokio::sync::mpsc;

use super::round::{drop_tree, fetch_all, fleet_slots, run_round, Piece};
use super::Ctx;
use crate::media::ladder::chunked::{self, Encoded};
use crate::media::{LadderOutcome, Progress};
use crate::worker::execute::{media_failure, Cleanup, JobFailure};

/// Encode `params`' ladder (`auto` where the node chose chunks for a long source) of `input`
/// into the folder `out` in chunks across the fleet.
#[allow(clippy::too_many_arguments)]
pub(in crate::worker) async fn run(
    ctx: &Ctx<'_>,
    job: &JobSpec,
    params: &LadderParams,
    auto: bool,
    input: &Path,
    out: &Path,
    cancel: &Arc<AtomicBool>,
    progress: &mpsc::UnboundedSender<Progress>,
) -> Result<LadderOutcome, JobFailure> {
    let started = Instant::now();
    let chunk_secs = params
        .chunk_secs
        .filter(|&c| c > 0.0)
        .unwrap_or(AUTO_CHUNK_SECS);
    let scratch = out.with_extension("chunks");
    let _cleanup = Cleanup(vec![scratch.clone()]);
    tokio::fs::create_dir_all(&scratch)
        .await
        .map_err(|e| (JobErrorCode::Internal, format!("scratch: {e}")))?;
    // A per-title search takes the first 45 %, the pieces run to 95 %, the join, packaging
    // and measuring take the rest.
    let base = if params.per_title.is_some() {
        45.0
    } else {
        0.0
    };
    let plan = {
        let (input, params, scratch, cancel, tx) = (
            input.to_path_buf(),
            params.clone(),
            scratch.clone(),
            cancel.clone(),
            progress.clone(),
        );
        tokio::task::spawn_blocking(move || {
            chunked::prepare(&input, &params, chunk_secs, &scratch, &cancel, &mut |f| {
                let _ = tx.send(Progress::at(f * base));
            })
        })
        .await
        .map_err(|_| (JobErrorCode::Internal, "cutting the ladder panicked".into()))?
        .map_err(media_failure)?
    };
    let items = plan.items();
    let pieces: Vec<Piece> = items
        .iter()
        .map(|it| Piece {
            span: it.span.clone(),
            params: plan.rung_params(it.rung),
            longest: it.span.frames,
            ladder: Some(plan.ladder_chunk(it.chunk, it.rung)),
        })
        .collect();
    let tree = format!("{}.chunks", job.output_key);
    // The ETA from the whole job's share done, as a title's (a per-title search included).
    let report = |f: f64, frames: u64, counts: ChunkCounts| {
        let overall = base + (f * (95.0 - base as f64)) as f32;
        let _ = progress.send(Progress {
            chunks: Some(counts),
            ..Progress::timed(overall, frames, started.elapsed().as_secs_f64())
        });
    };
    let result = match run_round(ctx, job, &pieces, None, &tree, 1, cancel, &report).await {
        Ok(finished) => fetch_all(ctx, &tree, 1, pieces.len(), &scratch)
            .await
            .map(|files| (finished, files)),
        Err(e) => Err(e),
    };
    let n = pieces.len() as u32;
    let (finished, files) = match result {
        Ok(r) => r,
        Err(e) => {
            drop_tree(ctx, job, &tree, cancel).await;
            return Err(e);
        }
    };
    let entries = items
        .iter()
        .zip(&finished)
        .map(|(it, f)| f.entry(&plan.spans[it.chunk], None, Some(it.rung as u32)))
        .collect();
    let encoded = Encoded {
        files,
        encoder: finished
            .iter()
            .find_map(|f| f.encoder())
            .unwrap_or_default()
            .to_string(),
        chunks: ChunksReport {
            chunk_secs,
            auto,
            total: n,
            done: n,
            slots: fleet_slots(ctx, &pieces[0].params).await as u32,
            scene_changes: None,
            estimate_secs: None,
            chunks: entries,
        },
    };
    report(
        1.0,
        plan.frames(),
        ChunkCounts {
            total: n,
            done: n,
            ..ChunkCounts::default()
        },
    );
    let joined = {
        let (input, out, scratch, cancel) = (
            input.to_path_buf(),
            out.to_path_buf(),
            scratch.clone(),
            cancel.clone(),
        );
        tokio::task::spawn_blocking(move || {
            chunked::finish(&input, &plan, encoded, &out, &scratch, &cancel)
        })
        .await
        .map_err(|_| {
            (
                JobErrorCode::Internal,
                "packaging the ladder panicked".into(),
            )
        })
        .and_then(|r| r.map_err(media_failure))
    };
    drop_tree(ctx, job, &tree, cancel).await;
    joined
}
