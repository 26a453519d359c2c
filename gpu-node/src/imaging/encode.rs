//! Encoding, with `quality` 1–100 mapped onto each encoder's own scale. Nothing but pixels is
//! written: EXIF, XMP and ICC metadata are stripped (pixels are already sRGB).

use image::codecs::gif::{GifEncoder, Repeat};
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::codecs::tiff::TiffEncoder;
use image::{ExtendedColorType, ImageEncoder};

use super::decode::Frame;
use super::{jpeg, ImagingError, OutputFormat};

fn encode_err(e: impl std::fmt::Display) -> ImagingError {
    ImagingError::Encode(e.to_string())
}

/// Drop alpha from opaque RGBA.
fn rgb_of(rgba: &[u8]) -> Vec<u8> {
    rgba.chunks_exact(4)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect()
}

/// Composite straight-alpha RGBA over an opaque colour, for formats without alpha.
pub fn flatten(rgba: &[u8], bg: [u8; 3]) -> Vec<u8> {
    rgba.chunks_exact(4)
        .flat_map(|p| {
            let a = p[3] as u32;
            let over = |c: u8, b: u8| ((c as u32 * a + b as u32 * (255 - a) + 127) / 255) as u8;
            [over(p[0], bg[0]), over(p[1], bg[1]), over(p[2], bg[2])]
        })
        .collect()
}

/// GIF quantisation effort: NeuQuant's sampling factor, 1 (best) to 30 (fastest).
pub fn gif_speed(quality: u8) -> i32 {
    30 - (quality.clamp(1, 100) as i32 - 1) * 29 / 99
}

/// How to encode.
#[derive(Debug, Clone, Copy)]
pub struct EncodeOptions {
    pub quality: u8,
    /// WebP and AVIF only: lossless instead of lossy.
    pub lossless: bool,
    /// What transparent pixels become in JPEG.
    pub flatten_onto: [u8; 3],
}

/// Encode one or more frames (only GIF keeps more than the first).
pub fn encode(
    frames: &[Frame],
    w: u32,
    h: u32,
    format: OutputFormat,
    opts: &EncodeOptions,
) -> Result<Vec<u8>, ImagingError> {
    let rgba = &frames[0].rgba;
    let opaque = frames
        .iter()
        .all(|f| f.rgba.chunks_exact(4).all(|p| p[3] == 255));
    let mut out = Vec::new();
    match format {
        OutputFormat::Jpeg => {
            let rgb = if opaque {
                rgb_of(rgba)
            } else {
                flatten(rgba, opts.flatten_onto)
            };
            out = jpeg::encode(&rgb, w, h, 3, opts.quality).map_err(encode_err)?;
        }
        OutputFormat::Png => {
            let enc =
                PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Adaptive);
            if opaque {
                enc.write_image(&rgb_of(rgba), w, h, ExtendedColorType::Rgb8)
            } else {
                enc.write_image(rgba, w, h, ExtendedColorType::Rgba8)
            }
            .map_err(encode_err)?;
        }
        OutputFormat::Webp => {
            let rgb;
            let enc = if opaque {
                rgb = rgb_of(rgba);
                webp::Encoder::from_rgb(&rgb, w, h)
            } else {
                webp::Encoder::from_rgba(rgba, w, h)
            };
            let mem = if opts.lossless {
                enc.encode_lossless()
            } else {
                enc.encode(opts.quality.clamp(1, 100) as f32)
            };
            out = mem.to_vec();
            if out.is_empty() {
                return Err(encode_err("libwebp produced no data"));
            }
        }
        OutputFormat::Avif => out = encode_avif(rgba, w, h, opaque, opts)?,
        OutputFormat::Gif => {
            let mut enc = GifEncoder::new_with_speed(&mut out, gif_speed(opts.quality));
            if frames.len() > 1 {
                enc.set_repeat(Repeat::Infinite).map_err(encode_err)?;
            }
            let gif_frames = frames.iter().map(|f| {
                let buf =
                    image::RgbaImage::from_raw(w, h, f.rgba.clone()).expect("frame size matches");
                image::Frame::from_parts(
                    buf,
                    0,
                    0,
                    image::Delay::from_numer_denom_ms(f.delay_ms, 1),
                )
            });
            enc.encode_frames(gif_frames).map_err(encode_err)?;
        }
        OutputFormat::Tiff => {
            let enc = TiffEncoder::new(std::io::Cursor::new(&mut out));
            if opaque {
                enc.write_image(&rgb_of(rgba), w, h, ExtendedColorType::Rgb8)
            } else {
                enc.write_image(rgba, w, h, ExtendedColorType::Rgba8)
            }
            .map_err(encode_err)?;
        }
    }
    Ok(out)
}

/// AVIF through libheif's AOM encoder: `quality` is libheif's 0–100 scale, speed 7 of 0–9
/// (what sharp's default effort maps to, a little faster), 4:2:0.
fn encode_avif(
    rgba: &[u8],
    w: u32,
    h: u32,
    opaque: bool,
    opts: &EncodeOptions,
) -> Result<Vec<u8>, ImagingError> {
    use libheif_rs::{
        Channel, ColorSpace, CompressionFormat, EncoderParameterValue, EncoderQuality, HeifContext,
        Image, RgbChroma,
    };
    let (chroma, channels) = if opaque {
        (RgbChroma::Rgb, 3)
    } else {
        (RgbChroma::Rgba, 4)
    };
    let mut image = Image::new(w, h, ColorSpace::Rgb(chroma)).map_err(encode_err)?;
    image
        .create_plane(Channel::Interleaved, w, h, 8)
        .map_err(encode_err)?;
    {
        let planes = image.planes_mut();
        let plane = planes
            .interleaved
            .ok_or_else(|| encode_err("libheif gave no interleaved plane"))?;
        let row = w as usize * channels;
        for y in 0..h as usize {
            let dst = &mut plane.data[y * plane.stride..y * plane.stride + row];
            if opaque {
                for (d, s) in dst
                    .chunks_exact_mut(3)
                    .zip(rgba[y * w as usize * 4..].chunks_exact(4))
                {
                    d.copy_from_slice(&s[..3]);
                }
            } else {
                dst.copy_from_slice(&rgba[y * row..(y + 1) * row]);
            }
        }
    }
    let mut ctx = HeifContext::new().map_err(encode_err)?;
    let mut encoder = ctx
        .encoder_for_format(CompressionFormat::Av1)
        .map_err(encode_err)?;
    let quality = if opts.lossless {
        EncoderQuality::LossLess
    } else {
        EncoderQuality::Lossy(opts.quality.clamp(1, 100))
    };
    encoder.set_quality(quality).map_err(encode_err)?;
    encoder
        .set_parameter_value("speed", EncoderParameterValue::Int(7))
        .map_err(encode_err)?;
    if !opts.lossless {
        encoder
            .set_parameter_value("chroma", EncoderParameterValue::String("420".into()))
            .map_err(encode_err)?;
    }
    ctx.encode_image(&image, &mut encoder, None)
        .map_err(encode_err)?;
    ctx.write_to_bytes().map_err(encode_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quality_maps_onto_gif_speed() {
        assert_eq!(gif_speed(100), 1);
        assert_eq!(gif_speed(1), 30);
        assert!((8..=10).contains(&gif_speed(75)));
    }

    #[test]
    fn flatten_composites_over_the_background() {
        let px = [255, 0, 0, 0, 255, 0, 0, 255, 0, 0, 255, 128];
        assert_eq!(
            flatten(&px, [255, 255, 255]),
            [255, 255, 255, 255, 0, 0, 127, 127, 255]
        );
    }
}
