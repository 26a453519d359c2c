//! An adaptive-streaming ladder: one decode (NVDEC where the node has it), one filter graph
//! that splits the frames into every rendition's scale (`scale_cuda` on the GPU), the
//! renditions encoded concurrently with keyframes on one cadence, and FFmpeg's `dash` muxer
//! writing CMAF segments with an MPD and HLS playlists over them. The playlists' bandwidth
//! figures are then measured from the segments (see `manifest`).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use kiln_protocol::event::RenditionReport;
use kiln_protocol::ladder::{default_ladder, DASH_MANIFEST};
use kiln_protocol::{EncodeReport, LadderParams, Preset, RungRate};

use super::edit::{edited_info, EditFiles, EditPlan};
use super::encoder::{self, EncoderSettings, Pass, RateSpec};
use super::geometry::{self, Geometry};
use super::probe::MediaInfo;
use super::transcode::Progress;
use super::{capabilities, init_ffmpeg_logging, MediaError};

pub(crate) mod chunked;
mod manifest;
mod package;
mod per_title;
mod run;

pub use per_title::{score_renditions, video_bytes};

/// What a finished ladder produced.
#[derive(Debug, Clone, PartialEq)]
pub struct LadderOutcome {
    /// The top rendition's size.
    pub width: u32,
    pub height: u32,
    pub frames: u64,
    pub duration_s: f64,
    /// Every file of the tree, relative to the output folder, the entry manifest last.
    pub files: Vec<PathBuf>,
    pub report: EncodeReport,
}

/// One planned rendition.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RungPlan {
    pub geometry: Geometry,
    pub rate: RateSpec,
    pub target_kbps: Option<u32>,
    pub quality: Option<u8>,
    /// A per-title rung: the probe it was chosen from.
    pub per_title: Option<crate::quality::per_title::Point>,
}

/// Encode `params`' ladder of `input` into the folder `out_dir` (created if missing).
pub fn encode_ladder(
    input: &Path,
    out_dir: &Path,
    params: &LadderParams,
    cancel: &AtomicBool,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<LadderOutcome, MediaError> {
    encode_ladder_edited(
        input,
        out_dir,
        params,
        &EditFiles::default(),
        cancel,
        on_progress,
    )
}

/// [`encode_ladder`] with the files `params.edit` reads fetched to `files`.
pub fn encode_ladder_edited(
    input: &Path,
    out_dir: &Path,
    params: &LadderParams,
    files: &EditFiles,
    cancel: &AtomicBool,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<LadderOutcome, MediaError> {
    init_ffmpeg_logging();
    params.validate().map_err(MediaError::InvalidSettings)?;
    if let Some(target_s) = params.chunk_secs.filter(|&c| c > 0.0) {
        return chunked::encode(
            input,
            out_dir,
            params,
            target_s,
            super::chunked::local_slots(),
            cancel,
            on_progress,
        );
    }
    let source = super::probe(input)?;
    let edit = EditPlan::new(&source, &params.edit, files)?;
    // Rungs are planned on the picture the edit leaves (cropped, upright).
    let info = edited_info(&source, &params.edit).map_err(MediaError::InvalidSettings)?;
    let caps = capabilities();
    // Progress: a per-title search takes the first 45 %, measuring the renditions the last 9 %.
    let (encode_from, encode_span) = match params.per_title {
        Some(_) => (45.0, 45.0),
        None => (0.0, 99.0),
    };
    let scratch = out_dir.with_extension("per-title");
    let Planned {
        rungs,
        notes,
        mut chosen,
        choice,
    } = plan_ladder(input, &info, params, &scratch, cancel, &mut |f| {
        on_progress(Progress::at(f * 45.0))
    })?;
    let preset = params.preset.unwrap_or(Preset::Medium);
    let mut target = super::hw::Target::current(params.hardware, caps.cuda.available);
    let choice = target.restrict(params.codec, choice);
    let pix_fmt = super::transcode::target_pix_fmt(params.codec, choice.name, info.bit_depth);
    std::fs::create_dir_all(out_dir)
        .map_err(|e| MediaError::Io(format!("create the ladder folder: {e}")))?;
    let started = Instant::now();
    let spec = run::RunSpec {
        input,
        manifest: &out_dir.join(DASH_MANIFEST),
        encoder: choice.name,
        rungs: rungs
            .iter()
            .map(|r| {
                let mut settings = encoder::settings(choice.name, preset, r.rate, &Pass::Only);
                target.on_gpu(choice.name, &mut settings);
                (r.geometry, settings)
            })
            .collect(),
        pix_fmt,
        segment_secs: params.segment_secs,
        gpu: target.gpu,
        edit: &edit,
        opus: params.audio == kiln_protocol::ladder::LadderAudio::Opus,
    };
    let ran = run::run(&spec, cancel, &mut |fraction, frames| {
        let elapsed = started.elapsed().as_secs_f32();
        let fps = if elapsed > 0.0 {
            frames as f32 / elapsed
        } else {
            0.0
        };
        let eta_s = (fraction > 0.01).then(|| elapsed * (1.0 - fraction as f32) / fraction as f32);
        on_progress(Progress {
            percent: encode_from + fraction as f32 * encode_span,
            fps,
            eta_s,
            chunks: None,
        });
    });
    let ran = match ran {
        Ok(r) => r,
        Err(e) => {
            // Never leave half a tree behind for someone to serve.
            let _ = std::fs::remove_dir_all(out_dir);
            return Err(e);
        }
    };
    let gpu = target.gpu.filter(|_| ran.hwaccel || choice.is_nvenc());
    if let Some(fault) = &ran.device_fault {
        target.fault(fault);
    }
    let measured =
        manifest::finish(out_dir, &params.packaging, ran.frame_rate).inspect_err(|_| {
            let _ = std::fs::remove_dir_all(out_dir);
        })?;
    let mut renditions = renditions(&rungs, &measured.video);
    if let Some(report) = &mut chosen {
        on_progress(Progress::at(90.0));
        measure_per_title(input, out_dir, &mut renditions, report, &scratch, cancel)?;
    }
    let top = rungs[0].geometry;
    Ok(LadderOutcome {
        width: top.width,
        height: top.height,
        frames: ran.frames,
        duration_s: ran.duration_s,
        files: measured.files,
        report: EncodeReport {
            encoder: choice.name.to_string(),
            decoder: ran.decoder,
            hwaccel: ran.hwaccel.then(|| "cuda".to_string()),
            gpu,
            hardware_fallback: choice.fallback.or(ran.hw_note),
            passes: 1,
            audio: ran.audio.to_string(),
            rotation: top.rotation,
            renditions,
            ladder_notes: notes,
            keyframe_interval: Some(ran.gop_frames),
            per_title: chosen,
            ..EncodeReport::default()
        },
    })
}

/// A ladder's renditions chosen, and the encoder that makes them.
pub(crate) struct Planned {
    pub rungs: Vec<RungPlan>,
    pub notes: Vec<String>,
    /// A per-title ladder's search.
    pub chosen: Option<kiln_protocol::event::PerTitleReport>,
    pub choice: encoder::EncoderChoice,
}

/// Plan `params`' renditions of `input` (as the edit leaves it: `info`): the rungs asked for,
/// or — per-title — searched in `scratch` (removed after), `on_progress` getting the fraction
/// searched. Fails first, before any work, where this node cannot open the encoder.
pub(crate) fn plan_ladder(
    input: &Path,
    info: &MediaInfo,
    params: &LadderParams,
    scratch: &Path,
    cancel: &AtomicBool,
    on_progress: &mut dyn FnMut(f32),
) -> Result<Planned, MediaError> {
    // Before any work (a per-title search encodes a dozen probes): can this node encode it?
    let caps = capabilities();
    let choice = encoder::choose_encoder(params.codec, params.hardware, caps);
    if !caps.encoder(choice.name) {
        return Err(MediaError::UnsupportedCodec(format!(
            "{} does not open on this node",
            choice.name
        )));
    }
    let preset = params.preset.unwrap_or(Preset::Medium);
    let (rungs, notes, chosen) = match params.per_title {
        Some(pt) => {
            let planned = per_title::plan(
                input,
                info,
                params,
                preset,
                pt,
                scratch,
                cancel,
                on_progress,
            );
            let _ = std::fs::remove_dir_all(scratch);
            let (rungs, report) = planned?;
            (rungs, Vec::new(), Some(report))
        }
        None => {
            let (rungs, notes) = plan_rungs(info, params)?;
            (rungs, notes, None)
        }
    };
    Ok(Planned {
        rungs,
        notes,
        chosen,
        choice,
    })
}

/// The report of each rung as its segments measured.
fn renditions(rungs: &[RungPlan], measured: &[manifest::RenditionStats]) -> Vec<RenditionReport> {
    rungs
        .iter()
        .zip(measured)
        .map(|(r, m)| RenditionReport {
            width: r.geometry.width,
            height: r.geometry.height,
            codecs: m.codecs.clone(),
            bandwidth: m.peak_bps,
            average_bandwidth: m.average_bps,
            target_kbps: r.target_kbps,
            quality: r.quality,
            playlist: m.playlist.clone(),
            crf: r.per_title.map(|p| p.crf),
            kbps_predicted: r.per_title.map(|p| p.kbps),
            vmaf_predicted: r.per_title.map(|p| p.vmaf),
            vmaf_measured: None,
        })
        .collect()
}

/// A per-title ladder's renditions scored against the source (scratch in `scratch`); the
/// tree goes where that fails.
fn measure_per_title(
    input: &Path,
    out_dir: &Path,
    renditions: &mut [RenditionReport],
    report: &mut kiln_protocol::event::PerTitleReport,
    scratch: &Path,
    cancel: &AtomicBool,
) -> Result<(), MediaError> {
    let measured = per_title::measure(input, out_dir, renditions, report, scratch, cancel);
    let _ = std::fs::remove_dir_all(scratch);
    measured.inspect_err(|_| {
        let _ = std::fs::remove_dir_all(out_dir);
    })
}

/// The renditions of `params` for a source like `info`: the requested (or default) rungs,
/// none larger than the source (a rung that would upscale is dropped and said so), no two of
/// one size, largest first. A ladder whose every rung was too large gets one rung at the
/// source's size with the first rung's rate.
pub(crate) fn plan_rungs(
    info: &MediaInfo,
    params: &LadderParams,
) -> Result<(Vec<RungPlan>, Vec<String>), MediaError> {
    let (_, display_h) = info.display_size();
    let wanted = params
        .renditions
        .clone()
        .unwrap_or_else(|| default_ladder(params.codec, display_h));
    let mut notes = Vec::new();
    let mut plans: Vec<RungPlan> = Vec::new();
    let plan = |rung: &kiln_protocol::Rung, geometry: Geometry| {
        let (rate, target_kbps, quality) = match rung.rate {
            RungRate::Bitrate { kbps } => {
                let bps = kbps as i64 * 1000;
                (
                    RateSpec::Capped {
                        bps,
                        max_bps: bps * 3 / 2,
                        buffer_bits: bps * 2,
                    },
                    Some(kbps),
                    None,
                )
            }
            RungRate::Quality { quality } => (
                RateSpec::Crf(params.codec.crf_for(quality)),
                None,
                Some(quality),
            ),
        };
        RungPlan {
            geometry,
            rate,
            target_kbps,
            quality,
            per_title: None,
        }
    };
    for rung in &wanted {
        match geometry::plan(info, Some(rung.resolution), false) {
            Ok(g)
                if plans
                    .iter()
                    .any(|p| (p.geometry.width, p.geometry.height) == (g.width, g.height)) =>
            {
                notes.push(format!(
                    "{}x{} was asked for twice; encoded once",
                    g.width, g.height
                ));
            }
            Ok(g) => plans.push(plan(rung, g)),
            Err(why) => notes.push(format!("rung dropped: {why}")),
        }
    }
    if plans.is_empty() {
        let g = geometry::plan(info, None, false).map_err(MediaError::InvalidSettings)?;
        notes.push(format!(
            "every rung was larger than the source; one rendition at its {}x{}",
            g.width, g.height
        ));
        plans.push(plan(&wanted[0], g));
    }
    plans.sort_by_key(|p| std::cmp::Reverse(p.geometry.width as u64 * p.geometry.height as u64));
    Ok((plans, notes))
}

/// Fix `settings`' keyframes at every `gop` frames with scene-cut detection off and closed
/// GOPs, so every rendition has its keyframes at the same frames and each segment starts with
/// one that a player can switch at.
pub(crate) fn fixed_gop(encoder: &str, gop: u32, mut settings: EncoderSettings) -> EncoderSettings {
    let gop = gop.max(1);
    settings.gop_size = gop as i32;
    let fixed = format!("keyint={gop}:min-keyint={gop}:scenecut=0");
    let append = |s: &mut EncoderSettings, key: &str, extra: &str| match s
        .options
        .iter_mut()
        .find(|(k, _)| k == key)
    {
        Some((_, v)) => {
            v.push(':');
            v.push_str(extra);
        }
        None => s.options.push((key.to_string(), extra.to_string())),
    };
    match encoder {
        "libx264" => {
            append(&mut settings, "x264-params", &format!("{fixed}:open-gop=0"));
            settings.options.push(("forced-idr".into(), "1".into()));
        }
        "libx265" => {
            append(&mut settings, "x265-params", &format!("{fixed}:open-gop=0"));
            settings.options.push(("forced-idr".into(), "1".into()));
        }
        // SVT-AV1: `g` is its intra period; scene-change detection off; closed GOPs (key
        // frames, intra refresh type 2).
        "libsvtav1" => append(&mut settings, "svtav1-params", "scd=0:irefresh-type=2"),
        nv if nv.ends_with("_nvenc") => {
            for (k, v) in [
                ("forced-idr", "1"),
                ("no-scenecut", "1"),
                ("strict_gop", "1"),
            ] {
                settings.options.push((k.into(), v.into()));
            }
        }
        _ => {}
    }
    settings
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_protocol::{Packaging, Resolution, Rung, VideoCodec};

    fn info(w: u32, h: u32) -> MediaInfo {
        MediaInfo {
            format: "mov".into(),
            duration_s: 10.0,
            video_codec: "h264".into(),
            width: w,
            height: h,
            display_width: w,
            has_audio: false,
            rotation: 0,
            bit_depth: 8,
            audio_codec: None,
            audio_bitrate: 0,
            audio_channels: 0,
            streams: 1,
        }
    }

    fn params(renditions: Option<Vec<Rung>>) -> LadderParams {
        LadderParams {
            codec: VideoCodec::H264,
            renditions,
            per_title: None,
            segment_secs: 4,
            packaging: Packaging::both(),
            preset: None,
            hardware: kiln_protocol::HardwarePolicy::Cpu,
            audio: Default::default(),
            edit: Default::default(),
            chunk_secs: None,
        }
    }

    fn rung(h: u32, kbps: u32) -> Rung {
        Rung {
            resolution: Resolution::Height { height: h },
            rate: RungRate::Bitrate { kbps },
        }
    }

    #[test]
    fn rungs_never_upscale_repeat_or_come_out_of_order() {
        let sizes = |p: &[RungPlan]| {
            p.iter()
                .map(|r| (r.geometry.width, r.geometry.height))
                .collect::<Vec<_>>()
        };
        let (p, notes) = plan_rungs(&info(1280, 720), &params(None)).unwrap();
        assert_eq!(sizes(&p), [(1280, 720), (854, 480), (640, 360), (426, 240)]);
        assert!(notes.is_empty());
        assert_eq!(p[0].target_kbps, Some(2800));

        let asked = vec![
            rung(360, 800),
            rung(1080, 5000),
            rung(720, 2800),
            rung(360, 700),
        ];
        let (p, notes) = plan_rungs(&info(1280, 720), &params(Some(asked))).unwrap();
        assert_eq!(sizes(&p), [(1280, 720), (640, 360)]);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].contains("larger than the source"), "{notes:?}");

        let (p, notes) = plan_rungs(&info(176, 144), &params(Some(vec![rung(720, 2800)]))).unwrap();
        assert_eq!(sizes(&p), [(176, 144)]);
        assert!(notes.last().unwrap().contains("one rendition"));
    }

    #[test]
    fn fixed_gops_reach_each_encoder() {
        let opt = |s: &EncoderSettings, k: &str| {
            s.options
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        let base = encoder::settings("libx265", Preset::Fast, RateSpec::Crf(28), &Pass::Only);
        let s = fixed_gop("libx265", 96, base);
        assert_eq!(s.gop_size, 96);
        assert_eq!(
            opt(&s, "x265-params").unwrap(),
            "log-level=error:keyint=96:min-keyint=96:scenecut=0:open-gop=0"
        );
        let s = fixed_gop("libx264", 50, EncoderSettings::default());
        assert_eq!(
            opt(&s, "x264-params").unwrap(),
            "keyint=50:min-keyint=50:scenecut=0:open-gop=0"
        );
        assert_eq!(opt(&s, "forced-idr").unwrap(), "1");
        let s = fixed_gop("libsvtav1", 0, EncoderSettings::default());
        assert_eq!(s.gop_size, 1);
        assert!(opt(&s, "svtav1-params").unwrap().contains("scd=0"));
    }
}
