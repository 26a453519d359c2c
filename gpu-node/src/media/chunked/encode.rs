//! One chunk: the source's `[start, end)` encoded alone, video only, into its own MP4 (exact
//! timestamps, unlike Matroska's milliseconds), through the same pass as a whole-title encode
//! with the same encoder, preset and rate; the trim makes its first frame a fresh keyframe.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use kiln_protocol::video::{plan_size, AudioBudget, BYTES_PER_MB};
use kiln_protocol::{
    Container, HardwarePolicy, Preset, RateControl, Resolution, VideoCodec, VideoParams,
};

use super::plan::ChunkSpan;
use crate::media::audio::Shrink;
use crate::media::edit::EditFiles;
use crate::media::encoder::{Pass, RateSpec};
use crate::media::transcode::Job;
use crate::media::{MediaError, MediaInfo};

/// What a chunk's encode produced.
#[derive(Debug, Clone)]
pub struct ChunkOutcome {
    pub index: usize,
    pub frames: u64,
    pub video_bytes: u64,
    pub encoder: &'static str,
}

/// A `size` title's chunks are capped at this many times the title's average video bitrate.
const SIZE_PEAK: f64 = 3.0;

/// How a title's rate maps onto its chunks.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TitleRate {
    /// Every chunk at the title's own one-pass rate (a CRF).
    Fixed(RateSpec),
    /// The title's video bits shared over the chunks by complexity ([`super::budget`]).
    Shared {
        /// Video bits for the whole title.
        total_bits: f64,
        /// The VBV cap and buffer every chunk keeps: a `bitrate` job's own, a `size` job's
        /// [`SIZE_PEAK`] times its average.
        cap: Option<(i64, i64)>,
        /// A `size` job's target in bytes (the whole file, audio and framing included).
        target_bytes: Option<f64>,
        /// A `size` job's audio, re-encoded smaller to fit.
        audio_shrink: Option<Shrink>,
    },
}

impl TitleRate {
    /// Video bits of the whole title, a `size` target in bytes and its audio's shrink, where
    /// the title's bits are shared (zeros and `None` for a fixed rate).
    pub(crate) fn shared(&self) -> (f64, Option<f64>, Option<Shrink>) {
        match *self {
            Self::Shared {
                total_bits,
                target_bytes,
                audio_shrink,
                ..
            } => (total_bits, target_bytes, audio_shrink),
            Self::Fixed(_) => (0.0, None, None),
        }
    }

    /// The rate one chunk encodes at, aimed at `bps` where the title's bits are shared.
    pub(crate) fn chunk(&self, bps: f64) -> RateSpec {
        match *self {
            Self::Fixed(r) => r,
            Self::Shared { cap: None, .. } => RateSpec::Average { bps: bps as i64 },
            Self::Shared {
                cap: Some((max_bps, buffer_bits)),
                ..
            } => RateSpec::Capped {
                bps: (bps as i64).min(max_bps),
                max_bps,
                buffer_bits,
            },
        }
    }
}

/// The title's rate in chunks: `crf` the same in every chunk; `bitrate` and `size` as bits
/// over the whole title (a size's audio shrunk first where it would eat the target). VMAF
/// targets are not split yet.
pub(crate) fn title_rate(params: &VideoParams, info: &MediaInfo) -> Result<TitleRate, MediaError> {
    let duration = info.duration_s;
    match params.rate {
        RateControl::Size { target_mb } => {
            let target = target_mb * BYTES_PER_MB;
            let plan = plan_size(target, duration, info.source_audio())
                .map_err(|e| MediaError::InvalidSettings(e.to_string()))?;
            // One VBV cap for every chunk, well above the title's average: the encoders derive
            // the stream's level from it (x264 from the bitrate where there is none), and chunks
            // whose levels differ cannot be joined under one header.
            let ceiling = (plan.video_bps * SIZE_PEAK).round() as i64;
            Ok(TitleRate::Shared {
                total_bits: plan.video_bps * duration,
                cap: Some((ceiling, 2 * ceiling)),
                target_bytes: Some(target),
                audio_shrink: match plan.audio {
                    AudioBudget::Shrink { bps, channels } => Some(Shrink { bps, channels }),
                    _ => None,
                },
            })
        }
        RateControl::Bitrate { kbps, .. } if duration > 0.0 => {
            let Some(RateSpec::Capped {
                max_bps,
                buffer_bits,
                ..
            }) = RateSpec::one_pass(params)
            else {
                unreachable!("a bitrate is capped")
            };
            Ok(TitleRate::Shared {
                total_bits: kbps as f64 * 1000.0 * duration,
                cap: Some((max_bps, buffer_bits)),
                target_bytes: None,
                audio_shrink: None,
            })
        }
        _ => RateSpec::one_pass(params)
            .map(TitleRate::Fixed)
            .ok_or_else(|| {
                MediaError::InvalidSettings(format!(
                    "a {} output reaches its chunks as a CRF, bitrate or size (a VMAF target as the CRF its search found)",
                    params.rate.method()
                ))
            }),
    }
}

/// Complexity of `span`: the bytes a fast first pass makes of it (x264 ultrafast at a fixed
/// CRF, at most 270 lines high, on the CPU), written to `scratch` and removed.
pub fn estimate_chunk(
    input: &Path,
    scratch: &Path,
    span: &ChunkSpan,
    cancel: &AtomicBool,
) -> Result<u64, MediaError> {
    let mut p = VideoParams::crf(VideoCodec::H264, 23);
    p.preset = Some(Preset::Ultrafast);
    p.resolution = Some(Resolution::AtMost { height: 270 });
    p.hardware = HardwarePolicy::Cpu;
    p.edit.start_s = Some(span.start_s);
    p.edit.end_s = span.end_s.is_finite().then_some(span.end_s);
    let mut job = Job::plan(input, scratch, &p, &EditFiles::default())?;
    let r = job.pass(RateSpec::Crf(28), Pass::Only, false, cancel, &mut |_| {});
    job.cleanup_scratch();
    let _ = std::fs::remove_file(scratch);
    Ok(r?.video_bytes)
}

/// How a chunk's stream is shaped beyond its title's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Shape {
    /// A title's chunk. `longest` is the frames of the title's longest chunk: every chunk's
    /// GOP is set from it ([`crate::media::encoder::one_gop`]), the same for all, as their
    /// headers must be. A bitrate aim runs two passes where the encoder has them.
    Title { longest: u64 },
    /// A ladder rendition's chunk, at `params.resolution` exactly: closed GOPs of `gop`
    /// frames (the segment cadence), sample aspect `sar`.
    Rung { gop: u32, sar: [i32; 2] },
}

/// Encode `span` through [`encode_chunk`] at `rate(n)` for its `n`th encode, checking its
/// frame count: a chunk short of (or past) its frames is encoded once more, then fails. The
/// outcome and the encodes it took. The local runners and a fleet node's chunk all run this.
#[allow(clippy::too_many_arguments)]
pub(crate) fn encode_counted(
    input: &Path,
    output: &Path,
    params: &VideoParams,
    span: &ChunkSpan,
    shape: Shape,
    cancel: &AtomicBool,
    on_progress: &mut dyn FnMut(f32),
    rate: &mut dyn FnMut(u32) -> RateSpec,
) -> Result<(ChunkOutcome, u32), MediaError> {
    let mut encodes = 0;
    loop {
        encodes += 1;
        let o = encode_chunk(
            input,
            output,
            params,
            rate(encodes),
            span,
            shape,
            cancel,
            on_progress,
        )?;
        if o.frames == span.frames {
            return Ok((o, encodes));
        }
        if encodes == 2 {
            return Err(MediaError::Encode(format!(
                "chunk {} encoded {} frames of {}",
                span.index, o.frames, span.frames
            )));
        }
    }
}

/// Encode `span` of `input` to `output` as `params` say at `rate` (their edit must be empty:
/// the chunk's span is the only trim), shaped as `shape` says.
#[allow(clippy::too_many_arguments)]
pub(crate) fn encode_chunk(
    input: &Path,
    output: &Path,
    params: &VideoParams,
    rate: RateSpec,
    span: &ChunkSpan,
    shape: Shape,
    cancel: &AtomicBool,
    on_progress: &mut dyn FnMut(f32),
) -> Result<ChunkOutcome, MediaError> {
    if !params.edit.is_empty() {
        return Err(MediaError::InvalidSettings(
            "an edited output is not encoded in chunks".into(),
        ));
    }
    let mut p = params.clone();
    p.container = Container::Mp4;
    p.edit.start_s = Some(span.start_s);
    p.edit.end_s = span.end_s.is_finite().then_some(span.end_s);
    let mut job = Job::plan(input, output, &p, &EditFiles::default())?;
    job.stitchable = true;
    match shape {
        Shape::Title { longest } => job.chunk_frames = Some(longest),
        Shape::Rung { gop, sar } => {
            job.fixed_gop = Some(gop);
            job.sar = rsmpeg::ffi::AVRational {
                num: sar[0],
                den: sar[1],
            };
        }
    }
    let mut progress = |pr: crate::media::Progress| on_progress(pr.percent);
    let r = match rate {
        RateSpec::Crf(_) => job.pass(rate, Pass::Only, false, cancel, &mut progress),
        // A bitrate: two passes where the encoder has them. One pass over a chunk of a few
        // seconds starts its rate control afresh and lands short (a 300 kbps rung in 6 s
        // chunks came out 8 % under, the whole ladder's one pass 1.5 % over).
        _ => job.rate_passes(rate, false, cancel, &mut progress),
    };
    job.cleanup_scratch();
    let encoder = job.encoder_name();
    let r = r.inspect_err(|_| {
        let _ = std::fs::remove_file(output);
    })?;
    Ok(ChunkOutcome {
        index: span.index,
        frames: r.frames,
        video_bytes: r.video_bytes,
        encoder,
    })
}
