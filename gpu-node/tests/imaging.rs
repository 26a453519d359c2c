//! The image pipeline on real photos: every format both ways, HEIC, EXIF orientation, fit and
//! gravity, animation, quality, and hostile input.

mod common;

use kiln_gpu_node::gpu::Filter;
use kiln_gpu_node::imaging::{
    convert, jpeg, ConvertParams, Fit, Gravity, ImagingError, InputFormat, Limits, OutputFormat,
};

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(common::media(rel)).expect("media sample")
}

/// Decode any output back to RGBA through the pipeline itself (PNG out, no resize) and check
/// it with the `image` crate, an independent decoder.
fn pixels(bytes: &[u8]) -> image::RgbaImage {
    let png = convert(
        bytes,
        &ConvertParams {
            format: Some(OutputFormat::Png),
            ..Default::default()
        },
    )
    .expect("decodes back");
    image::load_from_memory_with_format(&png.bytes, image::ImageFormat::Png)
        .expect("valid PNG")
        .into_rgba8()
}

fn params(format: OutputFormat, width: Option<u32>, height: Option<u32>) -> ConvertParams {
    ConvertParams {
        format: Some(format),
        width,
        height,
        ..Default::default()
    }
}

fn mean_abs_diff(a: &image::RgbaImage, b: &image::RgbaImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let sum: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| x.abs_diff(*y) as u64)
        .sum();
    sum as f64 / a.as_raw().len() as f64
}

#[test]
fn every_output_format_is_written_and_reads_back() {
    let src = read("photo/coffee.png");
    let reference = {
        let out = convert(&src, &params(OutputFormat::Png, Some(300), None)).unwrap();
        pixels(&out.bytes)
    };
    for format in OutputFormat::ALL {
        let out = convert(&src, &params(format, Some(300), None)).unwrap();
        assert_eq!((out.width, out.height, out.format), (300, 200, format));
        let sniffed = InputFormat::sniff(&out.bytes).expect("a format Kiln reads");
        let want = match format {
            OutputFormat::Jpeg => InputFormat::Jpeg,
            OutputFormat::Png => InputFormat::Png,
            OutputFormat::Webp => InputFormat::Webp,
            OutputFormat::Avif => InputFormat::Heif,
            OutputFormat::Gif => InputFormat::Gif,
            OutputFormat::Tiff => InputFormat::Tiff,
        };
        assert_eq!(sniffed, want, "{format:?}");
        let back = pixels(&out.bytes);
        assert_eq!(back.dimensions(), (300, 200), "{format:?}");
        // Lossy formats stay close to the lossless result; GIF's 256 colours a little less so.
        let d = mean_abs_diff(&back, &reference);
        let limit = match format {
            OutputFormat::Png | OutputFormat::Tiff => 0.0,
            OutputFormat::Gif => 8.0,
            _ => 4.0,
        };
        assert!(d <= limit, "{format:?}: mean difference {d:.2} > {limit}");
    }
}

#[test]
fn quality_moves_size_and_webp_lossless_is_exact() {
    let src = read("photo/rocket.jpg");
    for format in [OutputFormat::Jpeg, OutputFormat::Webp, OutputFormat::Avif] {
        let size = |q| {
            convert(
                &src,
                &ConvertParams {
                    quality: Some(q),
                    ..params(format, Some(320), None)
                },
            )
            .unwrap()
            .bytes
            .len()
        };
        let (low, high) = (size(20), size(90));
        assert!(low * 2 < high, "{format:?}: q20 {low} B vs q90 {high} B");
    }
    let png = read("photo/chelsea.png");
    let lossless = convert(
        &png,
        &ConvertParams {
            lossless: true,
            ..params(OutputFormat::Webp, None, None)
        },
    )
    .unwrap();
    let original = image::load_from_memory(&png).unwrap().into_rgba8();
    assert_eq!(pixels(&lossless.bytes), original);
}

#[test]
fn heic_from_an_iphone_decodes_with_its_colour_profile() {
    let src = read("photo/pug.heic");
    let out = convert(&src, &params(OutputFormat::Jpeg, Some(800), None)).unwrap();
    assert_eq!((out.width, out.height), (800, 600));
    // No format asked: HEIC becomes JPEG, which every browser shows.
    let kept = convert(
        &src,
        &ConvertParams {
            width: Some(64),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(kept.format, OutputFormat::Jpeg);
    let img = pixels(&out.bytes);
    let mean: f64 = img.as_raw().iter().map(|v| *v as f64).sum::<f64>() / img.as_raw().len() as f64;
    assert!(
        (40.0..220.0).contains(&mean),
        "a real photo, not a blank: mean {mean}"
    );
}

/// A JPEG with an EXIF orientation tag, built from a real photo's corner.
fn oriented_jpeg(orientation: u16) -> (Vec<u8>, image::RgbaImage) {
    let photo = image::load_from_memory(&read("photo/rocket.jpg"))
        .unwrap()
        .into_rgb8();
    let tile = image::imageops::crop_imm(&photo, 200, 100, 120, 80).to_image();
    let jpg = jpeg::encode(tile.as_raw(), 120, 80, 3, 95).unwrap();
    // APP1 "Exif" with a big-endian TIFF header and one IFD entry: Orientation (0x0112).
    let mut exif = b"Exif\0\0MM\0\x2a\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01".to_vec();
    exif.extend_from_slice(&orientation.to_be_bytes());
    exif.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    let mut out = jpg[..2].to_vec();
    out.extend_from_slice(&[0xff, 0xe1]);
    out.extend_from_slice(&((exif.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&exif);
    out.extend_from_slice(&jpg[2..]);
    let decoded = image::load_from_memory(&jpg).unwrap().into_rgba8();
    (out, decoded)
}

#[test]
fn exif_orientation_is_applied_before_anything_else() {
    let (jpg, upright) = oriented_jpeg(6); // stored rotated: display turns 90° clockwise
    let out = convert(&jpg, &params(OutputFormat::Png, None, None)).unwrap();
    assert_eq!((out.width, out.height), (80, 120));
    let turned = image::imageops::rotate90(&upright);
    let d = mean_abs_diff(&pixels(&out.bytes), &turned);
    assert!(d < 1.0, "rotation differs from rotate90: {d}");
    // The box applies to the displayed shape: 40 wide means 40x60, not 40x27.
    let small = convert(&jpg, &params(OutputFormat::Png, Some(40), None)).unwrap();
    assert_eq!((small.width, small.height), (40, 60));
}

#[test]
fn avatar_cover_crop_and_max_width_on_a_16_megapixel_photo() {
    let src = read("photo/seeding_by_Clements_Engelhardt.jpg");
    // The Konvrt blog's avatar: a 200x200 centre crop.
    let avatar = convert(
        &src,
        &ConvertParams {
            fit: Fit::Cover,
            ..params(OutputFormat::Jpeg, Some(200), Some(200))
        },
    )
    .unwrap();
    assert_eq!((avatar.width, avatar.height), (200, 200));
    assert_eq!(
        avatar.shrink_on_load, 8,
        "2988/8 = 374 rows still cover 200"
    );
    // Its maxWidth pattern: inside 1200.
    let web = convert(&src, &params(OutputFormat::Webp, Some(1200), None)).unwrap();
    assert_eq!((web.width, web.height), (1200, 675));
    assert_eq!(web.shrink_on_load, 4);
    // Shrink-on-load changes the work, not the picture: compare with a full-size decode.
    let png = convert(
        &convert(&src, &params(OutputFormat::Png, None, None))
            .unwrap()
            .bytes,
        &params(OutputFormat::Png, Some(1200), None),
    )
    .unwrap();
    assert_eq!(png.shrink_on_load, 1);
    let d = mean_abs_diff(&pixels(&web.bytes), &pixels(&png.bytes));
    assert!(
        d < 3.0,
        "shrink-on-load result too far from the full decode: {d}"
    );
}

#[test]
fn contain_letterboxes_with_the_background_and_gravity_moves_crops() {
    let src = read("photo/coffee.png"); // 600x400
    let out = convert(
        &src,
        &ConvertParams {
            fit: Fit::Contain,
            background: Some([255, 0, 255, 255]),
            ..params(OutputFormat::Png, Some(300), Some(300))
        },
    )
    .unwrap();
    let img = pixels(&out.bytes);
    assert_eq!(img.dimensions(), (300, 300));
    assert_eq!(img.get_pixel(150, 10).0, [255, 0, 255, 255], "top band");
    assert_eq!(img.get_pixel(150, 290).0, [255, 0, 255, 255], "bottom band");
    assert_ne!(img.get_pixel(150, 150).0, [255, 0, 255, 255], "the photo");

    // West and east crops of the same photo differ; the east crop matches the photo's right.
    let crop = |g| {
        pixels(
            &convert(
                &src,
                &ConvertParams {
                    fit: Fit::Cover,
                    gravity: g,
                    filter: Filter::Box,
                    ..params(OutputFormat::Png, Some(100), Some(100))
                },
            )
            .unwrap()
            .bytes,
        )
    };
    let (west, east, smart) = (
        crop(Gravity::West),
        crop(Gravity::East),
        crop(Gravity::Entropy),
    );
    assert!(mean_abs_diff(&west, &east) > 5.0);
    assert_eq!(smart.dimensions(), (100, 100));
    let fill = convert(
        &src,
        &ConvertParams {
            fit: Fit::Fill,
            ..params(OutputFormat::Png, Some(100), Some(300))
        },
    )
    .unwrap();
    assert_eq!((fill.width, fill.height), (100, 300));
}

fn animated_gif(frames: u32, w: u32, h: u32) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = image::codecs::gif::GifEncoder::new(&mut out);
        enc.set_repeat(image::codecs::gif::Repeat::Infinite)
            .unwrap();
        for i in 0..frames {
            let img = image::RgbaImage::from_fn(w, h, |x, y| {
                image::Rgba([
                    (x * 255 / w) as u8,
                    (y * 255 / h) as u8,
                    (i * 80) as u8,
                    255,
                ])
            });
            enc.encode_frame(image::Frame::from_parts(
                img,
                0,
                0,
                image::Delay::from_numer_denom_ms(100, 1),
            ))
            .unwrap();
        }
    }
    out
}

#[test]
fn animated_gifs_keep_their_frames_within_limits() {
    let gif = animated_gif(3, 64, 48);
    let out = convert(&gif, &params(OutputFormat::Gif, Some(32), None)).unwrap();
    assert_eq!((out.width, out.height, out.frames), (32, 24, 3));
    let decoder = image::codecs::gif::GifDecoder::new(std::io::Cursor::new(&out.bytes)).unwrap();
    let frames = image::AnimationDecoder::into_frames(decoder)
        .collect_frames()
        .unwrap();
    assert_eq!(frames.len(), 3);
    assert_eq!(frames[1].delay().numer_denom_ms(), (100, 1));
    // Into a still format: the first frame.
    let still = convert(&gif, &params(OutputFormat::Png, None, None)).unwrap();
    assert_eq!(still.frames, 1);
    // Too many frames, or too many pixels over all frames: refused while decoding.
    let limited = |limits| ConvertParams {
        limits,
        ..params(OutputFormat::Gif, None, None)
    };
    let r = convert(
        &gif,
        &limited(Limits {
            max_frames: 2,
            ..Limits::default()
        }),
    );
    assert!(
        matches!(r, Err(ImagingError::TooManyFrames { .. })),
        "{r:?}"
    );
    let r = convert(
        &gif,
        &limited(Limits {
            max_animation_pixels: 64 * 48 * 2,
            ..Limits::default()
        }),
    );
    assert!(
        matches!(r, Err(ImagingError::TooManyFrames { .. })),
        "{r:?}"
    );
}

#[test]
fn hostile_input_gets_stable_errors() {
    let jpg = read("photo/rocket.jpg");
    let png = read("photo/chelsea.png");
    let heic = read("photo/pug.heic");
    let p = params(OutputFormat::Png, Some(100), None);
    for (name, bytes) in [
        ("truncated jpeg", &jpg[..jpg.len() / 2]),
        ("truncated png", &png[..png.len() / 2]),
        ("truncated heic", &heic[..heic.len() / 3]),
        (
            "png magic, garbage body",
            &b"\x89PNG\r\n\x1a\ngarbage garbage"[..],
        ),
        ("jpeg magic, garbage body", &b"\xff\xd8\xff\xe0garbage"[..]),
    ] {
        let r = convert(bytes, &p);
        assert!(
            matches!(r, Err(ImagingError::Corrupt(_))),
            "{name}: {:?}",
            r.map(|c| c.width)
        );
        assert_eq!(r.unwrap_err().code(), "corrupt_image");
    }
    assert_eq!(
        convert(b"BM not supported", &p).unwrap_err().code(),
        "unsupported_image_format"
    );

    // A JPEG whose frame header claims 60000x60000: refused from the header.
    let mut bomb = jpg.clone();
    let sof = bomb
        .windows(2)
        .position(|w| w == [0xff, 0xc0] || w == [0xff, 0xc2])
        .expect("SOF marker");
    bomb[sof + 5..sof + 9].copy_from_slice(&[0xea, 0x60, 0xea, 0x60]);
    let r = convert(&bomb, &p);
    assert!(
        matches!(
            r,
            Err(ImagingError::TooManyPixels {
                width: 60000,
                height: 60000,
                ..
            })
        ),
        "{r:?}"
    );
    // A GIF whose screen claims 65535x65535.
    let mut gif = animated_gif(1, 8, 8);
    gif[6..10].copy_from_slice(&[0xff, 0xff, 0xff, 0xff]);
    let r = convert(&gif, &p);
    assert!(
        matches!(
            r,
            Err(ImagingError::TooManyPixels { .. }) | Err(ImagingError::Corrupt(_))
        ),
        "{r:?}"
    );
}
