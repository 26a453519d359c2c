//! The wgpu compute resize (lavapipe in CI, the real GPU elsewhere) against the f64 CPU
//! reference. Tolerance: every channel of every pixel within ±1 level.

mod common;

use kiln_gpu_node::gpu::{cpu, GpuResizer};

fn rgba(rel: &str) -> (Vec<u8>, u32, u32) {
    let img = image::open(common::media(rel))
        .expect("decode sample")
        .into_rgba8();
    let (w, h) = img.dimensions();
    (img.into_raw(), w, h)
}

fn max_abs_diff(a: &[u8], b: &[u8]) -> u8 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0)
}

#[test]
fn wgpu_matches_cpu_reference_on_real_photos() {
    // No adapter is a failure here: CI installs lavapipe precisely so this runs.
    let gpu = GpuResizer::new().expect("a wgpu adapter (install mesa-vulkan-drivers)");
    eprintln!("adapter: {:?}", gpu.adapter());
    let cases: &[(&str, u32, u32)] = &[
        ("photo/coffee.png", 300, 200),             // 2x down
        ("photo/chelsea.png", 157, 101),            // odd, non-integer ratios
        ("photo/rocket.jpg", 64, 43),               // 10x down
        ("photo/astronaut.png", 700, 650),          // up, both axes
        ("photo/hubble_deep_field.jpg", 1000, 300), // squash one axis only
    ];
    for &(rel, dw, dh) in cases {
        let (src, sw, sh) = rgba(rel);
        let got = gpu.resize_rgba8(&src, sw, sh, dw, dh).expect("gpu resize");
        let want = cpu::resize_rgba8(&src, sw, sh, dw, dh);
        let diff = max_abs_diff(&got, &want);
        assert!(
            diff <= 1,
            "{rel} {sw}x{sh} -> {dw}x{dh}: max channel difference {diff}"
        );
    }
}

#[test]
fn wgpu_handles_alpha_like_the_reference() {
    let gpu = GpuResizer::new().expect("a wgpu adapter");
    // A synthetic RGBA gradient with varying alpha, fully transparent corners included.
    let (w, h) = (97u32, 61u32);
    let mut src = Vec::new();
    for y in 0..h {
        for x in 0..w {
            let a = if (x + y) % 13 == 0 {
                0
            } else {
                ((x * 255) / w) as u8
            };
            src.extend_from_slice(&[(x * 2) as u8, (y * 4) as u8, 255 - (x as u8), a]);
        }
    }
    for (dw, dh) in [(31, 17), (200, 150), (1, 1)] {
        let got = gpu.resize_rgba8(&src, w, h, dw, dh).unwrap();
        let want = cpu::resize_rgba8(&src, w, h, dw, dh);
        // Where alpha is (near) zero, colour is meaningless and amplified by un-premultiplying;
        // compare colour only where the pixel is visible.
        for (g, c) in got.chunks(4).zip(want.chunks(4)) {
            assert!(g[3].abs_diff(c[3]) <= 1, "alpha {g:?} vs {c:?}");
            if c[3] >= 16 {
                assert!(
                    max_abs_diff(&g[..3], &c[..3]) <= 1,
                    "{dw}x{dh}: {g:?} vs {c:?}"
                );
            }
        }
    }
}

#[test]
fn bad_dimensions_are_errors_not_panics() {
    let gpu = GpuResizer::new().expect("a wgpu adapter");
    assert!(gpu.resize_rgba8(&[0; 12], 2, 2, 1, 1).is_err());
    assert!(gpu.resize_rgba8(&[0; 16], 2, 2, 0, 1).is_err());
}
