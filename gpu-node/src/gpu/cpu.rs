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

/// Map sRGB ↔ linear in bands of rows, one per core: on a 12 MP photo the mapping alone
/// costs as much as the resize, and it is trivially parallel.
fn map_rows(
    src: &[u8],
    src_type: PixelType,
    dst: &mut [u8],
    dst_type: PixelType,
    width: u32,
    forward: bool,
) -> Result<(), CpuResizeError> {
    let src_row = width as usize * src_type.size();
    let dst_row = width as usize * dst_type.size();
    let rows = src.len() / src_row.max(1);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(rows / 64)
        .max(1);
    let band = rows.div_ceil(threads);
    let map = |s: &[u8], d: &mut [u8]| -> Result<(), CpuResizeError> {
        let err = |e: &dyn std::fmt::Display| CpuResizeError(e.to_string());
        let h = (s.len() / src_row) as u32;
        let from = ImageRef::new(width, h, s, src_type).map_err(|e| err(&e))?;
        let mut to = Image::from_slice_u8(width, h, d, dst_type).map_err(|e| err(&e))?;
        if forward {
            mapper().forward_map(&from, &mut to)
        } else {
            mapper().backward_map(&from, &mut to)
        }
        .map_err(|e| err(&e))
    };
    std::thread::scope(|scope| {
        let handles: Vec<_> = src
            .chunks(band * src_row)
            .zip(dst.chunks_mut(band * dst_row))
            .map(|(s, d)| scope.spawn(move || map(s, d)))
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join()
                .unwrap_or_else(|_| Err(CpuResizeError("mapping thread panicked".into())))
        })
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
    let mut linear = Image::new(src_w, src_h, PixelType::U16x4);
    map_rows(
        src,
        PixelType::U8x4,
        linear.buffer_mut(),
        PixelType::U16x4,
        src_w,
        true,
    )?;
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
    drop(linear);
    let mut out = Image::new(dst_w, dst_h, PixelType::U8x4);
    map_rows(
        resized.buffer(),
        PixelType::U16x4,
        out.buffer_mut(),
        PixelType::U8x4,
        dst_w,
        false,
    )?;
    Ok(out.into_vec())
}
