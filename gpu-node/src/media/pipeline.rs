//! One encoding pass: demux → decode (NVDEC or CPU) → filter (scale, rotate, pixel format;
//! on the GPU with `scale_cuda` when frames are there) → encode → mux, with the audio track
//! alongside. Multi-pass and size targeting are `transcode`'s business.

use std::ffi::CString;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_protocol::Container;
use rsmpeg::avcodec::{AVCodec, AVCodecContext, AVPacket};
use rsmpeg::avformat::{AVFormatContextInput, AVFormatContextOutput};
use rsmpeg::avutil::{AVDictionary, AVFrame};
use rsmpeg::error::RsmpegError;
use rsmpeg::ffi;
use rsmpeg::UnsafeDerefMut;

use super::audio;
use super::encoder::EncoderSettings;
use super::error::describe;
use super::filter::{FilterGraph, Pulled};
use super::geometry::Geometry;
use super::{container_duration_s, hw, path_cstring, MediaError};

/// What one pass is asked to do.
pub(crate) struct PassSpec<'a> {
    pub input: &'a Path,
    pub output: &'a Path,
    pub container: Container,
    pub encoder: &'static str,
    pub settings: EncoderSettings,
    pub geometry: Geometry,
    pub pix_fmt: ffi::AVPixelFormat,
    /// Whether to carry the audio (first passes do without).
    pub with_audio: bool,
    /// Whether to try NVDEC.
    pub hw_decode: bool,
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
    /// The decoder's name.
    pub decoder: String,
}

/// How often a pass reports progress at most.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// The decode side, on the pass's own thread.
struct Video<'c> {
    cancel: &'c AtomicBool,
    in_index: usize,
    dec: AVCodecContext,
    graph: Option<FilterGraph>,
    /// Source frame geometry the graph was built for.
    graph_for: (i32, i32, i32),
    in_tb: ffi::AVRational,
    frame_rate: Option<ffi::AVRational>,
    geometry: Geometry,
    pix_fmt: ffi::AVPixelFormat,
    last_pts: i64,
    frames: u64,
    hw_requested: bool,
    hw_seen: Option<bool>,
    /// Frames and audio packets on their way to the encoder thread.
    tx: SyncSender<Msg>,
}

/// What the decode side hands the encoder thread.
enum Msg {
    Frame(AVFrame),
    Audio(AVPacket),
    /// The input is done: flush everything and finish the file.
    End,
}

/// The encode side: video encoder, audio track and muxer, on an encoder thread, so decoding
/// and filtering the next frames overlaps encoding these (the `ffmpeg` 5.1 CLI does both on
/// one thread), and a cancelled job need not wait for an encoder call to return.
struct Sink {
    enc: AVCodecContext,
    octx: AVFormatContextOutput,
    audio: Option<audio::AudioTrack>,
    out_index: usize,
    bytes: u64,
}

/// Frames in flight between the threads: enough to keep both busy, few enough that memory
/// stays flat (8 frames of 4K 10-bit are ~200 MB; of 1080p, ~25 MB).
const QUEUE_FRAMES: usize = 8;

/// The encoder went away (its error is what the pass reports).
struct SinkGone;

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

    // --- decoder: NVDEC when asked and the codec has a CUDA path, the CPU otherwise ---
    let mut dec = AVCodecContext::new(&decoder);
    dec.apply_codecpar(&ictx.streams().get(v_index).expect("index").codecpar())
        .map_err(|e| MediaError::InvalidMedia(describe("decoder parameters", &e)))?;
    let mut hw_note = None;
    let mut hw_requested = false;
    unsafe {
        let raw = dec.deref_mut();
        raw.pkt_timebase = in_tb;
        raw.thread_count = 0;
    }
    if spec.hw_decode {
        match hw::cuda_device() {
            Ok(device) if hw::decoder_supports_cuda(decoder.as_ptr()) => unsafe {
                let raw = dec.deref_mut();
                raw.hw_device_ctx = ffi::av_buffer_ref(device);
                raw.get_format = Some(hw::prefer_cuda);
                hw_requested = true;
            },
            Ok(_) => {
                hw_note = Some(format!(
                    "FFmpeg's {} decoder has no CUDA path; decoded on the CPU",
                    decoder.name().to_string_lossy()
                ))
            }
            Err(e) => hw_note = Some(format!("NVDEC unavailable ({e}); decoded on the CPU")),
        }
    }
    if let Some(fr) = frame_rate {
        dec.set_framerate(fr);
    }
    dec.open(None)
        .map_err(|e| MediaError::Decode(describe("open decoder", &e)))?;

    // --- encoder, opened before the first frame: its size and format are planned ---
    let encoder_c = CString::new(spec.encoder).expect("static name");
    let encoder = AVCodec::find_encoder_by_name(&encoder_c).ok_or_else(|| {
        MediaError::UnsupportedCodec(format!("{} is not in this FFmpeg build", spec.encoder))
    })?;
    let mut enc = AVCodecContext::new(&encoder);
    enc.set_width(spec.geometry.width as i32);
    enc.set_height(spec.geometry.height as i32);
    enc.set_pix_fmt(spec.pix_fmt);
    // Encode in the source stream's time base, so variable frame timing passes through as is.
    enc.set_time_base(in_tb);
    if let Some(fr) = frame_rate {
        enc.set_framerate(fr);
    }
    enc.set_sample_aspect_ratio(ffi::AVRational { num: 1, den: 1 });
    unsafe {
        let raw = enc.deref_mut();
        raw.bit_rate = spec.settings.bit_rate;
        raw.rc_max_rate = spec.settings.max_rate;
        raw.rc_buffer_size = spec.settings.buffer_size as i32;
        raw.color_range = color.0;
        raw.color_primaries = color.1;
        raw.color_trc = color.2;
        raw.colorspace = color.3;
    }
    let mut octx = AVFormatContextOutput::create(&out_url, None)
        .map_err(|e| MediaError::Io(describe("create output", &e)))?;
    if octx.oformat().flags & ffi::AVFMT_GLOBALHEADER as i32 != 0 {
        enc.set_flags(enc.flags | ffi::AV_CODEC_FLAG_GLOBAL_HEADER as i32);
    }
    let mut opts: Option<AVDictionary> = None;
    for (k, v) in &spec.settings.options {
        let (k, v) = (
            CString::new(k.as_str()).expect("no NUL"),
            CString::new(v.as_str()).map_err(|_| MediaError::Io("NUL in an option".into()))?,
        );
        opts = Some(match opts {
            None => AVDictionary::new(&k, &v, 0),
            Some(d) => d.set(&k, &v, 0),
        });
    }
    enc.open(opts).map_err(|e| {
        MediaError::UnsupportedCodec(describe(&format!("open {}", spec.encoder), &e))
    })?;

    let v_out_index = {
        let mut par = enc.extract_codecpar();
        if spec.encoder.starts_with("libx265") || spec.encoder == "hevc_nvenc" {
            // `hvc1` is what Apple players require of HEVC in MP4; harmless elsewhere.
            if spec.container == Container::Mp4 {
                unsafe {
                    par.deref_mut().codec_tag = u32::from_le_bytes(*b"hvc1");
                }
            }
        }
        let mut s = octx.new_stream();
        s.set_codecpar(par);
        s.set_time_base(enc.time_base);
        s.index as usize
    };

    let audio = match super::probe::first_audio_stream(&ictx).filter(|_| spec.with_audio) {
        Some(ai) => Some(audio::add_track(&ictx, ai, &mut octx, spec.container)?),
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
    let sink = Sink {
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

    let mut video = Video {
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
        tx,
    };
    let driven = drive(
        &mut video,
        &mut ictx,
        audio_index,
        (duration_s, v_start),
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
            if let Err(Ok(e)) = video.send(Msg::End) {
                drop(video);
                let _ = finished(true);
                return Err(e);
            }
            (t, finished(false)?)
        }
        Err(Ok(e)) => {
            // Close the channel so the encoder thread stops; report the decode side's error.
            drop(video);
            return match (e, finished(true)) {
                (MediaError::Cancelled, _) => Err(MediaError::Cancelled),
                (e, _) => Err(e),
            };
        }
        Err(Err(SinkGone)) => {
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
    Ok(PassResult {
        frames: video.frames,
        video_bytes,
        file_bytes,
        duration_s: if duration_s > 0.0 {
            duration_s
        } else {
            last_pts_s
        },
        audio: audio_kind,
        hwaccel,
        hw_note,
        decoder: decoder.name().to_string_lossy().into_owned(),
    })
}

/// A pass's decode-side failure: its own error, or the encoder thread having stopped.
type DriveError = Result<MediaError, SinkGone>;

/// Read, decode and filter to the end, handing frames and audio to the encoder thread;
/// returns the last video timestamp (s).
fn drive(
    video: &mut Video<'_>,
    ictx: &mut AVFormatContextInput,
    audio_index: Option<usize>,
    (duration_s, v_start): (f64, i64),
    cancel: &AtomicBool,
    on_progress: &mut dyn FnMut(f64, u64),
) -> Result<f64, DriveError> {
    let in_tb = video.in_tb;
    let mut last_report = Instant::now() - PROGRESS_EVERY;
    let mut last_pts_s = 0.0f64;
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(Ok(MediaError::Cancelled));
        }
        let packet = match ictx.read_packet() {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(e) => return Err(Ok(MediaError::Decode(describe("read packet", &e)))),
        };
        let si = packet.stream_index as usize;
        if si == video.in_index {
            if packet.pts != ffi::AV_NOPTS_VALUE {
                last_pts_s = (packet.pts - v_start) as f64 * q2d(in_tb);
            }
            video.decode(Some(&packet))?;
        } else if Some(si) == audio_index {
            video.send(Msg::Audio(packet))?;
        }
        if last_report.elapsed() >= PROGRESS_EVERY {
            last_report = Instant::now();
            let fraction = if duration_s > 0.0 {
                (last_pts_s / duration_s).clamp(0.0, 0.999)
            } else {
                0.0
            };
            on_progress(fraction, video.frames);
        }
    }
    // Drain decoder → filter; the encoder thread flushes on `End`.
    video.decode(None)?;
    if let Some(g) = video.graph.as_mut() {
        g.push(None).map_err(|e| Ok(MediaError::Encode(e)))?;
    }
    video.drain_graph()?;
    Ok(last_pts_s)
}

impl Sink {
    fn run(mut self, rx: Receiver<Msg>, abandon: &AtomicBool) -> Result<u64, MediaError> {
        loop {
            match rx.recv() {
                Ok(Msg::Frame(f)) => self.encode(Some(&f), abandon)?,
                Ok(Msg::Audio(p)) => {
                    if let Some(a) = self.audio.as_mut() {
                        a.packet(p, &mut self.octx)?;
                    }
                }
                Ok(Msg::End) => {
                    self.encode(None, abandon)?;
                    if let Some(a) = self.audio.as_mut() {
                        a.finish(&mut self.octx)?;
                    }
                    self.octx
                        .write_trailer()
                        .map_err(|e| MediaError::Encode(describe("write trailer", &e)))?;
                    return Ok(self.bytes);
                }
                // The decode side stopped (an error or a cancel): no trailer, just close.
                Err(_) => return Err(MediaError::Cancelled),
            }
        }
    }

    fn encode(&mut self, frame: Option<&AVFrame>, abandon: &AtomicBool) -> Result<(), MediaError> {
        self.bytes += encode_and_mux(
            &mut self.enc,
            frame,
            &mut self.octx,
            self.out_index,
            "video",
            Some(abandon),
        )?;
        Ok(())
    }
}

/// Send a frame (or the flush signal) to `enc` and mux every packet it returns into stream
/// `out_index`; returns the bytes written. Stops with `Cancelled` once `abandon` is raised,
/// since draining a deep lookahead can take a while.
pub(crate) fn encode_and_mux(
    enc: &mut AVCodecContext,
    frame: Option<&AVFrame>,
    octx: &mut AVFormatContextOutput,
    out_index: usize,
    what: &str,
    abandon: Option<&AtomicBool>,
) -> Result<u64, MediaError> {
    match enc.send_frame(frame) {
        Ok(()) | Err(RsmpegError::EncoderFlushedError) => {}
        Err(e) => return Err(MediaError::Encode(describe(&format!("{what} encode"), &e))),
    }
    let mut bytes = 0;
    loop {
        if abandon.is_some_and(|a| a.load(Ordering::Relaxed)) {
            return Err(MediaError::Cancelled);
        }
        let packet = match enc.receive_packet() {
            Ok(p) => p,
            Err(RsmpegError::EncoderDrainError) | Err(RsmpegError::EncoderFlushedError) => {
                return Ok(bytes)
            }
            Err(e) => return Err(MediaError::Encode(describe(&format!("{what} encode"), &e))),
        };
        bytes += packet.size as u64;
        mux_packet(octx, packet, enc.time_base, out_index, what)?;
    }
}

/// Write a packet in time base `from` to output stream `out_index`.
pub(crate) fn mux_packet(
    octx: &mut AVFormatContextOutput,
    mut packet: AVPacket,
    from: ffi::AVRational,
    out_index: usize,
    what: &str,
) -> Result<(), MediaError> {
    let out_tb = octx
        .streams()
        .get(out_index)
        .expect("a stream this pass created")
        .time_base;
    packet.rescale_ts(from, out_tb);
    packet.set_stream_index(out_index as i32);
    packet.set_pos(-1);
    octx.interleaved_write_frame(&mut packet)
        .map_err(|e| MediaError::Encode(describe(&format!("write {what}"), &e)))
}

pub(crate) fn q2d(r: ffi::AVRational) -> f64 {
    if r.den == 0 {
        0.0
    } else {
        r.num as f64 / r.den as f64
    }
}

fn pix_fmt_name(f: i32) -> String {
    let p = unsafe { ffi::av_get_pix_fmt_name(f) };
    if p.is_null() {
        "yuv420p".into()
    } else {
        unsafe { std::ffi::CStr::from_ptr(p) }
            .to_string_lossy()
            .into_owned()
    }
}

/// The filter chain from decoded frames of `src_w`×`src_h` (format `fmt`, `sw` behind CUDA
/// frames) to the planned geometry and pixel format.
pub(crate) fn video_chain(
    src_w: i32,
    src_h: i32,
    sar: ffi::AVRational,
    fmt: i32,
    sw: Option<i32>,
    geometry: &Geometry,
    target: i32,
) -> String {
    let (sw_w, sh_h) = geometry.scaled_size();
    let square = sar.num <= 0 || sar.num == sar.den;
    let resize = !(src_w == sw_w as i32 && src_h == sh_h as i32 && square);
    let mut parts: Vec<String> = Vec::new();
    let on_gpu = fmt == ffi::AVPixelFormat_AV_PIX_FMT_CUDA;
    let mut resized = false;
    if on_gpu {
        // Scale where the frames are, then bring the smaller frames to system memory once.
        if resize && geometry.rotation == 0 {
            parts.push(format!("scale_cuda={sw_w}:{sh_h}"));
            resized = true;
        }
        parts.push("hwdownload".into());
        parts.push(format!(
            "format={}",
            pix_fmt_name(sw.unwrap_or(ffi::AVPixelFormat_AV_PIX_FMT_NV12))
        ));
    }
    if resize && !resized {
        parts.push(format!("scale={sw_w}:{sh_h}:flags=bicubic"));
    }
    match geometry.rotation {
        90 => parts.push("transpose=clock".into()),
        180 => parts.push("hflip,vflip".into()),
        270 => parts.push("transpose=cclock".into()),
        _ => {}
    }
    parts.push(format!("format={}", pix_fmt_name(target)));
    parts.push("setsar=1".into());
    parts.join(",")
}

impl Video<'_> {
    /// Hand the encoder thread a message, waiting while its queue is full but never past a
    /// cancel (a slow encoder can take a second per frame).
    fn send(&self, mut msg: Msg) -> Result<(), DriveError> {
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Disconnected(_)) => return Err(Err(SinkGone)),
                Err(TrySendError::Full(m)) => {
                    if self.cancel.load(Ordering::Relaxed) {
                        return Err(Ok(MediaError::Cancelled));
                    }
                    msg = m;
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
    }

    fn decode(&mut self, packet: Option<&AVPacket>) -> Result<(), DriveError> {
        let decode_err = |e: RsmpegError| Ok(MediaError::Decode(describe("decode", &e)));
        match self.dec.send_packet(packet) {
            Ok(()) | Err(RsmpegError::DecoderFlushedError) => {}
            Err(e) => return Err(decode_err(e)),
        }
        loop {
            let mut frame = match self.dec.receive_frame() {
                Ok(f) => f,
                Err(RsmpegError::DecoderDrainError) | Err(RsmpegError::DecoderFlushedError) => {
                    return Ok(())
                }
                Err(e) => return Err(decode_err(e)),
            };
            if self.hw_seen.is_none() {
                self.hw_seen = Some(frame.format == ffi::AVPixelFormat_AV_PIX_FMT_CUDA);
            }
            // Timestamps strictly increase into the encoder, as the muxer requires.
            let mut pts = frame.best_effort_timestamp;
            if pts == ffi::AV_NOPTS_VALUE {
                pts = if self.last_pts == i64::MIN {
                    0
                } else {
                    self.last_pts + self.frame_ticks()
                };
            }
            if pts <= self.last_pts {
                pts = self.last_pts + 1;
            }
            self.last_pts = pts;
            frame.set_pts(pts);
            let key = (frame.width, frame.height, frame.format);
            if self.graph.is_none() || self.graph_for != key {
                if let Some(old) = self.graph.as_mut() {
                    // Size or format changed mid-stream: flush what the old graph holds.
                    old.push(None).map_err(|e| Ok(MediaError::Encode(e)))?;
                    self.drain_graph()?;
                }
                let sw = hw::hw_sw_format(&frame);
                let chain = video_chain(
                    frame.width,
                    frame.height,
                    frame.sample_aspect_ratio,
                    frame.format,
                    sw,
                    &self.geometry,
                    self.pix_fmt,
                );
                tracing::debug!(%chain, "video filter");
                self.graph = Some(
                    FilterGraph::video(&frame, self.in_tb, self.frame_rate, &chain)
                        .map_err(|e| Ok(MediaError::Encode(e)))?,
                );
                self.graph_for = key;
            }
            self.graph
                .as_mut()
                .expect("built above")
                .push(Some(&mut frame))
                .map_err(|e| Ok(MediaError::Encode(e)))?;
            self.drain_graph()?;
        }
    }

    fn frame_ticks(&self) -> i64 {
        match self.frame_rate {
            Some(fr) => unsafe {
                ffi::av_rescale_q(
                    1,
                    ffi::AVRational {
                        num: fr.den,
                        den: fr.num,
                    },
                    self.in_tb,
                )
            }
            .max(1),
            None => 1,
        }
    }

    fn drain_graph(&mut self) -> Result<(), DriveError> {
        loop {
            let Some(graph) = self.graph.as_mut() else {
                return Ok(());
            };
            match graph.pull().map_err(|e| Ok(MediaError::Encode(e)))? {
                Pulled::Frame(mut f) => {
                    f.set_pict_type(ffi::AVPictureType_AV_PICTURE_TYPE_NONE);
                    self.send(Msg::Frame(f))?;
                    self.frames += 1;
                }
                Pulled::Again | Pulled::End => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_scale_rotate_and_convert_only_what_is_needed() {
        let sq = ffi::AVRational { num: 1, den: 1 };
        let yuv = ffi::AVPixelFormat_AV_PIX_FMT_YUV420P;
        let p10 = ffi::AVPixelFormat_AV_PIX_FMT_YUV420P10LE;
        let cuda = ffi::AVPixelFormat_AV_PIX_FMT_CUDA;
        let g = |w, h, r| Geometry {
            width: w,
            height: h,
            rotation: r,
        };
        let cases = [
            (
                (640, 272, yuv, None),
                g(640, 272, 0),
                yuv,
                "format=yuv420p,setsar=1",
            ),
            (
                (1280, 720, yuv, None),
                g(640, 360, 0),
                yuv,
                "scale=640:360:flags=bicubic,format=yuv420p,setsar=1",
            ),
            (
                (1920, 1080, p10, None),
                g(720, 1280, 90),
                yuv,
                "scale=1280:720:flags=bicubic,transpose=clock,format=yuv420p,setsar=1",
            ),
            (
                (1280, 720, cuda, Some(ffi::AVPixelFormat_AV_PIX_FMT_NV12)),
                g(640, 360, 0),
                yuv,
                "scale_cuda=640:360,hwdownload,format=nv12,format=yuv420p,setsar=1",
            ),
            (
                (1280, 720, cuda, Some(ffi::AVPixelFormat_AV_PIX_FMT_NV12)),
                g(360, 640, 270),
                yuv,
                "hwdownload,format=nv12,scale=640:360:flags=bicubic,transpose=cclock,format=yuv420p,setsar=1",
            ),
        ];
        for ((w, h, fmt, sw), geo, target, want) in cases {
            assert_eq!(video_chain(w, h, sq, fmt, sw, &geo, target), want);
        }
    }
}
