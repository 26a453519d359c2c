//! Pooling per-frame scores into one number per metric: the mean people quote, plus the
//! harmonic mean and the low percentiles that show the worst moments a mean hides.

use serde::{Deserialize, Serialize};

/// One metric over a clip.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Pooled {
    pub mean: f64,
    /// VMAF's harmonic mean: `1 / mean(1 / (s + 1)) - 1` (the +1 keeps a zero frame finite).
    pub harmonic_mean: f64,
    pub min: f64,
    /// 1st and 5th percentiles (linear between ranks, as NumPy's default).
    pub p1: f64,
    pub p5: f64,
}

impl Pooled {
    /// Pool `scores`; `None` for an empty list or one holding a NaN.
    pub fn of(scores: &[f64]) -> Option<Self> {
        if scores.is_empty() || scores.iter().any(|s| s.is_nan()) {
            return None;
        }
        let n = scores.len() as f64;
        let mean = scores.iter().sum::<f64>() / n;
        let harmonic_mean = n / scores.iter().map(|s| 1.0 / (s + 1.0)).sum::<f64>() - 1.0;
        let mut sorted = scores.to_vec();
        sorted.sort_by(f64::total_cmp);
        Some(Self {
            mean,
            harmonic_mean,
            min: sorted[0],
            p1: percentile(&sorted, 1.0),
            p5: percentile(&sorted, 5.0),
        })
    }
}

/// The `p`th percentile of ascending `sorted`, linear between the closest ranks.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = (p / 100.0).clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-9, "{a} vs {b}");
    }

    #[test]
    fn pools_match_hand_computed_values() {
        // numpy: np.percentile([90,80,70,95,60,85,75,100,65,55], [1,5]) = [55.45, 57.25]
        let s = [90.0, 80.0, 70.0, 95.0, 60.0, 85.0, 75.0, 100.0, 65.0, 55.0];
        let p = Pooled::of(&s).unwrap();
        close(p.mean, 77.5);
        close(p.min, 55.0);
        close(p.p1, 55.45);
        close(p.p5, 57.25);
        let hm = 10.0 / s.iter().map(|x| 1.0 / (x + 1.0)).sum::<f64>() - 1.0;
        close(p.harmonic_mean, hm);
        assert!(
            p.harmonic_mean < p.mean,
            "a harmonic mean weighs the low frames"
        );
    }

    #[test]
    fn a_constant_clip_pools_to_its_value() {
        let p = Pooled::of(&[42.0; 7]).unwrap();
        for v in [p.mean, p.harmonic_mean, p.min, p.p1, p.p5] {
            close(v, 42.0);
        }
    }

    #[test]
    fn one_bad_second_shows_in_the_low_percentiles_not_the_mean() {
        // 10 s at 25 fps scoring 95, one second of it at 40.
        let mut s = vec![95.0; 250];
        for v in s.iter_mut().take(25) {
            *v = 40.0;
        }
        let p = Pooled::of(&s).unwrap();
        assert!(p.mean > 89.0);
        close(p.p5, 40.0);
        close(p.min, 40.0);
    }

    #[test]
    fn nothing_to_pool_is_none() {
        assert!(Pooled::of(&[]).is_none());
        assert!(Pooled::of(&[1.0, f64::NAN]).is_none());
        close(percentile(&[3.0], 5.0), 3.0);
    }
}
