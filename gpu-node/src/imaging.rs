//! Image conversion for `POST /convert`: sniff, check the header against the limits, decode
//! (JPEG shrink-on-load), orient, crop, resize (wgpu or CPU), convert to sRGB, letterbox,
//! encode.

pub mod color;
pub mod decode;
pub mod encode;
pub mod geometry;
pub mod jpeg;
pub mod params;

use image::metadata::Orientation;

pub use geometry::{Fit, Gravity};

use crate::gpu::{self, Filter, ResizeBackend};
use decode::Frame;
use geometry::Rect;

/// Formats Kiln reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    Jpeg,
    Png,
    Webp,
    Gif,
    Tiff,
    /// HEIC or AVIF: both are HEIF containers, decoded by libheif.
    Heif,
}

impl InputFormat {
    /// Recognise a format from its first bytes.
    pub fn sniff(data: &[u8]) -> Option<Self> {
        let starts = |m: &[u8]| data.starts_with(m);
        if starts(&[0xff, 0xd8, 0xff]) {
            Some(Self::Jpeg)
        } else if starts(b"\x89PNG\r\n\x1a\n") {
            Some(Self::Png)
        } else if starts(b"GIF87a") || starts(b"GIF89a") {
            Some(Self::Gif)
        } else if data.len() >= 12 && starts(b"RIFF") && &data[8..12] == b"WEBP" {
            Some(Self::Webp)
        } else if starts(b"II*\0") || starts(b"MM\0*") {
            Some(Self::Tiff)
        } else if data.len() >= 12 && &data[4..8] == b"ftyp" && is_heif_brand(&data[8..12]) {
            Some(Self::Heif)
        } else {
            None
        }
    }
}

fn is_heif_brand(b: &[u8]) -> bool {
    matches!(
        b,
        b"heic"
            | b"heix"
            | b"hevc"
            | b"hevx"
            | b"heim"
            | b"heis"
            | b"mif1"
            | b"msf1"
            | b"avif"
            | b"avis"
    )
}

/// Output formats `POST /convert` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Jpeg,
    Png,
    Webp,
    Avif,
    Gif,
    Tiff,
}

impl OutputFormat {
    /// Every output format, as the API lists them.
    pub const ALL: [OutputFormat; 6] = [
        Self::Jpeg,
        Self::Png,
        Self::Webp,
        Self::Avif,
        Self::Gif,
        Self::Tiff,
    ];

    /// Parse the API's format name.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "jpg" | "jpeg" => Some(Self::Jpeg),
            "png" => Some(Self::Png),
            "webp" => Some(Self::Webp),
            "avif" => Some(Self::Avif),
            "gif" => Some(Self::Gif),
            "tif" | "tiff" => Some(Self::Tiff),
            _ => None,
        }
    }

    /// The canonical name, as sent in `X-Output-Format`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jpeg => "jpg",
            Self::Png => "png",
            Self::Webp => "webp",
            Self::Avif => "avif",
            Self::Gif => "gif",
            Self::Tiff => "tiff",
        }
    }

    /// The MIME type of the encoded bytes.
    pub fn mime(self) -> &'static str {
        match self {
            Self::Jpeg => "image/jpeg",
            Self::Png => "image/png",
            Self::Webp => "image/webp",
            Self::Avif => "image/avif",
            Self::Gif => "image/gif",
            Self::Tiff => "image/tiff",
        }
    }

    /// Whether `quality` changes what is written (PNG and TIFF are written losslessly).
    pub fn lossy(self) -> bool {
        !matches!(self, Self::Png | Self::Tiff)
    }

    /// The quality used when the request names none (sharp's defaults).
    pub fn default_quality(self) -> u8 {
        match self {
            Self::Avif => 50,
            _ => 80,
        }
    }

    /// What an input becomes when no format is asked for: itself, except HEIC/AVIF, which
    /// become JPEG (HEIC is not shown by most browsers; AVIF is kept only when asked).
    pub fn keep(input: InputFormat) -> Self {
        match input {
            InputFormat::Jpeg | InputFormat::Heif => Self::Jpeg,
            InputFormat::Png => Self::Png,
            InputFormat::Webp => Self::Webp,
            InputFormat::Gif => Self::Gif,
            InputFormat::Tiff => Self::Tiff,
        }
    }
}

/// Size limits, all checked before or while decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest image, and largest sum over an animation's frames, in pixels.
    pub max_pixels: u64,
    /// Most frames an animation may have.
    pub max_frames: u32,
    /// Largest sum of pixels over an animation's frames.
    pub max_animation_pixels: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_pixels: 100_000_000,
            max_frames: 500,
            max_animation_pixels: 100_000_000,
        }
    }
}

/// What to do with an image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConvertParams {
    /// Output format; `None` keeps the input's (HEIC becomes JPEG).
    pub format: Option<OutputFormat>,
    /// 1–100; `None` takes the format's default.
    pub quality: Option<u8>,
    /// WebP/AVIF: lossless.
    pub lossless: bool,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub fit: Fit,
    pub gravity: Gravity,
    /// `contain`'s letterbox colour and what JPEG flattens alpha onto (RGBA). `None`:
    /// transparent, and white under JPEG.
    pub background: Option<[u8; 4]>,
    pub filter: Filter,
    pub limits: Limits,
}

impl Default for ConvertParams {
    fn default() -> Self {
        Self {
            format: None,
            quality: None,
            lossless: false,
            width: None,
            height: None,
            fit: Fit::Inside,
            gravity: Gravity::Center,
            background: None,
            filter: Filter::Lanczos3,
            limits: Limits::default(),
        }
    }
}

/// A converted image.
#[derive(Debug, Clone)]
pub struct Converted {
    pub bytes: Vec<u8>,
    pub format: OutputFormat,
    pub width: u32,
    pub height: u32,
    pub resized_on: Option<ResizeBackend>,
    /// The JPEG DCT reduction used while decoding (1 = full size).
    pub shrink_on_load: u32,
    pub frames: usize,
}

/// Why an image could not be converted; each maps to a stable API code.
#[derive(Debug, thiserror::Error)]
pub enum ImagingError {
    /// Not an image in a format Kiln reads.
    #[error("unsupported image format (jpg, png, webp, gif, tiff, avif and heic are read)")]
    UnsupportedFormat,
    /// The header promises more pixels than allowed (decompression bomb guard).
    #[error("image is {width}x{height}, more than the {max} pixels allowed")]
    TooManyPixels { width: u32, height: u32, max: u64 },
    /// An animation longer than allowed.
    #[error("animation has more than {max} frames of {frame_pixels} pixels allowed")]
    TooManyFrames { max: u32, frame_pixels: u64 },
    /// The image data is corrupt or truncated.
    #[error("image could not be decoded: {0}")]
    Corrupt(String),
    /// Encoding failed.
    #[error("image could not be encoded: {0}")]
    Encode(String),
    /// The resize could not run.
    #[error("image could not be resized: {0}")]
    Resize(String),
}

impl ImagingError {
    /// The stable code a job that failed this way ends with (`POST /convert`, which answers
    /// at once, maps the same errors to HTTP statuses instead).
    pub fn job_code(&self) -> kiln_protocol::JobErrorCode {
        use kiln_protocol::JobErrorCode;
        match self {
            Self::UnsupportedFormat | Self::Corrupt(_) => JobErrorCode::DecodeFailed,
            Self::TooManyPixels { .. } | Self::TooManyFrames { .. } => {
                JobErrorCode::InvalidSettings
            }
            Self::Encode(_) | Self::Resize(_) => JobErrorCode::EncodeFailed,
        }
    }

    /// The finer reason, logged with a failed job.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnsupportedFormat => "unsupported_image_format",
            Self::TooManyPixels { .. } => "image_too_large",
            Self::TooManyFrames { .. } => "too_many_frames",
            Self::Corrupt(_) => "corrupt_image",
            Self::Encode(_) => "encode_failed",
            Self::Resize(_) => "resize_failed",
        }
    }
}

fn orient(rgba: Vec<u8>, w: u32, h: u32, o: Orientation) -> (Vec<u8>, u32, u32) {
    if o == Orientation::NoTransforms {
        return (rgba, w, h);
    }
    let mut img =
        image::DynamicImage::ImageRgba8(image::RgbaImage::from_raw(w, h, rgba).expect("size"));
    img.apply_orientation(o);
    let img = img.into_rgba8();
    let (w, h) = img.dimensions();
    (img.into_raw(), w, h)
}

fn crop(rgba: &[u8], w: u32, r: Rect) -> Vec<u8> {
    let mut out = Vec::with_capacity(r.w as usize * r.h as usize * 4);
    for y in r.y..r.y + r.h {
        let start = (y as usize * w as usize + r.x as usize) * 4;
        out.extend_from_slice(&rgba[start..start + r.w as usize * 4]);
    }
    out
}

fn place(
    rgba: &[u8],
    (w, h): (u32, u32),
    (cw, ch): (u32, u32),
    (ox, oy): (u32, u32),
    bg: [u8; 4],
) -> Vec<u8> {
    let mut canvas = bg.repeat(cw as usize * ch as usize);
    for y in 0..h as usize {
        let dst = ((oy as usize + y) * cw as usize + ox as usize) * 4;
        canvas[dst..dst + w as usize * 4]
            .copy_from_slice(&rgba[y * w as usize * 4..(y + 1) * w as usize * 4]);
    }
    canvas
}

/// Decode, orient, crop, resize, letterbox and encode one image held in memory.
pub fn convert(input: &[u8], params: &ConvertParams) -> Result<Converted, ImagingError> {
    let in_format = InputFormat::sniff(input).ok_or(ImagingError::UnsupportedFormat)?;
    let header = decode::header(input, in_format, &params.limits)?;
    let format = params.format.unwrap_or(OutputFormat::keep(in_format));
    let full = header.oriented();
    let layout = geometry::layout(
        full,
        params.width,
        params.height,
        params.fit,
        params.gravity,
    );

    let shrink = if in_format == InputFormat::Jpeg && layout.resizes() {
        jpeg::shrink_factor((layout.crop.w, layout.crop.h), layout.resized)
    } else {
        1
    };
    let animate = format == OutputFormat::Gif;
    let decoded = decode::decode(input, in_format, &header, shrink, animate, &params.limits)?;

    let (mut w, mut h) = (decoded.width, decoded.height);
    let mut frames = Vec::with_capacity(decoded.frames.len());
    for f in decoded.frames {
        let (rgba, ow, oh) = orient(f.rgba, decoded.width, decoded.height, decoded.orientation);
        (w, h) = (ow, oh);
        frames.push(Frame {
            rgba,
            delay_ms: f.delay_ms,
        });
    }

    let mut region = layout.crop_at(full, (w, h));
    if params.gravity == Gravity::Entropy && params.fit == Fit::Cover {
        region = geometry::entropy_crop(&frames[0].rgba, w, h, region.w, region.h);
    }
    let whole = region == Rect { x: 0, y: 0, w, h };
    let (rw, rh) = layout.resized;
    let mut resized_on = None;
    for f in &mut frames {
        let src = if whole {
            std::mem::take(&mut f.rgba)
        } else {
            crop(&f.rgba, w, region)
        };
        f.rgba = if (region.w, region.h) == (rw, rh) {
            src
        } else {
            let opaque = !decoded.has_alpha || src.chunks_exact(4).all(|p| p[3] == 255);
            let (out, backend) =
                gpu::resize_rgba8(&src, (region.w, region.h), (rw, rh), params.filter, opaque)
                    .map_err(|e| ImagingError::Resize(e.to_string()))?;
            resized_on = Some(backend);
            out
        };
        // The colour profile is applied to the resized pixels, not the full-size ones (libvips'
        // thumbnail does the same): the resize treats the values with the sRGB curve, which is
        // exact for Display P3 (the iPhone's profile, same curve) and close for the others, and
        // a 12 MP transform would cost more than the resize.
        if let Some(icc) = &decoded.icc {
            color::to_srgb(&mut f.rgba, icc);
        }
        if layout.canvas != layout.resized {
            f.rgba = place(
                &f.rgba,
                layout.resized,
                layout.canvas,
                layout.offset,
                params.background.unwrap_or([0, 0, 0, 0]),
            );
        }
    }

    let (cw, ch) = layout.canvas;
    let bg = params.background.unwrap_or([255, 255, 255, 255]);
    let opts = encode::EncodeOptions {
        quality: params.quality.unwrap_or(format.default_quality()),
        lossless: params.lossless,
        flatten_onto: [bg[0], bg[1], bg[2]],
    };
    let bytes = encode::encode(&frames, cw, ch, format, &opts)?;
    Ok(Converted {
        bytes,
        format,
        width: cw,
        height: ch,
        resized_on,
        shrink_on_load: shrink,
        frames: frames.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_names_and_sniffing() {
        assert_eq!(OutputFormat::parse("JPEG"), Some(OutputFormat::Jpeg));
        assert_eq!(OutputFormat::parse("tif"), Some(OutputFormat::Tiff));
        assert_eq!(OutputFormat::parse("bmp"), None);
        for f in OutputFormat::ALL {
            assert_eq!(OutputFormat::parse(f.as_str()), Some(f));
        }
        assert_eq!(InputFormat::sniff(b"GIF89a...."), Some(InputFormat::Gif));
        assert_eq!(
            InputFormat::sniff(b"RIFF\0\0\0\0WEBPVP8 "),
            Some(InputFormat::Webp)
        );
        assert_eq!(
            InputFormat::sniff(b"\0\0\0\x18ftypheic\0\0"),
            Some(InputFormat::Heif)
        );
        assert_eq!(InputFormat::sniff(b"\0\0\0\x18ftypisom\0\0"), None);
        assert_eq!(InputFormat::sniff(b"hello"), None);
    }

    #[test]
    fn garbage_and_bombs_are_refused() {
        let params = ConvertParams {
            limits: Limits {
                max_pixels: 1_000_000,
                ..Limits::default()
            },
            ..ConvertParams::default()
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
