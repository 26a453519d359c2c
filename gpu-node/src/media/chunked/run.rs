//! A title's chunks run over local slots, longest first: the first pass that measures their
//! complexity (where the title's bits are shared, [`estimate_all`]), the encodes aimed from
//! the budget, the join, and a `size` title's second round where the first missed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use kiln_protocol::VideoParams;

use super::assemble::assemble;
use super::encode::{encode_counted, estimate_chunk, Shape};
use super::{size_miss, Budget, ChunkReport, ChunkSpan, ChunkedOutcome, Prepared};
use crate::media::MediaError;

/// One title's chunks and where they go.
pub(super) struct Title<'a> {
    pub(super) input: &'a Path,
    pub(super) output: &'a Path,
    pub(super) params: &'a VideoParams,
    pub(super) prep: &'a Prepared,
    pub(super) scratch: &'a Path,
    pub(super) slots: usize,
    pub(super) cancel: &'a AtomicBool,
}

/// A chunk's report and the encoder that made it, or why it failed.
type Encoded = Result<(ChunkReport, &'static str), MediaError>;

impl Title<'_> {
    fn file(&self, s: &ChunkSpan) -> PathBuf {
        self.scratch.join(format!("chunk-{:05}.mp4", s.index))
    }

    pub(super) fn run(
        &self,
        on_progress: &(dyn Fn(f32, u64) + Sync),
    ) -> Result<ChunkedOutcome, MediaError> {
        let prep = self.prep;
        let total = prep.index.frames.len() as f64;
        let spans = &prep.spans[..];
        let weights = &prep.weights;
        // The first pass took the first 10 % of the bar where it ran; a second round (a size
        // title aimed again) moves it from 95 to 99, so progress never goes back.
        let first_share = if weights.is_some() { 10.0 } else { 0.0 };
        let (mut total_bits, target_bytes, shrink) = prep.rate.shared();
        let mut rounds = 0;
        loop {
            rounds += 1;
            let (lo, hi) = if rounds == 1 {
                (first_share, 95.0)
            } else {
                (95.0, 99.0)
            };
            let budget = prep.budget(total_bits).map(Mutex::new);
            let percent: Mutex<Vec<f32>> = Mutex::new(vec![0.0; spans.len()]);
            let report = |i: usize, p: f32| {
                let mut all = percent.lock().unwrap();
                all[i] = p;
                let frames: f64 = spans
                    .iter()
                    .map(|s| s.frames as f64 * all[s.index] as f64 / 100.0)
                    .sum();
                on_progress((lo + frames / total * (hi - lo)) as f32, frames as u64);
            };
            let encoded: Vec<(ChunkReport, &'static str)> =
                on_slots(spans, self.slots, self.cancel, &|span| {
                    self.chunk(span, budget.as_ref(), weights, &report)
                })?;
            let (chunks, encoders): (Vec<ChunkReport>, Vec<&'static str>) =
                encoded.into_iter().unzip();
            let files: Vec<(ChunkSpan, PathBuf)> =
                spans.iter().map(|s| (s.clone(), self.file(s))).collect();
            let assembled = assemble(
                self.input,
                &files,
                prep.index.origin_s,
                self.output,
                self.params.container,
                Some(shrink),
            )?;
            if assembled.frames != total as u64 {
                return Err(MediaError::Encode(format!(
                    "the joined title holds {} frames of the source's {}",
                    assembled.frames, total
                )));
            }
            // A size title that missed is aimed again, once.
            if let Some(target) = target_bytes {
                let (off, again) = size_miss(&assembled, target, rounds);
                tracing::info!(
                    target,
                    round = rounds,
                    "chunked size title {:+.1}% off",
                    off * 100.0
                );
                if let Some(bits) = again {
                    total_bits = bits;
                    continue;
                }
            }
            on_progress(100.0, assembled.frames);
            return Ok(ChunkedOutcome {
                chunks,
                encoder: encoders.first().copied().unwrap_or(""),
                assembled: assembled.clone(),
                estimate_secs: prep.estimate_secs,
                scene_changes: prep.scene_changes,
                rounds,
                target_bytes,
                audio_shrunk: shrink
                    .and_then(|s| s.report(prep.info.source_audio(), assembled.audio)),
            });
        }
    }

    /// Encode one chunk, aimed from the budget where the title's bits are shared; a chunk
    /// short of (or past) its frames is encoded once more.
    fn chunk(
        &self,
        span: &ChunkSpan,
        budget: Option<&Mutex<Budget>>,
        weights: &Option<Vec<u64>>,
        report: &(dyn Fn(usize, f32) + Sync),
    ) -> Encoded {
        let started = Instant::now();
        let mut bps = None;
        let r = encode_counted(
            self.input,
            &self.file(span),
            self.params,
            span,
            Shape::Title {
                longest: super::longest_chunk(&self.prep.spans),
            },
            self.cancel,
            &mut |p| report(span.index, p),
            &mut |n| {
                // An encode again (its frames were off) is aimed afresh.
                if let Some(b) = budget {
                    let mut b = b.lock().unwrap();
                    if n > 1 {
                        b.reset(span.index);
                    }
                    bps = Some(b.start(span.index));
                }
                self.prep.rate.chunk(bps.unwrap_or(0.0))
            },
        )
        .map(|(o, attempts)| {
            if let Some(b) = budget {
                b.lock()
                    .unwrap()
                    .finish(span.index, o.video_bytes as f64 * 8.0);
            }
            (
                ChunkReport {
                    span: span.clone(),
                    video_bytes: o.video_bytes,
                    attempts,
                    secs: started.elapsed().as_secs_f64(),
                    aimed_bps: bps,
                    estimate_bytes: weights.as_ref().map(|w| w[span.index]),
                },
                o.encoder,
            )
        });
        report(span.index, 100.0);
        r
    }
}

/// Run `work` on every chunk over `slots` threads, longest first; stops taking chunks at a
/// cancel or at the first failure. Results by chunk index (`None`: never run).
pub(crate) fn on_slots<T: Send>(
    spans: &[ChunkSpan],
    slots: usize,
    cancel: &AtomicBool,
    work: &(dyn Fn(&ChunkSpan) -> Result<T, MediaError> + Sync),
) -> Result<Vec<T>, MediaError> {
    let mut order: Vec<&ChunkSpan> = spans.iter().collect();
    order.sort_by_key(|s| std::cmp::Reverse(s.frames));
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let done: Mutex<Vec<Option<Result<T, MediaError>>>> =
        Mutex::new((0..spans.len()).map(|_| None).collect());
    // The job's GPU (where the node placed it) goes with its pieces onto their threads.
    let placement = crate::host::scope::current();
    std::thread::scope(|scope| {
        for _ in 0..slots.clamp(1, spans.len()) {
            let placement = placement.clone();
            scope.spawn(|| {
                crate::host::scope::with(placement, || loop {
                    if cancel.load(Ordering::Relaxed) || failed.load(Ordering::Relaxed) {
                        return;
                    }
                    let Some(span) = order.get(next.fetch_add(1, Ordering::SeqCst)) else {
                        return;
                    };
                    let r = work(span);
                    if r.is_err() {
                        failed.store(true, Ordering::SeqCst);
                    }
                    done.lock().unwrap()[span.index] = Some(r);
                })
            });
        }
    });
    if cancel.load(Ordering::Relaxed) {
        return Err(MediaError::Cancelled);
    }
    let n = spans.len();
    let mut out = Vec::with_capacity(n);
    let mut first_err = None;
    // The first failure in chunk order is the one reported.
    for r in done.into_inner().unwrap().into_iter().flatten() {
        match r {
            Ok(t) => out.push(t),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    if out.len() != n {
        return Err(MediaError::Encode("a chunk was never encoded".into()));
    }
    Ok(out)
}

/// Every chunk's complexity by the fast first pass ([`estimate_chunk`]), over `slots`;
/// `on_progress` gets the fraction of frames measured so far.
pub(crate) fn estimate_all(
    input: &Path,
    spans: &[ChunkSpan],
    scratch: &Path,
    slots: usize,
    cancel: &AtomicBool,
    on_progress: &(dyn Fn(f64) + Sync),
) -> Result<Vec<u64>, MediaError> {
    let total: u64 = spans.iter().map(|s| s.frames).sum();
    let measured: Mutex<u64> = Mutex::new(0);
    on_slots(spans, slots, cancel, &|s| {
        let file = scratch.join(format!("estimate-{:05}.mp4", s.index));
        let bytes = estimate_chunk(input, &file, s, cancel)?;
        let mut m = measured.lock().unwrap();
        *m += s.frames;
        on_progress(*m as f64 / total.max(1) as f64);
        Ok(bytes)
    })
}
