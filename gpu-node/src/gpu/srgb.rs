//! The sRGB transfer function (IEC 61966-2-1), shared by every resize path.

/// sRGB-encoded `c` in 0..=1 → linear light.
pub fn to_linear(c: f64) -> f64 {
    if c <= 0.04045 {
        c / 12.92
    } else {
        ((c + 0.055) / 1.055).powf(2.4)
    }
}

/// Linear light `c` in 0..=1 → sRGB-encoded.
pub fn from_linear(c: f64) -> f64 {
    if c <= 0.0031308 {
        c * 12.92
    } else {
        1.055 * c.powf(1.0 / 2.4) - 0.055
    }
}

/// sRGB byte → linear light, as a 256-entry table (uploaded to the shader too).
pub fn to_linear_table() -> [f64; 256] {
    let mut t = [0.0; 256];
    for (i, v) in t.iter_mut().enumerate() {
        *v = to_linear(i as f64 / 255.0);
    }
    t
}
