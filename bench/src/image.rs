//! `kiln-bench image`: Kiln's image path side by side with its peers, in one run, on the same
//! real photos with the same filter (Lanczos3) and output size.
//!
//! 1. The resize kernel alone: the wgpu shader (lavapipe without a GPU, the real GPU on a GPU
//!    machine) vs fast_image_resize on the CPU, both in linear light — Mpix/s of source and
//!    the ratio, plus the shader's effective memory bandwidth.
//! 2. The whole request, decode → resize → encode: Kiln (`imaging::convert` in a child process
//!    working through a list of files) vs `vipsthumbnail` doing the same list in one process —
//!    images/s and the ratio, one process at a time and two at once. libvips resizes in sRGB
//!    by default; its `--linear` mode (what Kiln always does) is run too.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use kiln_gpu_node::gpu::{self, cpu, Filter, GpuResizer};
use kiln_gpu_node::imaging::{self, ConvertParams, OutputFormat};

use crate::media;
use crate::video::{median, run_batch};

/// The child process a Kiln run happens in: `__kiln-image OUTDIR BOX FORMAT QUALITY FILE...`.
pub const CHILD: &str = "__kiln-image";

/// The child that reports the node's resize choice: `__kiln-image-choice`.
pub const CHOICE_CHILD: &str = "__kiln-image-choice";

/// Print the resize path this machine's node would choose, and why.
pub fn choice_child() -> ExitCode {
    let c = gpu::choice();
    println!("{}\t{}", c.backend.as_str(), c.reason);
    ExitCode::SUCCESS
}

/// Convert every file into OUTDIR, fitting inside BOX×BOX.
pub fn child(args: &[String]) -> ExitCode {
    let [out_dir, size, format, quality, files @ ..] = args else {
        eprintln!("usage: kiln-bench {CHILD} OUTDIR BOX FORMAT QUALITY FILE...");
        return ExitCode::from(2);
    };
    let size: u32 = size.parse().expect("box size");
    let params = ConvertParams {
        format: OutputFormat::parse(format),
        quality: quality.parse().ok(),
        width: Some(size),
        height: Some(size),
        ..Default::default()
    };
    for (i, f) in files.iter().enumerate() {
        let input = std::fs::read(f).expect("read input");
        match imaging::convert(&input, &params) {
            Ok(out) => {
                std::fs::write(Path::new(out_dir).join(format!("{i}.{format}")), &out.bytes)
                    .expect("write output");
            }
            Err(e) => {
                eprintln!("{f}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

fn rgba(path: &Path) -> Result<(Vec<u8>, u32, u32), String> {
    let img = image::open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .into_rgba8();
    let (w, h) = img.dimensions();
    Ok((img.into_raw(), w, h))
}

fn kernel_table(runs: usize) -> Result<(), String> {
    let gpu = GpuResizer::new().map_err(|e| format!("wgpu: {e}"))?;
    let a = gpu.adapter();
    println!("\n## Resize kernel, Lanczos3 in linear light (Mpix/s of source, median of {runs})\n");
    println!(
        "wgpu adapter: {} ({}, {}, {})\n",
        a.name, a.device_type, a.backend, a.driver
    );
    println!("| photo | size | wgpu kernel | wgpu with transfers | fast_image_resize | kernel / fir | with transfers / fir | shader bandwidth |");
    println!("|---|---|---|---|---|---|---|---|");
    let cases = [
        ("photo/seeding_by_Clements_Engelhardt.jpg", 1200, 675),
        ("photo/seeding_by_Clements_Engelhardt.jpg", 2656, 1494),
        ("photo/hubble_deep_field.jpg", 500, 436),
        ("photo/coffee.png", 300, 200),
    ];
    for (rel, dw, dh) in cases {
        let path = media(rel);
        let (src, sw, sh) = rgba(&path)?;
        let mpix = sw as f64 * sh as f64 / 1e6;
        let iterations = (200.0 / mpix).clamp(3.0, 50.0) as u32;
        let mut kernel = Vec::new();
        let mut call = Vec::new();
        let mut fir = Vec::new();
        for _ in 0..runs {
            let t = gpu
                .time_kernel(&src, (sw, sh), (dw, dh), Filter::Lanczos3, iterations)
                .map_err(|e| e.to_string())?;
            kernel.push(mpix / t.as_secs_f64());
            let t = Instant::now();
            for _ in 0..iterations.min(10) {
                gpu.resize_rgba8(&src, sw, sh, dw, dh, Filter::Lanczos3)
                    .map_err(|e| e.to_string())?;
            }
            call.push(mpix * iterations.min(10) as f64 / t.elapsed().as_secs_f64());
            let t = Instant::now();
            for _ in 0..iterations.min(10) {
                cpu::resize_rgba8(&src, sw, sh, dw, dh, Filter::Lanczos3, true)
                    .map_err(|e| e.to_string())?;
            }
            fir.push(mpix * iterations.min(10) as f64 / t.elapsed().as_secs_f64());
        }
        let (k, c, f) = (median(kernel), median(call), median(fir));
        // Bytes the two passes must move at least: read the source, write and read the
        // intermediate (16 B/px), write the result.
        let bytes = 4.0 * sw as f64 * sh as f64
            + 2.0 * 16.0 * dw as f64 * sh as f64
            + 4.0 * dw as f64 * dh as f64;
        let gbps = bytes / (mpix / k) / 1e9;
        println!(
            "| {} | {sw}x{sh} → {dw}x{dh} | {k:.1} | {c:.1} | {f:.1} | {:.2} | {:.2} | {gbps:.1} GB/s |",
            path.file_name().unwrap().to_string_lossy(),
            k / f,
            c / f
        );
    }
    Ok(())
}

struct Row {
    label: &'static str,
    file: &'static str,
    size: u32,
    format: &'static str,
}

const ROWS: &[Row] = &[
    Row {
        label: "16 MP JPEG → 1200 JPEG",
        file: "photo/seeding_by_Clements_Engelhardt.jpg",
        size: 1200,
        format: "jpg",
    },
    Row {
        label: "16 MP JPEG → 1200 WebP",
        file: "photo/seeding_by_Clements_Engelhardt.jpg",
        size: 1200,
        format: "webp",
    },
    Row {
        label: "12 MP HEIC → 1200 JPEG",
        file: "photo/pug.heic",
        size: 1200,
        format: "jpg",
    },
    Row {
        label: "0.6 MP JPEG → 200 JPEG",
        file: "photo/rocket.jpg",
        size: 200,
        format: "jpg",
    },
    Row {
        label: "0.2 MP PNG → 300 PNG",
        file: "photo/coffee.png",
        size: 300,
        format: "png",
    },
];

fn vips_cmd(row: &Row, files: &[PathBuf], out: &Path, linear: bool) -> Command {
    let mut c = Command::new("vipsthumbnail");
    c.args(files)
        .arg("--size")
        .arg(format!("{0}x{0}>", row.size))
        .arg("-o")
        .arg(out.join(format!("%s.{}[Q=80,strip]", row.format)));
    if linear {
        c.arg("--linear");
    }
    c
}

fn request_table(runs: usize, per_run: usize) -> Result<(), String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    println!(
        "\n## Whole request, decode → resize → encode (images/s, median of {runs}; {per_run}+ images per process)\n"
    );
    // A node decides its resize path once, at start-up (enumerating Vulkan adapters costs
    // ~0.2 s with lavapipe); the children are handed that decision so that each run measures
    // requests, not node start-up.
    let probe = Command::new(&me)
        .arg(CHOICE_CHILD)
        .output()
        .map_err(|e| e.to_string())?;
    let probe = String::from_utf8_lossy(&probe.stdout).trim().to_string();
    let (backend, reason) = probe.split_once('\t').unwrap_or(("cpu", "probe failed"));
    let backend = backend.to_string();
    println!(
        "Quality 80, metadata stripped, never enlarging. Kiln resizes on: {backend} ({reason}).\n"
    );
    println!("| request | procs | Kiln | vips | vips --linear | Kiln / vips | Kiln / vips --linear | Kiln peak MB | vips peak MB |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut ratios = Vec::new();
    for row in ROWS {
        // Copies under distinct names so vipsthumbnail writes distinct outputs.
        let src = media(row.file);
        let ext = src.extension().unwrap().to_string_lossy().to_string();
        // Small images get more per process, so process start-up stays a small share.
        let count = if row.size < 1000 {
            per_run * 4
        } else {
            per_run
        };
        let files: Vec<PathBuf> = (0..count)
            .map(|i| {
                let p = tmp.path().join(format!("in{i}.{ext}"));
                std::fs::copy(&src, &p).map(|_| p)
            })
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        for procs in [1usize, 2] {
            let out_dirs: Vec<PathBuf> = (0..procs)
                .map(|i| {
                    let d = tmp.path().join(format!("out{i}"));
                    std::fs::create_dir_all(&d).map(|_| d)
                })
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())?;
            let kiln = |i: usize| {
                let mut c = Command::new(&me);
                c.env("KILN_IMAGE_RESIZER", &backend)
                    .arg(CHILD)
                    .arg(&out_dirs[i])
                    .arg(row.size.to_string())
                    .arg(row.format)
                    .arg("80")
                    .args(&files);
                c
            };
            let vips = |i: usize| vips_cmd(row, &files, &out_dirs[i], false);
            let vips_linear = |i: usize| vips_cmd(row, &files, &out_dirs[i], true);
            let (mut k, mut v, mut vl) = (Vec::new(), Vec::new(), Vec::new());
            let (mut k_rss, mut v_rss) = (0f64, 0f64);
            // Interleaved so that drift in the machine hits all three alike.
            for _ in 0..runs {
                let (t, rss) = run_batch(procs, &kiln)?;
                k.push((procs * count) as f64 / t);
                k_rss = k_rss.max(rss);
                let (t, rss) = run_batch(procs, &vips)?;
                v.push((procs * count) as f64 / t);
                v_rss = v_rss.max(rss);
                let (t, _) = run_batch(procs, &vips_linear)?;
                vl.push((procs * count) as f64 / t);
            }
            let (k, v, vl) = (median(k), median(v), median(vl));
            ratios.push(k / v);
            println!(
                "| {} | {procs} | {k:.2} | {v:.2} | {vl:.2} | **{:.2}** | {:.2} | {k_rss:.0} | {v_rss:.0} |",
                row.label,
                k / v,
                k / vl
            );
        }
    }
    let geo = ratios.iter().map(|r| r.ln()).sum::<f64>() / ratios.len() as f64;
    println!(
        "\nKiln / vips (default): geometric mean {:.2}, lowest {:.2}",
        geo.exp(),
        ratios.iter().cloned().fold(f64::INFINITY, f64::min)
    );
    Ok(())
}

/// `kiln-bench image`: the wgpu resize kernel vs fast_image_resize, and whole requests vs
/// `vipsthumbnail`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Interleaved runs of each side (the median is shown).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    pub runs: u64,
    /// Images per run of the whole-request table.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
    pub images: u64,
    /// The kernel table alone (a GPU machine without libvips).
    #[arg(long)]
    pub kernel_only: bool,
}

pub fn main(args: Args) -> ExitCode {
    let (runs, per_run) = (args.runs as usize, args.images as usize);
    if args.kernel_only {
        return match kernel_table(runs) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("kiln-bench image: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if Command::new("vipsthumbnail")
        .arg("--help")
        .output()
        .is_err()
    {
        eprintln!(
            "kiln-bench image: vipsthumbnail is missing (KILN_BENCH=1 deploy/setup-debian.sh)"
        );
        return ExitCode::FAILURE;
    }
    // Whole requests first: the kernel table loads big images and a wgpu device into this
    // process, and a child forked afterwards would count that memory as its own peak.
    let result = request_table(runs, per_run).and_then(|_| kernel_table(runs));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiln-bench image: {e}");
            ExitCode::FAILURE
        }
    }
}
