//! Per-title ladders vs the fixed default ladder on the same clips, codec and preset: each
//! ladder encoded by Kiln, every rendition scored with VMAF against the source, and the
//! BD-rate of the per-title ladder's hull against the fixed ladder's (negative: per-title
//! needs fewer bits for the same VMAF). Also what the measuring costs: the wall-time ratio.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use kiln_gpu_node::media::{encode_ladder, ladder, LadderOutcome};
use kiln_gpu_node::quality::hull::upper_hull;
use kiln_protocol::ladder::Packaging;
use kiln_protocol::{HardwarePolicy, LadderParams, PerTitle, Preset, VideoCodec};

use crate::bdrate::bd_rate;

/// `kiln-bench per-title`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Codec of both ladders (`h264`, `h265` or `av1`).
    #[arg(long, default_value = "h264")]
    pub codec: String,
    /// Encoder preset of both ladders.
    #[arg(long, default_value = "veryfast")]
    pub preset: String,
    /// The per-title ladder's top-rung VMAF.
    #[arg(long, default_value_t = 95.0)]
    pub target_vmaf: f64,
    /// Clips (default: bigbuckbunny and bikes from ../shared/media).
    pub clips: Vec<PathBuf>,
}

/// One rendition as measured here: video bitrate from its segments, VMAF against the source.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rung {
    width: u32,
    height: u32,
    kbps: f64,
    vmaf: f64,
}

pub fn main(a: Args) -> ExitCode {
    match run(&a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiln-bench per-title: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(a: &Args) -> Result<(), String> {
    // VP9 parses, and each ladder's own validation refuses it.
    let codec = VideoCodec::parse(&a.codec)
        .ok_or_else(|| format!("--codec must be h264, h265 or av1, not {}", a.codec))?;
    let preset = Preset::parse_for(codec, &a.preset)?;
    let clips = if a.clips.is_empty() {
        vec![
            crate::media("video/bigbuckbunny.mp4"),
            crate::media("video/bikes.mp4"),
        ]
    } else {
        a.clips.clone()
    };
    println!(
        "per-title (target VMAF {}) vs the fixed default ladder: {} {}, {} clip(s)",
        a.target_vmaf,
        a.codec,
        a.preset,
        clips.len()
    );
    for clip in &clips {
        let fixed = params(codec, preset, None);
        let auto = params(
            codec,
            preset,
            Some(PerTitle {
                target_vmaf: a.target_vmaf,
            }),
        );
        let (f, f_s) = ladder_of(clip, &fixed)?;
        let (p, p_s) = ladder_of(clip, &auto)?;
        let name = clip.file_name().unwrap_or_default().to_string_lossy();
        println!("\n{name}");
        print_ladder("fixed", &f);
        print_ladder("per-title", &p);
        let hull = |r: &[Rung]| -> (Vec<f64>, Vec<f64>) {
            let pts: Vec<(f64, f64)> = r.iter().map(|r| (r.kbps, r.vmaf)).collect();
            upper_hull(&pts).iter().map(|&i| pts[i]).unzip()
        };
        let ((fr, fq), (pr, pq)) = (hull(&f), hull(&p));
        let bd = match bd_rate(&fr, &fq, &pr, &pq) {
            Ok(v) => format!("{v:+.1} %"),
            Err(e) => format!(
                "n/a ({e}; fixed hull {} point(s), per-title {})",
                fr.len(),
                pr.len()
            ),
        };
        println!("  BD-rate of per-title vs fixed (VMAF, hull of each ladder): {bd}");
        println!(
            "  top rung: fixed {:.0} kbps VMAF {:.2}, per-title {:.0} kbps VMAF {:.2}",
            f[0].kbps, f[0].vmaf, p[0].kbps, p[0].vmaf
        );
        println!(
            "  wall time per-title / fixed (search, encode and scoring): {:.2}",
            p_s / f_s.max(1e-9)
        );
    }
    Ok(())
}

fn params(codec: VideoCodec, preset: Preset, per_title: Option<PerTitle>) -> LadderParams {
    LadderParams {
        codec,
        renditions: None,
        per_title,
        segment_secs: kiln_protocol::ladder::DEFAULT_SEGMENT_SECS,
        packaging: Packaging::both(),
        preset: Some(preset),
        hardware: HardwarePolicy::Cpu,
        audio: Default::default(),
        edit: Default::default(),
        chunk_secs: None,
    }
}

/// Encode one ladder of `clip` and measure every rendition; returns the rungs (top first) and
/// the seconds it took, scoring included (the per-title ladder scores its own renditions).
fn ladder_of(clip: &Path, p: &LadderParams) -> Result<(Vec<Rung>, f64), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let out = dir.path().join("ladder");
    let cancel = AtomicBool::new(false);
    let started = Instant::now();
    let mut o: LadderOutcome =
        encode_ladder(clip, &out, p, &cancel, &mut |_| {}).map_err(|e| e.to_string())?;
    if p.per_title.is_none() {
        ladder::score_renditions(
            clip,
            &out,
            &mut o.report.renditions,
            &dir.path().join("scratch"),
            &cancel,
        )
        .map_err(|e| e.to_string())?;
    }
    let secs = started.elapsed().as_secs_f64();
    o.report
        .renditions
        .iter()
        .map(|r| {
            let bytes = ladder::video_bytes(&out, &r.playlist).map_err(|e| e.to_string())?;
            Ok(Rung {
                width: r.width,
                height: r.height,
                kbps: bytes as f64 * 8.0 / 1000.0 / o.duration_s.max(1e-3),
                vmaf: r.vmaf_measured.unwrap_or(f64::NAN),
            })
        })
        .collect::<Result<Vec<_>, String>>()
        .map(|r| (r, secs))
}

fn print_ladder(name: &str, rungs: &[Rung]) {
    let list: Vec<String> = rungs
        .iter()
        .map(|r| {
            format!(
                "{}x{} {:.0} kbps VMAF {:.2}",
                r.width, r.height, r.kbps, r.vmaf
            )
        })
        .collect();
    println!("  {name:>9}: {}", list.join(" | "));
}
