//! Resampling filters and their weight tables. The shader, the f64 reference and the tests all
//! take their weights from here, so the three paths differ only in arithmetic precision.

/// A separable resampling filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Filter {
    /// Lanczos windowed sinc, 3 lobes: the sharpest; the default.
    #[default]
    Lanczos3,
    /// Mitchell–Netravali cubic (B = C = 1/3): softer, no visible ringing.
    Mitchell,
    /// Catmull-Rom cubic (B = 0, C = 1/2): sharp, little ringing.
    CatmullRom,
    /// Triangle: linear interpolation, widened when reducing.
    Bilinear,
    /// Box: area averaging, for big reductions.
    Box,
}

impl Filter {
    /// Every filter, in the order the API documents them.
    pub const ALL: [Filter; 5] = [
        Self::Lanczos3,
        Self::Mitchell,
        Self::CatmullRom,
        Self::Bilinear,
        Self::Box,
    ];

    /// Parse the API's name (`lanczos3`, `mitchell`, `catmull_rom`, `bilinear`, `box`, with a
    /// few common aliases).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "lanczos3" | "lanczos" => Some(Self::Lanczos3),
            "mitchell" => Some(Self::Mitchell),
            "catmull_rom" | "catmullrom" | "cubic" | "bicubic" => Some(Self::CatmullRom),
            "bilinear" | "linear" | "triangle" => Some(Self::Bilinear),
            "box" | "area" => Some(Self::Box),
            _ => None,
        }
    }

    /// The API's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lanczos3 => "lanczos3",
            Self::Mitchell => "mitchell",
            Self::CatmullRom => "catmull_rom",
            Self::Bilinear => "bilinear",
            Self::Box => "box",
        }
    }

    /// Radius of the kernel at scale 1, in source pixels.
    pub fn support(self) -> f64 {
        match self {
            Self::Lanczos3 => 3.0,
            Self::Mitchell | Self::CatmullRom => 2.0,
            Self::Bilinear => 1.0,
            Self::Box => 0.5,
        }
    }

    /// The kernel's value at `x` source pixels (scale 1) from the sample centre.
    pub fn kernel(self, x: f64) -> f64 {
        match self {
            Self::Lanczos3 => {
                if x.abs() >= 3.0 {
                    0.0
                } else {
                    sinc(x) * sinc(x / 3.0)
                }
            }
            Self::Mitchell => cubic(x, 1.0 / 3.0, 1.0 / 3.0),
            Self::CatmullRom => cubic(x, 0.0, 0.5),
            Self::Bilinear => (1.0 - x.abs()).max(0.0),
            // Half-open so that a sample exactly between two pixels takes one, not both.
            Self::Box => {
                if x > -0.5 && x <= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
        }
    }
}

fn sinc(x: f64) -> f64 {
    if x.abs() < 1e-9 {
        1.0
    } else {
        let px = std::f64::consts::PI * x;
        px.sin() / px
    }
}

/// The Mitchell–Netravali family of cubics.
fn cubic(x: f64, b: f64, c: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        ((12.0 - 9.0 * b - 6.0 * c) * x.powi(3)
            + (-18.0 + 12.0 * b + 6.0 * c) * x.powi(2)
            + (6.0 - 2.0 * b))
            / 6.0
    } else if x < 2.0 {
        ((-b - 6.0 * c) * x.powi(3)
            + (6.0 * b + 30.0 * c) * x.powi(2)
            + (-12.0 * b - 48.0 * c) * x
            + (8.0 * b + 24.0 * c))
            / 6.0
    } else {
        0.0
    }
}

/// The weights of one axis: for output sample `o`, source samples `starts[o]..` weighted by
/// `coefs[o * taps..(o + 1) * taps]` (normalised to sum 1, zero-padded to `taps`).
#[derive(Debug, Clone, PartialEq)]
pub struct Weights {
    pub taps: usize,
    pub starts: Vec<u32>,
    pub coefs: Vec<f64>,
}

impl Weights {
    /// Weights mapping `src_len` samples onto `dst_len`. Taps outside the image are dropped
    /// (edges renormalised); the kernel widens by the reduction factor so every source pixel
    /// contributes when shrinking.
    pub fn new(filter: Filter, src_len: u32, dst_len: u32) -> Self {
        assert!(src_len > 0 && dst_len > 0, "empty axis");
        if src_len == dst_len {
            // An axis that keeps its size is not resampled (a non-interpolating filter such as
            // Mitchell would otherwise blur it), as libvips and fast_image_resize also do.
            return Self {
                taps: 1,
                starts: (0..dst_len).collect(),
                coefs: vec![1.0; dst_len as usize],
            };
        }
        let scale = src_len as f64 / dst_len as f64;
        let stretch = scale.max(1.0);
        let support = filter.support() * stretch;
        let mut rows: Vec<(u32, Vec<f64>)> = Vec::with_capacity(dst_len as usize);
        for o in 0..dst_len {
            let center = (o as f64 + 0.5) * scale;
            let lo = ((center - support - 0.5).floor() as i64).max(0);
            let hi = ((center + support - 0.5).ceil() as i64).min(src_len as i64 - 1);
            let mut w: Vec<f64> = (lo..=hi)
                .map(|i| filter.kernel((i as f64 + 0.5 - center) / stretch))
                .collect();
            let sum: f64 = w.iter().sum();
            if sum.abs() < 1e-12 {
                // Only a box filter enlarging can miss every tap; take the nearest pixel.
                let nearest = (center.floor() as i64).clamp(lo, hi);
                w.iter_mut().for_each(|v| *v = 0.0);
                w[(nearest - lo) as usize] = 1.0;
            } else {
                w.iter_mut().for_each(|v| *v /= sum);
            }
            // Kernel zeros at whole pixels come out as ~1e-17: make them zeros, then trim zero
            // taps at both ends so the table stays narrow.
            w.iter_mut()
                .filter(|v| v.abs() < 1e-12)
                .for_each(|v| *v = 0.0);
            let first = w.iter().position(|v| *v != 0.0).unwrap_or(0);
            let last = w.iter().rposition(|v| *v != 0.0).unwrap_or(0);
            rows.push((lo as u32 + first as u32, w[first..=last].to_vec()));
        }
        let taps = rows.iter().map(|(_, w)| w.len()).max().unwrap_or(1);
        let mut starts = Vec::with_capacity(rows.len());
        let mut coefs = Vec::with_capacity(rows.len() * taps);
        for (start, w) in rows {
            starts.push(start);
            coefs.extend_from_slice(&w);
            coefs.extend(std::iter::repeat_n(0.0, taps - w.len()));
        }
        Self {
            taps,
            starts,
            coefs,
        }
    }

    /// The taps of output sample `o`: its first source index and its weights.
    pub fn row(&self, o: usize) -> (usize, &[f64]) {
        (
            self.starts[o] as usize,
            &self.coefs[o * self.taps..(o + 1) * self.taps],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_and_stay_in_bounds() {
        for filter in Filter::ALL {
            for (s, d) in [
                (100, 10),
                (10, 100),
                (7, 3),
                (3, 7),
                (1, 5),
                (5, 1),
                (640, 427),
                (5312, 1200),
            ] {
                let w = Weights::new(filter, s, d);
                for o in 0..d as usize {
                    let (start, ws) = w.row(o);
                    let used = ws.iter().rposition(|v| *v != 0.0).unwrap() + 1;
                    assert!(start + used <= s as usize, "{filter:?} {s}->{d} o={o}");
                    assert!((ws.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{filter:?}");
                }
            }
        }
    }

    #[test]
    fn kernels_are_interpolating_where_they_should_be() {
        // Lanczos, Catmull-Rom and bilinear pass through the samples: 1 at 0, 0 at integers.
        for f in [Filter::Lanczos3, Filter::CatmullRom, Filter::Bilinear] {
            assert!((f.kernel(0.0) - 1.0).abs() < 1e-12, "{f:?}");
            for i in 1..4 {
                assert!(f.kernel(i as f64).abs() < 1e-12, "{f:?} at {i}");
            }
        }
        // Mitchell is not interpolating: 8/9 at 0, 1/18 at ±1.
        assert!((Filter::Mitchell.kernel(0.0) - 8.0 / 9.0).abs() < 1e-12);
        assert!((Filter::Mitchell.kernel(1.0) - 1.0 / 18.0).abs() < 1e-12);
        // A 2:1 box reduction averages exactly two pixels.
        let w = Weights::new(Filter::Box, 8, 4);
        assert_eq!(w.taps, 2);
        assert_eq!(w.row(1), (2, &[0.5, 0.5][..]));
    }

    #[test]
    fn identity_size_is_the_identity_for_interpolating_filters() {
        for f in [
            Filter::Lanczos3,
            Filter::CatmullRom,
            Filter::Bilinear,
            Filter::Box,
        ] {
            let w = Weights::new(f, 9, 9);
            for o in 0..9 {
                let (start, ws) = w.row(o);
                assert_eq!(start, o, "{f:?}");
                assert!((ws[0] - 1.0).abs() < 1e-12, "{f:?}");
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for f in Filter::ALL {
            assert_eq!(Filter::parse(f.as_str()), Some(f));
        }
        assert_eq!(Filter::parse("area"), Some(Filter::Box));
        assert_eq!(Filter::parse("nearest"), None);
    }
}
