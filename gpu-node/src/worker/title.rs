//! A title encoded in chunks across the fleet (`chunk_secs`), run by the node that holds its
//! job: it cuts the title (and measures the chunks where the title's bits are shared), queues
//! one [`Task::Chunk`] per chunk in the title's chunk class, longest first, keeps the budget
//! as results come back, lends its own slot to chunks while it waits, then joins the chunks
//! with the audio and checks the whole.
//!
//! What survives what: a node dying mid-chunk loses only that chunk (its lease is taken back
//! and the chunk runs again as its next attempt); the title's node dying loses nothing either
//! (its job runs again elsewhere, finds the chunks already stored and queues only the rest);
//! a cancel of the title stops every chunk (chunks watch their title's cancel). Results and
//! bitstreams live under `<output_key>.chunks/` until the title is joined.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use kiln_protocol::job::chunk_class;
use kiln_protocol::{
    Broker, ChunkCounts, ChunkEntry, ChunkTask, ChunksReport, EncodeReport, JobErrorCode, JobSpec,
    RateControl, Store, Task, VideoParams,
};
use tokio::sync::mpsc;

use super::chunk::{get_json, ChunkOutcome, ChunkResult};
use super::execute::{media_failure, JobFailure};
use super::{claimable, Shared, WorkerConfig};
use crate::media::chunked::{self, assemble::assemble, ChunkSpan, Prepared};
use crate::media::{self, Progress, TranscodeOutcome};

/// Tries of one chunk (each a queue entry with its own attempts) before the title fails.
const MAX_TRIES: u32 = 3;
/// How often the title's node looks at its chunks' results.
const POLL: Duration = Duration::from_millis(300);

/// What a title's node works with.
pub(super) struct Ctx<'a> {
    pub broker: &'a Broker,
    pub store: &'a Arc<dyn Store>,
    pub config: &'a WorkerConfig,
    pub shared: &'a Shared,
}

/// A chunk in the queue.
struct Flying {
    tries: u32,
    aim: Option<f64>,
    /// When its node was last seen starting it (a `Running` marker), for the deadline.
    seen_running: Option<Instant>,
}

impl Flying {
    /// Queue the chunk's next try, at the same aim.
    #[allow(clippy::too_many_arguments)]
    async fn again(
        &mut self,
        ctx: &Ctx<'_>,
        job: &JobSpec,
        params: &VideoParams,
        tree: &str,
        round: u32,
        s: &ChunkSpan,
        longest: u64,
    ) -> Result<(), JobFailure> {
        self.tries += 1;
        self.seen_running = None;
        enqueue(
            ctx, job, params, tree, round, s, longest, self.tries, self.aim,
        )
        .await
    }
}

/// One finished chunk as the title's node saw it.
#[derive(Clone)]
struct Finished {
    result: ChunkResult,
    tries: u32,
    aim: Option<f64>,
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
    let report = |percent: f32, frames: u64, chunks: Option<ChunkCounts>| {
        let elapsed = started.elapsed().as_secs_f64().max(1e-3);
        let done = percent as f64 / 100.0;
        let _ = progress.send(Progress {
            percent: base + percent * span / 100.0,
            fps: (frames as f64 / elapsed) as f32,
            eta_s: (done > 0.0).then(|| (elapsed * (1.0 - done) / done) as f32),
            chunks,
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
        let found = tokio::task::spawn_blocking(move || {
            crate::quality::target::search_title(&input, &p, &at, &cancel, &mut |f| {
                let _ = tx.send(Progress {
                    percent: f * base,
                    fps: 0.0,
                    eta_s: None,
                    chunks: None,
                });
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
                    let _ = tx.send(Progress {
                        percent: base + (f * 10.0) as f32 * span / 100.0,
                        fps: 0.0,
                        eta_s: None,
                        chunks: None,
                    });
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
            params,
            &prep,
            &tree,
            round,
            total_bits,
            cancel,
            &|f, frames, counts| report((lo + f * (hi - lo)) as f32, frames, Some(counts)),
        )
        .await
        {
            Ok(f) => f,
            Err(e) => break Err(e),
        };
        // Every chunk's bitstream to this node, then the join.
        let mut files = Vec::with_capacity(prep.spans.len());
        for s in &prep.spans {
            let key = chunk_key(&tree, round, s.index);
            let local = ctx.store.local_path(&key);
            let path = match local {
                Some(p) if tokio::fs::try_exists(&p).await.unwrap_or(false) => p,
                _ => {
                    let p = scratch.join(format!("r{round}-{:05}.mp4", s.index));
                    ctx.store
                        .fetch_to_path(&key, &p)
                        .await
                        .map_err(|e| (JobErrorCode::StorageFailed, e.to_string()))?;
                    p
                }
            };
            files.push((s.clone(), path));
        }
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
    // The chunks are joined, or the title failed or was cancelled: its tree goes either way.
    // A title stopped for another reason (its lease taken back, the node draining) keeps it
    // for the attempt that follows.
    let stopped = cancel.load(Ordering::SeqCst);
    let cancelled = ctx
        .broker
        .queue
        .is_cancelled(&job.id)
        .await
        .unwrap_or(false);
    if !stopped || cancelled {
        if let Err(e) = ctx.store.delete_tree(&tree).await {
            tracing::warn!(job = %job.id, error = %e, "chunks left in storage");
        }
    }
    let (assembled, finished) = result?;
    let info = media::probe(out).map_err(media_failure)?;
    let chunks: Vec<ChunkEntry> = prep
        .spans
        .iter()
        .zip(&finished)
        .map(|(s, f)| entry(s, f, &prep))
        .collect();
    let encoder = finished
        .iter()
        .find_map(|f| match &f.result.outcome {
            ChunkOutcome::Done { encoder, .. } => Some(encoder.clone()),
            _ => None,
        })
        .unwrap_or_default();
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

fn entry(s: &ChunkSpan, f: &Finished, prep: &Prepared) -> ChunkEntry {
    let (bytes, secs) = match f.result.outcome {
        ChunkOutcome::Done {
            video_bytes, secs, ..
        } => (video_bytes, secs),
        _ => (0, 0.0),
    };
    ChunkEntry {
        index: s.index as u32,
        start_s: s.start_s,
        frames: s.frames,
        on_keyframe: s.on_keyframe,
        at_scene: s.at_scene,
        bytes,
        // Queue attempts of the try that made it, after the tries that failed.
        attempts: f.result.attempt + f.tries - 1,
        secs: (secs * 100.0).round() / 100.0,
        kbps: f.aim.map(|b| (b / 100.0).round() / 10.0),
        estimate_bytes: prep.weights.as_ref().map(|w| w[s.index]),
        node: Some(f.result.node.clone()),
        rung: None,
    }
}

fn chunk_key(tree: &str, round: u32, index: usize) -> String {
    format!("{tree}/r{round}-{index:05}.mp4")
}

fn result_key(tree: &str, round: u32, index: usize) -> String {
    format!("{tree}/r{round}-{index:05}.json")
}

/// A node that has not reported for this long is not counted (nodes report every 2 s).
const NODE_LIVE_MS: i64 = 15_000;

/// Slots of the live nodes that take this title's chunks.
async fn fleet_slots(ctx: &Ctx<'_>, params: &VideoParams) -> usize {
    let class = chunk_class(params.codec, params.hardware);
    let nodes = ctx.broker.nodes.list().await.unwrap_or_default();
    nodes
        .iter()
        .filter(|n| n.live(NODE_LIVE_MS) && !n.draining && n.classes.contains(&class))
        .map(|n| n.slots as usize)
        .sum::<usize>()
        .max(1)
}

/// Queue try `tries` of chunk `s`.
#[allow(clippy::too_many_arguments)]
async fn enqueue(
    ctx: &Ctx<'_>,
    job: &JobSpec,
    params: &VideoParams,
    tree: &str,
    round: u32,
    s: &ChunkSpan,
    longest: u64,
    tries: u32,
    aim: Option<f64>,
) -> Result<(), JobFailure> {
    let spec = JobSpec {
        // Every try its own queue entry: a late ack of an earlier one cannot touch it.
        id: format!("{}.r{round}c{:05}t{tries}", job.id, s.index),
        attempt: 1,
        source_key: job.source_key.clone(),
        output_key: chunk_key(tree, round, s.index),
        task: Task::Chunk(ChunkTask {
            parent_id: job.id.clone(),
            index: s.index as u32,
            round,
            start_s: s.start_s,
            end_s: s.end_s.is_finite().then_some(s.end_s),
            frames: s.frames,
            longest: Some(longest),
            params: params.clone(),
            aim_bps: aim,
            result_key: result_key(tree, round, s.index),
            ladder: None,
        }),
    };
    ctx.broker
        .queue
        .enqueue(&spec)
        .await
        .map_err(|e| (JobErrorCode::Internal, format!("queue a chunk: {e}")))
}

/// Chunks this node runs while it waits on its title.
type Lent<'a> = FuturesUnordered<Pin<Box<dyn Future<Output = ()> + Send + 'a>>>;

/// One encode of every chunk: queued longest first (where the title's bits are shared, no
/// more at once than the fleet has slots, so later chunks are aimed with what earlier ones
/// spent), results collected, failed chunks tried again. `on_progress` gets the fraction of
/// frames done, the frames and where the chunks stand. Meanwhile this node runs chunks too (up to
/// [`chunked::local_slots`] at once, in the slot its title holds), each to its end.
#[allow(clippy::too_many_arguments)]
async fn run_round(
    ctx: &Ctx<'_>,
    job: &JobSpec,
    params: &VideoParams,
    prep: &Prepared,
    tree: &str,
    round: u32,
    total_bits: f64,
    cancel: &Arc<AtomicBool>,
    on_progress: &(dyn Fn(f64, u64, ChunkCounts) + Sync),
) -> Result<Vec<Finished>, JobFailure> {
    let mut lent: Lent<'_> = FuturesUnordered::new();
    let r = round_loop(
        ctx,
        job,
        params,
        prep,
        tree,
        round,
        total_bits,
        cancel,
        on_progress,
        &mut lent,
    )
    .await;
    while lent.next().await.is_some() {}
    r
}

#[allow(clippy::too_many_arguments)]
async fn round_loop<'a>(
    ctx: &Ctx<'a>,
    job: &JobSpec,
    params: &VideoParams,
    prep: &Prepared,
    tree: &str,
    round: u32,
    total_bits: f64,
    cancel: &Arc<AtomicBool>,
    on_progress: &(dyn Fn(f64, u64, ChunkCounts) + Sync),
    lent: &mut Lent<'a>,
) -> Result<Vec<Finished>, JobFailure> {
    let spans = &prep.spans;
    let n = spans.len();
    let longest = chunked::longest_chunk(spans);
    let total_frames: u64 = spans.iter().map(|s| s.frames).sum();
    let mut budget = prep.budget(total_bits);
    let mut done: Vec<Option<Finished>> = vec![None; n];
    let store = ctx.store.as_ref();
    let storage_err = |e: kiln_protocol::StoreError| (JobErrorCode::StorageFailed, e.to_string());

    // An earlier attempt of this title may have left finished chunks: keep them.
    for s in spans {
        let key = result_key(tree, round, s.index);
        match get_json::<ChunkResult>(store, &key).await {
            Ok(Some(r)) => match r.outcome {
                ChunkOutcome::Done {
                    frames,
                    video_bytes,
                    ..
                } if frames == s.frames => {
                    if let Some(b) = budget.as_mut() {
                        b.finish(s.index, video_bytes as f64 * 8.0);
                    }
                    done[s.index] = Some(Finished {
                        result: r,
                        tries: 1,
                        aim: None,
                    });
                }
                _ => store.delete(&key).await.map_err(storage_err)?,
            },
            Ok(None) => {}
            Err(e) => return Err(storage_err(e)),
        }
    }
    let kept = done.iter().flatten().count();
    if kept > 0 {
        tracing::info!(job = %job.id, kept, of = n, "chunks of an earlier attempt kept");
    }
    let mut order: Vec<&ChunkSpan> = spans.iter().filter(|s| done[s.index].is_none()).collect();
    order.sort_by_key(|s| std::cmp::Reverse(s.frames));
    let mut order: VecDeque<&ChunkSpan> = order.into();
    let window = if budget.is_some() {
        fleet_slots(ctx, params).await.max(2)
    } else {
        n
    };
    let mut flying: HashMap<usize, Flying> = HashMap::new();
    let chunk_classes: Vec<String> = ctx
        .config
        .classes
        .iter()
        .filter(|c| c.starts_with(kiln_protocol::job::CHUNK_CLASS_PREFIX))
        .cloned()
        .collect();
    let consumer = format!("{}/title-{}", ctx.config.node_id, job.id);
    let mut longest_done = 0.0f64;
    let mut failed_tries = 0u32;

    loop {
        if cancel.load(Ordering::SeqCst) {
            return Err((JobErrorCode::Cancelled, "cancelled".into()));
        }
        while flying.len() < window {
            let Some(s) = order.pop_front() else { break };
            let aim = budget.as_mut().map(|b| b.start(s.index));
            enqueue(ctx, job, params, tree, round, s, longest, 1, aim).await?;
            flying.insert(
                s.index,
                Flying {
                    tries: 1,
                    aim,
                    seen_running: None,
                },
            );
        }

        // Results of the chunks in the queue.
        let indices: Vec<usize> = flying.keys().copied().collect();
        for i in indices {
            let key = result_key(tree, round, i);
            let Some(r) = get_json::<ChunkResult>(store, &key)
                .await
                .map_err(storage_err)?
            else {
                continue;
            };
            let f = flying.get_mut(&i).expect("flying");
            match &r.outcome {
                ChunkOutcome::Running { .. } => {
                    f.seen_running.get_or_insert_with(Instant::now);
                    continue;
                }
                ChunkOutcome::Done {
                    video_bytes, secs, ..
                } => {
                    if let Some(b) = budget.as_mut() {
                        b.finish(i, *video_bytes as f64 * 8.0);
                    }
                    longest_done = longest_done.max(*secs);
                    let f = flying.remove(&i).expect("flying");
                    done[i] = Some(Finished {
                        result: r,
                        tries: f.tries,
                        aim: f.aim,
                    });
                }
                ChunkOutcome::Failed { code, message } => {
                    if !code.retryable() || f.tries >= MAX_TRIES {
                        return Err((*code, format!("chunk {i}: {message}")));
                    }
                    tracing::warn!(job = %job.id, chunk = i, %code, %message, "chunk failed; trying it again");
                    failed_tries += 1;
                    store.delete(&key).await.map_err(storage_err)?;
                    f.again(ctx, job, params, tree, round, &spans[i], longest)
                        .await?;
                }
            }
        }

        // A chunk whose node started it and then went silent past every lease (the queue
        // gave up on it after its attempts) is queued afresh.
        let deadline =
            ctx.config.lease * 4 + Duration::from_secs_f64((longest_done * 4.0).max(600.0));
        let overdue: Vec<usize> = flying
            .iter()
            .filter(|(_, f)| f.seen_running.is_some_and(|t| t.elapsed() > deadline))
            .map(|(i, _)| *i)
            .collect();
        for i in overdue {
            let f = flying.get_mut(&i).expect("flying");
            if f.tries >= MAX_TRIES {
                return Err((
                    JobErrorCode::DeadLetter,
                    format!("chunk {i} did not finish in {MAX_TRIES} tries"),
                ));
            }
            tracing::warn!(job = %job.id, chunk = i, "chunk overdue; queueing it again");
            failed_tries += 1;
            f.again(ctx, job, params, tree, round, &spans[i], longest)
                .await?;
        }

        let frames: u64 = spans
            .iter()
            .filter(|s| done[s.index].is_some())
            .map(|s| s.frames)
            .sum();
        let running = flying.values().filter(|f| f.seen_running.is_some()).count() as u32;
        let counts = ChunkCounts {
            total: n as u32,
            done: done.iter().flatten().count() as u32,
            running,
            queued: (flying.len() + order.len()) as u32 - running,
            // Tries this title's node retried, and attempts the queue re-leased (a node lost
            // mid-chunk) of the chunks finished so far.
            failed: failed_tries
                + done
                    .iter()
                    .flatten()
                    .map(|d| d.result.attempt.saturating_sub(1))
                    .sum::<u32>(),
        };
        on_progress(frames as f64 / total_frames.max(1) as f64, frames, counts);
        if flying.is_empty() && order.is_empty() {
            return Ok(done
                .into_iter()
                .map(|d| d.expect("every chunk done"))
                .collect());
        }

        // Lend this slot to chunks (this title's or others') while waiting: take one more
        // where there is room, then let those running go on for a moment.
        let room = lent.len() < chunked::local_slots()
            && !ctx.shared.draining.load(Ordering::SeqCst)
            && !chunk_classes.is_empty();
        if room {
            let permit = ctx.shared.nvenc.clone().try_acquire_owned().ok();
            let classes = claimable(&chunk_classes, permit.is_some());
            let wait = if lent.is_empty() {
                POLL
            } else {
                Duration::ZERO
            };
            match ctx
                .broker
                .queue
                .claim(&consumer, &classes, wait, ctx.config.lease)
                .await
            {
                Ok(Some(lease)) => {
                    let permit = permit.filter(|_| super::is_nvenc_class(&lease.job.class()));
                    let (broker, store, config, shared) =
                        (ctx.broker, ctx.store, ctx.config, ctx.shared);
                    lent.push(Box::pin(async move {
                        let _permit = permit;
                        super::lease::run_chunk_leased(broker, store, config, shared, lease).await;
                    }));
                    continue;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "queue unavailable while waiting on chunks"),
            }
        }
        if lent.is_empty() {
            if !room {
                tokio::time::sleep(POLL).await;
            }
        } else {
            let _ = tokio::time::timeout(POLL, lent.next()).await;
        }
    }
}
