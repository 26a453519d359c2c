//! Helpers shared by the gpu-node integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The real media samples: `$KILN_MEDIA_DIR`, else `../shared/media` beside the checkout.
pub fn media(rel: &str) -> PathBuf {
    let root = std::env::var_os("KILN_MEDIA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/media"));
    let p = root.join(rel);
    assert!(
        p.exists(),
        "missing media sample {} (set KILN_MEDIA_DIR)",
        p.display()
    );
    p
}

/// One stream as ffprobe (FFmpeg's own prober, independent of Kiln) sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Probed {
    pub codec: String,
    pub kind: String,
    pub width: u32,
    pub height: u32,
    pub duration: f64,
    pub pix_fmt: String,
    pub nb_frames: u64,
}

/// Every stream of a file, via the `ffprobe` CLI.
pub fn ffprobe(path: &Path) -> Vec<Probed> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries"])
        .arg("stream=codec_name,codec_type,width,height,duration,pix_fmt,nb_frames")
        .args(["-of", "csv=p=0:nk=0"])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    assert!(
        out.status.success(),
        "ffprobe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let mut p = Probed {
                codec: String::new(),
                kind: String::new(),
                width: 0,
                height: 0,
                duration: 0.0,
                pix_fmt: String::new(),
                nb_frames: 0,
            };
            for kv in line.split(',') {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                match k {
                    "codec_name" => p.codec = v.to_string(),
                    "codec_type" => p.kind = v.to_string(),
                    "width" => p.width = v.parse().unwrap_or(0),
                    "height" => p.height = v.parse().unwrap_or(0),
                    "duration" => p.duration = v.parse().unwrap_or(0.0),
                    "pix_fmt" => p.pix_fmt = v.to_string(),
                    "nb_frames" => p.nb_frames = v.parse().unwrap_or(0),
                    _ => {}
                }
            }
            p
        })
        .collect()
}

/// Run the `ffmpeg` CLI (for making edge-case inputs and measuring PSNR).
pub fn ffmpeg(args: &[&str]) -> String {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-y"])
        .args(args)
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success(),
        "ffmpeg {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The container as ffprobe names it, and its duration in seconds.
pub fn ffprobe_format(path: &Path) -> (String, f64) {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=format_name,duration",
        ])
        .args(["-of", "default=nw=1:nk=1"])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    let name = lines.next().unwrap_or_default().to_string();
    let duration = lines.next().and_then(|d| d.parse().ok()).unwrap_or(0.0);
    (name, duration)
}

/// Average PSNR (dB) of `out` against `src`, the source scaled to the output's size with the
/// same bicubic scaler first, as the `ffmpeg` CLI measures it.
pub fn psnr(out: &Path, src: &Path, width: u32, height: u32) -> f64 {
    let graph = format!(
        "[1:v]scale={width}:{height}:flags=bicubic,format=yuv420p[ref];[0:v]format=yuv420p[o];[o][ref]psnr"
    );
    let log = ffmpeg(&[
        "-i",
        out.to_str().unwrap(),
        "-i",
        src.to_str().unwrap(),
        "-lavfi",
        &graph,
        "-f",
        "null",
        "-",
    ]);
    log.split("average:")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no PSNR in ffmpeg output: {log}"))
}

/// The video packets' presentation times (s), sorted, via the `ffprobe` CLI.
pub fn packet_times(path: &Path) -> Vec<f64> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v", "-show_entries"])
        .args(["packet=pts_time", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    let mut t: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .collect();
    t.sort_by(f64::total_cmp);
    t
}
