//! Rate-distortion and speed-vs-quality plots as SVG (plotters; no fonts or bitmaps needed).

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use super::report::Report;
use super::run::Row;

type Series = Vec<(String, Vec<(f64, f64)>)>;

fn series(rows: &[&Row], x: impl Fn(&Row) -> f64, y: impl Fn(&Row) -> f64) -> Series {
    let mut out: Series = Vec::new();
    for r in rows {
        let p = (x(r), y(r));
        match out.iter_mut().find(|(c, _)| *c == r.config) {
            Some((_, v)) => v.push(p),
            None => out.push((r.config.clone(), vec![p])),
        }
    }
    for (_, v) in &mut out {
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

fn bounds(s: &Series, log: bool) -> ((f64, f64), (f64, f64)) {
    let pts = s.iter().flat_map(|(_, v)| v.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    let (xl, xh) = if log {
        (x0 / 1.15, x1 * 1.15)
    } else {
        let pad = ((x1 - x0) * 0.05).max(1e-3);
        (x0 - pad, x1 + pad)
    };
    let pad = ((y1 - y0) * 0.08).max(0.5);
    ((xl.max(1e-6), xh.max(xl + 1e-3)), (y0 - pad, y1 + pad))
}

/// One chart: a line (or only markers) per configuration, x on a log scale.
fn chart(
    path: &Path,
    title: &str,
    (x_desc, y_desc): (&str, &str),
    s: &Series,
    lines: bool,
) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("plot {}: {e}", path.display());
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let ((x0, x1), (y0, y1)) = bounds(s, true);
    let mut c = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d((x0..x1).log_scale(), y0..y1)
        .map_err(|e| err(&e))?;
    c.configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .draw()
        .map_err(|e| err(&e))?;
    for (i, (label, pts)) in s.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        if lines {
            c.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(|e| err(&e))?;
        }
        c.draw_series(pts.iter().map(|p| Circle::new(*p, 4, color.filled())))
            .map_err(|e| err(&e))?
            .label(label.as_str())
            .legend(move |(x, y)| Circle::new((x + 8, y), 4, color.filled()));
    }
    c.configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}

fn slug(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// Per clip: VMAF and PSNR-Y against bitrate, and VMAF against encode speed.
pub fn write_all(rep: &Report, dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut clips: Vec<&str> = rep.results.iter().map(|r| r.clip.as_str()).collect();
    clips.dedup();
    let mut written = Vec::new();
    for clip in clips {
        let rows: Vec<&Row> = rep.results.iter().filter(|r| r.clip == clip).collect();
        let name = slug(clip);
        let kbps = |r: &Row| r.kbps;
        for (file, y_desc, y) in [
            (
                format!("rd-vmaf-{name}.svg"),
                "VMAF (mean)",
                (&|r: &Row| r.scores.vmaf.mean) as &dyn Fn(&Row) -> f64,
            ),
            (format!("rd-psnr-{name}.svg"), "PSNR-Y (dB)", &|r: &Row| {
                r.scores.psnr_y.mean
            }),
        ] {
            let path = dir.join(&file);
            chart(
                &path,
                &format!("{clip}: rate-distortion"),
                ("bitrate (kbps, log)", y_desc),
                &series(&rows, kbps, y),
                true,
            )?;
            written.push(path);
        }
        let path = dir.join(format!("speed-vmaf-{name}.svg"));
        chart(
            &path,
            &format!("{clip}: speed vs quality"),
            ("encode speed (fps, log)", "VMAF (mean)"),
            &series(&rows, |r| r.fps, |r| r.scores.vmaf.mean),
            false,
        )?;
        written.push(path);
    }
    Ok(written)
}
