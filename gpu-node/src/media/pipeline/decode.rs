//! The decode side of a pass, on the pass's own thread: the decoder (NVDEC or the CPU), the
//! filter graph it feeds, and the hand-off of frames and audio to the encoder thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::Duration;

use rsmpeg::avcodec::{AVCodec, AVCodecContext, AVPacket};
use rsmpeg::avformat::AVFormatContextInput;
use rsmpeg::avutil::AVFrame;
use rsmpeg::error::RsmpegError;
use rsmpeg::ffi;
use rsmpeg::UnsafeDerefMut;

use super::{output_pts, DriveError, FrameCut, Msg, Trim};
use crate::media::edit::{picture_chain, PicturePlan};
use crate::media::error::describe;
use crate::media::filter::{FilterGraph, Pulled};
use crate::media::geometry::Geometry;
use crate::media::{hw, MediaError};

/// An opened video decoder, and whether NVDEC was asked of it (or why not).
pub(crate) struct Decoding {
    pub dec: AVCodecContext,
    pub hw_requested: bool,
    pub hw_note: Option<String>,
    /// The GPU's device could not be created: the device's fault, not the input's.
    pub device_fault: Option<String>,
}

/// Open the decoder of stream `v_index`: NVDEC on GPU `gpu` when given and the codec has a
/// CUDA path, the CPU otherwise (with the reason).
pub(crate) fn open(
    ictx: &AVFormatContextInput,
    v_index: usize,
    decoder: &AVCodec,
    in_tb: ffi::AVRational,
    frame_rate: Option<ffi::AVRational>,
    gpu: Option<u32>,
) -> Result<Decoding, MediaError> {
    let mut dec = AVCodecContext::new(decoder);
    dec.apply_codecpar(&ictx.streams().get(v_index).expect("index").codecpar())
        .map_err(|e| MediaError::InvalidMedia(describe("decoder parameters", &e)))?;
    let mut hw_note = None;
    let mut hw_requested = false;
    // SAFETY: the context is allocated and not yet opened; these are plain fields FFmpeg reads on
    // open.
    unsafe {
        let raw = dec.deref_mut();
        raw.pkt_timebase = in_tb;
        crate::media::bound_decoder(raw);
    }
    let mut device_fault = None;
    if let Some(gpu) = gpu {
        match hw::cuda_device(gpu) {
            // SAFETY: the context is not yet opened; `device` is the process's live CUDA device,
            // and av_buffer_ref gives the decoder its own reference to it.
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
            Err(e) => {
                hw_note = Some(format!("NVDEC unavailable ({e}); decoded on the CPU"));
                device_fault = Some(e);
            }
        }
    }
    if let Some(fr) = frame_rate {
        dec.set_framerate(fr);
    }
    dec.open(None)
        .map_err(|e| MediaError::Decode(describe("open decoder", &e)))?;
    Ok(Decoding {
        dec,
        hw_requested,
        hw_note,
        device_fault,
    })
}

/// Decode stream `v` of `ictx` with `dec` to its end (the decoder flushed), handing every frame
/// to `on_frame`, which says whether to go on; stops at a cancel. For the passes that only look
/// at frames (stills, scene detection), on the caller's thread.
pub(crate) fn each_frame(
    ictx: &mut AVFormatContextInput,
    v: usize,
    dec: &mut AVCodecContext,
    cancel: &AtomicBool,
    on_frame: &mut dyn FnMut(AVFrame) -> Result<bool, MediaError>,
) -> Result<(), MediaError> {
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(MediaError::Cancelled);
        }
        let packet: Option<AVPacket> = ictx
            .read_packet()
            .map_err(|e| MediaError::Decode(describe("read packet", &e)))?;
        if packet
            .as_ref()
            .is_some_and(|p| p.stream_index as usize != v)
        {
            continue;
        }
        let end = packet.is_none();
        match dec.send_packet(packet.as_ref()) {
            Ok(()) | Err(RsmpegError::DecoderFlushedError) => {}
            Err(e) => return Err(MediaError::Decode(describe("decode", &e))),
        }
        loop {
            match dec.receive_frame() {
                Ok(f) => {
                    if !on_frame(f)? {
                        return Ok(());
                    }
                }
                Err(RsmpegError::DecoderDrainError) | Err(RsmpegError::DecoderFlushedError) => {
                    break
                }
                Err(e) => return Err(MediaError::Decode(describe("decode", &e))),
            }
        }
        if end {
            return Ok(());
        }
    }
}

/// The decode side, on the pass's own thread.
pub(super) struct Video<'c> {
    pub(super) cancel: &'c AtomicBool,
    pub(super) in_index: usize,
    pub(super) dec: AVCodecContext,
    pub(super) graph: Option<FilterGraph>,
    /// Source frame geometry the graph was built for.
    pub(super) graph_for: (i32, i32, i32),
    pub(super) in_tb: ffi::AVRational,
    pub(super) frame_rate: Option<ffi::AVRational>,
    pub(super) geometry: Geometry,
    pub(super) pix_fmt: ffi::AVPixelFormat,
    pub(super) last_pts: i64,
    pub(super) frames: u64,
    pub(super) hw_requested: bool,
    pub(super) hw_seen: Option<bool>,
    /// Crop, watermark, subtitles: the graph is [`picture_chain`]'s.
    pub(super) picture: Option<PicturePlan>,
    /// The span kept: frames before it are dropped, timestamps moved to start at zero.
    pub(super) trim: Option<Trim>,
    /// Whether a frame at or past the trim's end was decoded.
    pub(super) past_end: bool,
    /// Frames and audio packets on their way to the encoder thread.
    pub(super) tx: SyncSender<Msg>,
}

impl Video<'_> {
    /// Hand the encoder thread a message, waiting while its queue is full but never past a
    /// cancel (a slow encoder can take a second per frame).
    pub(super) fn send(&self, mut msg: Msg) -> Result<(), DriveError> {
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Disconnected(_)) => return Err(DriveError::SinkGone),
                Err(TrySendError::Full(m)) => {
                    if self.cancel.load(Ordering::Relaxed) {
                        return Err(MediaError::Cancelled.into());
                    }
                    msg = m;
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
    }

    pub(super) fn decode(&mut self, packet: Option<&AVPacket>) -> Result<(), DriveError> {
        let decode_err =
            |e: RsmpegError| DriveError::from(MediaError::Decode(describe("decode", &e)));
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
            match self.trim.as_ref().map_or(FrameCut::Keep, |t| t.frame(pts)) {
                FrameCut::Before => continue,
                FrameCut::After => {
                    self.past_end = true;
                    continue;
                }
                FrameCut::Keep => {}
            }
            frame.set_pts(pts);
            let key = (frame.width, frame.height, frame.format);
            if self.graph.is_none() || self.graph_for != key {
                if let Some(old) = self.graph.as_mut() {
                    // Size or format changed mid-stream: flush what the old graph holds.
                    old.push(None).map_err(MediaError::Encode)?;
                    self.drain_graph()?;
                }
                let sw = hw::hw_sw_format(&frame);
                let chain = match &self.picture {
                    Some(plan) => picture_chain(
                        (frame.width, frame.height),
                        frame.sample_aspect_ratio,
                        (frame.format, sw),
                        plan,
                        (self.geometry.width, self.geometry.height),
                        self.pix_fmt,
                        "out",
                    ),
                    None => super::chain::video_chain(
                        frame.width,
                        frame.height,
                        frame.sample_aspect_ratio,
                        frame.format,
                        sw,
                        &self.geometry,
                        self.pix_fmt,
                    ),
                };
                tracing::debug!(%chain, "video filter");
                self.graph = Some(
                    FilterGraph::video(&frame, self.in_tb, self.frame_rate, &chain)
                        .map_err(MediaError::Encode)?,
                );
                self.graph_for = key;
            }
            self.graph
                .as_mut()
                .expect("built above")
                .push(Some(&mut frame))
                .map_err(MediaError::Encode)?;
            self.drain_graph()?;
        }
    }

    fn frame_ticks(&self) -> i64 {
        match self.frame_rate {
            // SAFETY: av_rescale_q is pure arithmetic on its arguments.
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

    pub(super) fn drain_graph(&mut self) -> Result<(), DriveError> {
        loop {
            let Some(graph) = self.graph.as_mut() else {
                return Ok(());
            };
            let sink_tb = graph.sink_time_base();
            match graph.pull().map_err(MediaError::Encode)? {
                Pulled::Frame(mut f) => {
                    f.set_pict_type(ffi::AVPictureType_AV_PICTURE_TYPE_NONE);
                    output_pts(self.trim.as_ref(), &mut f, sink_tb, self.in_tb);
                    self.send(Msg::Frame(f))?;
                    self.frames += 1;
                }
                Pulled::Again | Pulled::End => return Ok(()),
            }
        }
    }
}
