//! The threads of a ladder: this one demuxes, decodes and runs the split filter graph; one
//! thread per rendition encodes; one thread owns the `dash` muxer (and the audio track, copied
//! or encoded once) and writes every packet. Bounded channels keep memory flat: the decoder
//! waits for the slowest encoder.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kiln_protocol::Container;
use rsmpeg::avcodec::{AVCodecContext, AVPacket};
use rsmpeg::avformat::{AVFormatContextInput, AVFormatContextOutput};
use rsmpeg::avutil::{AVDictionary, AVFrame};
use rsmpeg::error::RsmpegError;
use rsmpeg::ffi;

use crate::media::audio::{self, AudioTrack};
use crate::media::encoder::EncoderSettings;
use crate::media::error::describe;
use crate::media::filter::{FilterGraph, Pulled};
use crate::media::geometry::Geometry;
use crate::media::pipeline::{chain, decode, mux_packet, open_encoder, q2d, PassSpec};
use crate::media::{container_duration_s, hw, path_cstring, MediaError};

/// What the ladder's threads are asked to do.
pub(super) struct RunSpec<'a> {
    pub input: &'a Path,
    /// `…/manifest.mpd`: the muxer writes the whole tree beside it.
    pub manifest: &'a Path,
    pub encoder: &'static str,
    /// Each rendition's picture and encoder settings, largest first.
    pub rungs: Vec<(Geometry, EncoderSettings)>,
    pub pix_fmt: ffi::AVPixelFormat,
    pub segment_secs: u32,
    pub hw_decode: bool,
}

/// What the threads produced.
pub(super) struct Ran {
    pub frames: u64,
    pub duration_s: f64,
    pub frame_rate: f64,
    pub gop_frames: u32,
    pub audio: &'static str,
    pub hwaccel: bool,
    pub hw_note: Option<String>,
    pub decoder: String,
}

/// Frames in flight to each encoder.
const QUEUE_FRAMES: usize = 8;
/// Packets in flight to the muxer.
const QUEUE_PACKETS: usize = 256;
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// Frame rate assumed for the keyframe cadence when the source declares none.
const ASSUMED_FPS: f64 = 30.0;

enum MuxMsg {
    Video {
        index: usize,
        packet: AVPacket,
        tb: ffi::AVRational,
    },
    VideoDone,
    Audio(AVPacket),
    AudioDone,
}

/// How a thread ended: its result, or `Err(None)` when it stopped because another part of the
/// ladder went away first (that part's error is the one to report).
type Ended = Result<u64, Option<MediaError>>;

pub(super) fn run(
    spec: &RunSpec<'_>,
    cancel: &AtomicBool,
    on_progress: &mut dyn FnMut(f64, u64),
) -> Result<Ran, MediaError> {
    let mut ictx = AVFormatContextInput::open(&path_cstring(spec.input)?, None, &mut None)
        .map_err(|e| MediaError::InvalidMedia(describe("open input", &e)))?;
    let (v_index, decoder) = ictx
        .find_best_stream(ffi::AVMediaType_AVMEDIA_TYPE_VIDEO)
        .map_err(|e| MediaError::InvalidMedia(describe("find video stream", &e)))?
        .ok_or(MediaError::NoVideoStream)?;
    let duration_s = container_duration_s(&ictx);
    let (in_tb, v_start, frame_rate, color) = {
        let stream = ictx.streams().get(v_index).expect("stream index");
        let par = stream.codecpar();
        (
            stream.time_base,
            if stream.start_time != ffi::AV_NOPTS_VALUE {
                stream.start_time
            } else {
                0
            },
            stream.guess_framerate().filter(|r| r.num > 0 && r.den > 0),
            (
                par.color_range,
                par.color_primaries,
                par.color_trc,
                par.color_space,
            ),
        )
    };
    let fps = frame_rate.map(q2d).unwrap_or(ASSUMED_FPS);
    let gop = ((spec.segment_secs as f64 * fps).round() as u32).max(1);

    let decoding = decode::open(&ictx, v_index, &decoder, in_tb, frame_rate, spec.hw_decode)?;
    let mut octx = AVFormatContextOutput::create(&path_cstring(spec.manifest)?, None)
        .map_err(|e| MediaError::Io(describe("create the dash muxer", &e)))?;
    let mut encoders = Vec::new();
    for (geometry, settings) in &spec.rungs {
        let pass = PassSpec {
            input: spec.input,
            output: spec.manifest,
            container: Container::Mp4,
            encoder: spec.encoder,
            settings: super::fixed_gop(spec.encoder, gop, settings.clone()),
            geometry: *geometry,
            pix_fmt: spec.pix_fmt,
            with_audio: false,
            hw_decode: spec.hw_decode,
        };
        let (enc, index) = open_encoder(&pass, in_tb, frame_rate, color, &mut octx)?;
        set_stream_sar(&mut octx, index, same_aspect(spec.rungs[0].0, *geometry));
        encoders.push((enc, index));
    }
    let audio = match crate::media::probe::first_audio_stream(&ictx) {
        Some(ai) => Some(audio::add_track(&ictx, ai, &mut octx, Container::Mp4)?),
        None => None,
    };
    let audio_kind = audio.as_ref().map(|a| a.kind()).unwrap_or("none");
    let audio_index = audio.as_ref().map(|a| a.in_index());
    write_header(&mut octx, gop, fps, audio.is_some())?;

    let abandon = Arc::new(AtomicBool::new(false));
    let (mux_tx, mux_rx) = sync_channel::<MuxMsg>(QUEUE_PACKETS);
    let n = encoders.len();
    let muxer = {
        let abandon = abandon.clone();
        spawn("kiln-mux", move || mux(octx, audio, n, mux_rx, &abandon))?
    };
    let mut frame_txs = Vec::new();
    let mut workers = Vec::new();
    for (i, (enc, out_index)) in encoders.into_iter().enumerate() {
        let (tx, rx) = sync_channel::<Option<AVFrame>>(QUEUE_FRAMES);
        frame_txs.push(tx);
        let (mux_tx, abandon) = (mux_tx.clone(), abandon.clone());
        workers.push(spawn(&format!("kiln-rung-{i}"), move || {
            encode(enc, out_index, rx, mux_tx, &abandon)
        })?);
    }

    let mut chains = Vec::new();
    for (geometry, _) in &spec.rungs {
        chains.push(*geometry);
    }
    let mut side = DecodeSide {
        cancel,
        abandon: &abandon,
        dec: decoding.dec,
        graph: None,
        graph_for: (0, 0, -1),
        in_tb,
        frame_rate,
        rungs: chains,
        pix_fmt: spec.pix_fmt,
        last_pts: i64::MIN,
        frames: 0,
        hw_seen: None,
        frame_txs,
        mux_tx,
    };
    let driven = side.drive(
        &mut ictx,
        v_index,
        audio_index,
        (duration_s, v_start),
        on_progress,
    );
    let (frames, hw_seen) = (side.frames, side.hw_seen);
    if driven.is_err() {
        abandon.store(true, Ordering::SeqCst);
    }
    // Dropping the senders ends every thread that has not ended yet.
    drop(side);
    let mut first_error = driven.err().flatten();
    for handle in workers.into_iter().chain(std::iter::once(muxer)) {
        match wait(handle, cancel, &abandon) {
            Ok(_) => {}
            Err(Some(e)) if first_error.is_none() => first_error = Some(e),
            Err(_) => {}
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    if cancel.load(Ordering::Relaxed) {
        return Err(MediaError::Cancelled);
    }
    if frames == 0 {
        return Err(MediaError::Decode("no video frame could be decoded".into()));
    }
    let hwaccel = hw_seen == Some(true);
    Ok(Ran {
        frames,
        duration_s,
        frame_rate: fps,
        gop_frames: gop,
        audio: audio_kind,
        hwaccel,
        hw_note: (decoding.hw_requested && !hwaccel)
            .then(|| "NVDEC declined this stream; decoded on the CPU".to_string())
            .or(decoding.hw_note),
        decoder: decoder.name().to_string_lossy().into_owned(),
    })
}

/// The sample aspect ratio that gives `rung` exactly `top`'s display aspect. Even sizes
/// cannot always keep an aspect exactly (16:9 at 240 lines is 426.67 wide), and the `dash`
/// muxer refuses renditions of one adaptation set whose aspects differ by any amount, so the
/// container says the few-per-mille stretch a player applies.
pub(super) fn same_aspect(top: Geometry, rung: Geometry) -> ffi::AVRational {
    let (mut num, mut den) = (0, 0);
    // SAFETY: av_reduce is pure arithmetic writing two integers.
    unsafe {
        ffi::av_reduce(
            &mut num,
            &mut den,
            top.width as i64 * rung.height as i64,
            top.height as i64 * rung.width as i64,
            1 << 20,
        )
    };
    ffi::AVRational { num, den }
}

fn set_stream_sar(octx: &mut AVFormatContextOutput, index: usize, sar: ffi::AVRational) {
    // SAFETY: `index` is a stream this ladder just added to `octx`, whose `streams` array
    // holds `nb_streams` live pointers; sample_aspect_ratio is a plain field read at header.
    unsafe {
        let ctx = octx.as_mut_ptr();
        assert!(index < (*ctx).nb_streams as usize);
        (**(*ctx).streams.add(index)).sample_aspect_ratio = sar;
    }
}

fn spawn(
    name: &str,
    f: impl FnOnce() -> Ended + Send + 'static,
) -> Result<JoinHandle<Ended>, MediaError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|e| MediaError::Io(format!("cannot start a ladder thread: {e}")))
}

/// Wait for a thread; on a cancel, stop waiting (x265 and SVT-AV1 can take seconds to close
/// mid-picture, and the job is over either way).
fn wait(handle: JoinHandle<Ended>, cancel: &AtomicBool, abandon: &AtomicBool) -> Ended {
    while !handle.is_finished() {
        if cancel.load(Ordering::Relaxed) {
            abandon.store(true, Ordering::SeqCst);
            return Err(Some(MediaError::Cancelled));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    handle
        .join()
        .unwrap_or_else(|_| Err(Some(MediaError::Encode("a ladder thread panicked".into()))))
}

/// The `dash` muxer's options: CMAF segments on the keyframe cadence, a segment template with
/// a timeline, HLS playlists beside the MPD, video and audio in their own adaptation sets.
fn write_header(
    octx: &mut AVFormatContextOutput,
    gop: u32,
    fps: f64,
    with_audio: bool,
) -> Result<(), MediaError> {
    // The muxer cuts at the first keyframe at least `seg_duration` into a segment; half a
    // frame less than the cadence makes that the cadence's own keyframe, never the next one.
    let seg = (gop as f64 - 0.5) / fps;
    let sets = if with_audio {
        "id=0,streams=v id=1,streams=a"
    } else {
        "id=0,streams=v"
    };
    let mut opts = None::<AVDictionary>;
    for (k, v) in [
        ("seg_duration", format!("{seg:.6}")),
        ("use_template", "1".into()),
        ("use_timeline", "1".into()),
        ("hls_playlist", "1".into()),
        ("dash_segment_type", "mp4".into()),
        ("adaptation_sets", sets.into()),
    ] {
        let (k, v) = (
            std::ffi::CString::new(k).expect("no NUL"),
            std::ffi::CString::new(v).expect("no NUL"),
        );
        opts = Some(match opts {
            None => AVDictionary::new(&k, &v, 0),
            Some(d) => d.set(&k, &v, 0),
        });
    }
    octx.write_header(&mut opts)
        .map_err(|e| MediaError::Encode(describe("write the dash header", &e)))
}

/// A rendition's encoder thread: frames in, packets to the muxer.
fn encode(
    mut enc: AVCodecContext,
    out_index: usize,
    rx: Receiver<Option<AVFrame>>,
    mux_tx: SyncSender<MuxMsg>,
    abandon: &AtomicBool,
) -> Ended {
    let mut bytes = 0u64;
    loop {
        let frame = match rx.recv() {
            Ok(f) => f,
            Err(_) => return Err(None),
        };
        let last = frame.is_none();
        match enc.send_frame(frame.as_ref()) {
            Ok(()) | Err(RsmpegError::EncoderFlushedError) => {}
            Err(e) => return Err(Some(MediaError::Encode(describe("video encode", &e)))),
        }
        loop {
            if abandon.load(Ordering::Relaxed) {
                return Err(None);
            }
            let packet = match enc.receive_packet() {
                Ok(p) => p,
                Err(RsmpegError::EncoderDrainError) | Err(RsmpegError::EncoderFlushedError) => {
                    break
                }
                Err(e) => return Err(Some(MediaError::Encode(describe("video encode", &e)))),
            };
            bytes += packet.size as u64;
            let msg = MuxMsg::Video {
                index: out_index,
                packet,
                tb: enc.time_base,
            };
            if mux_tx.send(msg).is_err() {
                return Err(None);
            }
        }
        if last {
            return mux_tx
                .send(MuxMsg::VideoDone)
                .map(|_| bytes)
                .map_err(|_| None);
        }
    }
}

/// The muxer thread: writes packets as they come and finishes the tree once every encoder and
/// the audio are done.
fn mux(
    mut octx: AVFormatContextOutput,
    mut audio: Option<AudioTrack>,
    encoders: usize,
    rx: Receiver<MuxMsg>,
    abandon: &AtomicBool,
) -> Ended {
    let (mut video_done, mut audio_done) = (0, false);
    while video_done < encoders || !audio_done {
        if abandon.load(Ordering::Relaxed) {
            return Err(None);
        }
        let written = match rx.recv() {
            Err(_) => return Err(None),
            Ok(MuxMsg::Video { index, packet, tb }) => {
                mux_packet(&mut octx, packet, tb, index, "video")
            }
            Ok(MuxMsg::VideoDone) => {
                video_done += 1;
                Ok(())
            }
            Ok(MuxMsg::Audio(p)) => match audio.as_mut() {
                Some(a) => a.packet(p, &mut octx),
                None => Ok(()),
            },
            Ok(MuxMsg::AudioDone) => {
                audio_done = true;
                Ok(())
            }
        };
        written.map_err(Some)?;
    }
    if let Some(a) = audio.as_mut() {
        a.finish(&mut octx).map_err(Some)?;
    }
    octx.write_trailer()
        .map_err(|e| Some(MediaError::Encode(describe("write the dash trailer", &e))))?;
    Ok(0)
}

/// The decode side, on the job's thread.
struct DecodeSide<'c> {
    cancel: &'c AtomicBool,
    abandon: &'c AtomicBool,
    dec: AVCodecContext,
    graph: Option<FilterGraph>,
    graph_for: (i32, i32, i32),
    in_tb: ffi::AVRational,
    frame_rate: Option<ffi::AVRational>,
    rungs: Vec<Geometry>,
    pix_fmt: ffi::AVPixelFormat,
    last_pts: i64,
    frames: u64,
    hw_seen: Option<bool>,
    frame_txs: Vec<SyncSender<Option<AVFrame>>>,
    mux_tx: SyncSender<MuxMsg>,
}

/// `Err(None)`: a downstream thread went away (its error is the one to report).
type Step = Result<(), Option<MediaError>>;

impl DecodeSide<'_> {
    fn drive(
        &mut self,
        ictx: &mut AVFormatContextInput,
        v_index: usize,
        audio_index: Option<usize>,
        (duration_s, v_start): (f64, i64),
        on_progress: &mut dyn FnMut(f64, u64),
    ) -> Step {
        let mut last_report = Instant::now() - PROGRESS_EVERY;
        let mut last_pts_s = 0.0f64;
        loop {
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
                let tx = self.mux_tx.clone();
                self.send(&tx, MuxMsg::Audio(packet))?;
            }
            if last_report.elapsed() >= PROGRESS_EVERY {
                last_report = Instant::now();
                let fraction = if duration_s > 0.0 {
                    (last_pts_s / duration_s).clamp(0.0, 0.999)
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
    /// frames to every rendition (scaled on the GPU when the frames are there).
    fn split_graph(&self, frame: &AVFrame) -> Result<FilterGraph, String> {
        let n = self.rungs.len();
        let sw = hw::hw_sw_format(frame);
        let labels: String = (0..n).map(|i| format!("[s{i}]")).collect();
        let mut spec = format!("[in]split={n}{labels}");
        for (i, g) in self.rungs.iter().enumerate() {
            let chain = chain::video_chain(
                frame.width,
                frame.height,
                frame.sample_aspect_ratio,
                frame.format,
                sw,
                g,
                self.pix_fmt,
            );
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
