//! A title encoded in chunks across the fleet (`chunk_secs`), run by the node that holds its
//! job: it cuts the title (and measures the chunks where the title's bits are shared), queues
//! one [`kiln_protocol::Task::Chunk`] per chunk in the title's chunk class, longest first
//! (`round`), keeps the budget as results come back, lends its own slot to chunks while it
//! waits, then joins the chunks with the audio and checks the whole. A ladder's title
//! (`ladder`) queues one per chunk and rendition the same way, then joins each rendition and
//! packages them.
//!
//! What survives what: a node dying mid-chunk loses only that chunk (its lease is taken back
//! and the chunk runs again as its next attempt); the title's node dying loses nothing either
//! (its job runs again elsewhere, finds the chunks already stored and queues only the rest);
//! a cancel of the title stops every chunk (chunks watch their title's cancel). Results and
//! bitstreams live under `<output_key>.chunks/` until the title is joined.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use kiln_protocol::{
    Broker, ChunkCounts, ChunkEntry, ChunksReport, EncodeReport, JobErrorCode, JobSpec,
    RateControl, Store, VideoParams,
};
use tokio::sync::mpsc;

use super::execute::{media_failure, JobFailure};
use super::{Shared, WorkerConfig};
use crate::media::chunked::{self, assemble::assemble, ChunkSpan};
use crate::media::{self, Progress, TranscodeOutcome};

mod ladder;
mod round;

pub(super) use ladder::run as run_ladder;
use round::{drop_tree, fetch_all, fleet_slots, run_round, Piece};

/// What a title's node works with.
pub(super) struct Ctx<'a> {
    pub broker: &'a Broker,
    pub store: &'a Arc<dyn Store>,
    pub config: &'a WorkerConfig,
    pub shared: &'a Shared,
}

/// Encode `params` (a `chunk_secs` output; `auto` where the node chose it for a long source)
/// of `input` to `out` in chunks across the fleet.
#[allow(clippy::too_many_arguments)]
pub(super) async fn run(
    ctx: &Ctx<'_>,
    job: &JobSpec,
    params: &VideoParams,
    auto: bool,
    input: &Path,
    out: &Path,
    cancel: &Arc<AtomicBool>,
    progress: &mpsc::UnboundedSender<Progress>,
) -> Result<TranscodeOutcome, JobFailure> {
    let started = Instant::now();
    let chunk_secs = params.chunk_secs.unwrap_or(30.0);
    let scratch = out.with_extension("chunks");
    let _cleanup = super::execute::Cleanup(vec![scratch.clone()]);
    tokio::fs::create_dir_all(&scratch)
        .await
        .map_err(|e| (JobErrorCode::Internal, format!("scratch: {e}")))?;
    // A `target_vmaf` title: one CRF for the whole title, searched here on its sampled scenes
    // (the first 15 %), every chunk encoded at it, the joined title scored (the last 10 %).
    let target_vmaf = match params.rate {
        RateControl::Vmaf { target } => Some(target),
        _ => None,
    };
    let vmaf = target_vmaf.is_some();
    let (base, span) = if vmaf { (15.0, 75.0) } else { (0.0, 100.0) };
    // The ETA from the whole job's share done (a VMAF title's search included).
    let report = |percent: f32, frames: u64, chunks: Option<ChunkCounts>| {
        let overall = base + percent * span / 100.0;
        let _ = progress.send(Progress {
            chunks,
            ..Progress::timed(overall, frames, started.elapsed().as_secs_f64())
        });
    };

    let searched = if vmaf {
        let (input, p, at, cancel, tx) = (
            input.to_path_buf(),
            params.clone(),
            scratch.join("vmaf-search"),
            cancel.clone(),
            progress.clone(),
        );
        // The search encodes samples: placed on the node's GPUs like any encode.
        let found = super::on_gpu(ctx.config, job, move || {
            crate::quality::target::search_title(&input, &p, &at, &cancel, &mut |f| {
                let _ = tx.send(Progress::at(f * base));
            })
        })
        .await
        .map_err(|_| (JobErrorCode::Internal, "the VMAF search panicked".into()))?
        .map_err(media_failure)?;
        Some(found)
    } else {
        None
    };
    let params = searched.as_ref().map_or(params, |(p, _)| p);

    // Cut (and measure) on this node's cores.
    let prep = {
        let (input, params, scratch, cancel) = (
            input.to_path_buf(),
            params.clone(),
            scratch.clone(),
            cancel.clone(),
        );
        let tx = progress.clone();
        tokio::task::spawn_blocking(move || {
            chunked::prepare(
                &input,
                &params,
                chunk_secs,
                &scratch,
                chunked::local_slots(),
                &cancel,
                &|f| {
                    let _ = tx.send(Progress::at(base + (f * 10.0) as f32 * span / 100.0));
                },
            )
        })
        .await
        .map_err(|_| (JobErrorCode::Internal, "cutting the title panicked".into()))?
        .map_err(media_failure)?
    };
    let tree = format!("{}.chunks", job.output_key);
    let first_share = if prep.weights.is_some() { 10.0 } else { 0.0 };
    let (mut total_bits, target_bytes, shrink) = prep.rate.shared();
    let total_frames = prep.index.frames.len() as u64;
    let longest = chunked::longest_chunk(&prep.spans);
    let pieces: Vec<Piece> = prep
        .spans
        .iter()
        .map(|s| Piece {
            span: s.clone(),
            params: params.clone(),
            longest,
            ladder: None,
        })
        .collect();
    let mut round = 1;
    let result = loop {
        let (lo, hi) = if round == 1 {
            (first_share, 95.0)
        } else {
            (95.0, 99.0)
        };
        let finished = match run_round(
            ctx,
            job,
            &pieces,
            prep.budget(total_bits),
            &tree,
            round,
            cancel,
            &|f, frames, counts| report((lo + f * (hi - lo)) as f32, frames, Some(counts)),
        )
        .await
        {
            Ok(f) => f,
            Err(e) => break Err(e),
        };
        // Every chunk's bitstream to this node, then the join.
        let files: Vec<(ChunkSpan, PathBuf)> =
            match fetch_all(ctx, &tree, round, prep.spans.len(), &scratch).await {
                Ok(f) => prep.spans.iter().cloned().zip(f).collect(),
                Err(e) => break Err(e),
            };
        let assembled = {
            let (input, out, container, origin) = (
                input.to_path_buf(),
                out.to_path_buf(),
                params.container,
                prep.index.origin_s,
            );
            tokio::task::spawn_blocking(move || {
                assemble(&input, &files, origin, &out, container, Some(shrink))
            })
            .await
            .map_err(|_| (JobErrorCode::Internal, "joining the chunks panicked".into()))?
            .map_err(media_failure)?
        };
        if assembled.frames != total_frames {
            break Err((
                JobErrorCode::EncodeFailed,
                format!(
                    "the joined title holds {} frames of the source's {total_frames}",
                    assembled.frames
                ),
            ));
        }
        if let Some(target) = target_bytes {
            let (off, again) = chunked::size_miss(&assembled, target, round);
            tracing::info!(job = %job.id, target, round, "chunked size title {:+.1}% off", off * 100.0);
            if let Some(bits) = again {
                total_bits = bits;
                round += 1;
                continue;
            }
        }
        let n = prep.spans.len() as u32;
        report(
            100.0,
            assembled.frames,
            Some(ChunkCounts {
                total: n,
                done: n,
                ..ChunkCounts::default()
            }),
        );
        break Ok((assembled, finished));
    };
    drop_tree(ctx, job, &tree, cancel).await;
    let (assembled, finished) = result?;
    let info = media::probe(out).map_err(media_failure)?;
    let chunks: Vec<ChunkEntry> = prep
        .spans
        .iter()
        .zip(&finished)
        .map(|(s, f)| f.entry(s, prep.weights.as_ref().map(|w| w[s.index]), None))
        .collect();
    let encoder = finished
        .iter()
        .find_map(|f| f.encoder())
        .unwrap_or_default()
        .to_string();
    let slots = fleet_slots(ctx, params).await;
    let mut outcome = TranscodeOutcome {
        width: info.width,
        height: info.height,
        frames: assembled.frames,
        duration_s: info.duration_s,
        output_size: assembled.file_bytes,
        report: EncodeReport {
            encoder,
            decoder: prep.info.video_codec.clone(),
            passes: round,
            audio: assembled.audio.to_string(),
            audio_shrunk: shrink.and_then(|s| s.report(prep.info.source_audio(), assembled.audio)),
            target_size: target_bytes.map(|t| t.round() as u64),
            chunks: Some(ChunksReport {
                chunk_secs,
                auto,
                total: chunks.len() as u32,
                done: chunks.len() as u32,
                slots: slots as u32,
                scene_changes: prep.scene_changes,
                estimate_secs: prep.estimate_secs.map(|s| (s * 100.0).round() / 100.0),
                chunks,
            }),
            ..EncodeReport::default()
        },
    };
    if let (Some((_, searched)), Some(target)) = (searched, target_vmaf) {
        let (input, out) = (input.to_path_buf(), out.to_path_buf());
        outcome = tokio::task::spawn_blocking(move || {
            crate::quality::target::score_title(&input, &out, target, &searched, &mut outcome)
                .map(|()| outcome)
        })
        .await
        .map_err(|_| (JobErrorCode::Internal, "scoring the title panicked".into()))?
        .map_err(media_failure)?;
    }
    Ok(outcome)
}
