//! The CPU resize: fast_image_resize (SIMD convolution) in linear light with premultiplied
//! alpha — sRGB bytes mapped to 16-bit linear, resized, mapped back. It is what a node without
//! a usable GPU adapter runs, and on this project's CI CPU it outruns lavapipe (README).

use std::sync::OnceLock;

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{
    create_srgb_mapper, FilterType, PixelComponentMapper, PixelType, ResizeAlg, ResizeOptions,
    Resizer,
};

use super::filter::Filter;

fn mapper() -> &'static PixelComponentMapper {
    static MAPPER: OnceLock<PixelComponentMapper> = OnceLock::new();
    MAPPER.get_or_init(create_srgb_mapper)
}

fn alg(filter: Filter) -> ResizeAlg {
    ResizeAlg::Convolution(match filter {
        Filter::Lanczos3 => FilterType::Lanczos3,
        Filter::Mitchell => FilterType::Mitchell,
        Filter::CatmullRom => FilterType::CatmullRom,
        Filter::Bilinear => FilterType::Bilinear,
        Filter::Box => FilterType::Box,
    })
}

/// Why the CPU resize failed (only on inconsistent arguments).
#[derive(Debug, thiserror::Error)]
#[error("CPU resize failed: {0}")]
pub struct CpuResizeError(String);

/// Resize packed RGBA8 (sRGB, straight alpha) from `src_w`×`src_h` to `dst_w`×`dst_h`.
/// `opaque` skips the alpha multiply/divide when every pixel is opaque.
pub fn resize_rgba8(
    src: &[u8],
    src_w: u32,
    src_h: u32,
    dst_w: u32,
    dst_h: u32,
    filter: Filter,
    opaque: bool,
) -> Result<Vec<u8>, CpuResizeError> {
    let err = |e: &dyn std::fmt::Display| CpuResizeError(e.to_string());
    let src_img = ImageRef::new(src_w, src_h, src, PixelType::U8x4).map_err(|e| err(&e))?;
    let mut linear = Image::new(src_w, src_h, PixelType::U16x4);
    mapper()
        .forward_map(&src_img, &mut linear)
        .map_err(|e| err(&e))?;
    let mut resized = Image::new(dst_w, dst_h, PixelType::U16x4);
    Resizer::new()
        .resize(
            &linear,
            &mut resized,
            &ResizeOptions::new()
                .resize_alg(alg(filter))
                .use_alpha(!opaque),
        )
        .map_err(|e| err(&e))?;
    let mut out = Image::new(dst_w, dst_h, PixelType::U8x4);
    mapper()
        .backward_map(&resized, &mut out)
        .map_err(|e| err(&e))?;
    Ok(out.into_vec())
}
