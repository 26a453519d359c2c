//! Decoding, with every size limit checked from the header before any pixel is decoded.
//! JPEG goes through TurboJPEG (with shrink-on-load), HEIC and AVIF through libheif, the rest
//! through the `image` crate.

use std::io::Cursor;

use image::codecs::gif::GifDecoder;
use image::codecs::webp::WebPDecoder;
use image::metadata::Orientation;
use image::{AnimationDecoder, DynamicImage, ImageDecoder, ImageReader, Limits};

use super::{jpeg, ImagingError, InputFormat, Limits as ImageLimits};

/// One decoded frame: packed RGBA8, sRGB (after `icc` is applied), straight alpha.
#[derive(Debug, Clone)]
pub struct Frame {
    pub rgba: Vec<u8>,
    /// Display time, for animations.
    pub delay_ms: u32,
}

/// A decoded image: one frame, or every frame of an animation, all `width`×`height`.
#[derive(Debug)]
pub struct Decoded {
    pub frames: Vec<Frame>,
    pub width: u32,
    pub height: u32,
    /// The size before shrink-on-load, in the file's own orientation.
    pub full: (u32, u32),
    pub icc: Option<Vec<u8>>,
    pub orientation: Orientation,
    /// Whether the source can hold transparency at all (JPEG cannot); if not, the pixels'
    /// alpha need not be scanned.
    pub has_alpha: bool,
}

/// What the header says, before decoding.
#[derive(Debug, Clone)]
pub struct Header {
    pub width: u32,
    pub height: u32,
    pub orientation: Orientation,
    /// The embedded ICC profile, if any.
    pub icc: Option<Vec<u8>>,
}

impl Header {
    /// The size once the EXIF orientation is applied.
    pub fn oriented(&self) -> (u32, u32) {
        if swaps_axes(self.orientation) {
            (self.height, self.width)
        } else {
            (self.width, self.height)
        }
    }
}

/// Whether an orientation turns the image by 90°.
pub fn swaps_axes(o: Orientation) -> bool {
    matches!(
        o,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    )
}

fn corrupt(e: impl std::fmt::Display) -> ImagingError {
    ImagingError::Corrupt(e.to_string())
}

fn check_pixels(w: u32, h: u32, limits: &ImageLimits) -> Result<(), ImagingError> {
    if w == 0 || h == 0 {
        return Err(ImagingError::Corrupt(format!("image claims to be {w}x{h}")));
    }
    if w as u64 * h as u64 > limits.max_pixels {
        return Err(ImagingError::TooManyPixels {
            width: w,
            height: h,
            max: limits.max_pixels,
        });
    }
    Ok(())
}

fn reader_limits(limits: &ImageLimits) -> Limits {
    let mut l = Limits::default();
    // RGBA8 plus decoder scratch; anything larger is refused by the decoder itself.
    l.max_alloc = Some(limits.max_pixels.saturating_mul(8).max(64 << 20));
    l
}

/// Read the header of an `image`-crate format (JPEG's too, for its EXIF and ICC): size,
/// orientation and colour profile.
fn image_header(input: &[u8], limits: &ImageLimits) -> Result<Header, ImagingError> {
    let mut reader = ImageReader::new(Cursor::new(input))
        .with_guessed_format()
        .map_err(corrupt)?;
    reader.limits(reader_limits(limits));
    let mut decoder = reader.into_decoder().map_err(corrupt)?;
    let (width, height) = decoder.dimensions();
    let icc = decoder.icc_profile().ok().flatten();
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    Ok(Header {
        width,
        height,
        orientation,
        icc,
    })
}

/// Size and orientation from the header alone, with the pixel limit enforced: this is where a
/// decompression bomb is refused.
pub fn header(
    input: &[u8],
    format: InputFormat,
    limits: &ImageLimits,
) -> Result<Header, ImagingError> {
    let h = match format {
        InputFormat::Heif => {
            let ctx = libheif_rs::HeifContext::read_from_bytes(input).map_err(corrupt)?;
            let handle = ctx.primary_image_handle().map_err(corrupt)?;
            // libheif applies the container's rotation itself: dimensions are display ones.
            Header {
                width: handle.width(),
                height: handle.height(),
                orientation: Orientation::NoTransforms,
                icc: handle.color_profile_raw().map(|p| p.data),
            }
        }
        InputFormat::Jpeg => {
            // TurboJPEG's header is the authority on size; the metadata is read separately
            // and is optional (a JPEG whose EXIF cannot be parsed still decodes).
            let (width, height) = jpeg::dimensions(input).map_err(corrupt)?;
            let (orientation, icc) = image_header(input, limits)
                .map(|h| (h.orientation, h.icc))
                .unwrap_or((Orientation::NoTransforms, None));
            Header {
                width,
                height,
                orientation,
                icc,
            }
        }
        _ => image_header(input, limits)?,
    };
    check_pixels(h.width, h.height, limits)?;
    Ok(h)
}

/// Decode the whole image. `shrink` (1, 2, 4, 8) decodes a JPEG at a fraction of its size;
/// other formats ignore it. `animate` keeps every frame of an animation (else the first).
pub fn decode(
    input: &[u8],
    format: InputFormat,
    header: &Header,
    shrink: u32,
    animate: bool,
    limits: &ImageLimits,
) -> Result<Decoded, ImagingError> {
    let full = (header.width, header.height);
    let icc = header.icc.clone();
    let single = |rgba: Vec<u8>, w: u32, h: u32, has_alpha| Decoded {
        frames: vec![Frame { rgba, delay_ms: 0 }],
        width: w,
        height: h,
        full,
        icc: icc.clone(),
        orientation: header.orientation,
        has_alpha,
    };
    match format {
        InputFormat::Jpeg => {
            match jpeg::decode(input, shrink) {
                Ok((rgba, w, h)) => Ok(single(rgba, w, h, false)),
                // CMYK and other JPEGs TurboJPEG cannot turn into RGB: the slower decoder.
                Err(e) if !e.contains("Premature end") => {
                    tracing::debug!(error = %e, "TurboJPEG refused; decoding with zune-jpeg");
                    let img = decode_image(input, limits)?.into_rgba8();
                    let (w, h) = img.dimensions();
                    Ok(single(img.into_raw(), w, h, false))
                }
                Err(e) => Err(corrupt(e)),
            }
        }
        InputFormat::Heif => {
            decode_heif(input).map(|((rgba, w, h), alpha)| single(rgba, w, h, alpha))
        }
        InputFormat::Gif | InputFormat::Webp if animate => {
            let frames = decode_frames(input, format, header, limits)?;
            Ok(Decoded {
                frames,
                width: header.width,
                height: header.height,
                full,
                icc,
                orientation: header.orientation,
                has_alpha: true,
            })
        }
        _ => {
            let img = decode_image(input, limits)?;
            let alpha = img.color().has_alpha();
            let img = img.into_rgba8();
            let (w, h) = img.dimensions();
            Ok(single(img.into_raw(), w, h, alpha))
        }
    }
}

fn decode_image(input: &[u8], limits: &ImageLimits) -> Result<DynamicImage, ImagingError> {
    let mut reader = ImageReader::new(Cursor::new(input))
        .with_guessed_format()
        .map_err(corrupt)?;
    reader.limits(reader_limits(limits));
    reader.decode().map_err(corrupt)
}

/// Packed RGBA8 with its width and height.
type Pixels = (Vec<u8>, u32, u32);

fn decode_heif(input: &[u8]) -> Result<(Pixels, bool), ImagingError> {
    use libheif_rs::{ColorSpace, HeifContext, RgbChroma};
    let ctx = HeifContext::read_from_bytes(input).map_err(corrupt)?;
    let handle = ctx.primary_image_handle().map_err(corrupt)?;
    let img = handle
        .decode(ColorSpace::Rgb(RgbChroma::Rgba), None)
        .map_err(corrupt)?;
    let plane = img
        .planes()
        .interleaved
        .ok_or_else(|| corrupt("libheif returned no interleaved plane"))?;
    let (w, h) = (plane.width, plane.height);
    let row = w as usize * 4;
    let mut rgba = Vec::with_capacity(row * h as usize);
    for y in 0..h as usize {
        rgba.extend_from_slice(&plane.data[y * plane.stride..y * plane.stride + row]);
    }
    Ok(((rgba, w, h), handle.has_alpha_channel()))
}

/// Every frame of an animated GIF or WebP, composed onto the full canvas, within the frame
/// and total-pixel limits (checked as frames arrive, so a hostile file stops early).
fn decode_frames(
    input: &[u8],
    format: InputFormat,
    header: &Header,
    limits: &ImageLimits,
) -> Result<Vec<Frame>, ImagingError> {
    let frame_pixels = header.width as u64 * header.height as u64;
    let max_frames = limits
        .max_frames
        .min((limits.max_animation_pixels / frame_pixels.max(1)).max(1) as u32);
    let iter: Box<dyn Iterator<Item = image::ImageResult<image::Frame>>> = match format {
        InputFormat::Gif => {
            let mut d = GifDecoder::new(Cursor::new(input)).map_err(corrupt)?;
            d.set_limits(reader_limits(limits)).map_err(corrupt)?;
            Box::new(d.into_frames())
        }
        _ => {
            let mut d = WebPDecoder::new(Cursor::new(input)).map_err(corrupt)?;
            if !d.has_animation() {
                let img = DynamicImage::from_decoder(d).map_err(corrupt)?.into_rgba8();
                return Ok(vec![Frame {
                    rgba: img.into_raw(),
                    delay_ms: 0,
                }]);
            }
            d.set_limits(reader_limits(limits)).map_err(corrupt)?;
            Box::new(d.into_frames())
        }
    };
    let mut frames = Vec::new();
    for frame in iter {
        if frames.len() as u32 >= max_frames {
            return Err(ImagingError::TooManyFrames {
                max: max_frames,
                frame_pixels,
            });
        }
        let frame = frame.map_err(corrupt)?;
        let (n, d) = frame.delay().numer_denom_ms();
        let delay_ms = n.checked_div(d).unwrap_or(0);
        frames.push(Frame {
            rgba: frame.into_buffer().into_raw(),
            delay_ms,
        });
    }
    if frames.is_empty() {
        return Err(corrupt("animation has no frames"));
    }
    Ok(frames)
}
