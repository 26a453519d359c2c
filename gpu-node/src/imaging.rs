//! Image conversion for `POST /convert`: decode (EXIF orientation applied), resize on the GPU
//! (or the CPU fallback), encode.

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::codecs::webp::WebPEncoder;
use image::{DynamicImage, ImageDecoder, ImageEncoder, ImageFormat, ImageReader, Limits};

use crate::gpu::{self, ResizeBackend};

/// Output formats `POST /convert` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Jpeg,
    Png,
    /// WebP, lossless (the `image` crate's encoder; lossy WebP needs libwebp).
    Webp,
}

impl OutputFormat {
    /// Parse the API's format name.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "jpg" | "jpeg" => Some(Self::Jpeg),
            "png" => Some(Self::Png),
            "webp" => Some(Self::Webp),
            _ => None,
        }
    }

    /// The canonical name, as sent in `X-Output-Format`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jpeg => "jpg",
            Self::Png => "png",
            Self::Webp => "webp",
        }
    }

    /// The MIME type of the encoded bytes.
    pub fn mime(self) -> &'static str {
        match self {
            Self::Jpeg => "image/jpeg",
            Self::Png => "image/png",
            Self::Webp => "image/webp",
        }
    }

    fn from_input(f: ImageFormat) -> Option<Self> {
        match f {
            ImageFormat::Jpeg => Some(Self::Jpeg),
            ImageFormat::Png => Some(Self::Png),
            ImageFormat::WebP => Some(Self::Webp),
            _ => None,
        }
    }
}

/// What to do with an image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConvertParams {
    /// Output format; `None` keeps the input's.
    pub format: Option<OutputFormat>,
    /// 1–100, for lossy formats.
    pub quality: u8,
    /// Bounding box; the image is fitted inside it keeping its aspect ratio, never enlarged.
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// Refuse images with more pixels than this (checked from the header, before decoding).
    pub max_pixels: u64,
}

/// A converted image.
#[derive(Debug, Clone)]
pub struct Converted {
    pub bytes: Vec<u8>,
    pub format: OutputFormat,
    pub width: u32,
    pub height: u32,
    pub resized_on: Option<ResizeBackend>,
}

/// Why an image could not be converted; each maps to a stable API code.
#[derive(Debug, thiserror::Error)]
pub enum ImagingError {
    /// Not an image in a format Kiln reads.
    #[error("unsupported image format (jpg, png and webp are read)")]
    UnsupportedFormat,
    /// The header promises more pixels than allowed (decompression bomb guard).
    #[error("image is {width}x{height}, more than the {max} pixels allowed")]
    TooManyPixels { width: u32, height: u32, max: u64 },
    /// The image data is corrupt or truncated.
    #[error("image could not be decoded: {0}")]
    Corrupt(String),
    /// Encoding failed.
    #[error("image could not be encoded: {0}")]
    Encode(String),
}

/// Fit `w`×`h` inside the optional box, keeping aspect ratio and never enlarging.
pub fn fit_inside(w: u32, h: u32, max_w: Option<u32>, max_h: Option<u32>) -> (u32, u32) {
    let sx = max_w.map_or(f64::INFINITY, |m| m as f64 / w as f64);
    let sy = max_h.map_or(f64::INFINITY, |m| m as f64 / h as f64);
    let s = sx.min(sy).min(1.0);
    if s >= 1.0 {
        return (w, h);
    }
    (
        ((w as f64 * s).round() as u32).max(1),
        ((h as f64 * s).round() as u32).max(1),
    )
}

/// Decode, resize and encode one image held in memory.
pub fn convert(input: &[u8], params: &ConvertParams) -> Result<Converted, ImagingError> {
    let reader = ImageReader::new(Cursor::new(input))
        .with_guessed_format()
        .map_err(|e| ImagingError::Corrupt(e.to_string()))?;
    let in_format = reader
        .format()
        .and_then(OutputFormat::from_input)
        .ok_or(ImagingError::UnsupportedFormat)?;

    let mut limits = Limits::default();
    limits.max_alloc = Some(params.max_pixels.saturating_mul(8).max(64 << 20));
    let mut reader = reader;
    reader.limits(limits);
    // Creating the decoder reads only the header: a decompression bomb is refused here, before
    // any pixel is decoded.
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| ImagingError::Corrupt(e.to_string()))?;
    let (hw, hh) = decoder.dimensions();
    if hw as u64 * hh as u64 > params.max_pixels {
        return Err(ImagingError::TooManyPixels {
            width: hw,
            height: hh,
            max: params.max_pixels,
        });
    }
    let orientation = decoder
        .orientation()
        .map_err(|e| ImagingError::Corrupt(e.to_string()))?;
    let mut img =
        DynamicImage::from_decoder(decoder).map_err(|e| ImagingError::Corrupt(e.to_string()))?;
    img.apply_orientation(orientation);

    let rgba = img.into_rgba8();
    let (sw, sh) = rgba.dimensions();
    let (dw, dh) = fit_inside(sw, sh, params.width, params.height);
    let (pixels, resized_on) = if (dw, dh) == (sw, sh) {
        (rgba.into_raw(), None)
    } else {
        let (out, backend) = gpu::resize_rgba8(rgba.as_raw(), sw, sh, dw, dh);
        (out, Some(backend))
    };

    let format = params.format.unwrap_or(in_format);
    let bytes = encode(&pixels, dw, dh, format, params.quality)?;
    Ok(Converted {
        bytes,
        format,
        width: dw,
        height: dh,
        resized_on,
    })
}

fn encode(
    rgba: &[u8],
    w: u32,
    h: u32,
    format: OutputFormat,
    quality: u8,
) -> Result<Vec<u8>, ImagingError> {
    let opaque = rgba.chunks_exact(4).all(|p| p[3] == 255);
    let mut out = Vec::new();
    let err = |e: image::ImageError| ImagingError::Encode(e.to_string());
    match format {
        OutputFormat::Jpeg => {
            // JPEG has no alpha: composite over white, as browsers show it.
            let rgb: Vec<u8> = rgba
                .chunks_exact(4)
                .flat_map(|p| {
                    let a = p[3] as u32;
                    let over = |c: u8| ((c as u32 * a + 255 * (255 - a) + 127) / 255) as u8;
                    [over(p[0]), over(p[1]), over(p[2])]
                })
                .collect();
            JpegEncoder::new_with_quality(&mut out, quality.clamp(1, 100))
                .write_image(&rgb, w, h, image::ExtendedColorType::Rgb8)
                .map_err(err)?;
        }
        OutputFormat::Png => {
            let enc = PngEncoder::new(&mut out);
            if opaque {
                let rgb: Vec<u8> = rgba
                    .chunks_exact(4)
                    .flat_map(|p| [p[0], p[1], p[2]])
                    .collect();
                enc.write_image(&rgb, w, h, image::ExtendedColorType::Rgb8)
                    .map_err(err)?;
            } else {
                enc.write_image(rgba, w, h, image::ExtendedColorType::Rgba8)
                    .map_err(err)?;
            }
        }
        OutputFormat::Webp => {
            WebPEncoder::new_lossless(&mut out)
                .write_image(rgba, w, h, image::ExtendedColorType::Rgba8)
                .map_err(err)?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_inside_never_enlarges_and_keeps_aspect() {
        let cases = [
            ((600, 400), (Some(300), None), (300, 200)),
            ((600, 400), (None, Some(100)), (150, 100)),
            ((600, 400), (Some(300), Some(300)), (300, 200)),
            ((600, 400), (Some(1200), None), (600, 400)),
            ((600, 400), (None, None), (600, 400)),
            ((5312, 2988), (Some(1200), None), (1200, 675)),
            ((1000, 1), (Some(10), None), (10, 1)),
        ];
        for ((w, h), (mw, mh), want) in cases {
            assert_eq!(fit_inside(w, h, mw, mh), want);
        }
    }

    #[test]
    fn format_names() {
        assert_eq!(OutputFormat::parse("JPEG"), Some(OutputFormat::Jpeg));
        assert_eq!(OutputFormat::parse("webp"), Some(OutputFormat::Webp));
        assert_eq!(OutputFormat::parse("bmp"), None);
    }

    #[test]
    fn garbage_and_bombs_are_refused() {
        let params = ConvertParams {
            format: None,
            quality: 80,
            width: None,
            height: None,
            max_pixels: 1_000_000,
        };
        assert!(matches!(
            convert(b"this is not an image at all", &params),
            Err(ImagingError::UnsupportedFormat)
        ));
        // A PNG header claiming 100000x100000 pixels: refused from the header alone.
        fn crc32(data: &[u8]) -> u32 {
            let mut crc = 0xffff_ffffu32;
            for &b in data {
                crc ^= b as u32;
                for _ in 0..8 {
                    crc = if crc & 1 != 0 {
                        (crc >> 1) ^ 0xedb8_8320
                    } else {
                        crc >> 1
                    };
                }
            }
            !crc
        }
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend_from_slice(&100_000u32.to_be_bytes());
        ihdr.extend_from_slice(&100_000u32.to_be_bytes());
        ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0d".to_vec();
        png.extend_from_slice(&ihdr);
        png.extend_from_slice(&crc32(&ihdr).to_be_bytes());
        // The decoder reads chunks up to the first IDAT before it reports dimensions.
        png.extend_from_slice(&[0, 0, 0, 0]);
        png.extend_from_slice(b"IDAT");
        png.extend_from_slice(&crc32(b"IDAT").to_be_bytes());
        let r = convert(&png, &params);
        assert!(
            matches!(r, Err(ImagingError::TooManyPixels { .. })),
            "{r:?}"
        );
    }
}
