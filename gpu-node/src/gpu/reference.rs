//! The f64 reference resize: the same separable filtering in linear light with premultiplied
//! alpha as shaders/resize.wgsl, with the same weight tables, in f64. The shader and the fast
//! CPU path are tested against it; nothing in production calls it.

use super::filter::{Filter, Weights};
use super::srgb;

/// Resize packed RGBA8 (sRGB, straight alpha). Panics if `src` is not `src_w*src_h*4` bytes.
pub fn resize_rgba8(
    src: &[u8],
    src_w: u32,
    src_h: u32,
    dst_w: u32,
    dst_h: u32,
    filter: Filter,
) -> Vec<u8> {
    assert_eq!(
        src.len(),
        src_w as usize * src_h as usize * 4,
        "source size"
    );
    let lut = srgb::to_linear_table();
    let (sw, dw, dh) = (src_w as usize, dst_w as usize, dst_h as usize);

    // Horizontal pass into linear, premultiplied f64.
    let hw = Weights::new(filter, src_w, dst_w);
    let mut mid = vec![[0.0f64; 4]; dw * src_h as usize];
    for y in 0..src_h as usize {
        let row = &src[y * sw * 4..(y + 1) * sw * 4];
        for x in 0..dw {
            let (lo, ws) = hw.row(x);
            let mut acc = [0.0f64; 4];
            for (k, w) in ws.iter().enumerate() {
                if *w == 0.0 {
                    continue;
                }
                let p = &row[(lo + k) * 4..(lo + k) * 4 + 4];
                let a = p[3] as f64 / 255.0;
                acc[0] += w * lut[p[0] as usize] * a;
                acc[1] += w * lut[p[1] as usize] * a;
                acc[2] += w * lut[p[2] as usize] * a;
                acc[3] += w * a;
            }
            mid[y * dw + x] = acc;
        }
    }

    // Vertical pass, back to straight-alpha sRGB bytes.
    let vw = Weights::new(filter, src_h, dst_h);
    let mut out = vec![0u8; dw * dh * 4];
    for y in 0..dh {
        let (lo, ws) = vw.row(y);
        for x in 0..dw {
            let mut acc = [0.0f64; 4];
            for (k, w) in ws.iter().enumerate() {
                if *w == 0.0 {
                    continue;
                }
                let m = mid[(lo + k) * dw + x];
                for c in 0..4 {
                    acc[c] += w * m[c];
                }
            }
            let a = acc[3].clamp(0.0, 1.0);
            let o = &mut out[(y * dw + x) * 4..(y * dw + x) * 4 + 4];
            for c in 0..3 {
                let straight = if a > 0.0 {
                    (acc[c] / a).clamp(0.0, 1.0)
                } else {
                    0.0
                };
                o[c] = (srgb::from_linear(straight) * 255.0).round() as u8;
            }
            o[3] = (a * 255.0).round() as u8;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_colour_stays_flat_and_transparent_pixels_do_not_bleed() {
        for filter in Filter::ALL {
            // A flat colour must survive any resize exactly.
            let src: Vec<u8> = [200u8, 30, 90, 255].repeat(37 * 23);
            let out = resize_rgba8(&src, 37, 23, 11, 50, filter);
            assert!(out.chunks(4).all(|p| p == [200, 30, 90, 255]), "{filter:?}");

            // Half red-opaque, half fully transparent *green*: with premultiplied alpha the
            // green never shows up in the blended edge.
            let mut src = Vec::new();
            for _y in 0..8 {
                for x in 0..16 {
                    src.extend_from_slice(if x < 8 {
                        &[255, 0, 0, 255]
                    } else {
                        &[0, 255, 0, 0]
                    });
                }
            }
            let out = resize_rgba8(&src, 16, 8, 5, 3, filter);
            for p in out.chunks(4) {
                if p[3] > 8 {
                    assert!(p[1] < 3, "{filter:?}: green bled into {p:?}");
                }
            }
        }
    }

    #[test]
    fn halving_averages_in_linear_light() {
        // A 1-px black/white checker downscaled far is mid-grey in *linear* light: sRGB ~188,
        // not 128 (what gamma-unaware resizers produce).
        let mut src = Vec::new();
        for y in 0..64 {
            for x in 0..64 {
                let v = if (x + y) % 2 == 0 { 255 } else { 0 };
                src.extend_from_slice(&[v, v, v, 255]);
            }
        }
        for filter in Filter::ALL {
            let out = resize_rgba8(&src, 64, 64, 4, 4, filter);
            for p in out.chunks(4) {
                assert!((186..=190).contains(&p[0]), "{filter:?}: {p:?}");
            }
        }
    }
}
