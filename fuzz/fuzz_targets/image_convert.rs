//! The image path on arbitrary bytes: sniff, header, decode (JPEG with shrink-on-load, PNG,
//! WebP, GIF, TIFF, AVIF, HEIC), orient, crop, resize on the CPU, encode. Two leading bytes
//! choose the output format, fit and size. A result is an image of the size asked for; a
//! refusal is an error, never a panic, and the limits bound what is decoded.
#![no_main]

use kiln_gpu_node::imaging::{self, ConvertParams, Fit, Limits, OutputFormat};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [a, b, image @ ..] = data else {
        return;
    };
    // Inside libFuzzer every input must finish fast: small limits, small outputs.
    let params = ConvertParams {
        format: match a % 7 {
            6 => None,
            i => Some(OutputFormat::ALL[i as usize]),
        },
        quality: Some(50),
        width: (b & 1 != 0).then_some(1 + (*b as u32 >> 2)),
        height: (b & 2 != 0).then_some(1 + (*a as u32 >> 3)),
        fit: [Fit::Inside, Fit::Cover, Fit::Contain, Fit::Fill][(*a as usize >> 3) % 4],
        limits: Limits {
            max_pixels: 4_000_000,
            max_frames: 16,
            max_animation_pixels: 4_000_000,
        },
        ..ConvertParams::default()
    };
    if let Ok(out) = imaging::convert(image, &params) {
        assert!(out.width > 0 && out.height > 0);
        assert!(!out.bytes.is_empty());
        if let (Some(w), Some(h), Fit::Fill) = (params.width, params.height, params.fit) {
            assert_eq!((out.width, out.height), (w, h));
        }
    }
});
