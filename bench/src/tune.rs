//! `kiln-bench tune`: the codec-tuning harness.
//!
//! `kiln-bench tune SPEC [--out DIR] [--api URL --key KEY]` runs the sweep a TOML spec names
//! (clips × encoders × presets × resolutions × CRFs or bitrates) through Kiln's pipeline — on
//! this machine, or as jobs on a fleet — scores every output against its clip (VMAF, PSNR,
//! SSIM via libvmaf), and writes results.csv, results.json, SVG plots and summary.md into DIR
//! (default `tune-<spec name>`). Results are cached in DIR/cache by content hash, so an
//! interrupted sweep resumes and a repeated one costs nothing.
//!
//! `kiln-bench tune --target-vmaf 95 CLIP… [--encoder x264] [--preset medium]
//! [--resolution R] [--samples 4] [--sample-secs 3] [--verify] [--compare-bisection]`
//! finds the largest CRF meeting the target on sampled scenes, and prints the CRF, the score
//! and the predicted size (`--verify` also encodes the whole clip and measures it;
//! `--compare-bisection` counts the encodes a plain bisection needs for the same answer).

mod fleet;
mod plot;
mod provenance;
mod report;
mod run;
mod spec;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use indicatif::{ProgressBar, ProgressStyle};
use kiln_gpu_node::quality::search::{try_bisect, try_search};
use kiln_gpu_node::quality::target::{search_range, ProbeResult, Prober, SearchOptions};
use kiln_gpu_node::quality::{self, QualityError};
use kiln_protocol::{Container, Preset, RateControl, Resolution, VideoParams};
use serde_json::json;

/// `kiln-bench tune`: a sweep from a spec, or a target-quality search on clips.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// SPEC.toml for a sweep; with --target-vmaf, the clips to search on.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Where results go (default `tune-<spec>` or `tune-target`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Run the encodes as jobs on this Kiln (a fleet), e.g. http://kiln:8080.
    #[arg(long, requires = "key")]
    pub api: Option<String>,
    /// The API key for --api.
    #[arg(long, requires = "api")]
    pub key: Option<String>,
    /// Search the largest CRF whose VMAF meets this score (1–99.9) on each clip.
    #[arg(long, value_parser = vmaf_target)]
    pub target_vmaf: Option<f64>,
    /// Encoder of the search: x264, x265, svt-av1, vp9, nvenc-h264, nvenc-h265.
    #[arg(long, default_value = "x264")]
    pub encoder: String,
    #[arg(long)]
    pub preset: Option<String>,
    #[arg(long)]
    pub resolution: Option<String>,
    /// Sampled scenes per clip.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub samples: u32,
    /// Seconds per sampled scene.
    #[arg(long, default_value_t = 3.0)]
    pub sample_secs: f64,
    /// Encode the whole clip at the chosen CRF and score it.
    #[arg(long)]
    pub verify: bool,
    /// Also run a plain bisection and compare the encodes each took.
    #[arg(long)]
    pub compare_bisection: bool,
}

fn vmaf_target(v: &str) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(t) if (1.0..100.0).contains(&t) => Ok(t),
        _ => Err(format!("{v:?} is not a VMAF score from 1 to 99.9")),
    }
}

pub fn main(args: Args) -> ExitCode {
    let result = match (args.target_vmaf, args.inputs.as_slice()) {
        (Some(t), clips) => target(t, clips, &args),
        (None, [spec]) => sweep(spec, &args),
        (None, _) => Err("a sweep takes one SPEC.toml (or give --target-vmaf and clips)".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiln-bench tune: {e}");
            ExitCode::FAILURE
        }
    }
}

fn sweep(spec_path: &Path, args: &Args) -> Result<(), String> {
    let spec = spec::Spec::load(spec_path)?;
    let mut encodes = spec.expand()?;
    let runner = match (&args.api, &args.key) {
        (Some(api), Some(key)) => run::Runner::Fleet {
            api: api.clone(),
            key: key.clone(),
        },
        (None, None) => run::Runner::Local,
        _ => return Err("--api and --key go together".into()),
    };
    // NVENC "where present": on this machine, configurations whose encoder does not open are
    // skipped with the reason (a fleet places them on a node that has it, or says why not).
    let mut skipped = Vec::new();
    if let run::Runner::Local = runner {
        let caps = kiln_gpu_node::media::capabilities();
        encodes.retain(|e| {
            if e.params.hardware != kiln_protocol::HardwarePolicy::Nvenc {
                return true;
            }
            let name = e.params.codec.nvenc_encoder().unwrap_or("nvenc");
            if caps.encoder(name) {
                return true;
            }
            let why = caps
                .encoders
                .iter()
                .find(|c| c.name == name)
                .and_then(|c| c.reason.clone())
                .unwrap_or_else(|| "not in this FFmpeg".into());
            let note = format!("{}: {name} does not open here ({why})", e.config.label);
            if !skipped.contains(&note) {
                eprintln!("skipping {note}");
                skipped.push(note);
            }
            false
        });
    }
    let baseline = spec.baseline(&encodes)?;
    let stem = spec_path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "sweep".into());
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("tune-{stem}")));
    eprintln!(
        "{} encodes ({} configurations × points) on {}; results in {}",
        encodes.len(),
        {
            let mut c: Vec<&str> = encodes.iter().map(|e| e.config.label.as_str()).collect();
            c.dedup();
            c.len()
        },
        runner.describe(),
        out.display()
    );
    let bar = ProgressBar::new(encodes.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:32.cyan/blue} {pos}/{len} [{elapsed_precise} < {eta}] {msg}",
        )
        .expect("static template"),
    );
    let mut cached = 0;
    let rows = run::sweep(&encodes, &runner, &out.join("cache"), &mut |e, row| {
        cached += row.cached as usize;
        bar.set_message(format!(
            "{} {} {}: {:.0} kbps, VMAF {:.2}{}",
            row.clip,
            e.config.label,
            e.point,
            row.kbps,
            row.scores.vmaf.mean,
            if row.cached { " (cached)" } else { "" }
        ));
        bar.inc(1);
    });
    bar.finish();
    let (rows, failed) = rows?;
    for f in &failed {
        eprintln!("failed: {f}");
    }
    let name = spec
        .name
        .clone()
        .unwrap_or_else(|| format!("Tuning sweep {stem}"));
    let mut report = report::analyse(
        &name,
        provenance::collect(&runner.describe()),
        &baseline,
        rows,
    );
    report.skipped = skipped;
    report.failed = failed;
    let written = report::write(&report, &out)?;
    eprintln!(
        "{} encodes done ({cached} from the cache); wrote {}",
        report.results.len(),
        written
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    for b in &report.bd_rates {
        let v = |r: &Result<f64, String>| match r {
            Ok(v) => format!("{v:+.2} %"),
            Err(_) => "n/a".into(),
        };
        println!(
            "{}: {} vs {}: BD-rate VMAF {}, PSNR-Y {}, speed {:.2}×",
            b.clip,
            b.config,
            b.baseline,
            v(&b.bd_rate_vmaf),
            v(&b.bd_rate_psnr),
            b.speed_vs_baseline
        );
    }
    if report.failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} encodes failed (listed in summary.md; they are retried on the next run)",
            report.failed.len()
        ))
    }
}

fn target(score: f64, clips: &[PathBuf], args: &Args) -> Result<(), String> {
    let encoder = args.encoder.as_str();
    let (codec, hardware) = spec::encoder(encoder)?;
    let preset = args
        .preset
        .as_deref()
        .map(|p| Preset::parse_for(codec, p))
        .transpose()?;
    let resolution = match &args.resolution {
        Some(r) => Resolution::parse(r).map_err(|e| e.to_string())?,
        None => None,
    };
    let search = SearchOptions {
        samples: args.samples,
        sample_s: args.sample_secs,
        ..SearchOptions::default()
    };
    let params = VideoParams {
        codec,
        rate: RateControl::EncoderCrf { crf: 0 },
        preset,
        resolution,
        container: Container::Mkv,
        hardware,
        allow_upscale: false,
        allow_larger: true,
        edit: Default::default(),
        chunk_secs: None,
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("tune-target"));
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    let cancel = AtomicBool::new(false);
    let (lo, hi) = search_range(&params);
    let mut results = Vec::new();
    let (mut ours_total, mut bisect_total) = (0usize, 0usize);
    for clip in clips {
        let scratch = out.join("scratch");
        let prober = Prober::new(clip, &params, &search, &scratch, &cancel)
            .map_err(|e| format!("{}: {e}", clip.display()))?;
        // Probes are memoised, so a bisection for comparison re-encodes nothing twice.
        let mut memo: HashMap<u32, ProbeResult> = HashMap::new();
        let mut oracle = |crf: u32| -> Result<f64, QualityError> {
            if let Some(p) = memo.get(&crf) {
                return Ok(p.scores.vmaf.mean);
            }
            let p = prober.probe(crf)?;
            eprintln!(
                "  {}: crf {crf}: VMAF {:.2} ({} bytes)",
                clip.display(),
                p.scores.vmaf.mean,
                p.bytes
            );
            let s = p.scores.vmaf.mean;
            memo.insert(crf, p);
            Ok(s)
        };
        let found = try_search(lo, hi, score, &mut oracle).map_err(|e| e.to_string())?;
        let bisected = if args.compare_bisection {
            let b = try_bisect(lo, hi, score, &mut oracle).map_err(|e| e.to_string())?;
            Some(b)
        } else {
            None
        };
        let chosen = memo.get(&found.crf).cloned();
        let predicted = chosen
            .as_ref()
            .map(|p| prober.predict_bytes(p))
            .unwrap_or(0);
        let verified = if args.verify {
            let mut p = params.clone();
            p.rate = RateControl::EncoderCrf {
                crf: found.crf as u8,
            };
            let full = out.join("verify.mkv");
            let o = kiln_gpu_node::media::transcode(clip, &full, &p, &cancel, &mut |_| {})
                .map_err(|e| e.to_string())?;
            let s = quality::compare(clip, &full, search.threads).map_err(|e| e.to_string())?;
            let _ = std::fs::remove_file(&full);
            Some((s.vmaf.mean, o.output_size))
        } else {
            None
        };
        let whole = prober.whole;
        drop(prober);
        let _ = std::fs::remove_dir_all(&scratch);
        println!(
            "{}: {} crf {} → VMAF {:.2} on {} (target {score}{}), predicted size {:.2} MB; {} encodes{}{}",
            clip.display(),
            encoder,
            found.crf,
            found.score,
            if whole { "the whole clip" } else { "the sampled scenes" },
            if found.met { ", met" } else { ", NOT met even at the lowest CRF" },
            predicted as f64 / 1e6,
            found.probes.len(),
            bisected
                .as_ref()
                .map(|b| format!(
                    " (bisection: {} encodes, to crf {})",
                    b.probes.len(),
                    b.crf
                ))
                .unwrap_or_default(),
            verified
                .map(|(v, size)| format!(
                    "; whole clip: VMAF {v:.2}, {:.2} MB",
                    size as f64 / 1e6
                ))
                .unwrap_or_default(),
        );
        ours_total += found.probes.len();
        bisect_total += bisected.as_ref().map(|b| b.probes.len()).unwrap_or(0);
        results.push(json!({
            "clip": clip.display().to_string(),
            "encoder": encoder,
            "target": score,
            "crf": found.crf,
            "vmaf": found.score,
            "met": found.met,
            "predicted_size_bytes": predicted,
            "encodes": found.probes.len(),
            "probes": found.probes,
            "bisection_encodes": bisected.as_ref().map(|b| b.probes.len()),
            "bisection_crf": bisected.as_ref().map(|b| b.crf),
            "verified": verified.map(|(v, size)| json!({"vmaf": v, "bytes": size})),
            "probed_whole": whole,
        }));
    }
    if bisect_total > 0 {
        println!(
            "encodes: interpolation {ours_total}, bisection {bisect_total} (ratio {:.2})",
            ours_total as f64 / bisect_total as f64
        );
    }
    let doc = json!({
        "provenance": provenance::collect("this machine"),
        "results": results,
    });
    std::fs::write(
        out.join("target.json"),
        serde_json::to_vec_pretty(&doc).expect("json"),
    )
    .map_err(|e| e.to_string())
}
