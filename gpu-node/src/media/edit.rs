//! A video output's edits on the node: the span of the source kept (frame-accurate: the pass
//! seeks to the keyframe before `start`, decodes from there and drops what comes before), and
//! the picture filters — crop, watermark (`movie` + `overlay`), burned-in subtitles (libass
//! through `subtitles`) — as one FFmpeg filter graph on CPU frames.

use std::path::{Path, PathBuf};

use kiln_protocol::edit::{CropRect, Edit, Watermark};
use rsmpeg::ffi;

use super::pipeline::chain::pix_fmt_name;
use super::probe::MediaInfo;
use super::MediaError;

/// The files an edit reads, fetched to the node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EditFiles {
    pub watermark: Option<PathBuf>,
    pub subtitles: Option<PathBuf>,
}

/// What `info` becomes once `edit` is applied: the duration of the span kept and, where the
/// picture is filtered, the displayed (rotated, cropped) size with the rotation already done.
/// The control plane checks requests with it; the node plans geometry and rate from it.
pub fn edited_info(info: &MediaInfo, edit: &Edit) -> Result<MediaInfo, String> {
    let mut out = info.clone();
    if edit.start_s.is_some() || edit.end_s.is_some() {
        let (start, end) = edit.span(info.duration_s)?;
        if end.is_finite() {
            out.duration_s = end - start;
        }
    }
    if edit.touches_picture() {
        let (dw, dh) = info.display_size();
        let (w, h) = match &edit.crop {
            Some(c) => {
                let r = c.resolve(dw, dh)?;
                (r.width, r.height)
            }
            None => (dw, dh),
        };
        out.width = w;
        out.height = h;
        out.display_width = w;
        out.rotation = 0;
    }
    Ok(out)
}

/// An edit planned against its source.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct EditPlan {
    /// `[start, end)` of the source kept (s, from the video's first timestamp), when trimmed;
    /// `end` is infinite when the source's duration is unknown.
    pub span: Option<(f64, f64)>,
    /// The picture filters, when there are any.
    pub picture: Option<PicturePlan>,
}

/// Crop, watermark and subtitles, and what they need to know of the source.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PicturePlan {
    /// The source's display rotation, applied before the crop.
    pub rotation: i32,
    pub crop: Option<CropRect>,
    pub watermark: Option<(PathBuf, Watermark)>,
    pub subtitles: Option<PathBuf>,
}

impl EditPlan {
    /// Plan `edit` for a source described by `info`, with its files fetched to `files`.
    pub fn new(info: &MediaInfo, edit: &Edit, files: &EditFiles) -> Result<Self, MediaError> {
        let bad = MediaError::InvalidSettings;
        let span = if edit.start_s.is_some() || edit.end_s.is_some() {
            Some(edit.span(info.duration_s).map_err(bad)?)
        } else {
            None
        };
        let picture = if edit.touches_picture() {
            let (dw, dh) = info.display_size();
            let crop = edit
                .crop
                .map(|c| c.resolve(dw, dh))
                .transpose()
                .map_err(bad)?;
            let need = |what: &str, p: &Option<PathBuf>| {
                p.clone().ok_or_else(|| {
                    MediaError::InvalidSettings(format!("the {what} file was not fetched"))
                })
            };
            // The caller's files, checked before any decoding, with their own message.
            if let Some(path) = files
                .watermark
                .as_deref()
                .filter(|_| edit.watermark.is_some())
            {
                check_watermark(path)?;
            }
            if let Some(path) = files
                .subtitles
                .as_deref()
                .filter(|_| edit.subtitles.is_some())
            {
                check_subtitles(path)?;
            }
            Some(PicturePlan {
                rotation: info.rotation,
                crop,
                watermark: match &edit.watermark {
                    Some(w) => Some((need("watermark", &files.watermark)?, w.clone())),
                    None => None,
                },
                subtitles: match &edit.subtitles {
                    Some(_) => Some(need("subtitles", &files.subtitles)?),
                    None => None,
                },
            })
        } else {
            None
        };
        Ok(Self { span, picture })
    }
}

/// The filter graph from decoded frames (`src_w`×`src_h`, sample aspect `sar`, format `fmt`,
/// `sw` behind CUDA frames) through `plan` to `out` (w, h) in pixel format `target`: frames
/// come to system memory first (the picture filters run on the CPU), are made square and
/// upright, cropped, scaled, overlaid and subtitled. Labelled `[in]` … `[label]`.
pub(crate) fn picture_chain(
    (src_w, src_h): (i32, i32),
    sar: ffi::AVRational,
    (fmt, sw): (i32, Option<i32>),
    plan: &PicturePlan,
    out: (u32, u32),
    target: i32,
    label: &str,
) -> String {
    let mut parts: Vec<String> = Vec::new();
    if fmt == ffi::AVPixelFormat_AV_PIX_FMT_CUDA {
        parts.push("hwdownload".into());
        parts.push(format!(
            "format={}",
            pix_fmt_name(sw.unwrap_or(ffi::AVPixelFormat_AV_PIX_FMT_NV12))
        ));
    }
    // Square pixels first, so the crop is in displayed pixels.
    let (mut w, mut h) = (src_w.max(1) as u32, src_h.max(1) as u32);
    if sar.num > 0 && sar.den > 0 && sar.num != sar.den {
        let sw = ((w as u64 * sar.num as u64 / sar.den as u64) as u32).max(2) & !1;
        parts.push(format!("scale={sw}:{h}:flags=bicubic,setsar=1"));
        w = sw;
    }
    match plan.rotation {
        90 => parts.push("transpose=clock".into()),
        180 => parts.push("hflip,vflip".into()),
        270 => parts.push("transpose=cclock".into()),
        _ => {}
    }
    if plan.rotation % 180 != 0 {
        std::mem::swap(&mut w, &mut h);
    }
    if let Some(c) = plan.crop {
        parts.push(format!("crop={}:{}:{}:{}", c.width, c.height, c.x, c.y));
        (w, h) = (c.width, c.height);
    }
    if (w, h) != out {
        parts.push(format!("scale={}:{}:flags=bicubic", out.0, out.1));
    }
    let mut graph = format!("[in]{}", parts.join(","));
    if parts.is_empty() {
        graph.push_str("null");
    }
    if let Some((path, wm)) = &plan.watermark {
        let mut mark = vec![
            format!("movie=filename={}", filter_arg(&path.to_string_lossy())),
            "format=rgba".to_string(),
        ];
        if let Some(f) = wm.width_fraction {
            let px = ((out.0 as f32 * f).round() as u32).max(2);
            mark.push(format!("scale={px}:-1:flags=bicubic"));
        }
        if wm.opacity < 1.0 {
            mark.push(format!("colorchannelmixer=aa={:.3}", wm.opacity.max(0.0)));
        }
        let (x, y) = wm.overlay_xy();
        graph = format!(
            "{graph}[base];{}[mark];[base][mark]overlay=x={x}:y={y}:format=auto",
            mark.join(",")
        );
    }
    let mut tail = Vec::new();
    if let Some(path) = &plan.subtitles {
        tail.push(format!(
            "subtitles=filename={}",
            filter_arg(&path.to_string_lossy())
        ));
    }
    tail.push(format!("format={}", pix_fmt_name(target)));
    tail.push("setsar=1".into());
    format!("{graph},{}[{label}]", tail.join(","))
}

/// Escape a filter option value for FFmpeg's two levels (the option string, then the graph
/// description), as "Notes on filtergraph escaping" in FFmpeg's filter docs lays out.
fn filter_arg(v: &str) -> String {
    let mut option = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '\\' | '\'' | ':') {
            option.push('\\');
        }
        option.push(c);
    }
    let mut graph = String::with_capacity(option.len());
    for c in option.chars() {
        if matches!(c, '\\' | '\'' | '[' | ']' | ',' | ';') {
            graph.push('\\');
        }
        graph.push(c);
    }
    graph
}

/// Check that `path` is a subtitle file FFmpeg reads (SRT, WebVTT, ASS): the demuxer finds a
/// subtitle stream in it.
pub fn check_subtitles(path: &Path) -> Result<(), MediaError> {
    let url = super::path_cstring(path)?;
    let ictx = rsmpeg::avformat::AVFormatContextInput::open(&url, None, &mut None)
        .map_err(|e| MediaError::InvalidMedia(super::error::describe("open the subtitles", &e)))?;
    let found = ictx
        .streams()
        .into_iter()
        .any(|s| s.codecpar().codec_type == ffi::AVMediaType_AVMEDIA_TYPE_SUBTITLE);
    if found {
        Ok(())
    } else {
        Err(MediaError::InvalidMedia(
            "the subtitles file is not SRT, WebVTT or ASS (no subtitle stream in it)".into(),
        ))
    }
}

/// Check that `path` is an image FFmpeg decodes (what the watermark's `movie` source reads).
pub fn check_watermark(path: &Path) -> Result<(u32, u32), MediaError> {
    let info = super::probe(path)
        .map_err(|e| MediaError::InvalidMedia(format!("the watermark is not an image: {e}")))?;
    Ok((info.width, info.height))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_protocol::edit::{Asset, Gravity};

    fn info(w: u32, h: u32, rotation: i32, duration_s: f64) -> MediaInfo {
        MediaInfo {
            format: "mov".into(),
            duration_s,
            video_codec: "h264".into(),
            width: w,
            height: h,
            display_width: w,
            has_audio: true,
            rotation,
            bit_depth: 8,
            audio_codec: Some("aac".into()),
            audio_bitrate: 128_000,
            audio_channels: 2,
            streams: 2,
        }
    }

    #[test]
    fn edited_info_has_the_kept_span_and_the_cropped_upright_size() {
        let crop = kiln_protocol::edit::Crop::parse("9:16", Gravity::Center).unwrap();
        let edit = Edit {
            start_s: Some(2.0),
            end_s: Some(5.5),
            crop: Some(crop),
            ..Edit::default()
        };
        let e = edited_info(&info(1920, 1080, 0, 10.0), &edit).unwrap();
        assert_eq!((e.width, e.height, e.rotation), (606, 1080, 0));
        assert!((e.duration_s - 3.5).abs() < 1e-9);
        // A portrait phone clip (1920x1080 coded, rotated 90°) is 1080x1920 upright: 9:16 keeps it.
        let e = edited_info(&info(1920, 1080, 90, 10.0), &edit).unwrap();
        assert_eq!((e.width, e.height), (1080, 1920));
        let trim_only = Edit {
            end_s: Some(4.0),
            ..Edit::default()
        };
        let e = edited_info(&info(640, 360, 90, 10.0), &trim_only).unwrap();
        assert_eq!(
            (e.width, e.height, e.rotation, e.duration_s),
            (640, 360, 90, 4.0)
        );
        assert!(edited_info(
            &info(640, 360, 0, 10.0),
            &Edit {
                start_s: Some(11.0),
                ..Edit::default()
            }
        )
        .is_err());
    }

    #[test]
    fn picture_chains_square_rotate_crop_scale_overlay_and_subtitle() {
        let sq = ffi::AVRational { num: 1, den: 1 };
        let yuv = ffi::AVPixelFormat_AV_PIX_FMT_YUV420P;
        let mut wm = kiln_protocol::edit::Watermark::new(Asset::Key("k".into()));
        wm.opacity = 0.5;
        wm.width_fraction = Some(0.25);
        let plan = PicturePlan {
            rotation: 90,
            crop: Some(CropRect {
                x: 0,
                y: 420,
                width: 1080,
                height: 1080,
            }),
            watermark: Some((PathBuf::from("/s/a:b,c.png"), wm)),
            subtitles: Some(PathBuf::from("/s/subs.srt")),
        };
        let chain = picture_chain(
            (1920, 1080),
            sq,
            (
                ffi::AVPixelFormat_AV_PIX_FMT_CUDA,
                Some(ffi::AVPixelFormat_AV_PIX_FMT_NV12),
            ),
            &plan,
            (720, 720),
            yuv,
            "out",
        );
        assert_eq!(
            chain,
            "[in]hwdownload,format=nv12,transpose=clock,crop=1080:1080:0:420,scale=720:720:flags=bicubic[base];\
             movie=filename=/s/a\\\\:b\\,c.png,format=rgba,scale=180:-1:flags=bicubic,colorchannelmixer=aa=0.500[mark];\
             [base][mark]overlay=x=W-w-16:y=H-h-16:format=auto,subtitles=filename=/s/subs.srt,format=yuv420p,setsar=1[out]"
        );
        // Anamorphic PAL made square before anything else; nothing to scale after.
        let pal = ffi::AVRational { num: 16, den: 11 };
        let plain = PicturePlan {
            rotation: 0,
            crop: None,
            watermark: None,
            subtitles: Some(PathBuf::from("/s/x.vtt")),
        };
        assert_eq!(
            picture_chain((720, 576), pal, (yuv, None), &plain, (1046, 576), yuv, "out"),
            "[in]scale=1046:576:flags=bicubic,setsar=1,subtitles=filename=/s/x.vtt,format=yuv420p,setsar=1[out]"
        );
        assert_eq!(
            picture_chain((640, 360), sq, (yuv, None), &plain, (640, 360), yuv, "pic"),
            "[in]null,subtitles=filename=/s/x.vtt,format=yuv420p,setsar=1[pic]"
        );
    }
}
