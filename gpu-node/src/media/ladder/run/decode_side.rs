//! The decode side of a ladder, on the job's thread: demux, decode (NVDEC or the CPU), the
//! trim, and the one filter graph — the edit's picture filters, then a `split` into every
//! rendition's scale — whose outputs go to the encoder threads; audio packets go to the muxer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::{Duration, Instant};

use rsmpeg::avcodec::{AVCodecContext, AVPacket};
use rsmpeg::avformat::AVFormatContextInput;
use rsmpeg::avutil::AVFrame;
use rsmpeg::error::RsmpegError;
use rsmpeg::ffi;

use super::{MuxMsg, PROGRESS_EVERY};
use crate::media::edit::{picture_chain, PicturePlan};
use crate::media::error::describe;
use crate::media::filter::{FilterGraph, Pulled};
use crate::media::geometry::Geometry;
use crate::media::pipeline::{chain, cut_audio, output_pts, progress_span, q2d, FrameCut, Trim};
use crate::media::{hw, MediaError};

/// The decode side, on the job's thread.
pub(super) struct DecodeSide<'c> {
    pub cancel: &'c AtomicBool,
    pub abandon: &'c AtomicBool,
    pub dec: AVCodecContext,
    pub graph: Option<FilterGraph>,
    pub graph_for: (i32, i32, i32),
    pub in_tb: ffi::AVRational,
    pub frame_rate: Option<ffi::AVRational>,
    /// Every rendition's picture, largest first.
    pub rungs: Vec<Geometry>,
    pub pix_fmt: ffi::AVPixelFormat,
    pub last_pts: i64,
    pub frames: u64,
    pub hw_seen: Option<bool>,
    /// Crop, watermark, subtitles: applied once at the top rendition's size, before the split.
    pub picture: Option<PicturePlan>,
    /// The span kept: frames before it are dropped, timestamps moved to start at zero.
    pub trim: Option<Trim>,
    pub past_end: bool,
    pub frame_txs: Vec<SyncSender<Option<AVFrame>>>,
    pub mux_tx: SyncSender<MuxMsg>,
}

/// `Err(None)`: a downstream thread went away (its error is the one to report).
pub(super) type Step = Result<(), Option<MediaError>>;

impl DecodeSide<'_> {
    pub(super) fn drive(
        &mut self,
        ictx: &mut AVFormatContextInput,
        v_index: usize,
        audio_index: Option<usize>,
        (duration_s, v_start): (f64, i64),
        on_progress: &mut dyn FnMut(f64, u64),
    ) -> Step {
        let mut last_report = Instant::now() - PROGRESS_EVERY;
        let mut last_pts_s = 0.0f64;
        // Progress runs over the span kept.
        let (from_s, span_s) = progress_span(self.trim.as_ref(), duration_s);
        let mut audio_done = audio_index.is_none();
        loop {
            if self.past_end && audio_done {
                break;
            }
            if self.cancel.load(Ordering::Relaxed) {
                return Err(Some(MediaError::Cancelled));
            }
            let packet = match ictx.read_packet() {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => return Err(Some(MediaError::Decode(describe("read packet", &e)))),
            };
            let si = packet.stream_index as usize;
            if si == v_index {
                if packet.pts != ffi::AV_NOPTS_VALUE {
                    last_pts_s = (packet.pts - v_start) as f64 * q2d(self.in_tb);
                }
                self.decode(Some(&packet))?;
            } else if Some(si) == audio_index {
                if let Some(p) = cut_audio(self.trim.as_ref(), packet, &mut audio_done) {
                    let tx = self.mux_tx.clone();
                    self.send(&tx, MuxMsg::Audio(p))?;
                }
            }
            if last_report.elapsed() >= PROGRESS_EVERY {
                last_report = Instant::now();
                let fraction = if span_s > 0.0 {
                    ((last_pts_s - from_s) / span_s).clamp(0.0, 0.999)
                } else {
                    0.0
                };
                on_progress(fraction, self.frames);
            }
        }
        self.decode(None)?;
        if let Some(g) = self.graph.as_mut() {
            g.push(None).map_err(|e| Some(MediaError::Encode(e)))?;
        }
        self.drain()?;
        for i in 0..self.frame_txs.len() {
            let tx = self.frame_txs[i].clone();
            self.send(&tx, None)?;
        }
        let tx = self.mux_tx.clone();
        self.send(&tx, MuxMsg::AudioDone)
    }

    /// Send without blocking past a cancel or an abandoned ladder.
    fn send<T>(&self, tx: &SyncSender<T>, mut msg: T) -> Step {
        loop {
            match tx.try_send(msg) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Disconnected(_)) => return Err(None),
                Err(TrySendError::Full(m)) => {
                    if self.cancel.load(Ordering::Relaxed) {
                        return Err(Some(MediaError::Cancelled));
                    }
                    if self.abandon.load(Ordering::Relaxed) {
                        return Err(None);
                    }
                    msg = m;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }

    fn decode(&mut self, packet: Option<&AVPacket>) -> Step {
        let err = |e: RsmpegError| Some(MediaError::Decode(describe("decode", &e)));
        match self.dec.send_packet(packet) {
            Ok(()) | Err(RsmpegError::DecoderFlushedError) => {}
            Err(e) => return Err(err(e)),
        }
        loop {
            let mut frame = match self.dec.receive_frame() {
                Ok(f) => f,
                Err(RsmpegError::DecoderDrainError) | Err(RsmpegError::DecoderFlushedError) => {
                    return Ok(())
                }
                Err(e) => return Err(err(e)),
            };
            if self.hw_seen.is_none() {
                self.hw_seen = Some(frame.format == ffi::AVPixelFormat_AV_PIX_FMT_CUDA);
            }
            // Timestamps strictly increase into the encoders, as the muxer requires.
            let mut pts = frame.best_effort_timestamp;
            if pts == ffi::AV_NOPTS_VALUE {
                pts = if self.last_pts == i64::MIN {
                    0
                } else {
                    self.last_pts + 1
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
                    old.push(None).map_err(|e| Some(MediaError::Encode(e)))?;
                    self.drain()?;
                }
                let graph = self
                    .split_graph(&frame)
                    .map_err(|e| Some(MediaError::Encode(e)))?;
                self.graph = Some(graph);
                self.graph_for = key;
            }
            self.graph
                .as_mut()
                .expect("built above")
                .push(Some(&mut frame))
                .map_err(|e| Some(MediaError::Encode(e)))?;
            self.drain()?;
        }
    }

    /// `[in]split=N[s0]…;[s0]<rendition 0's chain>[out0];…`: one graph from the decoded
    /// frames to every rendition (scaled on the GPU when the frames are there). With picture
    /// edits, `[in]<crop, watermark, subtitles at the top size>[pic];[pic]split=N…`.
    fn split_graph(&self, frame: &AVFrame) -> Result<FilterGraph, String> {
        let n = self.rungs.len();
        let sw = hw::hw_sw_format(frame);
        let labels: String = (0..n).map(|i| format!("[s{i}]")).collect();
        let top = self.rungs[0];
        let mut spec = match &self.picture {
            Some(plan) => format!(
                "{};[pic]split={n}{labels}",
                picture_chain(
                    (frame.width, frame.height),
                    frame.sample_aspect_ratio,
                    (frame.format, sw),
                    plan,
                    (top.width, top.height),
                    self.pix_fmt,
                    "pic",
                )
            ),
            None => format!("[in]split={n}{labels}"),
        };
        let square = ffi::AVRational { num: 1, den: 1 };
        for (i, g) in self.rungs.iter().enumerate() {
            let chain = match &self.picture {
                // Upright, square frames of the top size and the target format already.
                Some(_) => chain::video_chain(
                    top.width as i32,
                    top.height as i32,
                    square,
                    self.pix_fmt,
                    None,
                    g,
                    self.pix_fmt,
                ),
                None => chain::video_chain(
                    frame.width,
                    frame.height,
                    frame.sample_aspect_ratio,
                    frame.format,
                    sw,
                    g,
                    self.pix_fmt,
                ),
            };
            let out = if n == 1 {
                "out".to_string()
            } else {
                format!("out{i}")
            };
            spec.push_str(&format!(";[s{i}]{chain}[{out}]"));
        }
        tracing::debug!(%spec, "ladder filter graph");
        FilterGraph::video_to(frame, self.in_tb, self.frame_rate, &spec, n)
    }

    fn drain(&mut self) -> Step {
        for i in 0..self.rungs.len() {
            loop {
                let Some(graph) = self.graph.as_mut() else {
                    return Ok(());
                };
                match graph
                    .pull_from(i)
                    .map_err(|e| Some(MediaError::Encode(e)))?
                {
                    Pulled::Frame(mut f) => {
                        f.set_pict_type(ffi::AVPictureType_AV_PICTURE_TYPE_NONE);
                        // Every sink follows the one `split`, so they share a time base.
                        let sink_tb = graph.sink_time_base();
                        output_pts(self.trim.as_ref(), &mut f, sink_tb, self.in_tb);
                        let tx = self.frame_txs[i].clone();
                        self.send(&tx, Some(f))?;
                        if i == 0 {
                            self.frames += 1;
                        }
                    }
                    Pulled::Again | Pulled::End => break,
                }
            }
        }
        Ok(())
    }
}
