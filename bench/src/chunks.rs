//! Chunked encoding vs the same encode made whole, on one long title, side by side on this
//! machine: wall time of the title in chunks on 1, 2 and 4 chunk slots as a speedup over the
//! whole encode (ratios in one run), and what chunking costs in compression — the BD-rate on
//! VMAF of chunked vs whole over a quality sweep (positive: chunks need more bits for the same
//! VMAF; a fresh keyframe per chunk is most of it).
//!
//! Slots are chunk encodes at once in one process, each encoder threading as it likes; the
//! fleet spreads the same chunks over nodes (README: when chunking pays).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use kiln_gpu_node::media::{self, chunked};
use kiln_gpu_node::quality;
use kiln_protocol::{Preset, VideoCodec, VideoParams};

use crate::bdrate::bd_rate;

mod nodes;

/// `kiln-bench chunks`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Codecs to measure.
    #[arg(long, value_delimiter = ',', default_value = "h264,h265,av1")]
    pub codecs: Vec<String>,
    /// Encoder preset (x264/x265 names; SVT-AV1 maps them, `medium` = 8).
    #[arg(long, default_value = "fast")]
    pub preset: String,
    /// Length of the title: the clip looped to it (seconds).
    #[arg(long, default_value_t = 60,
          value_parser = clap::value_parser!(u32).range(10..))]
    pub secs: u32,
    /// Height the title is scaled to.
    #[arg(long, default_value_t = 360,
          value_parser = clap::value_parser!(u32).range(64..))]
    pub height: u32,
    /// Chunk length (seconds).
    #[arg(long, default_value_t = 10.0)]
    pub chunk_secs: f64,
    /// Chunk slots to time.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub slots: Vec<usize>,
    /// Time node processes instead of slots: the title through a fleet on this machine (its
    /// own Redis, a control plane, `kiln-gpu-node` processes pinned to their share of the
    /// cores), whole on one node against chunked on each of these node counts.
    #[arg(long, value_delimiter = ',')]
    pub nodes: Vec<usize>,
    /// With `--nodes`: time an HLS/DASH ladder (renditions at the title's height, at its
    /// 2/3 and at its 1/2 by quality) instead of one file: whole on one node, chunked on whole
    /// segments on N.
    #[arg(long)]
    pub ladder: bool,
    /// Qualities (Kiln's crf scale) of the BD-rate sweep.
    #[arg(long, value_delimiter = ',', default_value = "23,28,33")]
    pub qualities: Vec<u8>,
    /// The clip (default: bigbuckbunny from ../shared/media).
    pub clip: Option<PathBuf>,
}

pub fn main(a: Args) -> ExitCode {
    match run(&a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiln-bench chunks: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One encode as measured here.
struct Encode {
    secs: f64,
    kbps: f64,
    vmaf: f64,
}

fn run(a: &Args) -> Result<(), String> {
    if a.slots.is_empty() || a.slots.contains(&0) || a.qualities.len() < 3 {
        return Err("--slots needs counts of at least 1, --qualities at least 3 values".into());
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let clip = a
        .clip
        .clone()
        .unwrap_or_else(|| crate::media("video/bigbuckbunny.mp4"));
    let title = make_title(&clip, dir.path(), a.secs, a.height)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if !a.nodes.is_empty() {
        if a.nodes.contains(&0) {
            return Err("--nodes needs counts of at least 1".into());
        }
        let mid = a.qualities[a.qualities.len() / 2];
        println!(
            "chunked on node processes vs whole on one: {}{} s of {} at {}p, {} s chunks, preset {}, quality {mid}",
            if a.ladder { "a 3-rendition ladder of " } else { "" },
            a.secs,
            clip.file_name().unwrap_or_default().to_string_lossy(),
            a.height,
            a.chunk_secs,
            a.preset
        );
        return nodes::table(&title, &a.codecs, &a.nodes, a.chunk_secs, &|codec| {
            let mut f = vec![("codec", codec.to_string()), ("preset", a.preset.clone())];
            if a.ladder {
                let h = a.height;
                f.push(("format", "cmaf".into()));
                f.push((
                    "renditions",
                    format!(
                        "{h}p@q{mid},{}p@q{mid},{}p@q{mid}",
                        h * 2 / 3 / 2 * 2,
                        h / 2 / 2 * 2
                    ),
                ));
            } else {
                f.push(("quality", mid.to_string()));
            }
            f
        });
    }
    println!(
        "chunked vs whole: {} s of {} at {}p, {} s chunks, preset {}, {cores} cores",
        a.secs,
        clip.file_name().unwrap_or_default().to_string_lossy(),
        a.height,
        a.chunk_secs,
        a.preset
    );
    println!(
        "{:<6} {:>9} {}  {:>10}  {:>8}",
        "codec",
        "whole s",
        a.slots
            .iter()
            .map(|s| format!("{:>13}", format!("{s} slot(s) ×")))
            .collect::<Vec<_>>()
            .join(""),
        "BD-rate",
        "Δ VMAF"
    );
    for name in &a.codecs {
        let codec = VideoCodec::parse(name).ok_or_else(|| format!("unknown codec {name:?}"))?;
        let preset = Preset::parse_for(codec, &a.preset)?;
        let params = |q: u8| {
            let mut p = VideoParams::crf(codec, q);
            p.preset = Some(preset);
            p
        };
        let mid = a.qualities[a.qualities.len() / 2];
        // Timing: the whole encode, then the chunks on each slot count, at the middle quality.
        let whole_mid = encode(&title, dir.path(), &params(mid), None, false)?;
        let mut speedups = Vec::new();
        for &s in &a.slots {
            let c = encode(
                &title,
                dir.path(),
                &params(mid),
                Some((a.chunk_secs, s)),
                false,
            )?;
            speedups.push(whole_mid.secs / c.secs);
        }
        // Compression: whole and chunked (most slots) over the sweep.
        let most = *a.slots.iter().max().expect("slots");
        let (mut wr, mut wq, mut cr, mut cq) = (vec![], vec![], vec![], vec![]);
        let mut dv = Vec::new();
        for &q in &a.qualities {
            let w = encode(&title, dir.path(), &params(q), None, true)?;
            let c = encode(
                &title,
                dir.path(),
                &params(q),
                Some((a.chunk_secs, most)),
                true,
            )?;
            dv.push(c.vmaf - w.vmaf);
            wr.push(w.kbps);
            wq.push(w.vmaf);
            cr.push(c.kbps);
            cq.push(c.vmaf);
        }
        let bd = bd_rate(&wr, &wq, &cr, &cq)
            .map(|v| format!("{v:+.2} %"))
            .unwrap_or_else(|e| format!("n/a ({e:?})"));
        let mean_dv = dv.iter().sum::<f64>() / dv.len() as f64;
        println!(
            "{:<6} {:>9.1} {}  {:>10}  {:>+8.2}",
            name,
            whole_mid.secs,
            speedups
                .iter()
                .map(|s| format!("{s:>13.2}"))
                .collect::<Vec<_>>()
                .join(""),
            bd,
            mean_dv
        );
    }
    println!(
        "(× = whole wall time / chunked wall time, side by side in this run; BD-rate of chunked \
         vs whole on VMAF over qualities {:?}; Δ VMAF = chunked − whole at equal settings)",
        a.qualities
    );
    Ok(())
}

/// The clip looped to `secs` at `height` lines, with a keyframe every 2 s (a source's usual
/// cadence) and AAC audio.
fn make_title(clip: &Path, dir: &Path, secs: u32, height: u32) -> Result<PathBuf, String> {
    let out = dir.join("title.mp4");
    let ok = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-stream_loop", "-1", "-i"])
        .arg(clip)
        .args(["-t", &secs.to_string()])
        .args(["-vf", &format!("scale=-2:{height}")])
        .args(["-c:v", "libx264", "-preset", "veryfast", "-crf", "18"])
        .args(["-force_key_frames", "expr:gte(t,n_forced*2)"])
        .args(["-c:a", "aac", "-b:a", "96k"])
        .arg(&out)
        .status()
        .map_err(|e| format!("ffmpeg: {e}"))?;
    if !ok.success() {
        return Err(format!("ffmpeg could not loop {}", clip.display()));
    }
    Ok(out)
}

/// Encode `title` as `p` says, whole or `(chunk_secs, slots)`; its time, video bitrate and
/// (where `score`) VMAF against the title.
fn encode(
    title: &Path,
    dir: &Path,
    p: &VideoParams,
    chunks: Option<(f64, usize)>,
    score: bool,
) -> Result<Encode, String> {
    let out = dir.join("out.mp4");
    let cancel = AtomicBool::new(false);
    let started = Instant::now();
    let (video_bytes, duration) = match chunks {
        None => {
            let o = media::transcode(title, &out, p, &cancel, &mut |_| {})
                .map_err(|e| e.to_string())?;
            (video_bytes(&out)?, o.duration_s)
        }
        Some((secs, slots)) => {
            let c = chunked::transcode_chunked(title, &out, p, secs, slots, &cancel, &|_, _| {})
                .map_err(|e| e.to_string())?;
            (
                c.assembled.video_bytes,
                media::probe(&out).map_err(|e| e.to_string())?.duration_s,
            )
        }
    };
    let secs = started.elapsed().as_secs_f64();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    let vmaf = if score {
        quality::compare(title, &out, threads)
            .map_err(|e| e.to_string())?
            .vmaf
            .mean
    } else {
        f64::NAN
    };
    Ok(Encode {
        secs,
        kbps: video_bytes as f64 * 8.0 / duration.max(1e-3) / 1000.0,
        vmaf,
    })
}

/// Bytes of a file's video packets, by the ffprobe CLI.
fn video_bytes(path: &Path) -> Result<u64, String> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0"])
        .args(["-show_entries", "packet=size", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .map_err(|e| format!("ffprobe: {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .sum())
}
