//! One round of a chunked title through the queue, for a title's chunks and a ladder's
//! (chunk, rendition) pairs alike: each [`Piece`] a queue entry in the title's chunk class,
//! longest first (where the title's bits are shared, no more at once than the fleet has slots,
//! so later pieces are aimed with what earlier ones spent); results read back from storage;
//! a failed or overdue piece queued again as its next try; the title's node lending its own
//! slot to pieces while it waits.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use kiln_protocol::job::chunk_class;
use kiln_protocol::{
    ChunkCounts, ChunkEntry, ChunkTask, JobErrorCode, JobSpec, LadderChunk, Task, VideoParams,
};

use super::super::chunk::{get_json, ChunkOutcome, ChunkResult};
use super::super::claimable;
use super::super::execute::JobFailure;
use super::Ctx;
use crate::media::chunked::{self, Budget, ChunkSpan};

/// Tries of one chunk (each a queue entry with its own attempts) before the title fails.
const MAX_TRIES: u32 = 3;
/// How often the title's node looks at its chunks' results.
const POLL: Duration = Duration::from_millis(300);

/// A chunk in the queue.
struct Flying {
    tries: u32,
    aim: Option<f64>,
    /// When its node was last seen starting it (a `Running` marker), for the deadline.
    seen_running: Option<Instant>,
}

impl Flying {
    /// Queue the piece's next try, at the same aim.
    async fn again(
        &mut self,
        ctx: &Ctx<'_>,
        job: &JobSpec,
        tree: &str,
        round: u32,
        piece: &Piece,
    ) -> Result<(), JobFailure> {
        self.tries += 1;
        self.seen_running = None;
        enqueue(ctx, job, tree, round, piece, self.tries, self.aim).await
    }
}

/// One finished piece as the title's node saw it.
#[derive(Clone)]
pub(in crate::worker) struct Finished {
    pub result: ChunkResult,
    pub tries: u32,
    pub aim: Option<f64>,
}

impl Finished {
    /// The piece's entry on the job's report: `s` the chunk it covers (of the title), with the
    /// bytes the first pass made of it where one ran and its rendition where a ladder's.
    pub fn entry(
        &self,
        s: &ChunkSpan,
        estimate_bytes: Option<u64>,
        rung: Option<u32>,
    ) -> ChunkEntry {
        let (bytes, secs) = match self.result.outcome {
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
            attempts: self.result.attempt + self.tries - 1,
            secs: (secs * 100.0).round() / 100.0,
            kbps: self.aim.map(|b| (b / 100.0).round() / 10.0),
            estimate_bytes,
            node: Some(self.result.node.clone()),
            rung,
        }
    }

    /// The encoder that made it.
    pub fn encoder(&self) -> Option<&str> {
        match &self.result.outcome {
            ChunkOutcome::Done { encoder, .. } => Some(encoder),
            _ => None,
        }
    }
}

/// One queue entry's work: a title's chunk, or one rendition of a ladder's chunk.
#[derive(Debug, Clone)]
pub(in crate::worker) struct Piece {
    /// What it covers; its index is the piece's own (names its files and queue entry).
    pub span: ChunkSpan,
    /// The settings it encodes with.
    pub params: VideoParams,
    /// A title's chunk: frames of the title's longest chunk (its GOP).
    pub longest: u64,
    /// A ladder's: which rendition of which chunk, and how it is shaped.
    pub ladder: Option<LadderChunk>,
}

pub(in crate::worker) fn chunk_key(tree: &str, round: u32, index: usize) -> String {
    format!("{tree}/r{round}-{index:05}.mp4")
}

fn result_key(tree: &str, round: u32, index: usize) -> String {
    format!("{tree}/r{round}-{index:05}.json")
}

/// A node that has not reported for this long is not counted (nodes report every 2 s).
const NODE_LIVE_MS: i64 = 15_000;

/// Slots of the live nodes that take this title's chunks.
pub(in crate::worker) async fn fleet_slots(ctx: &Ctx<'_>, params: &VideoParams) -> usize {
    let class = chunk_class(params.codec, params.hardware);
    let nodes = ctx.broker.nodes.list().await.unwrap_or_default();
    nodes
        .iter()
        .filter(|n| n.live(NODE_LIVE_MS) && !n.draining && n.classes.contains(&class))
        .map(|n| n.slots as usize)
        .sum::<usize>()
        .max(1)
}

/// Queue try `tries` of `piece`.
async fn enqueue(
    ctx: &Ctx<'_>,
    job: &JobSpec,
    tree: &str,
    round: u32,
    piece: &Piece,
    tries: u32,
    aim: Option<f64>,
) -> Result<(), JobFailure> {
    let s = &piece.span;
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
            longest: Some(piece.longest),
            params: piece.params.clone(),
            aim_bps: aim,
            result_key: result_key(tree, round, s.index),
            ladder: piece.ladder,
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

/// One encode of every piece (by index): queued longest first (where `budget` shares the
/// title's bits, no more at once than the fleet has slots, so later pieces are aimed with what
/// earlier ones spent), results collected, failed pieces tried again. `on_progress` gets the
/// fraction of frames done, the frames and where the pieces stand. Meanwhile this node runs
/// pieces too (up to [`chunked::local_slots`] at once, in the slot its title holds), each to
/// its end.
#[allow(clippy::too_many_arguments)]
pub(in crate::worker) async fn run_round(
    ctx: &Ctx<'_>,
    job: &JobSpec,
    pieces: &[Piece],
    budget: Option<Budget>,
    tree: &str,
    round: u32,
    cancel: &Arc<AtomicBool>,
    on_progress: &(dyn Fn(f64, u64, ChunkCounts) + Sync),
) -> Result<Vec<Finished>, JobFailure> {
    let mut lent: Lent<'_> = FuturesUnordered::new();
    let r = round_loop(
        ctx,
        job,
        pieces,
        budget,
        tree,
        round,
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
    pieces: &[Piece],
    mut budget: Option<Budget>,
    tree: &str,
    round: u32,
    cancel: &Arc<AtomicBool>,
    on_progress: &(dyn Fn(f64, u64, ChunkCounts) + Sync),
    lent: &mut Lent<'a>,
) -> Result<Vec<Finished>, JobFailure> {
    let spans: Vec<&ChunkSpan> = pieces.iter().map(|p| &p.span).collect();
    let n = spans.len();
    let total_frames: u64 = spans.iter().map(|s| s.frames).sum();
    let mut done: Vec<Option<Finished>> = vec![None; n];
    let store = ctx.store.as_ref();
    let storage_err = |e: kiln_protocol::StoreError| (JobErrorCode::StorageFailed, e.to_string());

    // An earlier attempt of this title may have left finished chunks: keep them.
    for s in &spans {
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
    let mut order: Vec<&ChunkSpan> = spans
        .iter()
        .copied()
        .filter(|s| done[s.index].is_none())
        .collect();
    order.sort_by_key(|s| std::cmp::Reverse(s.frames));
    let mut order: VecDeque<&ChunkSpan> = order.into();
    let window = if budget.is_some() {
        fleet_slots(ctx, &pieces[0].params).await.max(2)
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
            enqueue(ctx, job, tree, round, &pieces[s.index], 1, aim).await?;
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
                    f.again(ctx, job, tree, round, &pieces[i]).await?;
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
            f.again(ctx, job, tree, round, &pieces[i]).await?;
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
            let classes = claimable(&chunk_classes, ctx.config.gpus.nvenc_free());
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
                    let (broker, store, config, shared) =
                        (ctx.broker, ctx.store, ctx.config, ctx.shared);
                    lent.push(Box::pin(async move {
                        crate::worker::lease::run_chunk_leased(
                            broker, store, config, shared, lease,
                        )
                        .await;
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

/// Every piece's bitstream of `round` as a local file: read in place from a local store, else
/// fetched into `scratch`. By piece index.
pub(in crate::worker) async fn fetch_all(
    ctx: &Ctx<'_>,
    tree: &str,
    round: u32,
    n: usize,
    scratch: &Path,
) -> Result<Vec<PathBuf>, JobFailure> {
    let mut files = Vec::with_capacity(n);
    for i in 0..n {
        let key = chunk_key(tree, round, i);
        let path = match ctx.store.local_path(&key) {
            Some(p) if tokio::fs::try_exists(&p).await.unwrap_or(false) => p,
            _ => {
                let p = scratch.join(format!("r{round}-{i:05}.mp4"));
                ctx.store
                    .fetch_to_path(&key, &p)
                    .await
                    .map_err(|e| (JobErrorCode::StorageFailed, e.to_string()))?;
                p
            }
        };
        files.push(path);
    }
    Ok(files)
}

/// Once a title is joined, has failed or was cancelled, its pieces' tree goes. A title stopped
/// for another reason (its lease taken back, the node draining) keeps it for the attempt that
/// follows.
pub(in crate::worker) async fn drop_tree(
    ctx: &Ctx<'_>,
    job: &JobSpec,
    tree: &str,
    cancel: &AtomicBool,
) {
    let stopped = cancel.load(Ordering::SeqCst);
    let cancelled = ctx
        .broker
        .queue
        .is_cancelled(&job.id)
        .await
        .unwrap_or(false);
    if !stopped || cancelled {
        if let Err(e) = ctx.store.delete_tree(tree).await {
            tracing::warn!(job = %job.id, error = %e, "chunks left in storage");
        }
    }
}
