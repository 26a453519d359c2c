//! A 4-rung ladder from one decode (Kiln) vs four separate `ffmpeg` CLI runs (one per
//! rendition) vs one `ffmpeg` command with a `split` filter graph, same encoder and settings,
//! all three writing CMAF segments with FFmpeg's `dash` muxer: wall-time and CPU-time ratios.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use kiln_protocol::ladder::Packaging;
use kiln_protocol::{HardwarePolicy, LadderParams, Preset, Resolution, Rung, RungRate, VideoCodec};

use crate::video::{median, wait_usage};

/// The argument that makes `kiln-bench` run one Kiln ladder as a child process.
pub const CHILD: &str = "__kiln-ladder";

/// The rungs: heights and kbps (the default ladder's four lowest for a 720p source).
const RUNGS: [(u32, u32); 4] = [(720, 2800), (480, 1400), (360, 800), (240, 400)];
const SEGMENT_SECS: u32 = 4;

/// `kiln-bench ladder`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Interleaved runs of each side (the median is shown).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    pub runs: u64,
    /// x264 preset of every rendition.
    #[arg(long, default_value = "veryfast")]
    pub preset: String,
    /// Clips (default: bigbuckbunny from ../shared/media, 1280x720).
    pub clips: Vec<PathBuf>,
}

pub fn child(args: &[String]) -> ExitCode {
    let [input, out_dir, params] = args else {
        eprintln!("{CHILD} INPUT OUT_DIR PARAMS_JSON");
        return ExitCode::from(2);
    };
    let params: LadderParams = match serde_json::from_str(params) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("bad params: {e}");
            return ExitCode::from(2);
        }
    };
    match kiln_gpu_node::media::encode_ladder(
        Path::new(input),
        Path::new(out_dir),
        &params,
        &AtomicBool::new(false),
        &mut |_| {},
    ) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiln ladder failed: {e}");
            ExitCode::FAILURE
        }
    }
}

pub fn main(args: Args) -> ExitCode {
    let clips = if args.clips.is_empty() {
        vec![crate::media("video/bigbuckbunny.mp4")]
    } else {
        args.clips
    };
    match run(&clips, args.runs as usize, &args.preset) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiln-bench ladder: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Run `cmd` to the end: (wall s, CPU s).
fn timed(mut cmd: Command) -> Result<(f64, f64), String> {
    let start = Instant::now();
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let usage = wait_usage(child)?;
    Ok((start.elapsed().as_secs_f64(), usage.cpu_s))
}

/// The x264 options every side gets for rung `(h, kbps)` at `gop` frames.
fn x264_args(preset: &str, kbps: u32, gop: u32, stream: Option<usize>) -> Vec<String> {
    let s = |k: &str| match stream {
        Some(i) => format!("{k}:{i}"),
        None => k.to_string(),
    };
    vec![
        s("-c:v"),
        "libx264".into(),
        s("-preset"),
        preset.into(),
        s("-b:v"),
        format!("{kbps}k"),
        s("-maxrate"),
        format!("{}k", kbps * 3 / 2),
        s("-bufsize"),
        format!("{}k", kbps * 2),
        s("-x264-params"),
        format!("keyint={gop}:min-keyint={gop}:scenecut=0:open-gop=0"),
    ]
}

fn dash_args(gop: u32, fps: f64, out: &Path) -> Vec<String> {
    vec![
        "-f".into(),
        "dash".into(),
        "-seg_duration".into(),
        format!("{:.6}", (gop as f64 - 0.5) / fps),
        "-use_template".into(),
        "1".into(),
        "-use_timeline".into(),
        "1".into(),
        "-hls_playlist".into(),
        "1".into(),
        out.join("manifest.mpd").to_string_lossy().into_owned(),
    ]
}

fn ffmpeg() -> Command {
    let mut c = Command::new("ffmpeg");
    c.args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"]);
    c
}

/// (frame rate, width, height) of the clip's video.
fn probe(clip: &Path) -> Result<(f64, u64, u64), String> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0"])
        .args([
            "-show_entries",
            "stream=r_frame_rate,width,height",
            "-of",
            "csv=p=0",
        ])
        .arg(clip)
        .output()
        .map_err(|e| format!("ffprobe: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let f: Vec<&str> = text.trim().split(',').collect();
    let [w, h, rate] = f[..] else {
        return Err(format!("cannot probe {}", clip.display()));
    };
    let (n, d) = rate.split_once('/').ok_or("no frame rate")?;
    let num = |v: &str| v.parse::<f64>().map_err(|_| format!("bad number {v:?}"));
    Ok((num(n)? / num(d)?, num(w)? as u64, num(h)? as u64))
}

fn run(clips: &[PathBuf], runs: usize, preset: &str) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let x264_preset = Preset::parse_for(VideoCodec::H264, preset)?;
    let params = LadderParams {
        codec: VideoCodec::H264,
        per_title: None,
        renditions: Some(
            RUNGS
                .iter()
                .map(|(h, kbps)| Rung {
                    resolution: Resolution::Height { height: *h },
                    rate: RungRate::Bitrate { kbps: *kbps },
                })
                .collect(),
        ),
        segment_secs: SEGMENT_SECS,
        packaging: Packaging::both(),
        preset: Some(x264_preset),
        hardware: HardwarePolicy::Cpu,
        audio: Default::default(),
        edit: Default::default(),
        chunk_secs: None,
    };
    let json = serde_json::to_string(&params).map_err(|e| e.to_string())?;
    println!(
        "kiln-bench ladder: 4 rungs {RUNGS:?} (height, kbps), libx264 {preset}, {SEGMENT_SECS} s \
         segments, dash muxer with HLS playlists on every side; {runs} interleaved runs, median"
    );
    println!(
        "{:<18} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8}",
        "clip", "kiln s", "4×cli s", "split s", "wall 4×", "wall spl", "cpu 4×", "cpu spl"
    );
    for clip in clips {
        let (fps, src_w, src_h) = probe(clip)?;
        let gop = ((SEGMENT_SECS as f64 * fps).round() as u32).max(1);
        let name = clip
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let (mut k, mut four, mut split) = (vec![], vec![], vec![]);
        for run in 0..runs {
            let out = dir.path().join(format!("kiln-{run}"));
            let mut c = Command::new(&exe);
            c.arg(CHILD).arg(clip).arg(&out).arg(&json);
            k.push(timed(c)?);

            let (mut wall, mut cpu) = (0.0, 0.0);
            for (i, (h, kbps)) in RUNGS.iter().enumerate() {
                let out = dir.path().join(format!("four-{run}-{i}"));
                std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
                let mut c = ffmpeg();
                c.arg("-i").arg(clip);
                c.args([
                    "-vf",
                    &format!("scale=-2:{h}:flags=bicubic,format=yuv420p,setsar=1"),
                ]);
                c.args(x264_args(preset, *kbps, gop, None));
                c.args(["-map", "0:v:0", "-map", "0:a?", "-c:a", "copy"]);
                c.args(dash_args(gop, fps, &out));
                let (w, p) = timed(c)?;
                wall += w;
                cpu += p;
            }
            four.push((wall, cpu));

            let out = dir.path().join(format!("split-{run}"));
            std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
            let labels: String = (0..RUNGS.len()).map(|i| format!("[s{i}]")).collect();
            let mut graph = format!("[0:v]split={}{labels}", RUNGS.len());
            for (i, (h, _)) in RUNGS.iter().enumerate() {
                graph.push_str(&format!(
                    ";[s{i}]scale=-2:{h}:flags=bicubic,format=yuv420p,setsar=1[o{i}]"
                ));
            }
            let mut c = ffmpeg();
            c.arg("-i").arg(clip).args(["-filter_complex", &graph]);
            for (i, (_, kbps)) in RUNGS.iter().enumerate() {
                c.args(["-map", &format!("[o{i}]")]);
                c.args(x264_args(preset, *kbps, gop, Some(i)));
                // One display aspect for every rendition, as the `dash` muxer requires of an
                // adaptation set (Kiln does the same in the container; 16:9 at 240 lines is
                // 426.67 wide).
                c.args([format!("-aspect:v:{i}"), format!("{src_w}:{src_h}")]);
            }
            c.args(["-map", "0:a?", "-c:a", "copy"]);
            c.args(["-adaptation_sets", "id=0,streams=v id=1,streams=a"]);
            c.args(dash_args(gop, fps, &out));
            split.push(timed(c)?);
        }
        let m = |v: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| median(v.iter().map(f).collect());
        let (kw, kc) = (m(&k, |x| x.0), m(&k, |x| x.1));
        let (fw, fc) = (m(&four, |x| x.0), m(&four, |x| x.1));
        let (sw, sc) = (m(&split, |x| x.0), m(&split, |x| x.1));
        println!(
            "{:<18} {:>9.2} {:>9.2} {:>9.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            name,
            kw,
            fw,
            sw,
            fw / kw,
            sw / kw,
            fc / kc,
            sc / kc
        );
    }
    println!("ratios are the CLI's time over Kiln's: above 1 means Kiln took less");
    Ok(())
}
