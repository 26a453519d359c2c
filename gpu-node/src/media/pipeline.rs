//! One encoding pass: demux → decode (NVDEC or CPU) → filter (scale, rotate, pixel format;
//! on the GPU with `scale_cuda` when frames are there) → encode → mux, with the audio track
//! alongside. Multi-pass and size targeting are `transcode`'s business.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_protocol::Container;
use rsmpeg::avcodec::AVPacket;
use rsmpeg::avformat::{AVFormatContextInput, AVFormatContextOutput};
use rsmpeg::avutil::{AVDictionary, AVFrame};
use rsmpeg::ffi;

use super::audio;
use super::edit::EditPlan;
use super::encoder::EncoderSettings;
use super::error::describe;
use super::geometry::Geometry;
use super::{container_duration_s, path_cstring, MediaError};

pub(crate) mod chain;
pub(crate) mod decode;
mod sink;
pub(crate) mod trim;

pub(crate) use sink::{copy_stream, encode_and_mux, mux_packet, one_frame, open_encoder};
pub(crate) use trim::{cut_audio, output_duration, output_pts, progress_span, FrameCut, Trim};

/// What one pass is asked to do.
pub(crate) struct PassSpec<'a> {
    pub input: &'a Path,
    pub output: &'a Path,
    pub container: Container,
    pub encoder: &'static str,
    pub settings: EncoderSettings,
    pub geometry: Geometry,
    /// The sample aspect ratio the encoder and the container state (1:1 but for ladder rungs
    /// whose even size cannot keep the top rung's display aspect exactly).
    pub sar: ffi::AVRational,
    pub pix_fmt: ffi::AVPixelFormat,
    /// Whether to carry the audio (first passes do without).
    pub with_audio: bool,
    /// The audio re-encoded smaller (a `size` job's tight budget) rather than copied.
    pub audio_shrink: Option<audio::Shrink>,
    /// The GPU to decode on with NVDEC, if any.
    pub gpu: Option<u32>,
    /// Trim, crop, watermark, subtitles.
    pub edit: &'a EditPlan,
}

/// What one pass produced.
#[derive(Debug, Clone)]
pub(crate) struct PassResult {
    pub frames: u64,
    /// Bytes of video packets written.
    pub video_bytes: u64,
    /// Size of the finished file.
    pub file_bytes: u64,
    pub duration_s: f64,
    /// `copied`, `aac`, `opus` or `none`.
    pub audio: &'static str,
    /// Whether frames were decoded on the GPU.
    pub hwaccel: bool,
    /// Why NVDEC was asked for and not used.
    pub hw_note: Option<String>,
    /// The GPU's device failed to open (its fault, not the input's).
    pub device_fault: Option<String>,
    /// The decoder's name.
    pub decoder: String,
}

/// How often a pass reports progress at most.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Colour range, primaries, transfer and matrix of the source, carried to the output.
pub(crate) type Color = (
    ffi::AVColorRange,
    ffi::AVColorPrimaries,
    ffi::AVColorTransferCharacteristic,
    ffi::AVColorSpace,
);

/// What the decode side hands the encoder thread.
pub(super) enum Msg {
    Frame(AVFrame),
    Audio(AVPacket),
    /// The input is done: flush everything and finish the file.
    End,
}

/// Frames in flight between the threads: enough to keep both busy, few enough that memory
/// stays flat (8 frames of 4K 10-bit are ~200 MB; of 1080p, ~25 MB).
const QUEUE_FRAMES: usize = 8;

/// Why the decode side stopped early.
pub(super) enum DriveError {
    /// Its own failure (or a cancel).
    Media(MediaError),
    /// The encoder thread went away; its error is what the pass reports.
    SinkGone,
}

impl From<MediaError> for DriveError {
    fn from(e: MediaError) -> Self {
        Self::Media(e)
    }
}

/// Run one pass; `on_progress(fraction, frames)` is called at most every 250 ms.
pub(crate) fn run_pass(
    spec: &PassSpec<'_>,
    cancel: &AtomicBool,
    on_progress: &mut dyn FnMut(f64, u64),
) -> Result<PassResult, MediaError> {
    let in_url = path_cstring(spec.input)?;
    let out_url = path_cstring(spec.output)?;
    let mut ictx = AVFormatContextInput::open(&in_url, None, &mut None)
        .map_err(|e| MediaError::InvalidMedia(describe("open input", &e)))?;
    let (v_index, decoder) = ictx
        .find_best_stream(ffi::AVMediaType_AVMEDIA_TYPE_VIDEO)
        .map_err(|e| MediaError::InvalidMedia(describe("find video stream", &e)))?
        .ok_or(MediaError::NoVideoStream)?;
    let duration_s = container_duration_s(&ictx);
    let (in_tb, v_start, frame_rate, color) = {
        let stream = ictx
            .streams()
            .get(v_index)
            .expect("stream index from FFmpeg");
        let par = stream.codecpar();
        let start = if stream.start_time != ffi::AV_NOPTS_VALUE {
            stream.start_time
        } else {
            0
        };
        (
            stream.time_base,
            start,
            stream.guess_framerate().filter(|r| r.num > 0 && r.den > 0),
            (
                par.color_range,
                par.color_primaries,
                par.color_trc,
                par.color_space,
            ),
        )
    };

    let trim = trim::open(spec.edit.span, &mut ictx, v_index, v_start, in_tb);

    let decoding = decode::open(&ictx, v_index, &decoder, in_tb, frame_rate, spec.gpu)?;
    let (dec, hw_requested) = (decoding.dec, decoding.hw_requested);
    let mut hw_note = decoding.hw_note;
    let device_fault = decoding.device_fault;

    let mut octx = AVFormatContextOutput::create(&out_url, None)
        .map_err(|e| MediaError::Io(describe("create output", &e)))?;
    let (enc, v_out_index) = sink::open_encoder(spec, in_tb, frame_rate, color, &mut octx)?;

    let audio = match super::probe::first_audio_stream(&ictx).filter(|_| spec.with_audio) {
        Some(ai) => Some(audio::add_track(
            &ictx,
            ai,
            &mut octx,
            spec.container,
            spec.audio_shrink,
        )?),
        None => None,
    };

    let mut header_opts = (spec.container == Container::Mp4)
        .then(|| AVDictionary::new(c"movflags", c"+faststart", 0));
    octx.write_header(&mut header_opts)
        .map_err(|e| MediaError::Encode(describe("write header", &e)))?;

    let audio_index = audio.as_ref().map(|a| a.in_index());
    let audio_kind = audio.as_ref().map(|a| a.kind()).unwrap_or("none");
    let (tx, rx) = sync_channel::<Msg>(QUEUE_FRAMES);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let abandon = Arc::new(AtomicBool::new(false));
    let sink = sink::Sink {
        enc,
        octx,
        audio,
        out_index: v_out_index,
        bytes: 0,
    };
    {
        let abandon = abandon.clone();
        std::thread::Builder::new()
            .name("kiln-encode".into())
            .spawn(move || {
                let r = sink.run(rx, &abandon);
                let _ = done_tx.send(r);
            })
            .map_err(|e| MediaError::Io(format!("cannot start the encoder thread: {e}")))?;
    }

    let mut video = decode::Video {
        cancel,
        in_index: v_index,
        dec,
        graph: None,
        graph_for: (0, 0, -1),
        in_tb,
        frame_rate,
        geometry: spec.geometry,
        pix_fmt: spec.pix_fmt,
        last_pts: i64::MIN,
        frames: 0,
        hw_requested,
        hw_seen: None,
        picture: spec.edit.picture.clone(),
        trim: trim.clone(),
        past_end: false,
        tx,
    };
    let driven = drive(
        &mut video,
        &mut ictx,
        audio_index,
        (duration_s, v_start),
        trim.as_ref(),
        cancel,
        on_progress,
    );
    let finished = |abandon_now: bool| -> Result<u64, MediaError> {
        if abandon_now {
            abandon.store(true, Ordering::SeqCst);
        }
        loop {
            match done_rx.recv_timeout(Duration::from_millis(50)) {
                Ok(r) => return r,
                Err(RecvTimeoutError::Timeout) if cancel.load(Ordering::Relaxed) => {
                    // x265 and SVT-AV1 join their worker threads on close, which can take
                    // seconds mid-picture at slow presets; the job is over either way, so
                    // the encoder thread winds down off the job's clock.
                    abandon.store(true, Ordering::SeqCst);
                    return Err(MediaError::Cancelled);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(MediaError::Encode("the encoder thread panicked".into()))
                }
            }
        }
    };
    let (last_pts_s, video_bytes) = match driven {
        Ok(t) => {
            if let Err(DriveError::Media(e)) = video.send(Msg::End) {
                drop(video);
                let _ = finished(true);
                return Err(e);
            }
            (t, finished(false)?)
        }
        Err(DriveError::Media(e)) => {
            // Close the channel so the encoder thread stops; report the decode side's error.
            drop(video);
            return match (e, finished(true)) {
                (MediaError::Cancelled, _) => Err(MediaError::Cancelled),
                (e, _) => Err(e),
            };
        }
        Err(DriveError::SinkGone) => {
            drop(video);
            return Err(finished(false)
                .err()
                .unwrap_or_else(|| MediaError::Encode("the encoder stopped early".into())));
        }
    };

    if video.frames == 0 {
        return Err(MediaError::Decode(
            "no video frame could be decoded".to_string(),
        ));
    }
    let hwaccel = video.hw_seen == Some(true);
    if video.hw_requested && !hwaccel {
        hw_note =
            Some("NVDEC declined this stream (profile or pixel format); decoded on the CPU".into());
    }
    let file_bytes = std::fs::metadata(spec.output)
        .map(|m| m.len())
        .map_err(|e| MediaError::Io(format!("stat output: {e}")))?;
    let untrimmed_s = if duration_s > 0.0 {
        duration_s
    } else {
        last_pts_s
    };
    let duration_s = output_duration(trim.as_ref(), untrimmed_s);
    Ok(PassResult {
        frames: video.frames,
        video_bytes,
        file_bytes,
        duration_s,
        audio: audio_kind,
        hwaccel,
        hw_note,
        device_fault,
        decoder: decoder.name().to_string_lossy().into_owned(),
    })
}

/// Read, decode and filter to the end, handing frames and audio to the encoder thread;
/// returns the last video timestamp (s).
fn drive(
    video: &mut decode::Video<'_>,
    ictx: &mut AVFormatContextInput,
    audio_index: Option<usize>,
    (duration_s, v_start): (f64, i64),
    trim: Option<&Trim>,
    cancel: &AtomicBool,
    on_progress: &mut dyn FnMut(f64, u64),
) -> Result<f64, DriveError> {
    let in_tb = video.in_tb;
    let mut last_report = Instant::now() - PROGRESS_EVERY;
    let mut last_pts_s = 0.0f64;
    // Progress runs over the span kept.
    let (from_s, span_s) = progress_span(trim, duration_s);
    let mut audio_done = audio_index.is_none();
    loop {
        if video.past_end && audio_done {
            // A trim's end: nothing more of the source is wanted.
            break;
        }
        if cancel.load(Ordering::Relaxed) {
            return Err(DriveError::Media(MediaError::Cancelled));
        }
        let packet = match ictx.read_packet() {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(e) => return Err(MediaError::Decode(describe("read packet", &e)).into()),
        };
        let si = packet.stream_index as usize;
        if si == video.in_index {
            if packet.pts != ffi::AV_NOPTS_VALUE {
                last_pts_s = (packet.pts - v_start) as f64 * q2d(in_tb);
            }
            video.decode(Some(&packet))?;
        } else if Some(si) == audio_index {
            if let Some(p) = cut_audio(trim, packet, &mut audio_done) {
                video.send(Msg::Audio(p))?;
            }
        }
        if last_report.elapsed() >= PROGRESS_EVERY {
            last_report = Instant::now();
            let fraction = if span_s > 0.0 {
                ((last_pts_s - from_s) / span_s).clamp(0.0, 0.999)
            } else {
                0.0
            };
            on_progress(fraction, video.frames);
        }
    }
    // Drain decoder → filter; the encoder thread flushes on `End`.
    video.decode(None)?;
    if let Some(g) = video.graph.as_mut() {
        g.push(None).map_err(MediaError::Encode)?;
    }
    video.drain_graph()?;
    Ok(last_pts_s)
}

pub(crate) fn q2d(r: ffi::AVRational) -> f64 {
    if r.den == 0 {
        0.0
    } else {
        r.num as f64 / r.den as f64
    }
}
