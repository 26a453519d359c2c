//! Where the pixels go: fit modes, crop gravity and the canvas, computed from the (oriented)
//! source size alone, as pure arithmetic.

/// How the image fills a `width`×`height` box (sharp's and imgproxy's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fit {
    /// Fit inside the box keeping the aspect ratio, never enlarging: the default.
    #[default]
    Inside,
    /// Fill the box keeping the aspect ratio, cropping what overflows (by `gravity`).
    Cover,
    /// Fit inside the box keeping the aspect ratio, letterboxed with `background`.
    Contain,
    /// Stretch to exactly the box.
    Fill,
}

impl Fit {
    /// Parse the API's name.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "inside" | "max" | "scale-down" => Some(Self::Inside),
            "cover" | "crop" | "fill-crop" => Some(Self::Cover),
            "contain" | "pad" | "letterbox" => Some(Self::Contain),
            "fill" | "stretch" | "force" => Some(Self::Fill),
            _ => None,
        }
    }
}

/// Which part of the image a crop keeps, or where a letterboxed image sits.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Gravity {
    #[default]
    Center,
    North,
    South,
    East,
    West,
    NorthEast,
    NorthWest,
    SouthEast,
    SouthWest,
    /// Keep the busiest region (Shannon entropy of luma), like sharp's `entropy` strategy.
    Entropy,
}

impl Gravity {
    /// Parse compass names, edge names (`top`, `left`, `top-left`…) and `entropy`/`smart`.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim().to_ascii_lowercase().replace(['-', '_', ' '], "");
        Some(match s.as_str() {
            "center" | "centre" | "middle" => Self::Center,
            "north" | "top" | "n" => Self::North,
            "south" | "bottom" | "s" => Self::South,
            "east" | "right" | "e" => Self::East,
            "west" | "left" | "w" => Self::West,
            "northeast" | "topright" | "rightop" | "ne" => Self::NorthEast,
            "northwest" | "topleft" | "lefttop" | "nw" => Self::NorthWest,
            "southeast" | "bottomright" | "rightbottom" | "se" => Self::SouthEast,
            "southwest" | "bottomleft" | "leftbottom" | "sw" => Self::SouthWest,
            "entropy" | "smart" | "attention" => Self::Entropy,
            _ => return None,
        })
    }

    /// Horizontal and vertical anchor, 0 (left/top) to 1 (right/bottom).
    pub fn anchor(self) -> (f64, f64) {
        match self {
            Self::Center | Self::Entropy => (0.5, 0.5),
            Self::North => (0.5, 0.0),
            Self::South => (0.5, 1.0),
            Self::East => (1.0, 0.5),
            Self::West => (0.0, 0.5),
            Self::NorthEast => (1.0, 0.0),
            Self::NorthWest => (0.0, 0.0),
            Self::SouthEast => (1.0, 1.0),
            Self::SouthWest => (0.0, 1.0),
        }
    }
}

/// A rectangle in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

/// The plan for one image: crop the source, resize the crop, place it on a canvas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// The part of the source kept (all of it unless `cover` crops).
    pub crop: Rect,
    /// The size the crop is resized to.
    pub resized: (u32, u32),
    /// The output size; larger than `resized` only for `contain`.
    pub canvas: (u32, u32),
    /// Where the resized image sits on the canvas.
    pub offset: (u32, u32),
}

impl Layout {
    /// Whether pixels need resampling at all.
    pub fn resizes(&self) -> bool {
        self.resized != (self.crop.w, self.crop.h)
    }

    /// The crop mapped onto the same image decoded at `decoded` instead of `full` (a JPEG
    /// decoded at 1/2, 1/4 or 1/8 of its size).
    pub fn crop_at(&self, full: (u32, u32), decoded: (u32, u32)) -> Rect {
        if full == decoded {
            return self.crop;
        }
        let sx = decoded.0 as f64 / full.0 as f64;
        let sy = decoded.1 as f64 / full.1 as f64;
        let x = ((self.crop.x as f64 * sx).round() as u32).min(decoded.0 - 1);
        let y = ((self.crop.y as f64 * sy).round() as u32).min(decoded.1 - 1);
        Rect {
            x,
            y,
            w: ((self.crop.w as f64 * sx).round() as u32).clamp(1, decoded.0 - x),
            h: ((self.crop.h as f64 * sy).round() as u32).clamp(1, decoded.1 - y),
        }
    }
}

fn round_side(v: f64) -> u32 {
    (v.round() as u32).max(1)
}

/// Plan the output for a `sw`×`sh` (already oriented) source.
pub fn layout(
    (sw, sh): (u32, u32),
    width: Option<u32>,
    height: Option<u32>,
    fit: Fit,
    gravity: Gravity,
) -> Layout {
    let full = Rect {
        x: 0,
        y: 0,
        w: sw,
        h: sh,
    };
    let plain = |w, h| Layout {
        crop: full,
        resized: (w, h),
        canvas: (w, h),
        offset: (0, 0),
    };
    let one_side = |s: f64| {
        let s = if fit == Fit::Inside { s.min(1.0) } else { s };
        plain(round_side(sw as f64 * s), round_side(sh as f64 * s))
    };
    let (bw, bh) = match (width, height) {
        (None, None) => return plain(sw, sh),
        (Some(w), Some(h)) => (w, h),
        // One side given: every mode keeps the aspect ratio; only `inside` refuses to enlarge.
        (Some(w), None) => return one_side(w as f64 / sw as f64),
        (None, Some(h)) => return one_side(h as f64 / sh as f64),
    };
    match fit {
        Fit::Inside => {
            let s = (bw as f64 / sw as f64).min(bh as f64 / sh as f64).min(1.0);
            if s >= 1.0 {
                plain(sw, sh)
            } else {
                plain(round_side(sw as f64 * s), round_side(sh as f64 * s))
            }
        }
        Fit::Fill => plain(bw, bh),
        Fit::Contain => {
            let s = (bw as f64 / sw as f64).min(bh as f64 / sh as f64);
            let rw = round_side(sw as f64 * s).min(bw);
            let rh = round_side(sh as f64 * s).min(bh);
            let (ax, ay) = gravity.anchor();
            Layout {
                crop: full,
                resized: (rw, rh),
                canvas: (bw, bh),
                offset: (
                    ((bw - rw) as f64 * ax).round() as u32,
                    ((bh - rh) as f64 * ay).round() as u32,
                ),
            }
        }
        Fit::Cover => {
            let s = (bw as f64 / sw as f64).max(bh as f64 / sh as f64);
            let cw = round_side(bw as f64 / s).min(sw);
            let ch = round_side(bh as f64 / s).min(sh);
            let (ax, ay) = gravity.anchor();
            Layout {
                crop: Rect {
                    x: ((sw - cw) as f64 * ax).round() as u32,
                    y: ((sh - ch) as f64 * ay).round() as u32,
                    w: cw,
                    h: ch,
                },
                resized: (bw, bh),
                canvas: (bw, bh),
                offset: (0, 0),
            }
        }
    }
}

/// Shannon entropy of a luma histogram.
fn entropy(hist: &[u32; 256]) -> f64 {
    let total: u32 = hist.iter().sum();
    if total == 0 {
        return 0.0;
    }
    hist.iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / total as f64;
            -p * p.log2()
        })
        .sum()
}

/// Move a `w`×`h` crop inside the RGBA image `rgba` (`iw`×`ih`) to where the detail is: trim
/// the calmer edge, slice by slice, until the crop is left (sharp's entropy strategy).
pub fn entropy_crop(rgba: &[u8], iw: u32, ih: u32, w: u32, h: u32) -> Rect {
    let luma = |x: u32, y: u32| {
        let i = (y as usize * iw as usize + x as usize) * 4;
        ((rgba[i] as u32 * 77 + rgba[i + 1] as u32 * 150 + rgba[i + 2] as u32 * 29) >> 8) as usize
    };
    // Sample at most ~256 points per axis: entropy needs a histogram, not every pixel.
    let step = (iw.max(ih) / 256).max(1);
    let hist_of = |r: Rect| {
        let mut hist = [0u32; 256];
        let mut y = r.y;
        while y < r.y + r.h {
            let mut x = r.x;
            while x < r.x + r.w {
                hist[luma(x, y)] += 1;
                x += step;
            }
            y += step;
        }
        hist
    };
    let (w, h) = (w.min(iw), h.min(ih));
    let busy = |r: Rect| entropy(&hist_of(r));
    let x = trim_axis(iw, w, |x, n| {
        busy(Rect {
            x,
            y: 0,
            w: n,
            h: ih,
        })
    });
    let y = trim_axis(ih, h, |y, n| busy(Rect { x, y, w, h: n }));
    Rect { x, y, w, h }
}

/// Shrink an axis of `len` to `target`, a quarter of the excess at a time, dropping whichever
/// end slice has less entropy (`entropy_at(start, len)`); returns where the kept span starts.
fn trim_axis(len: u32, target: u32, entropy_at: impl Fn(u32, u32) -> f64) -> u32 {
    let (mut start, mut len) = (0, len);
    while len > target {
        let slice = ((len - target) / 4).max(1);
        if entropy_at(start, slice) < entropy_at(start + len - slice, slice) {
            start += slice;
        }
        len -= slice;
    }
    start
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(src: (u32, u32), w: Option<u32>, h: Option<u32>, fit: Fit, g: Gravity) -> Layout {
        layout(src, w, h, fit, g)
    }

    #[test]
    fn inside_never_enlarges_and_keeps_aspect() {
        let cases = [
            ((600, 400), (Some(300), None), (300, 200)),
            ((600, 400), (None, Some(100)), (150, 100)),
            ((600, 400), (Some(300), Some(300)), (300, 200)),
            ((600, 400), (Some(1200), None), (600, 400)),
            ((600, 400), (None, None), (600, 400)),
            ((5312, 2988), (Some(1200), None), (1200, 675)),
            ((1000, 1), (Some(10), None), (10, 1)),
        ];
        for (src, (w, h), want) in cases {
            let got = l(src, w, h, Fit::Inside, Gravity::Center);
            assert_eq!(got.resized, want, "{src:?} {w:?} {h:?}");
            assert_eq!(got.canvas, want);
            assert_eq!(
                got.crop,
                Rect {
                    x: 0,
                    y: 0,
                    w: src.0,
                    h: src.1
                }
            );
        }
    }

    #[test]
    fn cover_crops_by_gravity() {
        // A 200x200 avatar from a 600x400 landscape: a centred 400x400 square.
        let c = l(
            (600, 400),
            Some(200),
            Some(200),
            Fit::Cover,
            Gravity::Center,
        );
        assert_eq!(
            c.crop,
            Rect {
                x: 100,
                y: 0,
                w: 400,
                h: 400
            }
        );
        assert_eq!((c.resized, c.canvas), ((200, 200), (200, 200)));
        let west = l((600, 400), Some(200), Some(200), Fit::Cover, Gravity::West);
        assert_eq!(west.crop.x, 0);
        let east = l(
            (600, 400),
            Some(200),
            Some(200),
            Fit::Cover,
            Gravity::SouthEast,
        );
        assert_eq!((east.crop.x, east.crop.y), (200, 0));
        // Portrait into a wide box: rows are cropped instead.
        let north = l((400, 600), Some(400), Some(100), Fit::Cover, Gravity::North);
        assert_eq!(
            north.crop,
            Rect {
                x: 0,
                y: 0,
                w: 400,
                h: 100
            }
        );
        let south = l((400, 600), Some(400), Some(100), Fit::Cover, Gravity::South);
        assert_eq!(
            south.crop,
            Rect {
                x: 0,
                y: 500,
                w: 400,
                h: 100
            }
        );
        // Cover enlarges when it must.
        let up = l((100, 50), Some(400), Some(400), Fit::Cover, Gravity::Center);
        assert_eq!(
            up.crop,
            Rect {
                x: 25,
                y: 0,
                w: 50,
                h: 50
            }
        );
        assert_eq!(up.resized, (400, 400));
    }

    #[test]
    fn contain_letterboxes_and_fill_stretches() {
        let c = l(
            (600, 400),
            Some(300),
            Some(300),
            Fit::Contain,
            Gravity::Center,
        );
        assert_eq!(
            (c.resized, c.canvas, c.offset),
            ((300, 200), (300, 300), (0, 50))
        );
        let top = l(
            (600, 400),
            Some(300),
            Some(300),
            Fit::Contain,
            Gravity::North,
        );
        assert_eq!(top.offset, (0, 0));
        let f = l((600, 400), Some(100), Some(300), Fit::Fill, Gravity::Center);
        assert_eq!((f.resized, f.canvas), ((100, 300), (100, 300)));
        // One side only: aspect kept, enlarging allowed outside `inside`.
        let w = l((600, 400), Some(1200), None, Fit::Cover, Gravity::Center);
        assert_eq!(w.resized, (1200, 800));
    }

    #[test]
    fn crop_follows_a_shrunk_decode() {
        let c = l(
            (5312, 2988),
            Some(200),
            Some(200),
            Fit::Cover,
            Gravity::Center,
        );
        assert_eq!(
            c.crop,
            Rect {
                x: 1162,
                y: 0,
                w: 2988,
                h: 2988
            }
        );
        let at = c.crop_at((5312, 2988), (664, 374));
        assert_eq!(
            at,
            Rect {
                x: 145,
                y: 0,
                w: 374,
                h: 374
            }
        );
    }

    #[test]
    fn entropy_crop_finds_the_detail() {
        // Flat grey everywhere except noise in the right third.
        let (iw, ih) = (300u32, 100u32);
        let mut img = vec![128u8; (iw * ih * 4) as usize];
        let mut seed = 1u32;
        for y in 0..ih {
            for x in 200..iw {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                let i = ((y * iw + x) * 4) as usize;
                img[i..i + 3].fill((seed >> 16) as u8);
            }
        }
        let r = entropy_crop(&img, iw, ih, 100, 100);
        assert_eq!((r.w, r.h), (100, 100));
        assert!(r.x >= 190, "{r:?}");
    }

    #[test]
    fn names() {
        assert_eq!(Fit::parse("COVER"), Some(Fit::Cover));
        assert_eq!(Fit::parse("nope"), None);
        assert_eq!(Gravity::parse("top-left"), Some(Gravity::NorthWest));
        assert_eq!(Gravity::parse("smart"), Some(Gravity::Entropy));
        assert_eq!(Gravity::parse("up"), None);
    }
}
