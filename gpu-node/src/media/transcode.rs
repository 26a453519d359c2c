//! A whole video job: plan geometry, encoder and passes, run them, and hold the result to what
//! was asked — a `size` job within ±5 % of its target, a `crf` job never silently larger than
//! its input.
//!
//! Runs on a blocking thread; reports progress through a callback and stops when the cancel
//! flag is raised.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use kiln_protocol::video::BYTES_PER_MB;
use kiln_protocol::{EncodeReport, Preset, RateControl, VideoCodec, VideoParams};
use rsmpeg::ffi;

use super::audio::Shrink;
use super::edit::{edited_info, EditFiles, EditPlan};
use super::encoder::{self, EncoderChoice, Pass, RateSpec};
use super::geometry::{self, Geometry};
use super::pipeline::{run_pass, PassResult, PassSpec};
use super::probe::MediaInfo;
use super::{capabilities, init_ffmpeg_logging, MediaError};

mod size;

/// How far along a transcode is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// 0–100 over all passes, from decoded timestamps over the source duration.
    pub percent: f32,
    /// Frames encoded per second in the current pass.
    pub fps: f32,
    /// Seconds left at the current speed, when known.
    pub eta_s: Option<f32>,
    /// A title in chunks: where its chunks stand.
    pub chunks: Option<kiln_protocol::ChunkCounts>,
}

impl Progress {
    /// A point on the bar with nothing measured (a search, a join): no speed, no ETA.
    pub fn at(percent: f32) -> Self {
        Self {
            percent,
            fps: 0.0,
            eta_s: None,
            chunks: None,
        }
    }

    /// `percent` of the whole job done `elapsed_s` after it started, `frames` encoded so far:
    /// their rate, and the time left if the rest goes as fast as what is done.
    pub fn timed(percent: f32, frames: u64, elapsed_s: f64) -> Self {
        let elapsed = elapsed_s.max(1e-3);
        let done = percent as f64 / 100.0;
        Self {
            percent,
            fps: (frames as f64 / elapsed) as f32,
            eta_s: (done > 0.0).then(|| (elapsed * (1.0 - done) / done) as f32),
            chunks: None,
        }
    }
}

/// What a finished transcode produced.
#[derive(Debug, Clone, PartialEq)]
pub struct TranscodeOutcome {
    pub width: u32,
    pub height: u32,
    pub frames: u64,
    pub duration_s: f64,
    /// Size of the output file in bytes.
    pub output_size: u64,
    /// How it was made.
    pub report: EncodeReport,
}

/// A `size` job (whole or in chunks) is done when it lands this close to its target (the
/// promise is ±5 %).
pub(crate) const SIZE_TOLERANCE: f64 = 0.04;
/// Where a `crf` output that came out larger than its input is aimed instead.
const GUARD_FRACTION: f64 = 0.95;

/// Transcode `input` to `output` as `params` say (an edit that reads files: see
/// [`transcode_edited`]).
pub fn transcode(
    input: &Path,
    output: &Path,
    params: &VideoParams,
    cancel: &AtomicBool,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<TranscodeOutcome, MediaError> {
    transcode_edited(
        input,
        output,
        params,
        &EditFiles::default(),
        cancel,
        on_progress,
    )
}

/// [`transcode`] with the files `params.edit` reads (watermark, subtitles) fetched to `files`.
pub fn transcode_edited(
    input: &Path,
    output: &Path,
    params: &VideoParams,
    files: &EditFiles,
    cancel: &AtomicBool,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<TranscodeOutcome, MediaError> {
    init_ffmpeg_logging();
    if let RateControl::Vmaf { .. } = params.rate {
        if !params.edit.is_empty() {
            return Err(MediaError::InvalidSettings(
                "target_vmaf does not yet apply to trimmed, cropped, watermarked or subtitled outputs; use quality".into(),
            ));
        }
        return crate::quality::target::transcode_to_vmaf(
            input,
            output,
            params,
            cancel,
            on_progress,
        );
    }
    let mut job = Job::plan(input, output, params, files)?;
    let result = job.run(cancel, on_progress);
    job.cleanup_scratch();
    if result.is_err() {
        // Never leave a half-written output behind for someone to serve.
        let _ = std::fs::remove_file(output);
    }
    result
}

/// The pixel format an encoder gets: 8-bit 4:2:0 for H.264 (what every player decodes),
/// 10-bit kept for HEVC and AV1 when the source has it.
pub(crate) fn target_pix_fmt(
    codec: VideoCodec,
    encoder: &str,
    source_depth: u32,
) -> ffi::AVPixelFormat {
    let ten = source_depth > 8 && matches!(codec, VideoCodec::H265 | VideoCodec::Av1);
    match (ten, encoder.ends_with("_nvenc")) {
        (false, _) => ffi::AVPixelFormat_AV_PIX_FMT_YUV420P,
        (true, false) => ffi::AVPixelFormat_AV_PIX_FMT_YUV420P10LE,
        (true, true) => ffi::AVPixelFormat_AV_PIX_FMT_P010LE,
    }
}

pub(crate) struct Job<'a> {
    input: &'a Path,
    output: &'a Path,
    params: &'a VideoParams,
    /// The source as the edit leaves it (the span's duration, the cropped size).
    info: MediaInfo,
    /// The source's own display rotation.
    rotation: i32,
    edit: EditPlan,
    input_size: u64,
    geometry: Geometry,
    encoder: EncoderChoice,
    preset: Preset,
    hw_decode: bool,
    /// The GPU this job decodes and encodes on, and where its faults go.
    target: super::hw::Target,
    hw_fallback: Option<String>,
    /// NVDEC failed on this pass and the CPU is retrying it: blamed on the device once the CPU
    /// succeeds.
    nvdec_failed: Option<String>,
    stats: PathBuf,
    pass1_out: PathBuf,
    // progress across passes
    started: Instant,
    planned: u32,
    done: u32,
    last_percent: f32,
    passes: u32,
    /// The audio re-encoded smaller where a size plan said so.
    audio_shrink: Option<Shrink>,
    /// Headers that do not depend on the content (a chunk joined with others under one).
    pub(crate) stitchable: bool,
    /// A chunk's frames: the chunk is one GOP where it is short enough ([`encoder::one_gop`]).
    pub(crate) chunk_frames: Option<u64>,
    /// A ladder rendition's chunk: closed GOPs of exactly this many frames
    /// ([`super::ladder::fixed_gop`]).
    pub(crate) fixed_gop: Option<u32>,
    /// The stream's sample aspect ratio (square unless a ladder rendition's says otherwise).
    pub(crate) sar: ffi::AVRational,
}

impl<'a> Job<'a> {
    pub(crate) fn plan(
        input: &'a Path,
        output: &'a Path,
        params: &'a VideoParams,
        files: &EditFiles,
    ) -> Result<Self, MediaError> {
        let source = super::probe(input)?;
        let edit = EditPlan::new(&source, &params.edit, files)?;
        let info = edited_info(&source, &params.edit).map_err(MediaError::InvalidSettings)?;
        let input_size = std::fs::metadata(input)
            .map(|m| m.len())
            .map_err(|e| MediaError::Io(format!("stat input: {e}")))?;
        if !params.container.holds(params.codec) {
            return Err(MediaError::InvalidSettings(format!(
                "{} cannot hold {}; use mp4 or mkv",
                params.container.extension(),
                params.codec.as_str()
            )));
        }
        let geometry = geometry::plan(&info, params.resolution, params.allow_upscale)
            .map_err(MediaError::InvalidSettings)?;
        let caps = capabilities();
        let target = super::hw::Target::current(params.hardware, caps.cuda.available);
        let encoder = target.restrict(
            params.codec,
            encoder::choose_encoder(params.codec, params.hardware, caps),
        );
        if !caps.encoder(encoder.name) {
            let why = caps
                .encoders
                .iter()
                .find(|c| c.name == encoder.name)
                .and_then(|c| c.reason.clone())
                .unwrap_or_else(|| "not in this FFmpeg build".into());
            return Err(MediaError::UnsupportedCodec(format!(
                "{} does not open on this node: {why}",
                encoder.name
            )));
        }
        if let Some(f) = &encoder.fallback {
            tracing::info!(fallback = %f, "hardware encode not used");
        }
        // Target::current gives no GPU to a `cpu` job.
        let hw_decode = target.gpu.is_some();
        let ext = params.container.extension();
        Ok(Self {
            input,
            output,
            params,
            info,
            rotation: source.rotation,
            edit,
            input_size,
            geometry,
            hw_fallback: encoder.fallback.clone(),
            nvdec_failed: None,
            encoder,
            preset: params.preset.unwrap_or(Preset::Medium),
            hw_decode,
            target,
            stats: output.with_extension("passlog"),
            pass1_out: output.with_extension(format!("pass1.{ext}")),
            started: Instant::now(),
            planned: 1,
            done: 0,
            last_percent: 0.0,
            passes: 0,
            audio_shrink: None,
            stitchable: false,
            chunk_frames: None,
            fixed_gop: None,
            sar: ffi::AVRational { num: 1, den: 1 },
        })
    }

    fn run(
        &mut self,
        cancel: &AtomicBool,
        on_progress: &mut dyn FnMut(Progress),
    ) -> Result<TranscodeOutcome, MediaError> {
        let mut report = EncodeReport {
            rotation: self.rotation,
            ..EncodeReport::default()
        };
        let last = match self.params.rate.clone() {
            RateControl::Crf { quality } => {
                let crf = self.params.codec.crf_for(quality);
                let first = self.pass(RateSpec::Crf(crf), Pass::Only, true, cancel, on_progress)?;
                if first.file_bytes > self.input_size {
                    if self.params.allow_larger {
                        report.larger_than_input = true;
                        first
                    } else {
                        let target = self.input_size as f64 * GUARD_FRACTION;
                        let larger = format!(
                            "crf {quality} produced {} bytes, more than the {}-byte input",
                            first.file_bytes, self.input_size
                        );
                        self.planned += if encoder::supports_two_pass(self.encoder.name) {
                            2
                        } else {
                            1
                        };
                        let r = match self.encode_to_size(target, cancel, on_progress) {
                            Ok(r) => {
                                report.size_guard = Some(format!(
                                    "{larger}; re-encoded aiming at 95% of the input size \
                                     (set allow_larger=true to keep the crf result)"
                                ));
                                r
                            }
                            // The input is so small per second that no encode can undercut
                            // it: keep the crf result and say so.
                            Err(MediaError::InvalidSettings(why)) => {
                                report.size_guard = Some(format!(
                                    "{larger}; it cannot be re-encoded smaller ({why}), so the crf result was kept"
                                ));
                                self.pass(
                                    RateSpec::Crf(crf),
                                    Pass::Only,
                                    true,
                                    cancel,
                                    on_progress,
                                )?
                            }
                            Err(e) => return Err(e),
                        };
                        tracing::info!(guard = report.size_guard.as_deref(), "size guard");
                        report.larger_than_input = r.file_bytes > self.input_size;
                        r
                    }
                } else {
                    first
                }
            }
            RateControl::Bitrate { .. } | RateControl::EncoderCrf { .. } => {
                let spec = RateSpec::one_pass(self.params).expect("a one-pass rate");
                self.pass(spec, Pass::Only, true, cancel, on_progress)?
            }
            RateControl::Vmaf { .. } => {
                return Err(MediaError::InvalidSettings(
                    "target_vmaf runs through quality::target".into(),
                ))
            }
            RateControl::Size { target_mb } => {
                let target = target_mb * BYTES_PER_MB;
                report.target_size = Some(target.round() as u64);
                if encoder::supports_two_pass(self.encoder.name) {
                    self.planned = 2;
                }
                self.encode_to_size(target, cancel, on_progress)?
            }
        };
        report.encoder = self.encoder.name.to_string();
        report.decoder = last.decoder.clone();
        report.hwaccel = last.hwaccel.then(|| "cuda".to_string());
        report.gpu = self
            .target
            .gpu
            .filter(|_| last.hwaccel || self.encoder.is_nvenc());
        report.hardware_fallback = self.hw_fallback.clone().or(last.hw_note.clone());
        report.passes = self.passes;
        report.audio = last.audio.to_string();
        report.audio_shrunk = self.audio_shrunk(last.audio);
        on_progress(Progress {
            percent: 100.0,
            fps: 0.0,
            eta_s: Some(0.0),
            chunks: None,
        });
        Ok(TranscodeOutcome {
            width: self.geometry.width,
            height: self.geometry.height,
            frames: last.frames,
            duration_s: last.duration_s,
            output_size: last.file_bytes,
            report,
        })
    }

    pub(crate) fn pass(
        &mut self,
        rate: RateSpec,
        pass: Pass,
        with_audio: bool,
        cancel: &AtomicBool,
        on_progress: &mut dyn FnMut(Progress),
    ) -> Result<PassResult, MediaError> {
        let out = self.output.to_path_buf();
        self.pass_to(&out, rate, pass, with_audio, cancel, on_progress)
    }

    /// One pass to `out`, falling back from NVDEC to CPU decode and from NVENC to the CPU
    /// encoder when the hardware fails at run time (a session limit, an odd stream).
    fn pass_to(
        &mut self,
        out: &Path,
        rate: RateSpec,
        pass: Pass,
        with_audio: bool,
        cancel: &AtomicBool,
        on_progress: &mut dyn FnMut(Progress),
    ) -> Result<PassResult, MediaError> {
        loop {
            let mut settings = encoder::settings(self.encoder.name, self.preset, rate, &pass);
            if self.stitchable {
                encoder::stitchable(self.encoder.name, &mut settings);
            }
            if let Some(frames) = self.chunk_frames {
                encoder::one_gop(self.encoder.name, frames, &mut settings);
            }
            if let Some(gop) = self.fixed_gop {
                settings = super::ladder::fixed_gop(self.encoder.name, gop, settings);
            }
            self.target.on_gpu(self.encoder.name, &mut settings);
            let spec = PassSpec {
                input: self.input,
                output: out,
                container: self.params.container,
                encoder: self.encoder.name,
                settings,
                geometry: self.geometry,
                sar: self.sar,
                pix_fmt: target_pix_fmt(self.params.codec, self.encoder.name, self.info.bit_depth),
                with_audio,
                audio_shrink: self.audio_shrink.filter(|_| with_audio),
                gpu: self.target.gpu.filter(|_| self.hw_decode),
                edit: &self.edit,
            };
            let pass_started = Instant::now();
            let (planned, done) = (self.planned.max(self.done + 1), self.done);
            let started = self.started;
            let mut last_percent = self.last_percent;
            let result = run_pass(&spec, cancel, &mut |fraction, frames| {
                let overall = ((done as f64 + fraction) / planned as f64).clamp(0.0, 0.999);
                let percent = (overall * 100.0) as f32;
                if percent < last_percent {
                    return;
                }
                last_percent = percent;
                let elapsed = started.elapsed().as_secs_f64();
                let pass_elapsed = pass_started.elapsed().as_secs_f64().max(1e-3);
                on_progress(Progress {
                    percent,
                    fps: (frames as f64 / pass_elapsed) as f32,
                    eta_s: (overall > 0.0).then(|| (elapsed * (1.0 - overall) / overall) as f32),
                    chunks: None,
                });
            });
            self.last_percent = last_percent;
            match result {
                Ok(r) => {
                    if let Some(fault) = &r.device_fault {
                        // The device would not open; this pass decoded on the CPU. Later
                        // passes go where the node moves the job.
                        self.target.fault(fault);
                        self.hw_fallback
                            .get_or_insert(format!("GPU fault ({fault}); decoded on the CPU"));
                    }
                    if let Some(failed) = self.nvdec_failed.take() {
                        // The CPU decoded what NVDEC could not: the input is sound, so the
                        // device is to blame.
                        self.target.fault(&failed);
                    }
                    self.done += 1;
                    self.passes += 1;
                    return Ok(r);
                }
                Err(MediaError::Decode(msg)) if self.hw_decode => {
                    tracing::warn!(%msg, "NVDEC decode failed; retrying on the CPU");
                    self.hw_decode = false;
                    self.nvdec_failed = Some(format!("NVDEC failed: {msg}"));
                    self.hw_fallback
                        .get_or_insert(format!("NVDEC failed ({msg}); decoded on the CPU"));
                }
                Err(MediaError::UnsupportedCodec(msg)) if self.encoder.is_nvenc() => {
                    if super::hw::is_device_fault(&msg) {
                        self.target.fault(&msg);
                    }
                    let cpu = self.params.codec.cpu_encoder();
                    tracing::warn!(%msg, "NVENC did not open; encoding with {cpu}");
                    self.hw_fallback = Some(format!(
                        "{} failed to open ({msg}); encoded with {cpu}",
                        self.encoder.name
                    ));
                    self.encoder = EncoderChoice {
                        name: cpu,
                        fallback: self.hw_fallback.clone(),
                    };
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The encoder this job opens.
    pub(crate) fn encoder_name(&self) -> &'static str {
        self.encoder.name
    }

    pub(crate) fn cleanup_scratch(&self) {
        let _ = std::fs::remove_file(&self.pass1_out);
        // x264 and x265 write `<stats>`, `<stats>.mbtree`/`.cutree` and `.temp` files.
        if let (Some(dir), Some(name)) = (self.stats.parent(), self.stats.file_name()) {
            let name = name.to_string_lossy().into_owned();
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten() {
                    if e.file_name().to_string_lossy().starts_with(&name) {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_bit_is_kept_where_the_codec_can_carry_it() {
        let yuv = ffi::AVPixelFormat_AV_PIX_FMT_YUV420P;
        let p10 = ffi::AVPixelFormat_AV_PIX_FMT_YUV420P10LE;
        assert_eq!(target_pix_fmt(VideoCodec::H264, "libx264", 10), yuv);
        assert_eq!(target_pix_fmt(VideoCodec::H265, "libx265", 10), p10);
        assert_eq!(target_pix_fmt(VideoCodec::Av1, "libsvtav1", 10), p10);
        assert_eq!(target_pix_fmt(VideoCodec::Av1, "libsvtav1", 8), yuv);
        assert_eq!(target_pix_fmt(VideoCodec::Vp9, "libvpx-vp9", 10), yuv);
        assert_eq!(
            target_pix_fmt(VideoCodec::H265, "hevc_nvenc", 10),
            ffi::AVPixelFormat_AV_PIX_FMT_P010LE
        );
    }
}
