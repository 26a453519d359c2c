//! One title in chunks, the media side of chunked encoding: the source cut at its keyframes
//! (`plan`), every chunk encoded alone with the same encoder, preset and rate (`encode`), the
//! chunks joined with the source's audio (`assemble`), frame counts checked per chunk and on
//! the whole. [`transcode_chunked`] runs the chunks over local slots; a fleet hands the same
//! three steps to different nodes.

pub mod assemble;
pub mod encode;
pub mod plan;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use kiln_protocol::{ChunkEntry, ChunksReport, EncodeReport, VideoParams};

pub use assemble::{assemble, Assembled};
pub use encode::{encode_chunk, ChunkOutcome};
pub use plan::{plan, ChunkSpan, FrameIndex};

use super::{MediaError, Progress, TranscodeOutcome};

/// What happened to one chunk.
#[derive(Debug, Clone)]
pub struct ChunkReport {
    pub span: ChunkSpan,
    pub video_bytes: u64,
    /// Encodes it took (a chunk whose frame count is off is encoded once more).
    pub attempts: u32,
    pub secs: f64,
}

/// A title encoded in chunks.
#[derive(Debug, Clone)]
pub struct ChunkedOutcome {
    pub chunks: Vec<ChunkReport>,
    pub assembled: Assembled,
    pub encoder: &'static str,
}

/// Chunks encoded at once on this node: half its cores, 2 to 8 (each encoder threads too).
pub fn local_slots() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get() / 2)
        .unwrap_or(2)
        .clamp(2, 8)
}

/// A job's `chunk_secs` output: [`transcode_chunked`] on [`local_slots`], reported as a
/// transcode is (progress with fps and ETA over all chunks; the chunks listed on the report).
pub fn transcode(
    input: &Path,
    output: &Path,
    params: &VideoParams,
    cancel: &AtomicBool,
    on_progress: &(dyn Fn(Progress) + Sync),
) -> Result<TranscodeOutcome, MediaError> {
    let chunk_secs = params.chunk_secs.unwrap_or(30.0);
    let slots = local_slots();
    let started = Instant::now();
    let report = |percent: f32, frames: u64| {
        let elapsed = started.elapsed().as_secs_f64().max(1e-3);
        let done = percent as f64 / 100.0;
        on_progress(Progress {
            percent,
            fps: (frames as f64 / elapsed) as f32,
            eta_s: (done > 0.0).then(|| (elapsed * (1.0 - done) / done) as f32),
        })
    };
    let c = transcode_chunked(input, output, params, chunk_secs, slots, cancel, &report)?;
    let info = super::probe(output)?;
    let chunks: Vec<ChunkEntry> = c
        .chunks
        .iter()
        .map(|ch| ChunkEntry {
            index: ch.span.index as u32,
            start_s: ch.span.start_s,
            frames: ch.span.frames,
            on_keyframe: ch.span.on_keyframe,
            bytes: ch.video_bytes,
            attempts: ch.attempts,
            secs: (ch.secs * 100.0).round() / 100.0,
        })
        .collect();
    Ok(TranscodeOutcome {
        width: info.width,
        height: info.height,
        frames: c.assembled.frames,
        duration_s: info.duration_s,
        output_size: c.assembled.file_bytes,
        report: EncodeReport {
            encoder: c.encoder.to_string(),
            passes: 1,
            audio: c.assembled.audio.to_string(),
            chunks: Some(ChunksReport {
                chunk_secs,
                total: chunks.len() as u32,
                done: chunks.len() as u32,
                slots: slots as u32,
                chunks,
            }),
            ..EncodeReport::default()
        },
    })
}

/// Encode `input` to `output` as `params` say, in chunks of about `target_s` encoded `slots`
/// at a time, longest first; `on_progress` gets the frame-weighted percent done and the
/// frames encoded so far.
pub fn transcode_chunked(
    input: &Path,
    output: &Path,
    params: &VideoParams,
    target_s: f64,
    slots: usize,
    cancel: &AtomicBool,
    on_progress: &(dyn Fn(f32, u64) + Sync),
) -> Result<ChunkedOutcome, MediaError> {
    super::init_ffmpeg_logging();
    encode::chunk_rate(params)?;
    if !params.container.holds(params.codec) {
        return Err(MediaError::InvalidSettings(format!(
            "{} cannot hold {}; use mp4 or mkv",
            params.container.extension(),
            params.codec.as_str()
        )));
    }
    let index = FrameIndex::read(input)?;
    if index.frames.is_empty() {
        return Err(MediaError::Decode("the source has no video frames".into()));
    }
    let spans = plan(&index, target_s);
    let scratch = output.with_extension("chunks");
    std::fs::create_dir_all(&scratch)
        .map_err(|e| MediaError::Io(format!("create {}: {e}", scratch.display())))?;
    let result = run(
        input,
        output,
        params,
        &index,
        &spans,
        &scratch,
        slots,
        cancel,
        on_progress,
    );
    let _ = std::fs::remove_dir_all(&scratch);
    if result.is_err() {
        let _ = std::fs::remove_file(output);
    }
    result
}

/// A chunk's report and the encoder that made it, or why it failed.
type Encoded = Result<(ChunkReport, &'static str), MediaError>;

#[allow(clippy::too_many_arguments)]
fn run(
    input: &Path,
    output: &Path,
    params: &VideoParams,
    index: &FrameIndex,
    spans: &[ChunkSpan],
    scratch: &Path,
    slots: usize,
    cancel: &AtomicBool,
    on_progress: &(dyn Fn(f32, u64) + Sync),
) -> Result<ChunkedOutcome, MediaError> {
    let total = index.frames.len() as f64;
    let file = |s: &ChunkSpan| scratch.join(format!("chunk-{:05}.mp4", s.index));
    let mut order: Vec<&ChunkSpan> = spans.iter().collect();
    order.sort_by_key(|s| std::cmp::Reverse(s.frames));
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let done: Mutex<Vec<Option<Encoded>>> = Mutex::new((0..spans.len()).map(|_| None).collect());
    let percent: Mutex<Vec<f32>> = Mutex::new(vec![0.0; spans.len()]);
    let report = |i: usize, p: f32| {
        let mut all = percent.lock().unwrap();
        all[i] = p;
        let frames: f64 = spans
            .iter()
            .map(|s| s.frames as f64 * all[s.index] as f64 / 100.0)
            .sum();
        on_progress((frames / total * 95.0) as f32, frames as u64);
    };
    std::thread::scope(|scope| {
        for _ in 0..slots.clamp(1, spans.len()) {
            scope.spawn(|| loop {
                if cancel.load(Ordering::Relaxed) || failed.load(Ordering::Relaxed) {
                    return;
                }
                let Some(span) = order.get(next.fetch_add(1, Ordering::SeqCst)) else {
                    return;
                };
                let started = Instant::now();
                let mut attempts = 0;
                let r = loop {
                    attempts += 1;
                    let r = encode_chunk(input, &file(span), params, span, cancel, &mut |p| {
                        report(span.index, p)
                    });
                    match r {
                        // A chunk short of (or past) its frames is encoded once more.
                        Ok(o) if o.frames != span.frames && attempts < 2 => continue,
                        Ok(o) if o.frames != span.frames => {
                            break Err(MediaError::Encode(format!(
                                "chunk {} encoded {} frames of {}",
                                span.index, o.frames, span.frames
                            )))
                        }
                        Ok(o) => {
                            break Ok((
                                ChunkReport {
                                    span: (*span).clone(),
                                    video_bytes: o.video_bytes,
                                    attempts,
                                    secs: started.elapsed().as_secs_f64(),
                                },
                                o.encoder,
                            ))
                        }
                        Err(e) => break Err(e),
                    }
                };
                if r.is_err() {
                    failed.store(true, Ordering::SeqCst);
                }
                report(span.index, 100.0);
                done.lock().unwrap()[span.index] = Some(r);
            });
        }
    });
    if cancel.load(Ordering::Relaxed) {
        return Err(MediaError::Cancelled);
    }
    let mut chunks = Vec::with_capacity(spans.len());
    let mut encoder = "";
    for r in done.into_inner().unwrap() {
        match r {
            Some(Ok((c, e))) => {
                encoder = e;
                chunks.push(c);
            }
            Some(Err(e)) => return Err(e),
            None => return Err(MediaError::Encode("a chunk was never encoded".into())),
        }
    }
    let files: Vec<(ChunkSpan, PathBuf)> = spans.iter().map(|s| (s.clone(), file(s))).collect();
    let assembled = assemble(input, &files, index.origin_s, output, params.container)?;
    if assembled.frames != index.frames.len() as u64 {
        return Err(MediaError::Encode(format!(
            "the joined title holds {} frames of the source's {}",
            assembled.frames,
            index.frames.len()
        )));
    }
    on_progress(100.0, assembled.frames);
    Ok(ChunkedOutcome {
        chunks,
        assembled,
        encoder,
    })
}
