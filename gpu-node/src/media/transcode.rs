//! Demux → decode → scale → encode (libx264) → mux MP4, with the audio stream copied.
//!
//! Runs on a blocking thread; reports progress through a callback and stops when the cancel
//! flag is raised.

use std::ffi::CString;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kiln_protocol::{Resolution, VideoCodec, VideoParams};
use rsmpeg::avcodec::{AVCodec, AVCodecContext, AVCodecParameters, AVPacket};
use rsmpeg::avformat::{AVFormatContextInput, AVFormatContextOutput};
use rsmpeg::avutil::{AVDictionary, AVFrame};
use rsmpeg::error::RsmpegError;
use rsmpeg::ffi;
use rsmpeg::swscale::SwsContext;
use rsmpeg::UnsafeDerefMut;

use super::error::describe;
use super::{container_duration_s, display_width, init_ffmpeg_logging, path_cstring, MediaError};

/// How far along a transcode is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// 0–100, from decoded timestamps over the source duration.
    pub percent: f32,
    /// Frames encoded per second so far.
    pub fps: f32,
    /// Seconds left at the current speed, when known.
    pub eta_s: Option<f32>,
}

/// What a finished transcode produced.
#[derive(Debug, Clone, PartialEq)]
pub struct TranscodeOutcome {
    pub width: u32,
    pub height: u32,
    pub frames: u64,
    pub duration_s: f64,
    /// Whether an audio stream was carried over.
    pub audio_copied: bool,
}

/// How often progress is reported at most.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Transcode `input` to an MP4 at `output` as `params` say.
pub fn transcode(
    input: &Path,
    output: &Path,
    params: &VideoParams,
    cancel: &AtomicBool,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<TranscodeOutcome, MediaError> {
    init_ffmpeg_logging();
    let result = run(input, output, params, cancel, on_progress);
    if result.is_err() {
        // Never leave a half-written output behind for someone to serve.
        let _ = std::fs::remove_file(output);
    }
    result
}

fn encoder_name(codec: VideoCodec) -> &'static std::ffi::CStr {
    match codec {
        VideoCodec::H264 => c"libx264",
    }
}

struct VideoOut {
    dec: AVCodecContext,
    enc: AVCodecContext,
    sws: Option<SwsContext>,
    /// Source frame geometry the scaler was built for.
    sws_for: (i32, i32, i32),
    in_index: usize,
    out_index: usize,
    width: i32,
    height: i32,
}

fn run(
    input: &Path,
    output: &Path,
    params: &VideoParams,
    cancel: &AtomicBool,
    on_progress: &mut dyn FnMut(Progress),
) -> Result<TranscodeOutcome, MediaError> {
    let in_url = path_cstring(input)?;
    let out_url = path_cstring(output)?;
    let mut ictx = AVFormatContextInput::open(&in_url, None, &mut None)
        .map_err(|e| MediaError::InvalidMedia(describe("open input", &e)))?;

    let (v_index, decoder) = ictx
        .find_best_stream(ffi::AVMediaType_AVMEDIA_TYPE_VIDEO)
        .map_err(|e| MediaError::InvalidMedia(describe("find video stream", &e)))?
        .ok_or(MediaError::NoVideoStream)?;
    let a_index = ictx
        .find_best_stream(ffi::AVMediaType_AVMEDIA_TYPE_AUDIO)
        .ok()
        .flatten()
        .map(|(i, _)| i);

    let duration_s = container_duration_s(&ictx);

    // --- decoder ---
    let (v_time_base, v_start, framerate, src_w, src_h, display_w) = {
        let stream = &ictx
            .streams()
            .get(v_index)
            .expect("stream index from FFmpeg");
        let par = stream.codecpar();
        let display_w = display_width(par.width, par.sample_aspect_ratio);
        let start = if stream.start_time != ffi::AV_NOPTS_VALUE {
            stream.start_time
        } else {
            0
        };
        (
            stream.time_base,
            start,
            stream.guess_framerate(),
            par.width,
            par.height,
            display_w,
        )
    };
    if src_w <= 0 || src_h <= 0 {
        return Err(MediaError::InvalidMedia(
            "the video stream has no picture size".into(),
        ));
    }
    let mut dec = AVCodecContext::new(&decoder);
    dec.apply_codecpar(
        &ictx
            .streams()
            .get(v_index)
            .expect("stream index from FFmpeg")
            .codecpar(),
    )
    .map_err(|e| MediaError::InvalidMedia(describe("decoder parameters", &e)))?;
    unsafe {
        let raw = dec.deref_mut();
        raw.pkt_timebase = v_time_base;
        raw.thread_count = 0; // let FFmpeg pick (one per core)
    }
    if let Some(fr) = framerate.filter(|r| r.num > 0 && r.den > 0) {
        dec.set_framerate(fr);
    }
    dec.open(None)
        .map_err(|e| MediaError::Decode(describe("open decoder", &e)))?;

    // --- encoder ---
    let (out_w, out_h) = Resolution::output_size(params.resolution, display_w, src_h as u32);
    let (out_w, out_h) = (out_w as i32, out_h as i32);
    let encoder = AVCodec::find_encoder_by_name(encoder_name(params.codec)).ok_or_else(|| {
        MediaError::UnsupportedCodec(format!(
            "{} is not in this FFmpeg build",
            encoder_name(params.codec).to_string_lossy()
        ))
    })?;
    let mut enc = AVCodecContext::new(&encoder);
    enc.set_width(out_w);
    enc.set_height(out_h);
    enc.set_pix_fmt(ffi::AVPixelFormat_AV_PIX_FMT_YUV420P);
    // Encode in the source stream's time base, so variable frame timing passes through as is.
    enc.set_time_base(v_time_base);
    if let Some(fr) = framerate.filter(|r| r.num > 0 && r.den > 0) {
        enc.set_framerate(fr);
    }
    enc.set_sample_aspect_ratio(ffi::AVRational { num: 1, den: 1 });

    let mut octx = AVFormatContextOutput::create(&out_url, None)
        .map_err(|e| MediaError::Io(describe("create output", &e)))?;
    if octx.oformat().flags & ffi::AVFMT_GLOBALHEADER as i32 != 0 {
        enc.set_flags(enc.flags | ffi::AV_CODEC_FLAG_GLOBAL_HEADER as i32);
    }
    let crf = CString::new(params.crf.to_string()).expect("digits");
    let opts = AVDictionary::new(c"crf", &crf, 0)
        .set(c"preset", c"medium", 0)
        .set(c"threads", c"0", 0);
    enc.open(Some(opts))
        .map_err(|e| MediaError::UnsupportedCodec(describe("open encoder", &e)))?;

    let v_out_index = {
        let mut s = octx.new_stream();
        s.set_codecpar(enc.extract_codecpar());
        s.set_time_base(enc.time_base);
        s.index as usize
    };

    // --- audio: copied when the container can hold it ---
    let mut audio: Option<(usize, usize, ffi::AVRational)> = None;
    if let Some(ai) = a_index {
        let in_stream = &ictx.streams().get(ai).expect("stream index from FFmpeg");
        let in_par = in_stream.codecpar();
        let fits = unsafe {
            ffi::avformat_query_codec(
                octx.oformat().as_ptr(),
                in_par.codec_id,
                ffi::FF_COMPLIANCE_NORMAL as i32,
            )
        } == 1;
        if fits {
            let mut par = AVCodecParameters::new();
            par.copy(&in_par);
            unsafe { par.deref_mut().codec_tag = 0 };
            let tb = in_stream.time_base;
            let mut s = octx.new_stream();
            s.set_codecpar(par);
            s.set_time_base(tb);
            audio = Some((ai, s.index as usize, tb));
        } else {
            tracing::info!(
                codec_id = in_par.codec_id,
                "audio codec cannot be copied into MP4; dropping the audio track"
            );
        }
    }

    let mut header_opts = Some(AVDictionary::new(c"movflags", c"+faststart", 0));
    octx.write_header(&mut header_opts)
        .map_err(|e| MediaError::Encode(describe("write header", &e)))?;

    let mut video = VideoOut {
        dec,
        enc,
        sws: None,
        sws_for: (0, 0, -1),
        in_index: v_index,
        out_index: v_out_index,
        width: out_w,
        height: out_h,
    };

    let started = Instant::now();
    let mut last_report = Instant::now() - PROGRESS_EVERY;
    let mut frames: u64 = 0;
    let mut last_pts_s = 0.0f64;

    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(MediaError::Cancelled);
        }
        let packet = match ictx.read_packet() {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(e) => return Err(MediaError::Decode(describe("read packet", &e))),
        };
        let si = packet.stream_index as usize;
        if si == video.in_index {
            if packet.pts != ffi::AV_NOPTS_VALUE {
                last_pts_s = (packet.pts - v_start) as f64 * q2d(v_time_base);
            }
            decode_encode(&mut video, Some(&packet), &mut octx, &mut frames)?;
        } else if let Some((ai, ao, in_tb)) = audio {
            if si == ai {
                let mut p = packet;
                let out_tb = octx.streams().get(ao).expect("stream we created").time_base;
                p.rescale_ts(in_tb, out_tb);
                p.set_stream_index(ao as i32);
                p.set_pos(-1);
                octx.interleaved_write_frame(&mut p)
                    .map_err(|e| MediaError::Encode(describe("write audio", &e)))?;
            }
        }
        if last_report.elapsed() >= PROGRESS_EVERY {
            last_report = Instant::now();
            on_progress(progress(last_pts_s, duration_s, frames, started));
        }
    }

    // Drain the decoder, then the encoder.
    decode_encode(&mut video, None, &mut octx, &mut frames)?;
    encode_write(&mut video, None, &mut octx)?;
    octx.write_trailer()
        .map_err(|e| MediaError::Encode(describe("write trailer", &e)))?;

    if frames == 0 {
        return Err(MediaError::Decode(
            "no video frame could be decoded".to_string(),
        ));
    }
    let out_duration = if duration_s > 0.0 {
        duration_s
    } else {
        last_pts_s
    };
    Ok(TranscodeOutcome {
        width: out_w as u32,
        height: out_h as u32,
        frames,
        duration_s: out_duration,
        audio_copied: audio.is_some(),
    })
}

fn q2d(r: ffi::AVRational) -> f64 {
    if r.den == 0 {
        0.0
    } else {
        r.num as f64 / r.den as f64
    }
}

fn progress(pts_s: f64, duration_s: f64, frames: u64, started: Instant) -> Progress {
    let elapsed = started.elapsed().as_secs_f64().max(1e-6);
    let fps = frames as f64 / elapsed;
    let (percent, eta_s) = if duration_s > 0.0 {
        let done = (pts_s / duration_s).clamp(0.0, 0.999);
        let eta = (done > 0.0).then(|| elapsed * (1.0 - done) / done);
        (done * 100.0, eta)
    } else {
        (0.0, None)
    };
    Progress {
        percent: percent as f32,
        fps: fps as f32,
        eta_s: eta_s.map(|e| e as f32),
    }
}

/// Send a packet (or the flush signal) to the decoder and push every frame through the encoder.
fn decode_encode(
    v: &mut VideoOut,
    packet: Option<&AVPacket>,
    octx: &mut AVFormatContextOutput,
    frames: &mut u64,
) -> Result<(), MediaError> {
    match v.dec.send_packet(packet) {
        Ok(()) | Err(RsmpegError::DecoderFlushedError) => {}
        Err(e) => return Err(MediaError::Decode(describe("decode", &e))),
    }
    loop {
        let frame = match v.dec.receive_frame() {
            Ok(f) => f,
            Err(RsmpegError::DecoderDrainError) | Err(RsmpegError::DecoderFlushedError) => {
                return Ok(())
            }
            Err(e) => return Err(MediaError::Decode(describe("decode", &e))),
        };
        let mut out = scale(v, &frame)?;
        out.set_pts(frame.best_effort_timestamp);
        out.set_pict_type(ffi::AVPictureType_AV_PICTURE_TYPE_NONE);
        encode_write(v, Some(&out), octx)?;
        *frames += 1;
    }
}

/// Convert a decoded frame to the encoder's size and pixel format (a no-op copy is avoided when
/// they already match).
fn scale(v: &mut VideoOut, frame: &AVFrame) -> Result<AVFrame, MediaError> {
    let fmt = frame.format;
    if frame.width == v.width
        && frame.height == v.height
        && fmt == ffi::AVPixelFormat_AV_PIX_FMT_YUV420P
    {
        let mut out = AVFrame::new();
        let rc = unsafe { ffi::av_frame_ref(out.as_mut_ptr(), frame.as_ptr()) };
        if rc < 0 {
            return Err(MediaError::Encode(format!(
                "frame ref: {}",
                super::av_error_text(rc)
            )));
        }
        return Ok(out);
    }
    let key = (frame.width, frame.height, fmt);
    if v.sws.is_none() || v.sws_for != key {
        v.sws = Some(
            SwsContext::get_context(
                frame.width,
                frame.height,
                fmt,
                v.width,
                v.height,
                ffi::AVPixelFormat_AV_PIX_FMT_YUV420P,
                ffi::SWS_BICUBIC,
            )
            .ok_or_else(|| {
                MediaError::Decode(format!(
                    "cannot scale {}x{} pixel format {fmt}",
                    frame.width, frame.height
                ))
            })?,
        );
        v.sws_for = key;
    }
    let mut out = AVFrame::new();
    out.set_width(v.width);
    out.set_height(v.height);
    out.set_format(ffi::AVPixelFormat_AV_PIX_FMT_YUV420P);
    out.alloc_buffer()
        .map_err(|e| MediaError::Encode(describe("allocate frame", &e)))?;
    v.sws
        .as_mut()
        .expect("built above")
        .scale_frame(frame, 0, frame.height, &mut out)
        .map_err(|e| MediaError::Encode(describe("scale", &e)))?;
    Ok(out)
}

/// Send a frame (or the flush signal) to the encoder and mux every packet it returns.
fn encode_write(
    v: &mut VideoOut,
    frame: Option<&AVFrame>,
    octx: &mut AVFormatContextOutput,
) -> Result<(), MediaError> {
    match v.enc.send_frame(frame) {
        Ok(()) | Err(RsmpegError::EncoderFlushedError) => {}
        Err(e) => return Err(MediaError::Encode(describe("encode", &e))),
    }
    loop {
        let mut packet = match v.enc.receive_packet() {
            Ok(p) => p,
            Err(RsmpegError::EncoderDrainError) | Err(RsmpegError::EncoderFlushedError) => {
                return Ok(())
            }
            Err(e) => return Err(MediaError::Encode(describe("encode", &e))),
        };
        packet.set_stream_index(v.out_index as i32);
        let out_tb = octx
            .streams()
            .get(v.out_index)
            .expect("stream we created")
            .time_base;
        packet.rescale_ts(v.enc.time_base, out_tb);
        octx.interleaved_write_frame(&mut packet)
            .map_err(|e| MediaError::Encode(describe("write video", &e)))?;
    }
}
