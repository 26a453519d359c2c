//! Bjøntegaard delta metrics by the piecewise cubic (PCHIP) method of the JCT-VC/JVET common
//! test conditions spreadsheets (JCTVC-L1100, JVET-T2010): each rate-distortion curve is
//! interpolated with a monotone piecewise cubic Hermite polynomial (the Fritsch–Carlson
//! slopes SciPy's `PchipInterpolator` uses), and the curves are integrated exactly over the
//! interval where both have points.
//!
//! - BD-rate: log10(rate) as a function of quality; the average gap, as a percentage rate
//!   change of the test against the anchor (negative: the test needs fewer bits).
//! - BD-quality (BD-PSNR, or BD-VMAF with VMAF points): quality as a function of log10(rate);
//!   the average quality gain of the test.
//!
//! Part of the codec-tuning harness (issue 7): the sweep runner, metrics and reports are not
//! built yet; this analysis is, with tests against an independent implementation.

/// Why a BD metric cannot be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BdError {
    #[error("a curve needs at least 2 points, got {0}")]
    TooFewPoints(usize),
    #[error("rates and qualities differ in length")]
    Mismatch,
    #[error("rates must be positive and finite, and both axes strictly monotone")]
    NotMonotone,
    #[error("the curves' quality ranges do not overlap")]
    NoOverlap,
}

/// A monotone piecewise cubic Hermite interpolant through (x, y) with x strictly increasing.
struct Pchip {
    x: Vec<f64>,
    y: Vec<f64>,
    d: Vec<f64>,
}

fn sign(v: f64) -> f64 {
    if v > 0.0 {
        1.0
    } else if v < 0.0 {
        -1.0
    } else {
        0.0
    }
}

impl Pchip {
    fn new(x: Vec<f64>, y: Vec<f64>) -> Self {
        let n = x.len();
        let h: Vec<f64> = x.windows(2).map(|w| w[1] - w[0]).collect();
        let m: Vec<f64> = (0..n - 1).map(|k| (y[k + 1] - y[k]) / h[k]).collect();
        let mut d = vec![0.0; n];
        if n == 2 {
            d[0] = m[0];
            d[1] = m[0];
            return Self { x, y, d };
        }
        for k in 1..n - 1 {
            let (m0, m1) = (m[k - 1], m[k]);
            if sign(m0) != sign(m1) || m0 == 0.0 || m1 == 0.0 {
                d[k] = 0.0;
            } else {
                // Weighted harmonic mean (Fritsch–Butland weights, as SciPy).
                let w1 = 2.0 * h[k] + h[k - 1];
                let w2 = h[k] + 2.0 * h[k - 1];
                d[k] = (w1 + w2) / (w1 / m0 + w2 / m1);
            }
        }
        // One-sided three-point ends, kept shape-preserving.
        let edge = |h0: f64, h1: f64, m0: f64, m1: f64| {
            let e = ((2.0 * h0 + h1) * m0 - h0 * m1) / (h0 + h1);
            if sign(e) != sign(m0) {
                0.0
            } else if sign(m0) != sign(m1) && e.abs() > 3.0 * m0.abs() {
                3.0 * m0
            } else {
                e
            }
        };
        d[0] = edge(h[0], h[1], m[0], m[1]);
        d[n - 1] = edge(h[n - 2], h[n - 3], m[n - 2], m[n - 3]);
        Self { x, y, d }
    }

    /// ∫ from `a` to `b` (both within the points' range), exactly.
    fn integrate(&self, a: f64, b: f64) -> f64 {
        let mut total = 0.0;
        for k in 0..self.x.len() - 1 {
            let (x0, x1) = (self.x[k], self.x[k + 1]);
            let lo = a.max(x0);
            let hi = b.min(x1);
            if hi <= lo {
                continue;
            }
            let h = x1 - x0;
            let m = (self.y[k + 1] - self.y[k]) / h;
            let (y0, d0, d1) = (self.y[k], self.d[k], self.d[k + 1]);
            let c2 = (3.0 * m - 2.0 * d0 - d1) / h;
            let c3 = (d0 + d1 - 2.0 * m) / (h * h);
            let anti =
                |s: f64| y0 * s + d0 * s * s / 2.0 + c2 * s.powi(3) / 3.0 + c3 * s.powi(4) / 4.0;
            total += anti(hi - x0) - anti(lo - x0);
        }
        total
    }
}

/// Points sorted by quality, checked: (quality, log10 rate).
fn curve(rate: &[f64], quality: &[f64]) -> Result<(Vec<f64>, Vec<f64>), BdError> {
    if rate.len() != quality.len() {
        return Err(BdError::Mismatch);
    }
    if rate.len() < 2 {
        return Err(BdError::TooFewPoints(rate.len()));
    }
    if rate.iter().chain(quality).any(|v| !v.is_finite()) || rate.iter().any(|r| *r <= 0.0) {
        return Err(BdError::NotMonotone);
    }
    let mut pts: Vec<(f64, f64)> = quality
        .iter()
        .zip(rate)
        .map(|(q, r)| (*q, r.log10()))
        .collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    if pts.windows(2).any(|w| w[1].0 <= w[0].0 || w[1].1 <= w[0].1) {
        return Err(BdError::NotMonotone);
    }
    Ok(pts.into_iter().unzip())
}

/// The average vertical gap `test − anchor` between two interpolated curves (points given as
/// x, y with x increasing) over the x interval both cover.
fn average_gap(ax: Vec<f64>, ay: Vec<f64>, tx: Vec<f64>, ty: Vec<f64>) -> Result<f64, BdError> {
    let lo = ax[0].max(tx[0]);
    let hi = ax[ax.len() - 1].min(tx[tx.len() - 1]);
    if hi <= lo {
        return Err(BdError::NoOverlap);
    }
    let ia = Pchip::new(ax, ay).integrate(lo, hi);
    let it = Pchip::new(tx, ty).integrate(lo, hi);
    Ok((it - ia) / (hi - lo))
}

/// BD-rate of `test` against `anchor`, in percent (negative: `test` saves bits).
pub fn bd_rate(
    anchor_rate: &[f64],
    anchor_quality: &[f64],
    test_rate: &[f64],
    test_quality: &[f64],
) -> Result<f64, BdError> {
    let (qa, la) = curve(anchor_rate, anchor_quality)?;
    let (qt, lt) = curve(test_rate, test_quality)?;
    let gap = average_gap(qa, la, qt, lt)?;
    Ok((10f64.powf(gap) - 1.0) * 100.0)
}

/// BD-quality (BD-PSNR in dB, or BD-VMAF) of `test` against `anchor`: the average quality gain
/// at equal rate.
pub fn bd_quality(
    anchor_rate: &[f64],
    anchor_quality: &[f64],
    test_rate: &[f64],
    test_quality: &[f64],
) -> Result<f64, BdError> {
    let (qa, la) = curve(anchor_rate, anchor_quality)?;
    let (qt, lt) = curve(test_rate, test_quality)?;
    average_gap(la, qa, lt, qt)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example curves of the `bjontegaard` package (FAU-LMS, BSD-3), whose PCHIP method
    // matches the JCT-VC CTC spreadsheet to 10 decimals. Reference values computed with that
    // package (`bd_piecewise_cubic`, SciPy's PchipInterpolator), an independent implementation.
    const RA: [f64; 4] = [9487.76, 4593.60, 2486.44, 1358.24];
    const PA: [f64; 4] = [40.037, 38.615, 36.845, 34.851];
    const RT: [f64; 4] = [9787.80, 4469.00, 2451.52, 1356.24];
    const PT: [f64; 4] = [40.121, 38.651, 36.970, 34.987];

    #[test]
    fn matches_the_reference_implementation() {
        let r = bd_rate(&RA, &PA, &RT, &PT).unwrap();
        assert!((r - -4.417485350589045).abs() < 1e-9, "{r}");
        let q = bd_quality(&RA, &PA, &RT, &PT).unwrap();
        assert!((q - 0.11969278542479489).abs() < 1e-9, "{q}");

        // Five points, unequal ranges, a clearly better test codec.
        let (ra, pa) = (
            [1000.0, 2000.0, 4000.0, 8000.0, 16000.0],
            [30.0, 33.1, 36.0, 38.7, 41.0],
        );
        let (rt, pt) = (
            [700.0, 1500.0, 2900.0, 6100.0, 12500.0],
            [30.4, 33.5, 36.2, 38.9, 41.2],
        );
        let r = bd_rate(&ra, &pa, &rt, &pt).unwrap();
        assert!((r - -30.705592076879718).abs() < 1e-9, "{r}");
        let q = bd_quality(&ra, &pa, &rt, &pt).unwrap();
        assert!((q - 1.409154056576928).abs() < 1e-9, "{q}");
    }

    #[test]
    fn identities() {
        assert!(bd_rate(&RA, &PA, &RA, &PA).unwrap().abs() < 1e-12);
        // Half the rate at every quality: exactly −50 %; swapped: +100 %.
        let half: Vec<f64> = RA.iter().map(|r| r / 2.0).collect();
        assert!((bd_rate(&RA, &PA, &half, &PA).unwrap() + 50.0).abs() < 1e-9);
        assert!((bd_rate(&half, &PA, &RA, &PA).unwrap() - 100.0).abs() < 1e-9);
        // +1 dB everywhere: BD-PSNR 1.
        let up: Vec<f64> = PA.iter().map(|p| p + 1.0).collect();
        assert!((bd_quality(&RA, &PA, &RA, &up).unwrap() - 1.0).abs() < 1e-9);
        // Point order does not matter.
        let (mut r2, mut p2) = (RA.to_vec(), PA.to_vec());
        r2.reverse();
        p2.reverse();
        assert_eq!(bd_rate(&r2, &p2, &RT, &PT), bd_rate(&RA, &PA, &RT, &PT));
    }

    #[test]
    fn refuses_what_it_cannot_compute() {
        assert_eq!(
            bd_rate(&[1.0], &[30.0], &RT, &PT),
            Err(BdError::TooFewPoints(1))
        );
        assert_eq!(bd_rate(&RA, &PA[..3], &RT, &PT), Err(BdError::Mismatch));
        assert_eq!(
            bd_rate(
                &[100.0, 200.0],
                &[30.0, 31.0],
                &[100.0, 200.0],
                &[40.0, 41.0]
            ),
            Err(BdError::NoOverlap)
        );
        // Quality falling as rate rises is not a rate-distortion curve.
        assert_eq!(
            bd_rate(&[100.0, 200.0], &[31.0, 30.0], &RT, &PT),
            Err(BdError::NotMonotone)
        );
        assert_eq!(
            bd_rate(&[0.0, 200.0], &[30.0, 31.0], &RT, &PT),
            Err(BdError::NotMonotone)
        );
    }
}
