//! One title in chunks, the media side of chunked encoding: the source cut at its keyframes
//! (`plan`), every chunk encoded alone with the same encoder and preset (`encode`) — a CRF as
//! it is, a `bitrate` or `size` target as the title's bits shared over the chunks by their
//! complexity and corrected as chunks finish (`budget`) — the chunks joined with the source's
//! audio (`assemble`), frame counts checked per chunk and on the whole.
//! [`transcode_chunked`] runs the chunks over local slots; a fleet hands the same steps to
//! different nodes.

pub mod assemble;
pub mod budget;
pub mod encode;
pub mod plan;
pub(crate) mod run;
pub mod scenes;

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use kiln_protocol::video::correct_video_bps;
use kiln_protocol::{
    AudioShrink, ChunkEntry, ChunksReport, EncodeReport, RateControl, VideoParams,
};

pub use assemble::Assembled;
pub use budget::Budget;
pub use encode::{estimate_chunk, ChunkOutcome};
pub use plan::{plan, ChunkSpan, FrameIndex};

use encode::{title_rate, TitleRate};
use run::Title;

use super::transcode::SIZE_TOLERANCE;
use super::{MediaError, MediaInfo, Progress, TranscodeOutcome};

/// What happened to one chunk.
#[derive(Debug, Clone)]
pub struct ChunkReport {
    pub span: ChunkSpan,
    pub video_bytes: u64,
    /// Encodes it took (a chunk whose frame count is off is encoded once more).
    pub attempts: u32,
    pub secs: f64,
    /// The bitrate it was aimed at, where the title's bits were shared.
    pub aimed_bps: Option<f64>,
    /// Its complexity: the bytes the fast first pass made of it, where one ran.
    pub estimate_bytes: Option<u64>,
}

/// A title encoded in chunks.
#[derive(Debug, Clone)]
pub struct ChunkedOutcome {
    pub chunks: Vec<ChunkReport>,
    pub assembled: Assembled,
    pub encoder: &'static str,
    /// Seconds the first pass (complexity estimates) took, where one ran.
    pub estimate_secs: Option<f64>,
    /// Scene changes found, where the scene detection ran.
    pub scene_changes: Option<u32>,
    /// Times the chunks were encoded: 2 where a `size` title missed and was aimed again.
    pub rounds: u32,
    /// A `size` target in bytes.
    pub target_bytes: Option<f64>,
    /// A `size` job's audio, shrunk to fit.
    pub audio_shrunk: Option<AudioShrink>,
}

/// Chunks encoded at once on this node: half the cores it may run on (its CPU affinity), 1 to
/// 8 (each encoder threads too). Not more than one on 2 cores or fewer: two x265 chunks on one
/// core ran each 5× slower than one (`kiln-bench chunks --nodes`, README).
pub fn local_slots() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get() / 2)
        .unwrap_or(1)
        .clamp(1, 8)
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
    if let RateControl::Vmaf { target } = params.rate {
        // One CRF for the whole title, searched on its sampled scenes; every chunk at it.
        let (p, searched) = crate::quality::target::search_title(
            input,
            params,
            &output.with_extension("vmaf-search"),
            cancel,
            &mut |f| on_progress(Progress::at(f * 15.0)),
        )?;
        let mut outcome = transcode(input, output, &p, cancel, &|pr| {
            on_progress(Progress {
                percent: 15.0 + pr.percent * 0.75,
                ..pr
            })
        })?;
        crate::quality::target::score_title(input, output, target, &searched, &mut outcome)?;
        return Ok(outcome);
    }
    let chunk_secs = params.chunk_secs.unwrap_or(30.0);
    let slots = local_slots();
    let started = Instant::now();
    let report = |percent: f32, frames: u64| {
        on_progress(Progress::timed(
            percent,
            frames,
            started.elapsed().as_secs_f64(),
        ))
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
            at_scene: ch.span.at_scene,
            bytes: ch.video_bytes,
            attempts: ch.attempts,
            secs: (ch.secs * 100.0).round() / 100.0,
            kbps: ch.aimed_bps.map(|b| (b / 100.0).round() / 10.0),
            estimate_bytes: ch.estimate_bytes,
            node: None,
            rung: None,
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
            passes: c.rounds,
            audio: c.assembled.audio.to_string(),
            audio_shrunk: c.audio_shrunk.clone(),
            target_size: c.target_bytes.map(|t| t.round() as u64),
            chunks: Some(ChunksReport {
                chunk_secs,
                auto: false,
                total: chunks.len() as u32,
                done: chunks.len() as u32,
                slots: slots as u32,
                scene_changes: c.scene_changes,
                estimate_secs: c.estimate_secs.map(|s| (s * 100.0).round() / 100.0),
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
    let scratch = output.with_extension("chunks");
    std::fs::create_dir_all(&scratch)
        .map_err(|e| MediaError::Io(format!("create {}: {e}", scratch.display())))?;
    let result = prepare(input, params, target_s, &scratch, slots, cancel, &|f| {
        on_progress((f * 10.0) as f32, 0)
    })
    .and_then(|prep| {
        Title {
            input,
            output,
            params,
            prep: &prep,
            scratch: &scratch,
            slots,
            cancel,
        }
        .run(on_progress)
    });
    let _ = std::fs::remove_dir_all(&scratch);
    if result.is_err() {
        let _ = std::fs::remove_file(output);
    }
    result
}

/// How far a joined `size` title landed from `target` (a fraction), and, where that is past
/// the tolerance on the first `round`, the video bits to aim the second at: the video scaled
/// by what the miss shows, the audio and framing as measured (the whole-title correction,
/// over the title's bits instead of its bitrate).
pub(crate) fn size_miss(assembled: &Assembled, target: f64, round: u32) -> (f64, Option<f64>) {
    let file = assembled.file_bytes as f64;
    let off = (file - target) / target;
    let video = assembled.video_bytes.max(1) as f64;
    let again = (off.abs() > SIZE_TOLERANCE && round < 2)
        .then(|| correct_video_bps(video * 8.0, target, file, file - video));
    (off, again)
}

/// Frames of the longest of `spans`.
pub(crate) fn longest_chunk(spans: &[ChunkSpan]) -> u64 {
    spans.iter().map(|s| s.frames).max().unwrap_or(0)
}

/// A title made ready for its chunks: probed, indexed and cut, its rate planned and, where its
/// bits are shared, each chunk's complexity measured by the fast first pass.
pub(crate) struct Prepared {
    pub info: MediaInfo,
    pub rate: TitleRate,
    pub index: FrameIndex,
    pub spans: Vec<ChunkSpan>,
    /// Scene changes found, where the scene detection ran.
    pub scene_changes: Option<u32>,
    /// The first pass's bytes per chunk, by index (shared rates only).
    pub weights: Option<Vec<u64>>,
    pub estimate_secs: Option<f64>,
}

impl Prepared {
    /// Seconds of the title chunk `s` covers.
    pub fn secs(&self, s: &ChunkSpan) -> f64 {
        let end = if s.end_s.is_finite() {
            s.end_s
        } else {
            self.info.duration_s.max(s.start_s)
        };
        (end - s.start_s).max(1e-3)
    }

    /// A fresh budget of `total_bits` over the chunks, where the title's bits are shared.
    pub fn budget(&self, total_bits: f64) -> Option<Budget> {
        let w: Vec<f64> = self.weights.as_ref()?.iter().map(|&b| b as f64).collect();
        let secs: Vec<f64> = self.spans.iter().map(|s| self.secs(s)).collect();
        Some(Budget::new(total_bits, &w, &secs))
    }
}

/// Check `params` can be chunked, probe and index `input`, cut it in chunks of about
/// `target_s` and, for a shared rate, measure every chunk on `slots` threads (scratch files in
/// `scratch`; `on_progress` gets the fraction measured).
pub(crate) fn prepare(
    input: &Path,
    params: &VideoParams,
    target_s: f64,
    scratch: &Path,
    slots: usize,
    cancel: &AtomicBool,
    on_progress: &(dyn Fn(f64) + Sync),
) -> Result<Prepared, MediaError> {
    if !params.edit.is_empty() {
        return Err(MediaError::InvalidSettings(
            "an edited output is not encoded in chunks".into(),
        ));
    }
    let info = super::probe(input)?;
    let rate = title_rate(params, &info)?;
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
    // Scene changes, where the title is best cut. Only a cancel stops the title here: a source
    // whose decode stumbles is cut at keyframes, and its encode says what is wrong with it.
    let scenes = match scenes::detect(input, index.origin_s, cancel) {
        Ok(s) => Some(s),
        Err(MediaError::Cancelled) => return Err(MediaError::Cancelled),
        Err(e) => {
            tracing::warn!(error = %e, "scene detection failed; cutting at keyframes");
            None
        }
    };
    let spans = plan(&index, target_s, scenes.as_deref().unwrap_or(&[]));
    let (weights, estimate_secs) = if matches!(rate, TitleRate::Shared { .. }) {
        let started = Instant::now();
        let w = run::estimate_all(input, &spans, scratch, slots, cancel, on_progress)?;
        (Some(w), Some(started.elapsed().as_secs_f64()))
    } else {
        (None, None)
    };
    Ok(Prepared {
        info,
        rate,
        index,
        spans,
        scene_changes: scenes.map(|s| s.len() as u32),
        weights,
        estimate_secs,
    })
}
