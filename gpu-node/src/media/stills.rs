//! Thumbnails and storyboards: one decode of the video; at each wanted time the first frame at
//! or after it is scaled (display aspect and rotation applied) to RGBA by libavfilter and
//! written with Kiln's own image encoders. A storyboard lays its tiles out in sprite sheets
//! and writes the WebVTT file players use for seek previews (`sheet.jpg#xywh=x,y,w,h`).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use kiln_protocol::stills::{
    vtt_time, StillFormat, StoryboardParams, ThumbnailParams, STORYBOARD_VTT, THUMBNAILS_INDEX,
};
use rsmpeg::avformat::AVFormatContextInput;
use rsmpeg::avutil::AVFrame;
use rsmpeg::ffi;

use super::error::describe;
use super::filter::{FilterGraph, Pulled};
use super::geometry::Geometry;
use super::pipeline::{chain, decode, q2d};
use super::{init_ffmpeg_logging, path_cstring, MediaError};
use crate::imaging::decode::Frame;
use crate::imaging::encode::{encode, EncodeOptions};
use crate::imaging::OutputFormat;

/// What a stills job wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct StillsOutcome {
    /// One still's (or tile's) size.
    pub width: u32,
    pub height: u32,
    pub duration_s: f64,
    /// Every file, relative to the folder, the entry file last.
    pub files: Vec<PathBuf>,
}

/// An RGBA picture taken at `time`.
struct Still {
    time: f64,
    rgba: Vec<u8>,
}

fn io(what: &str, e: impl std::fmt::Display) -> MediaError {
    MediaError::Io(format!("{what}: {e}"))
}

fn format_of(f: StillFormat) -> OutputFormat {
    match f {
        StillFormat::Jpg => OutputFormat::Jpeg,
        StillFormat::Webp => OutputFormat::Webp,
    }
}

fn write_image(
    path: &Path,
    rgba: Vec<u8>,
    w: u32,
    h: u32,
    f: StillFormat,
) -> Result<(), MediaError> {
    let opts = EncodeOptions {
        quality: 82,
        lossless: false,
        flatten_onto: [0, 0, 0],
    };
    let bytes = encode(&[Frame { rgba, delay_ms: 0 }], w, h, format_of(f), &opts)
        .map_err(|e| MediaError::Encode(e.to_string()))?;
    std::fs::write(path, bytes).map_err(|e| io("write a still", e))
}

/// The still size for `width` of a source shown as `info` shows it (even height).
fn geometry(info: &super::MediaInfo, width: u32) -> Geometry {
    let (dw, dh) = info.display_size();
    let h = ((width as f64 * dh as f64 / dw.max(1) as f64 / 2.0).round() as u32 * 2).max(2);
    Geometry {
        width,
        height: h,
        rotation: info.rotation,
    }
}

/// Thumbnails of `input` into `out_dir`: `thumb-00001.jpg`, … and `thumbnails.json`
/// (`[{"time", "file", "width", "height"}]`).
pub fn thumbnails(
    input: &Path,
    out_dir: &Path,
    params: &ThumbnailParams,
    cancel: &AtomicBool,
) -> Result<StillsOutcome, MediaError> {
    init_ffmpeg_logging();
    params.validate().map_err(MediaError::InvalidSettings)?;
    let info = super::probe(input)?;
    let g = geometry(&info, params.width);
    let stills = take(input, &params.times(info.duration_s), g, cancel)?;
    std::fs::create_dir_all(out_dir).map_err(|e| io("create the stills folder", e))?;
    let mut files = Vec::new();
    let mut index = Vec::new();
    for (i, s) in stills.into_iter().enumerate() {
        let name = format!("thumb-{:05}.{}", i + 1, params.format.extension());
        write_image(
            &out_dir.join(&name),
            s.rgba,
            g.width,
            g.height,
            params.format,
        )?;
        index.push(
            serde_json::json!({"time": s.time, "file": name, "width": g.width, "height": g.height}),
        );
        files.push(PathBuf::from(name));
    }
    let json = serde_json::to_vec_pretty(&index).expect("plain JSON");
    std::fs::write(out_dir.join(THUMBNAILS_INDEX), json).map_err(|e| io("write the index", e))?;
    files.push(PathBuf::from(THUMBNAILS_INDEX));
    Ok(StillsOutcome {
        width: g.width,
        height: g.height,
        duration_s: info.duration_s,
        files,
    })
}

/// A storyboard of `input` into `out_dir`: `storyboard-1.jpg`, … (up to columns² tiles each,
/// row by row) and `storyboard.vtt`.
pub fn storyboard(
    input: &Path,
    out_dir: &Path,
    params: &StoryboardParams,
    cancel: &AtomicBool,
) -> Result<StillsOutcome, MediaError> {
    init_ffmpeg_logging();
    params.validate().map_err(MediaError::InvalidSettings)?;
    let info = super::probe(input)?;
    let g = geometry(&info, params.width);
    let times = params.times(info.duration_s);
    let stills = take(input, &times, g, cancel)?;
    std::fs::create_dir_all(out_dir).map_err(|e| io("create the storyboard folder", e))?;
    let cols = params.columns as usize;
    let per_sheet = cols * cols;
    let (tw, th) = (g.width as usize, g.height as usize);
    let mut files = Vec::new();
    let mut vtt = String::from("WEBVTT\n");
    for (sheet_no, sheet) in stills.chunks(per_sheet).enumerate() {
        let rows = sheet.len().div_ceil(cols);
        let sheet_cols = sheet.len().min(cols);
        let (sw, sh) = (sheet_cols * tw, rows * th);
        let mut canvas = vec![0u8; sw * sh * 4];
        let name = format!("storyboard-{}.{}", sheet_no + 1, params.format.extension());
        for (i, s) in sheet.iter().enumerate() {
            let (x, y) = ((i % cols) * tw, (i / cols) * th);
            for row in 0..th {
                let src = &s.rgba[row * tw * 4..(row + 1) * tw * 4];
                let at = ((y + row) * sw + x) * 4;
                canvas[at..at + tw * 4].copy_from_slice(src);
            }
            let start = s.time;
            let end = if info.duration_s > 0.0 {
                (start + params.every).min(info.duration_s.max(start + 0.001))
            } else {
                start + params.every
            };
            vtt.push_str(&format!(
                "\n{} --> {}\n{name}#xywh={x},{y},{tw},{th}\n",
                vtt_time(start),
                vtt_time(end)
            ));
        }
        write_image(
            &out_dir.join(&name),
            canvas,
            sw as u32,
            sh as u32,
            params.format,
        )?;
        files.push(PathBuf::from(name));
    }
    std::fs::write(out_dir.join(STORYBOARD_VTT), vtt).map_err(|e| io("write the VTT", e))?;
    files.push(PathBuf::from(STORYBOARD_VTT));
    Ok(StillsOutcome {
        width: g.width,
        height: g.height,
        duration_s: info.duration_s,
        files,
    })
}

/// Decode `input` once and take, for each of `times` (sorted), the first frame at or after it
/// (the last frame for times past the end), as RGBA of `g`'s size.
fn take(
    input: &Path,
    times: &[f64],
    g: Geometry,
    cancel: &AtomicBool,
) -> Result<Vec<Still>, MediaError> {
    let mut ictx = AVFormatContextInput::open(&path_cstring(input)?, None, &mut None)
        .map_err(|e| MediaError::InvalidMedia(describe("open input", &e)))?;
    let (v_index, decoder) = ictx
        .find_best_stream(ffi::AVMediaType_AVMEDIA_TYPE_VIDEO)
        .map_err(|e| MediaError::InvalidMedia(describe("find video stream", &e)))?
        .ok_or(MediaError::NoVideoStream)?;
    let (tb, start, fr) = {
        let st = ictx.streams().get(v_index).expect("stream index");
        let start = if st.start_time != ffi::AV_NOPTS_VALUE {
            st.start_time
        } else {
            0
        };
        (
            st.time_base,
            start,
            st.guess_framerate().filter(|r| r.num > 0),
        )
    };
    let mut dec = decode::open(&ictx, v_index, &decoder, tb, fr, None)?.dec;
    let mut taker = Taker {
        times,
        next: 0,
        out: Vec::new(),
        last: None,
        g,
        tb,
        start,
        fr,
    };
    if !times.is_empty() {
        decode::each_frame(&mut ictx, v_index, &mut dec, cancel, &mut |f| {
            taker.frame(f)?;
            Ok(taker.next < times.len())
        })?;
    }
    // Times past the last frame: the last frame.
    while taker.next < times.len() {
        let Some((_, frame)) = taker.last.take() else {
            return Err(MediaError::Decode("no video frame could be decoded".into()));
        };
        let rgba = taker.rgba(&frame)?;
        while taker.next < times.len() {
            taker.out.push(Still {
                time: times[taker.next],
                rgba: rgba.clone(),
            });
            taker.next += 1;
        }
    }
    Ok(taker.out)
}

struct Taker<'a> {
    times: &'a [f64],
    next: usize,
    out: Vec<Still>,
    /// The latest frame and its time, for times past the end.
    last: Option<(f64, AVFrame)>,
    g: Geometry,
    tb: ffi::AVRational,
    start: i64,
    fr: Option<ffi::AVRational>,
}

impl Taker<'_> {
    fn frame(&mut self, f: AVFrame) -> Result<(), MediaError> {
        let pts = f.best_effort_timestamp;
        let t = if pts == ffi::AV_NOPTS_VALUE {
            self.last.as_ref().map_or(0.0, |(t, _)| *t)
        } else {
            (pts - self.start) as f64 * q2d(self.tb)
        };
        // Half a millisecond of slack: a frame stamped 3.9999 is the frame at 4 s.
        if self.next < self.times.len() && t + 5e-4 >= self.times[self.next] {
            let rgba = self.rgba(&f)?;
            while self.next < self.times.len() && t + 5e-4 >= self.times[self.next] {
                self.out.push(Still {
                    time: self.times[self.next],
                    rgba: rgba.clone(),
                });
                self.next += 1;
            }
        }
        self.last = Some((t, f));
        Ok(())
    }

    fn rgba(&self, f: &AVFrame) -> Result<Vec<u8>, MediaError> {
        let chain = chain::video_chain(
            f.width,
            f.height,
            f.sample_aspect_ratio,
            f.format,
            None,
            &self.g,
            ffi::AVPixelFormat_AV_PIX_FMT_RGBA,
        );
        let mut graph =
            FilterGraph::video(f, self.tb, self.fr, &chain).map_err(MediaError::Encode)?;
        let mut copy = f.clone();
        graph.push(Some(&mut copy)).map_err(MediaError::Encode)?;
        graph.push(None).map_err(MediaError::Encode)?;
        let out = match graph.pull().map_err(MediaError::Encode)? {
            Pulled::Frame(o) => o,
            Pulled::Again | Pulled::End => {
                return Err(MediaError::Encode("the still filter gave no frame".into()))
            }
        };
        let (w, h) = (self.g.width as usize, self.g.height as usize);
        if out.width as usize != w || out.height as usize != h {
            return Err(MediaError::Encode(format!(
                "still filter made {}x{}, not {w}x{h}",
                out.width, out.height
            )));
        }
        let stride = out.linesize[0] as usize;
        let mut rgba = Vec::with_capacity(w * h * 4);
        for row in 0..h {
            // SAFETY: `out` is an RGBA frame of `h` rows of `stride` bytes each in data[0], of
            // which the first `w * 4` are pixels.
            let line = unsafe { std::slice::from_raw_parts(out.data[0].add(row * stride), w * 4) };
            rgba.extend_from_slice(line);
        }
        Ok(rgba)
    }
}
