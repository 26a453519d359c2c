//! Per-title ladders (`renditions: "auto"`): the source's sampled scenes are encoded at a grid
//! of resolutions × CRFs, each probe scored with VMAF against the samples at their own size
//! (the probe scaled up, as a player shows it). The upper convex hull of (log bitrate, VMAF)
//! says which resolution is worth its bits at each rate. The top rung's resolution is the
//! cheapest hull point that reaches the target; a CRF search at that resolution puts the top
//! rung at the target; the lower rungs are hull points about 1.5–2.5× apart in bitrate.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use kiln_protocol::ladder::H264_LADDER;
use kiln_protocol::{
    Container, HardwarePolicy, PerTitleReport, Preset, ProbePoint, RateControl, Resolution,
    VideoCodec, VideoParams,
};

use super::hull::upper_hull;
use super::search::try_search;
use super::target::{search_range, Prober, SearchOptions};
use super::QualityError;
use crate::media::{geometry, MediaError, MediaInfo};

/// The qualities of the grid on Kiln's scale (x264-style CRF, mapped per codec): from about
/// transparent to about the lowest a phone screen tolerates.
pub const QUALITY_GRID: [u8; 4] = [19, 25, 31, 37];
/// The most resolutions the grid tries.
pub const MAX_HEIGHTS: usize = 5;
/// The most rungs a per-title ladder gets.
pub const MAX_RUNGS: usize = 6;
/// Hull points scoring under this are not offered as rungs (unwatchable).
pub const MIN_RUNG_VMAF: f64 = 25.0;
/// Neighbouring rungs differ in bitrate by at least this factor…
const STEP_MIN: f64 = 1.5;
/// …aiming at this one…
const STEP_AIM: f64 = 1.75;
/// …and look further down only when nothing lies between `STEP_MIN` and this.
const STEP_MAX: f64 = 2.5;
/// Smallest picture height the grid tries below the standard rungs.
const MIN_HEIGHT: u32 = 96;

/// One measured encode of the samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub width: u32,
    pub height: u32,
    /// The encoder's own CRF.
    pub crf: u8,
    /// Video bitrate, kbps.
    pub kbps: f64,
    /// VMAF against the samples (pooled mean).
    pub vmaf: f64,
}

/// What [`choose`] measured and picked.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// The rungs, top first.
    pub rungs: Vec<Point>,
    /// The whole grid and search, with `met` left false until the top rendition is measured.
    pub report: PerTitleReport,
}

fn even(v: f64) -> u32 {
    ((v / 2.0).round() as u32) * 2
}

/// The heights the grid tries for a source `display_h` pixels tall: the source's own, then the
/// standard rungs at most 90 % of it; a small source gets 2/3, 1/2 and 1/3 of its height
/// instead (none under 96 px, none within 10 % of another), tallest first, at most five.
pub fn candidate_heights(display_h: u32) -> Vec<u32> {
    let src = display_h.max(2) & !1;
    let mut hs = vec![src];
    hs.extend(
        H264_LADDER
            .iter()
            .map(|(h, _)| *h)
            .filter(|h| (*h as f64) <= src as f64 * 0.9),
    );
    for k in [2.0 / 3.0, 0.5, 1.0 / 3.0] {
        if hs.len() >= 4 {
            break;
        }
        let h = even(src as f64 * k);
        let near = hs
            .iter()
            .any(|&o| (o as f64 - h as f64).abs() <= o as f64 * 0.1);
        if h >= MIN_HEIGHT && !near {
            hs.push(h);
        }
    }
    hs.sort_unstable_by(|a, b| b.cmp(a));
    hs.truncate(MAX_HEIGHTS);
    hs
}

/// Over measured `points`: the indices on the upper hull (lowest rate first) and the rungs
/// chosen from them, top first. The top rung is the cheapest hull point reaching `target`
/// (the best one when none does); each next rung is a hull point no taller than the one above,
/// at least 1.5× cheaper, the nearest to 1.75× cheaper within 2.5× (else the next one down),
/// scoring at least [`MIN_RUNG_VMAF`].
pub fn choose_rungs(points: &[Point], target: f64) -> (Vec<usize>, Vec<usize>) {
    let pts: Vec<(f64, f64)> = points.iter().map(|p| (p.kbps, p.vmaf)).collect();
    let hull = upper_hull(&pts);
    let Some(top_pos) = hull
        .iter()
        .position(|&i| points[i].vmaf >= target)
        .or(hull.len().checked_sub(1))
    else {
        return (hull, Vec::new());
    };
    let mut rungs = vec![hull[top_pos]];
    // Hull points below the top, dearest first.
    let below: Vec<usize> = hull[..top_pos].iter().rev().copied().collect();
    while rungs.len() < MAX_RUNGS {
        let last = points[*rungs.last().expect("the top rung")];
        let eligible: Vec<usize> = below
            .iter()
            .copied()
            .filter(|&i| {
                let p = points[i];
                p.kbps * STEP_MIN <= last.kbps && p.height <= last.height && p.vmaf >= MIN_RUNG_VMAF
            })
            .collect();
        let aim = last.kbps / STEP_AIM;
        let in_window = eligible
            .iter()
            .copied()
            .filter(|&i| points[i].kbps * STEP_MAX >= last.kbps)
            .min_by(|&a, &b| {
                let off = |i: usize| (points[i].kbps / aim).ln().abs();
                off(a).total_cmp(&off(b))
            });
        match in_window.or(eligible.first().copied()) {
            Some(i) => rungs.push(i),
            None => break,
        }
    }
    (hull, rungs)
}

/// Measure `source` (whose probe says `info`) and choose its ladder: the grid of
/// [`candidate_heights`] × [`QUALITY_GRID`], then the CRF search at the top rung's height.
/// Probe encodes go to `scratch` (removed by the caller). `on_progress` gets 0–1.
#[allow(clippy::too_many_arguments)]
pub fn choose(
    source: &Path,
    info: &MediaInfo,
    codec: VideoCodec,
    preset: Preset,
    hardware: HardwarePolicy,
    target: f64,
    scratch: &Path,
    cancel: &AtomicBool,
    on_progress: &mut dyn FnMut(f32),
) -> Result<Choice, QualityError> {
    let params = VideoParams {
        codec,
        rate: RateControl::EncoderCrf { crf: 0 },
        preset: Some(preset),
        resolution: None,
        container: Container::Mp4,
        hardware,
        allow_upscale: false,
        allow_larger: true,
        edit: Default::default(),
        chunk_secs: None,
    };
    let opts = SearchOptions::default();
    let prober = Prober::video_only(source, &params, &opts, scratch, cancel)?;
    let heights = candidate_heights(info.display_size().1);
    let crfs: Vec<u32> = QUALITY_GRID
        .iter()
        .map(|&q| codec.crf_for(q) as u32)
        .collect();
    // The grid, and a search that usually takes 3–5 probes.
    let planned = (heights.len() * crfs.len() + 4) as f32;
    // Every probe in the order it ran; a repeated (height, CRF) is answered from here.
    let mut points: Vec<Point> = Vec::new();
    let mut probe =
        |points: &mut Vec<Point>, height: u32, crf: u32| -> Result<Point, QualityError> {
            if let Some(p) = points
                .iter()
                .find(|p| p.height == height && p.crf as u32 == crf)
            {
                return Ok(*p);
            }
            let resolution = Resolution::Height { height };
            let g = geometry::plan(info, Some(resolution), false)
                .map_err(MediaError::InvalidSettings)?;
            let r = prober.probe_at(Some(resolution), crf)?;
            let p = Point {
                width: g.width,
                height: g.height,
                crf: crf as u8,
                kbps: r.bytes as f64 * 8.0 / 1000.0 / prober.sample_s.max(1e-3),
                vmaf: r.scores.vmaf.mean,
            };
            tracing::debug!(height, crf, kbps = p.kbps, vmaf = p.vmaf, "per-title probe");
            points.push(p);
            on_progress((points.len() as f32 / planned).min(0.97));
            Ok(p)
        };
    for &h in &heights {
        for &c in &crfs {
            probe(&mut points, h, c)?;
        }
    }
    // The top rung's height: where the grid's hull first reaches the target.
    let (hull, _) = choose_rungs(&points, target);
    let top_h = hull
        .iter()
        .find(|&&i| points[i].vmaf >= target)
        .or(hull.last())
        .map(|&i| points[i].height)
        .unwrap_or(heights[0]);
    let (lo, hi) = search_range(&params);
    try_search(lo, hi, target, |crf| {
        probe(&mut points, top_h, crf).map(|p| p.vmaf)
    })?;
    let (hull, rungs) = choose_rungs(&points, target);
    let report = PerTitleReport {
        target_vmaf: target,
        met: false,
        sampled_secs: prober.sample_s,
        whole: prober.whole,
        probes: points
            .iter()
            .enumerate()
            .map(|(i, p)| ProbePoint {
                width: p.width,
                height: p.height,
                crf: p.crf,
                kbps: p.kbps,
                vmaf: p.vmaf,
                on_hull: hull.contains(&i),
                chosen: rungs.contains(&i),
            })
            .collect(),
    };
    on_progress(1.0);
    Ok(Choice {
        rungs: rungs.iter().map(|&i| points[i]).collect(),
        report,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(height: u32, crf: u8, kbps: f64, vmaf: f64) -> Point {
        Point {
            width: height * 16 / 9,
            height,
            crf,
            kbps,
            vmaf,
        }
    }

    #[test]
    fn candidate_heights_follow_the_standard_rungs_or_fractions_of_a_small_source() {
        assert_eq!(candidate_heights(1080), [1080, 720, 480, 360, 240]);
        assert_eq!(candidate_heights(720), [720, 480, 360, 240]);
        assert_eq!(candidate_heights(2160), [2160, 1440, 1080, 720, 480]);
        // 640x272: 240 is a standard rung; 2/3 and 1/2 of the source fill in.
        assert_eq!(candidate_heights(272), [272, 240, 182, 136]);
        assert_eq!(candidate_heights(144), [144, 96]);
        assert_eq!(candidate_heights(101), [100]);
    }

    #[test]
    fn rungs_lie_on_the_hull_top_at_the_target_and_step_down_1_5_to_2_5x() {
        // Three resolutions: 720p wins at high rates, 480p in the middle, 240p at the bottom.
        let pts = vec![
            pt(720, 19, 4000.0, 97.0),
            pt(720, 25, 2000.0, 93.0),
            pt(720, 31, 1000.0, 84.0),
            pt(720, 37, 500.0, 70.0),
            pt(480, 19, 2500.0, 93.5),
            pt(480, 25, 1200.0, 89.0),
            pt(480, 31, 600.0, 80.0),
            pt(480, 37, 300.0, 66.0),
            pt(240, 19, 900.0, 80.0),
            pt(240, 25, 450.0, 74.0),
            pt(240, 31, 220.0, 62.0),
            pt(240, 37, 110.0, 48.0),
            // The search at 720p: CRF 22 meets 95 more cheaply than CRF 19.
            pt(720, 22, 2800.0, 95.3),
        ];
        let (hull, rungs) = choose_rungs(&pts, 95.0);
        for r in &rungs {
            assert!(hull.contains(r), "rung {r} is not on the hull {hull:?}");
        }
        let chosen: Vec<(u32, u8)> = rungs.iter().map(|&i| (pts[i].height, pts[i].crf)).collect();
        assert_eq!(chosen[0], (720, 22), "the cheapest point meeting 95");
        for w in rungs.windows(2) {
            let (a, b) = (pts[w[0]], pts[w[1]]);
            let step = a.kbps / b.kbps;
            assert!(step >= 1.5, "{a:?} → {b:?}: {step}");
            assert!(b.height <= a.height);
        }
        assert!(rungs.len() >= 4, "{chosen:?}");
        assert!(rungs.iter().all(|&i| pts[i].vmaf >= MIN_RUNG_VMAF));

        // Nothing reaches the target: the best point is the top rung.
        let (_, rungs) = choose_rungs(&pts, 99.0);
        assert_eq!(pts[rungs[0]].vmaf, 97.0);
        assert!(choose_rungs(&[], 95.0).1.is_empty());
    }
}
