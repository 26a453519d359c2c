//! Target-quality encodes: find the largest CRF whose VMAF meets a target on sampled scenes
//! (each probe a real encode through Kiln's pipeline, scored by libvmaf), then encode the whole
//! source at that CRF and score the result against the source.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use kiln_protocol::{RateControl, VideoParams, VmafReport};
use serde::{Deserialize, Serialize};

use super::compare::{compare, Scores};
use super::samples::{self, SamplePlan};
use super::search::{try_search, Found};
use super::QualityError;
use crate::media::{self, MediaError, Progress, TranscodeOutcome};

/// How a search samples and measures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchOptions {
    /// Scenes sampled (ab-av1 samples about one per 12 minutes; Kiln's sources are shorter).
    pub samples: u32,
    /// Seconds per sample.
    pub sample_s: f64,
    /// libvmaf worker threads.
    pub threads: u32,
}

impl Default for SearchOptions {
    fn default() -> Self {
        Self {
            samples: 4,
            sample_s: 3.0,
            threads: default_threads(),
        }
    }
}

/// One worker per core (libvmaf's own pool).
pub fn default_threads() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
}

/// The CRF range searched: the encoder's scale without its near-lossless bottom, where files
/// grow huge for VMAF gains nobody sees.
pub fn search_range(params: &VideoParams) -> (u32, u32) {
    let (_, hi) = params.codec.crf_range();
    (10, hi as u32)
}

/// One probe: an encode of the samples at `crf`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    pub crf: u32,
    pub scores: Scores,
    /// Bytes of the probe encode.
    pub bytes: u64,
}

/// What a search found.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchOutcome {
    pub found: Found,
    pub probes: Vec<ProbeResult>,
    /// Output size predicted for the whole source at the chosen CRF (video scaled from the
    /// samples, plus the source's audio).
    pub predicted_bytes: u64,
    /// Whether the source was probed whole (too short to sample).
    pub whole: bool,
}

impl SearchOutcome {
    /// The probe at the chosen CRF.
    pub fn chosen(&self) -> Option<&ProbeResult> {
        self.probes.iter().find(|p| p.crf == self.found.crf)
    }
}

/// Encodes of a source's sampled scenes at chosen CRFs, each scored against the samples: the
/// oracle a search asks. The sample clip lives in `scratch` until the prober is dropped.
pub struct Prober<'a> {
    params: VideoParams,
    sample: PathBuf,
    owned_sample: bool,
    scratch: PathBuf,
    threads: u32,
    cancel: &'a AtomicBool,
    /// Seconds of source the samples cover.
    pub sample_s: f64,
    /// The source's duration, audio bitrate (bits/s, 0 without audio).
    pub duration_s: f64,
    pub audio_bps: f64,
    /// Whether the source is probed whole (too short to sample).
    pub whole: bool,
}

impl<'a> Prober<'a> {
    /// Cut the samples of `source` for encodes with `params` (its `rate` is replaced per probe).
    /// A short source is probed whole, audio and all.
    pub fn new(
        source: &Path,
        params: &VideoParams,
        opts: &SearchOptions,
        scratch: &Path,
        cancel: &'a AtomicBool,
    ) -> Result<Self, QualityError> {
        Self::open(source, params, opts, scratch, cancel, false)
    }

    /// [`Prober::new`], but always probing a video-only cut (the whole picture of a short
    /// source), so a probe's size is the video's alone.
    pub fn video_only(
        source: &Path,
        params: &VideoParams,
        opts: &SearchOptions,
        scratch: &Path,
        cancel: &'a AtomicBool,
    ) -> Result<Self, QualityError> {
        Self::open(source, params, opts, scratch, cancel, true)
    }

    fn open(
        source: &Path,
        params: &VideoParams,
        opts: &SearchOptions,
        scratch: &Path,
        cancel: &'a AtomicBool,
        always_cut: bool,
    ) -> Result<Self, QualityError> {
        let info = media::probe(source)?;
        if info.rotation != 0 {
            return Err(MediaError::InvalidSettings(format!(
                "quality targets (target_vmaf, per-title ladders) do not yet measure sources with a {}° display rotation",
                info.rotation
            ))
            .into());
        }
        std::fs::create_dir_all(scratch).map_err(|e| MediaError::Io(format!("scratch: {e}")))?;
        let plan = samples::plan(info.duration_s, opts.samples, opts.sample_s);
        let whole = plan == SamplePlan::Whole;
        let (sample, sample_s) = match &plan {
            SamplePlan::Whole if !always_cut => (source.to_path_buf(), info.duration_s),
            _ => {
                let segments = match plan {
                    SamplePlan::Segments(s) => s,
                    SamplePlan::Whole => vec![(0.0, info.duration_s)],
                };
                let path = scratch.join("samples.mkv");
                let clip = samples::extract(source, &segments, &path)?;
                (path, clip.duration_s)
            }
        };
        let audio_bps = match (info.has_audio, info.audio_bitrate) {
            (false, _) => 0.0,
            (true, 0) => 128_000.0,
            (true, b) => b as f64,
        };
        Ok(Self {
            params: params.clone(),
            owned_sample: sample != source,
            sample,
            scratch: scratch.to_path_buf(),
            threads: opts.threads,
            cancel,
            sample_s,
            duration_s: info.duration_s,
            audio_bps,
            whole,
        })
    }

    /// Encode the samples at `crf` and score them.
    pub fn probe(&self, crf: u32) -> Result<ProbeResult, QualityError> {
        self.probe_at(self.params.resolution, crf)
    }

    /// Encode the samples at `crf` scaled to `resolution`, and score them against the samples
    /// at their own size (the encode scaled up, as a player would show it).
    pub fn probe_at(
        &self,
        resolution: Option<kiln_protocol::Resolution>,
        crf: u32,
    ) -> Result<ProbeResult, QualityError> {
        if self.cancel.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(QualityError::Media(MediaError::Cancelled));
        }
        let out = self
            .scratch
            .join(format!("probe-{crf}.{}", self.params.container.extension()));
        let mut p = self.params.clone();
        p.rate = RateControl::EncoderCrf { crf: crf as u8 };
        p.resolution = resolution;
        let encoded = media::transcode(&self.sample, &out, &p, self.cancel, &mut |_| {});
        let scored = encoded.map_err(QualityError::from).and_then(|e| {
            let s = compare(&self.sample, &out, self.threads)?;
            Ok((e.output_size, s))
        });
        let _ = std::fs::remove_file(&out);
        let (bytes, scores) = scored?;
        tracing::debug!(crf, vmaf = scores.vmaf.mean, bytes, "target search probe");
        Ok(ProbeResult { crf, scores, bytes })
    }

    /// The whole output's size predicted from a probe's: video scaled from the samples'
    /// duration to the source's, plus the source's audio.
    pub fn predict_bytes(&self, probe: &ProbeResult) -> u64 {
        if self.whole {
            return probe.bytes;
        }
        let video = probe.bytes as f64 * self.duration_s / self.sample_s.max(1e-3);
        (video + self.audio_bps / 8.0 * self.duration_s).round() as u64
    }
}

impl Drop for Prober<'_> {
    fn drop(&mut self) {
        if self.owned_sample {
            let _ = std::fs::remove_file(&self.sample);
        }
    }
}

/// Search for the largest CRF meeting `target` VMAF for `params` (its `rate` is ignored).
/// Probe encodes and the sample clip go to `scratch`, and are removed.
pub fn find_crf(
    source: &Path,
    params: &VideoParams,
    target: f64,
    opts: &SearchOptions,
    scratch: &Path,
    cancel: &AtomicBool,
    on_progress: &mut dyn FnMut(f32),
) -> Result<SearchOutcome, QualityError> {
    let prober = Prober::new(source, params, opts, scratch, cancel)?;
    let (lo, hi) = search_range(params);
    let mut probes: Vec<ProbeResult> = Vec::new();
    let found = try_search(lo, hi, target, |crf| {
        let p = prober.probe(crf)?;
        let vmaf = p.scores.vmaf.mean;
        probes.push(p);
        // Searches over 0–63 rarely take more than 6 probes.
        on_progress((probes.len() as f32 / 6.0).min(0.95));
        Ok::<f64, QualityError>(vmaf)
    })?;
    let predicted_bytes = probes
        .iter()
        .find(|p| p.crf == found.crf)
        .map(|p| prober.predict_bytes(p))
        .unwrap_or(0);
    Ok(SearchOutcome {
        found,
        probes,
        predicted_bytes,
        whole: prober.whole,
    })
}

/// A `RateControl::Vmaf` job: search, encode the whole source at the chosen CRF, score it.
pub fn transcode_to_vmaf(
    input: &Path,
    output: &Path,
    params: &VideoParams,
    cancel: &AtomicBool,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<TranscodeOutcome, MediaError> {
    let RateControl::Vmaf { target } = params.rate else {
        return Err(MediaError::InvalidSettings("not a target_vmaf job".into()));
    };
    let mut report = |percent: f32| on_progress(Progress::at(percent));
    let scratch = output.with_extension("vmaf-search");
    let (p, searched) = search_title(input, params, &scratch, cancel, &mut |f| report(f * 40.0))?;
    let mut outcome = media::transcode(input, output, &p, cancel, &mut |pr| {
        report(40.0 + pr.percent.min(99.0) * 0.5)
    })?;
    report(90.0);
    score_title(input, output, target, &searched, &mut outcome)?;
    report(100.0);
    Ok(outcome)
}

/// A `target_vmaf` title's search: the largest CRF meeting its target on the title's sampled
/// scenes (`on_progress` gets the fraction searched; probes go to `scratch`, removed after),
/// and `params` set to encode at it — the whole title at once, or every chunk of it.
pub fn search_title(
    input: &Path,
    params: &VideoParams,
    scratch: &Path,
    cancel: &AtomicBool,
    on_progress: &mut dyn FnMut(f32),
) -> Result<(VideoParams, SearchOutcome), MediaError> {
    let RateControl::Vmaf { target } = params.rate else {
        return Err(MediaError::InvalidSettings("not a target_vmaf job".into()));
    };
    let searched = find_crf(
        input,
        params,
        target,
        &SearchOptions::default(),
        scratch,
        cancel,
        on_progress,
    );
    let _ = std::fs::remove_dir_all(scratch);
    let searched = searched.map_err(QualityError::into_media)?;
    let mut p = params.clone();
    p.rate = RateControl::EncoderCrf {
        crf: searched.found.crf as u8,
    };
    Ok((p, searched))
}

/// Score the `output` of a title that asked for VMAF `target` against its `input` and put
/// what the search chose and the output achieved on `outcome`'s report; an output that cannot
/// be scored is removed.
pub fn score_title(
    input: &Path,
    output: &Path,
    target: f64,
    searched: &SearchOutcome,
    outcome: &mut TranscodeOutcome,
) -> Result<(), MediaError> {
    let scores = match compare(input, output, default_threads()) {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(output);
            return Err(e.into_media());
        }
    };
    outcome.report.passes += searched.probes.len() as u32;
    outcome.report.vmaf = Some(VmafReport {
        target,
        crf: searched.found.crf as u8,
        achieved: round2(scores.vmaf.mean),
        achieved_p5: round2(scores.vmaf.p5),
        predicted: round2(searched.found.score),
        predicted_size_bytes: searched.predicted_bytes,
        met: searched.found.met,
        probes: searched.probes.len() as u32,
        search: "title".into(),
    });
    Ok(())
}

/// `v` to two decimals, as job reports show scores.
pub(crate) fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}
