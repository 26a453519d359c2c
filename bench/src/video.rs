//! Kiln's video pipeline vs the `ffmpeg` CLI on the same clip and settings.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use kiln_protocol::{Preset, VideoCodec, VideoParams};

/// The argument that makes `kiln-bench` run one Kiln transcode as a child process.
pub const CHILD: &str = "__kiln-transcode";

/// One encoder setting, said the same way to Kiln and to the CLI.
struct Setting {
    label: &'static str,
    codec: VideoCodec,
    preset: Preset,
    /// What the CLI is given: encoder, preset and the CRF Kiln maps quality 23 to.
    cli: &'static [&'static str],
}

const SETTINGS: &[Setting] = &[
    Setting {
        label: "libx264 veryfast",
        codec: VideoCodec::H264,
        preset: Preset::Veryfast,
        cli: &["-c:v", "libx264", "-preset", "veryfast", "-crf", "23"],
    },
    Setting {
        label: "libx264 medium",
        codec: VideoCodec::H264,
        preset: Preset::Medium,
        cli: &["-c:v", "libx264", "-preset", "medium", "-crf", "23"],
    },
    Setting {
        label: "libx265 fast",
        codec: VideoCodec::H265,
        preset: Preset::Fast,
        cli: &[
            "-c:v",
            "libx265",
            "-preset",
            "fast",
            "-crf",
            "28",
            "-tag:v",
            "hvc1",
            "-x265-params",
            "log-level=error",
        ],
    },
    Setting {
        label: "SVT-AV1 preset 8",
        codec: VideoCodec::Av1,
        preset: Preset::Svt(8),
        cli: &["-c:v", "libsvtav1", "-preset", "8", "-crf", "35"],
    },
];

fn default_clips() -> Vec<PathBuf> {
    vec![
        crate::media("video/bigbuckbunny.mp4"),
        crate::media("video/bikes.mp4"),
    ]
}

/// Run one Kiln transcode (called in the child process).
pub fn child(args: &[String]) -> ExitCode {
    let [input, output, params] = args else {
        eprintln!("{CHILD} INPUT OUTPUT PARAMS_JSON");
        return ExitCode::from(2);
    };
    let params: VideoParams = match serde_json::from_str(params) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("bad params: {e}");
            return ExitCode::from(2);
        }
    };
    let cancel = AtomicBool::new(false);
    match kiln_gpu_node::media::transcode(
        Path::new(input),
        Path::new(output),
        &params,
        &cancel,
        &mut |_| {},
    ) {
        Ok(outcome) => {
            // Which encoder and decoder path ran, for `tune` (the video benchmark ignores stdout).
            println!(
                "{}",
                serde_json::json!({
                    "encoder": outcome.report.encoder,
                    "hwaccel": outcome.report.hwaccel,
                })
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kiln transcode failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Wait for a child and return its peak resident memory in MB.
fn wait_rss(child: Child) -> Result<f64, String> {
    wait_usage(child).map(|u| u.peak_mb)
}

/// What a finished child used.
pub struct Usage {
    pub peak_mb: f64,
    /// User + system CPU seconds.
    pub cpu_s: f64,
}

/// Wait for a child; its peak resident memory and CPU time.
pub fn wait_usage(child: Child) -> Result<Usage, String> {
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: wait4 on our own child; rusage is plain data.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is a child this process spawned and has not reaped; `status` and `usage` are
    // live locals wait4 fills in.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if rc != pid {
        return Err(format!("wait4 failed: {}", std::io::Error::last_os_error()));
    }
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        return Err(format!("child exited with status {status}"));
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    // Linux reports ru_maxrss in kB.
    Ok(Usage {
        peak_mb: usage.ru_maxrss as f64 / 1024.0,
        cpu_s: secs(usage.ru_utime) + secs(usage.ru_stime),
    })
}

/// Start `jobs` copies at once; the wall time for all of them and the largest peak memory.
pub fn run_batch(jobs: usize, spawn: &dyn Fn(usize) -> Command) -> Result<(f64, f64), String> {
    let start = Instant::now();
    let children: Vec<Child> = (0..jobs)
        .map(|i| {
            spawn(i)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("spawn: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let mut peak: f64 = 0.0;
    for c in children {
        peak = peak.max(wait_rss(c)?);
    }
    Ok((start.elapsed().as_secs_f64(), peak))
}

fn frames_of(clip: &Path) -> Result<u64, String> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-count_packets"])
        .args(["-show_entries", "stream=nb_read_packets", "-of", "csv=p=0"])
        .arg(clip)
        .output()
        .map_err(|e| format!("ffprobe: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|_| format!("cannot count frames of {}", clip.display()))
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// `kiln-bench video`: Kiln's pipeline vs the `ffmpeg` CLI.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Interleaved runs of each side (the median is shown).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    pub runs: u64,
    /// Clips (default: bigbuckbunny and bikes from ../shared/media).
    pub clips: Vec<PathBuf>,
}

pub fn main(args: Args) -> ExitCode {
    let clips = if args.clips.is_empty() {
        default_clips()
    } else {
        args.clips
    };
    match run(&clips, args.runs as usize) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiln-bench video: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(clips: &[PathBuf], runs: usize) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!(
        "kiln-bench video: {runs} interleaved runs each, median shown; {cores} CPU cores; \
         ffmpeg = `ffmpeg -i CLIP <same settings> -c:a copy -movflags +faststart OUT.mp4`"
    );
    println!(
        "{:<18} {:<18} {:>4} {:>9} {:>11} {:>6} {:>9} {:>11}",
        "setting", "clip", "jobs", "kiln fps", "ffmpeg fps", "ratio", "kiln MB", "ffmpeg MB"
    );
    let mut ratios = Vec::new();
    for clip in clips {
        let frames = frames_of(clip)? as f64;
        let name = clip
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        for s in SETTINGS {
            // allow_larger: the CLI has no size guard, so Kiln must not re-encode either for
            // the two to do the same work.
            let params = VideoParams {
                preset: Some(s.preset),
                allow_larger: true,
                ..VideoParams::crf(s.codec, 23)
            };
            let json = serde_json::to_string(&params).map_err(|e| e.to_string())?;
            for jobs in [1usize, 2] {
                let (mut kt, mut ft, mut km, mut fm) = (vec![], vec![], 0.0f64, 0.0f64);
                for _ in 0..runs {
                    let kiln = |i: usize| {
                        let mut c = Command::new(&exe);
                        c.arg(CHILD)
                            .arg(clip)
                            .arg(dir.path().join(format!("kiln-{i}.mp4")))
                            .arg(&json);
                        c
                    };
                    let cli = |i: usize| {
                        let mut c = Command::new("ffmpeg");
                        c.args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i"])
                            .arg(clip)
                            .args(s.cli)
                            .args(["-c:a", "copy", "-movflags", "+faststart"])
                            .arg(dir.path().join(format!("ffmpeg-{i}.mp4")));
                        c
                    };
                    let (t, m) = run_batch(jobs, &kiln)?;
                    kt.push(t);
                    km = km.max(m);
                    let (t, m) = run_batch(jobs, &cli)?;
                    ft.push(t);
                    fm = fm.max(m);
                }
                let kfps = frames * jobs as f64 / median(kt);
                let ffps = frames * jobs as f64 / median(ft);
                let ratio = kfps / ffps;
                ratios.push(ratio);
                println!(
                    "{:<18} {:<18} {:>4} {:>9.1} {:>11.1} {:>6.2} {:>9.0} {:>11.0}",
                    s.label, name, jobs, kfps, ffps, ratio, km, fm
                );
            }
        }
    }
    let geo = ratios.iter().map(|r| r.ln()).sum::<f64>() / ratios.len() as f64;
    println!(
        "geometric mean ratio (kiln fps / ffmpeg fps): {:.2}; lowest {:.2}",
        geo.exp(),
        ratios.iter().cloned().fold(f64::INFINITY, f64::min)
    );
    Ok(())
}
