//! What a sweep tells a person: results as CSV and JSON (with provenance), BD-rates against the
//! baseline on PSNR and VMAF, the convex hull of a ladder, plots, and a Markdown summary.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::provenance::Provenance;
use super::run::Row;
use crate::bdrate::{bd_quality, bd_rate};
use kiln_gpu_node::quality::hull::upper_hull;

/// One configuration against the baseline on one clip.
#[derive(Debug, Clone, Serialize)]
pub struct BdRow {
    pub clip: String,
    pub config: String,
    pub baseline: String,
    /// Percent bits saved (negative) or spent (positive) at equal VMAF / PSNR-Y.
    pub bd_rate_vmaf: Result<f64, String>,
    pub bd_rate_psnr: Result<f64, String>,
    /// VMAF points and dB gained at equal rate.
    pub bd_vmaf: Result<f64, String>,
    pub bd_psnr: Result<f64, String>,
    /// Mean encode speed over the configuration's points, and relative to the baseline's.
    pub fps: f64,
    pub speed_vs_baseline: f64,
}

/// The hull of one encoder and preset across resolutions on one clip.
#[derive(Debug, Clone, Serialize)]
pub struct Hull {
    pub clip: String,
    pub encoder: String,
    pub preset: String,
    /// (resolution, point, kbps, vmaf), lowest rate first.
    pub ladder: Vec<(String, String, f64, f64)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub name: String,
    pub provenance: Provenance,
    pub baseline: String,
    pub results: Vec<Row>,
    pub bd_rates: Vec<BdRow>,
    pub hulls: Vec<Hull>,
    /// Configurations left out, with the reason (an encoder this machine cannot open).
    pub skipped: Vec<String>,
    /// Encodes that failed, with the reason (not cached: the next run tries them again).
    pub failed: Vec<String>,
}

fn curve(rows: &[&Row], q: impl Fn(&Row) -> f64) -> (Vec<f64>, Vec<f64>) {
    let mut pts: Vec<(f64, f64)> = rows.iter().map(|r| (r.kbps, q(r))).collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    pts.into_iter().unzip()
}

fn by_clip(rows: &[Row]) -> BTreeMap<&str, Vec<&Row>> {
    let mut m: BTreeMap<&str, Vec<&Row>> = BTreeMap::new();
    for r in rows {
        m.entry(r.clip.as_str()).or_default().push(r);
    }
    m
}

/// Configurations of a clip in the order they first appear.
fn configs<'a>(rows: &[&'a Row]) -> Vec<(&'a str, Vec<&'a Row>)> {
    let mut out: Vec<(&str, Vec<&Row>)> = Vec::new();
    for r in rows {
        match out.iter_mut().find(|(c, _)| *c == r.config) {
            Some((_, v)) => v.push(r),
            None => out.push((r.config.as_str(), vec![*r])),
        }
    }
    out
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 {
        0.0
    } else {
        s / n as f64
    }
}

pub fn analyse(name: &str, provenance: Provenance, baseline: &str, rows: Vec<Row>) -> Report {
    let mut bd_rates = Vec::new();
    let mut hulls = Vec::new();
    for (clip, rs) in by_clip(&rows) {
        let cfgs = configs(&rs);
        let Some((_, base)) = cfgs.iter().find(|(c, _)| *c == baseline) else {
            continue;
        };
        let base_fps = mean(base.iter().map(|r| r.fps));
        let vmaf = |r: &Row| r.scores.vmaf.mean;
        let psnr = |r: &Row| r.scores.psnr_y.mean;
        let (ar, av) = curve(base, vmaf);
        let (_, ap) = curve(base, psnr);
        for (config, pts) in &cfgs {
            if *config == baseline {
                continue;
            }
            let (tr, tv) = curve(pts, vmaf);
            let (_, tp) = curve(pts, psnr);
            let fps = mean(pts.iter().map(|r| r.fps));
            let e = |r: Result<f64, crate::bdrate::BdError>| r.map_err(|e| e.to_string());
            bd_rates.push(BdRow {
                clip: clip.to_string(),
                config: config.to_string(),
                baseline: baseline.to_string(),
                bd_rate_vmaf: e(bd_rate(&ar, &av, &tr, &tv)),
                bd_rate_psnr: e(bd_rate(&ar, &ap, &tr, &tp)),
                bd_vmaf: e(bd_quality(&ar, &av, &tr, &tv)),
                bd_psnr: e(bd_quality(&ar, &ap, &tr, &tp)),
                fps,
                speed_vs_baseline: if base_fps > 0.0 { fps / base_fps } else { 0.0 },
            });
        }
        // A ladder: the same encoder and preset at more than one resolution.
        let mut groups: BTreeMap<(&str, &str), Vec<&Row>> = BTreeMap::new();
        for r in &rs {
            groups.entry((&r.encoder, &r.preset)).or_default().push(r);
        }
        for ((encoder, preset), g) in groups {
            let resolutions: std::collections::BTreeSet<&str> =
                g.iter().map(|r| r.resolution.as_str()).collect();
            if resolutions.len() < 2 {
                continue;
            }
            let pts: Vec<(f64, f64)> = g.iter().map(|r| (r.kbps, r.scores.vmaf.mean)).collect();
            let ladder = upper_hull(&pts)
                .into_iter()
                .map(|i| {
                    (
                        g[i].resolution.clone(),
                        g[i].point.clone(),
                        g[i].kbps,
                        g[i].scores.vmaf.mean,
                    )
                })
                .collect();
            hulls.push(Hull {
                clip: clip.to_string(),
                encoder: encoder.to_string(),
                preset: preset.to_string(),
                ladder,
            });
        }
    }
    Report {
        name: name.to_string(),
        provenance,
        baseline: baseline.to_string(),
        results: rows,
        bd_rates,
        hulls,
        skipped: Vec::new(),
        failed: Vec::new(),
    }
}

const CSV_HEADER: &str =
    "clip,config,encoder,preset,resolution,point,width,height,frames,bytes,kbps,\
encode_s,fps,cpu_s,gpu_s,peak_mb,encoder_used,hwaccel,vmaf_mean,vmaf_harmonic_mean,vmaf_p1,vmaf_p5,\
vmaf_min,psnr_y,psnr_yuv,ssim,ssim_p5,cached";

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

pub fn csv(rows: &[Row]) -> String {
    let mut out = String::from(CSV_HEADER);
    out.push('\n');
    let opt = |v: Option<f64>| v.map(|x| format!("{x:.3}")).unwrap_or_default();
    for r in rows {
        let s = &r.scores;
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{:.2},{:.3},{:.2},{},{},{},{},{},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{:.6},{:.6},{}",
            csv_field(&r.clip),
            csv_field(&r.config),
            csv_field(&r.encoder),
            csv_field(&r.preset),
            csv_field(&r.resolution),
            csv_field(&r.point),
            r.width,
            r.height,
            r.frames,
            r.bytes,
            r.kbps,
            r.encode_s,
            r.fps,
            opt(r.cpu_s),
            opt(r.gpu_s),
            opt(r.peak_mb),
            csv_field(&r.encoder_used),
            r.hwaccel.as_deref().unwrap_or(""),
            s.vmaf.mean,
            s.vmaf.harmonic_mean,
            s.vmaf.p1,
            s.vmaf.p5,
            s.vmaf.min,
            s.psnr_y.mean,
            s.psnr_yuv.mean,
            s.ssim.mean,
            s.ssim.p5,
            r.cached,
        );
    }
    out
}

fn pct(r: &Result<f64, String>) -> String {
    match r {
        Ok(v) => format!("{v:+.2} %"),
        Err(e) => format!("n/a ({e})"),
    }
}

fn num(r: &Result<f64, String>, unit: &str) -> String {
    match r {
        Ok(v) => format!("{v:+.2}{unit}"),
        Err(_) => "n/a".into(),
    }
}

/// A summary a person reads at a glance.
pub fn markdown(rep: &Report, plots: &[PathBuf]) -> String {
    let p = &rep.provenance;
    let mut md = String::new();
    let _ = writeln!(md, "# {}\n", rep.name);
    let fresh = rep.results.iter().filter(|r| !r.cached).count();
    let _ = writeln!(
        md,
        "{} encodes ({} run now, {} from the cache) on {}.\n",
        rep.results.len(),
        fresh,
        rep.results.len() - fresh,
        p.ran_on
    );
    for s in &rep.skipped {
        let _ = writeln!(md, "Skipped {s}.\n");
    }
    for f in &rep.failed {
        let _ = writeln!(md, "**Failed** {f}.\n");
    }
    // The headline: the most efficient configuration per clip.
    for (clip, _) in by_clip(&rep.results) {
        let best = rep
            .bd_rates
            .iter()
            .filter(|b| b.clip == clip)
            .filter_map(|b| b.bd_rate_vmaf.as_ref().ok().map(|v| (b, *v)))
            .min_by(|a, b| a.1.total_cmp(&b.1));
        match best {
            Some((b, v)) if v < 0.0 => {
                let _ = writeln!(
                    md,
                    "**{clip}: {} needs {:.1} % fewer bits than {} for the same VMAF, at {:.2}× its speed.**\n",
                    b.config,
                    -v,
                    b.baseline,
                    b.speed_vs_baseline
                );
            }
            _ => {
                let _ = writeln!(
                    md,
                    "**{clip}: nothing in the sweep beats {} on VMAF per bit.**\n",
                    rep.baseline
                );
            }
        }
    }
    let _ = writeln!(
        md,
        "## BD-rate against {} (negative saves bits)\n",
        rep.baseline
    );
    let _ = writeln!(
        md,
        "| clip | configuration | BD-rate VMAF | BD-rate PSNR-Y | BD-VMAF | BD-PSNR | fps | speed vs baseline |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|");
    for b in &rep.bd_rates {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {:.1} | {:.2}× |",
            b.clip,
            b.config,
            pct(&b.bd_rate_vmaf),
            pct(&b.bd_rate_psnr),
            num(&b.bd_vmaf, ""),
            num(&b.bd_psnr, " dB"),
            b.fps,
            b.speed_vs_baseline
        );
    }
    let _ = writeln!(
        md,
        "\nBD-rate by the piecewise-cubic (PCHIP) method over the overlapping quality range; \
         quality is the pooled mean of per-frame scores.\n"
    );
    let _ = writeln!(md, "## Every encode\n");
    let _ = writeln!(
        md,
        "| clip | configuration | point | kbps | VMAF (mean / p5 / min) | PSNR-Y | PSNR-YUV | SSIM | fps | CPU s | peak MB |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|");
    let opt = |v: Option<f64>, d: usize| v.map(|x| format!("{x:.d$}")).unwrap_or("–".into());
    for r in &rep.results {
        let s = &r.scores;
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.0} | {:.2} / {:.2} / {:.2} | {:.2} | {:.2} | {:.4} | {:.1} | {} | {} |",
            r.clip,
            r.config,
            r.point,
            r.kbps,
            s.vmaf.mean,
            s.vmaf.p5,
            s.vmaf.min,
            s.psnr_y.mean,
            s.psnr_yuv.mean,
            s.ssim.mean,
            r.fps,
            opt(r.cpu_s, 2),
            opt(r.peak_mb, 0)
        );
    }
    if !rep.hulls.is_empty() {
        let _ = writeln!(md, "\n## Convex hull (bitrate ladder)\n");
        for h in &rep.hulls {
            let _ = writeln!(md, "{} — {} {}:\n", h.clip, h.encoder, h.preset);
            let _ = writeln!(md, "| kbps | resolution | point | VMAF |");
            let _ = writeln!(md, "|---|---|---|---|");
            for (res, point, kbps, vmaf) in &h.ladder {
                let _ = writeln!(md, "| {kbps:.0} | {res} | {point} | {vmaf:.2} |");
            }
            let _ = writeln!(md);
        }
    }
    if !plots.is_empty() {
        let _ = writeln!(md, "\n## Plots\n");
        for p in plots {
            let f = p.file_name().unwrap_or_default().to_string_lossy();
            let _ = writeln!(md, "![{f}]({f})");
        }
    }
    let _ = writeln!(md, "\n## Provenance\n");
    let _ = writeln!(md, "| | |\n|---|---|");
    for (k, v) in [
        ("Kiln", p.kiln.clone()),
        ("FFmpeg", p.ffmpeg.clone()),
        ("libvmaf", format!("{} ({})", p.libvmaf, p.vmaf_model)),
        ("encoders", p.encoders.join(", ")),
        ("CPU", format!("{} ({} threads)", p.cpu, p.cores)),
        ("GPU", format!("{} (driver {})", p.gpu, p.gpu_driver)),
        ("OS", p.os.clone()),
        ("command", format!("`{}`", p.command)),
    ] {
        let _ = writeln!(md, "| {k} | {v} |");
    }
    md
}

/// Write results.csv, results.json, the plots and summary.md into `dir`; the paths written.
pub fn write(rep: &Report, dir: &Path) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let mut written = Vec::new();
    let put = |name: &str, body: &[u8]| -> Result<PathBuf, String> {
        let p = dir.join(name);
        std::fs::write(&p, body).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(p)
    };
    written.push(put("results.csv", csv(&rep.results).as_bytes())?);
    let json = serde_json::to_vec_pretty(rep).map_err(|e| e.to_string())?;
    written.push(put("results.json", &json)?);
    let plots = super::plot::write_all(rep, dir)?;
    written.extend(plots.iter().cloned());
    written.push(put("summary.md", markdown(rep, &plots).as_bytes())?);
    Ok(written)
}
