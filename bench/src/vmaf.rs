//! VMAF throughput: Kiln's harness (rsmpeg decode + libvmaf in-process, VMAF + PSNR + SSIM in
//! one pass) against libvmaf's own `vmaf` CLI on the same pair of files, same features, same
//! thread count. The CLI reads only raw Y4M, so its run is timed twice: on Y4M files decoded
//! beforehand (libvmaf's compute alone) and including the `ffmpeg` decode to Y4M (what it takes
//! to score two MP4s with it).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use kiln_gpu_node::quality;

use crate::video::median;

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

fn to_y4m(src: &Path, dst: &Path) -> Result<(), String> {
    run(Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(src)
        .args(["-pix_fmt", "yuv420p"])
        .arg(dst))
}

/// `kiln-bench vmaf`: VMAF throughput of the harness against libvmaf's `vmaf` CLI.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Interleaved runs of each side (the median is shown).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    pub runs: u64,
    /// REFERENCE DISTORTED (default: two real clips against x264 encodes of themselves).
    #[arg(num_args = 0..=2)]
    pub files: Vec<PathBuf>,
}

pub fn main(args: Args) -> ExitCode {
    if args.files.len() == 1 {
        eprintln!("kiln-bench vmaf: give REFERENCE and DISTORTED, or neither");
        return ExitCode::from(2);
    }
    match bench(args.runs as usize, &args.files) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiln-bench vmaf: {e}");
            ExitCode::FAILURE
        }
    }
}

fn bench(runs: usize, files: &[PathBuf]) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let pairs: Vec<(PathBuf, PathBuf)> = match files {
        [r, d] => vec![(r.clone(), d.clone())],
        [] => {
            // Real clips against an x264 encode of themselves.
            let mut v = Vec::new();
            for clip in ["video/bikes.mp4", "video/bigbuckbunny.mp4"] {
                let r = crate::media(clip);
                let d = dir
                    .path()
                    .join(r.file_name().unwrap())
                    .with_extension("x264.mp4");
                run(Command::new("ffmpeg")
                    .args(["-v", "error", "-y", "-i"])
                    .arg(&r)
                    .args([
                        "-an", "-c:v", "libx264", "-preset", "veryfast", "-crf", "30",
                    ])
                    .arg(&d))?;
                v.push((r, d));
            }
            v
        }
        _ => return Err("usage: kiln-bench vmaf [--runs N] [REFERENCE DISTORTED]".into()),
    };
    let threads = quality::target::default_threads();
    println!(
        "VMAF (vmaf_v0.6.1) + PSNR + SSIM, {threads} threads, median of {runs} runs, interleaved"
    );
    println!("| pair | frames | Kiln harness fps | vmaf CLI fps (Y4M ready) | ffmpeg→Y4M + vmaf CLI fps | Kiln / CLI | Kiln / (decode + CLI) | VMAF Kiln vs CLI |");
    println!("|---|---|---|---|---|---|---|---|");
    for (r, d) in &pairs {
        let (ry, dy, json) = (
            dir.path().join("r.y4m"),
            dir.path().join("d.y4m"),
            dir.path().join("v.json"),
        );
        let (mut ours, mut theirs, mut decode) = (Vec::new(), Vec::new(), Vec::new());
        let (mut frames, mut ours_score, mut cli_score) = (0u32, 0.0, 0.0);
        for _ in 0..runs {
            let t = Instant::now();
            let s = quality::compare(r, d, threads).map_err(|e| e.to_string())?;
            ours.push(t.elapsed().as_secs_f64());
            frames = s.frames;
            ours_score = s.vmaf.mean;
            let t = Instant::now();
            to_y4m(r, &ry)?;
            to_y4m(d, &dy)?;
            decode.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            cli_score = quality::vmaf::reference_scores(&ry, &dy, threads, &json)?.vmaf;
            theirs.push(t.elapsed().as_secs_f64());
        }
        let (o, c, dec) = (median(ours), median(theirs), median(decode));
        let fps = |t: f64| frames as f64 / t;
        println!(
            "| {} | {frames} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} | {:.3} vs {:.3} |",
            r.file_name().unwrap().to_string_lossy(),
            fps(o),
            fps(c),
            fps(c + dec),
            c / o,
            (c + dec) / o,
            ours_score,
            cli_score
        );
    }
    Ok(())
}
