//! The CPU resize: the same separable Lanczos3 in linear light with premultiplied alpha as
//! shaders/resize.wgsl, in f64. It is the fallback where no wgpu adapter is usable and the
//! reference the shader is tested against.

/// Lanczos3 kernel.
fn lanczos3(x: f64) -> f64 {
    fn sinc(x: f64) -> f64 {
        if x.abs() < 1e-9 {
            1.0
        } else {
            let px = std::f64::consts::PI * x;
            px.sin() / px
        }
    }
    if x.abs() >= 3.0 {
        0.0
    } else {
        sinc(x) * sinc(x / 3.0)
    }
}

/// For each output index: the first source index and normalised weights.
fn weights(src_len: u32, dst_len: u32) -> Vec<(usize, Vec<f64>)> {
    let scale = src_len as f64 / dst_len as f64;
    let stretch = scale.max(1.0);
    let support = 3.0 * stretch;
    (0..dst_len)
        .map(|o| {
            let center = (o as f64 + 0.5) * scale;
            let lo = ((center - support - 0.5).floor() as i64).max(0);
            let hi = ((center + support - 0.5).ceil() as i64).min(src_len as i64 - 1);
            let mut w: Vec<f64> = (lo..=hi)
                .map(|i| lanczos3((i as f64 + 0.5 - center) / stretch))
                .collect();
            let sum: f64 = w.iter().sum();
            w.iter_mut().for_each(|v| *v /= sum);
            (lo as usize, w)
        })
        .collect()
}

/// sRGB byte → linear light, as a 256-entry table.
fn srgb_to_linear_table() -> [f64; 256] {
    let mut t = [0.0; 256];
    for (i, v) in t.iter_mut().enumerate() {
        let c = i as f64 / 255.0;
        *v = if c <= 0.04045 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        };
    }
    t
}

fn linear_to_srgb(c: f64) -> f64 {
    if c <= 0.0031308 {
        c * 12.92
    } else {
        1.055 * c.powf(1.0 / 2.4) - 0.055
    }
}

/// Resize packed RGBA8 (sRGB, straight alpha). Panics if `src` is not `src_w*src_h*4` bytes.
pub fn resize_rgba8(src: &[u8], src_w: u32, src_h: u32, dst_w: u32, dst_h: u32) -> Vec<u8> {
    assert_eq!(
        src.len(),
        src_w as usize * src_h as usize * 4,
        "source size"
    );
    let lut = srgb_to_linear_table();
    let (sw, dw, dh) = (src_w as usize, dst_w as usize, dst_h as usize);

    // Horizontal pass into linear, premultiplied f64.
    let hw = weights(src_w, dst_w);
    let mut mid = vec![[0.0f64; 4]; dw * src_h as usize];
    for y in 0..src_h as usize {
        let row = &src[y * sw * 4..(y + 1) * sw * 4];
        for (x, (lo, ws)) in hw.iter().enumerate() {
            let mut acc = [0.0f64; 4];
            for (k, w) in ws.iter().enumerate() {
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
    let vw = weights(src_h, dst_h);
    let mut out = vec![0u8; dw * dh * 4];
    for (y, (lo, ws)) in vw.iter().enumerate() {
        for x in 0..dw {
            let mut acc = [0.0f64; 4];
            for (k, w) in ws.iter().enumerate() {
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
                o[c] = (linear_to_srgb(straight) * 255.0).round() as u8;
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
    fn weights_sum_to_one_and_stay_in_bounds() {
        for (s, d) in [
            (100, 10),
            (10, 100),
            (7, 3),
            (3, 7),
            (1, 5),
            (5, 1),
            (640, 427),
        ] {
            for (lo, w) in weights(s, d) {
                assert!(lo + w.len() <= s as usize);
                assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn flat_colour_stays_flat_and_transparent_pixels_do_not_bleed() {
        // A flat colour must survive any resize exactly.
        let src: Vec<u8> = [200u8, 30, 90, 255].repeat(37 * 23);
        let out = resize_rgba8(&src, 37, 23, 11, 50);
        assert!(out.chunks(4).all(|p| p == [200, 30, 90, 255]));

        // Half red-opaque, half fully transparent *green*: with premultiplied alpha the green
        // never shows up in the blended edge.
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
        let out = resize_rgba8(&src, 16, 8, 5, 3);
        for p in out.chunks(4) {
            if p[3] > 8 {
                assert!(p[1] < 3, "green bled into {p:?}");
            }
        }
    }

    #[test]
    fn halving_averages_in_linear_light() {
        // A 2-px black/white checker downscaled far is mid-grey in *linear* light: sRGB ~188,
        // not 128 (what gamma-unaware resizers produce).
        let mut src = Vec::new();
        for y in 0..64 {
            for x in 0..64 {
                let v = if (x + y) % 2 == 0 { 255 } else { 0 };
                src.extend_from_slice(&[v, v, v, 255]);
            }
        }
        let out = resize_rgba8(&src, 64, 64, 4, 4);
        for p in out.chunks(4) {
            assert!((186..=190).contains(&p[0]), "{p:?}");
        }
    }
}
