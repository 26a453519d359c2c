//! The threads of a ladder: this one demuxes, decodes and runs the split filter graph; one
//! thread per rendition encodes; one thread owns the `dash` muxer (and the audio track, copied
//! or encoded once) and writes every packet. Bounded channels keep memory flat: the decoder
//! waits for the slowest encoder.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use kiln_protocol::Container;
use rsmpeg::avcodec::{AVCodecContext, AVPacket};
use rsmpeg::avformat::{AVFormatContextInput, AVFormatContextOutput};
use rsmpeg::avutil::{AVDictionary, AVFrame};
use rsmpeg::error::RsmpegError;
use rsmpeg::ffi;

use crate::media::audio::{self, AudioTrack};
use crate::media::edit::EditPlan;
use crate::media::encoder::EncoderSettings;
use crate::media::error::describe;
use crate::media::geometry::Geometry;
use crate::media::pipeline::{
    decode, mux_packet, open_encoder, output_duration, q2d, trim, PassSpec,
};
use crate::media::{container_duration_s, path_cstring, MediaError};

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
    /// The GPU to decode on with NVDEC, if any.
    pub gpu: Option<u32>,
    /// Trim, crop, watermark, subtitles.
    pub edit: &'a EditPlan,
    /// Whether the audio rendition is Opus (else AAC).
    pub opus: bool,
}

mod decode_side;

use decode_side::DecodeSide;

/// What the threads produced.
pub(super) struct Ran {
    pub frames: u64,
    pub duration_s: f64,
    pub frame_rate: f64,
    pub gop_frames: u32,
    pub audio: &'static str,
    pub hwaccel: bool,
    pub hw_note: Option<String>,
    /// The GPU's device failed to open (its fault, not the input's).
    pub device_fault: Option<String>,
    pub decoder: String,
}

/// Frames in flight to each encoder.
const QUEUE_FRAMES: usize = 8;
/// Packets in flight to the muxer.
const QUEUE_PACKETS: usize = 256;
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// Frame rate assumed for the keyframe cadence when the source declares none.
const ASSUMED_FPS: f64 = 30.0;

/// The keyframe cadence of `segment_secs` segments at `frame_rate` (the stream's guess):
/// frames per GOP, and the frame rate it was counted at.
pub(super) fn cadence(frame_rate: Option<ffi::AVRational>, segment_secs: u32) -> (u32, f64) {
    let fps = frame_rate.map(q2d).unwrap_or(ASSUMED_FPS);
    (((segment_secs as f64 * fps).round() as u32).max(1), fps)
}

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
    let (gop, fps) = cadence(frame_rate, spec.segment_secs);

    let trim = trim::open(spec.edit.span, &mut ictx, v_index, v_start, in_tb);
    let decoding = decode::open(&ictx, v_index, &decoder, in_tb, frame_rate, spec.gpu)?;
    let mut octx = AVFormatContextOutput::create(&path_cstring(spec.manifest)?, None)
        .map_err(|e| MediaError::Io(describe("create the dash muxer", &e)))?;
    let mut encoders = Vec::new();
    // The edit is applied before the split, once; the rungs' chains only scale.
    let no_edit = EditPlan::default();
    for (geometry, settings) in &spec.rungs {
        let pass = PassSpec {
            input: spec.input,
            output: spec.manifest,
            container: Container::Mp4,
            encoder: spec.encoder,
            settings: super::fixed_gop(spec.encoder, gop, settings.clone()),
            geometry: *geometry,
            sar: same_aspect(spec.rungs[0].0, *geometry),
            pix_fmt: spec.pix_fmt,
            with_audio: false,
            audio_shrink: None,
            gpu: spec.gpu,
            edit: &no_edit,
        };
        let (enc, index) = open_encoder(&pass, in_tb, frame_rate, color, &mut octx)?;
        // The muxer refuses a stream whose aspect differs from its encoder's by over 0.4 %:
        // both say the same.
        set_stream_sar(&mut octx, index, pass.sar);
        encoders.push((enc, index));
    }
    let audio = match crate::media::probe::first_audio_stream(&ictx) {
        Some(ai) => Some(audio::add_track_with(
            &ictx,
            ai,
            &mut octx,
            Container::Mp4,
            spec.opus,
            None,
        )?),
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
        picture: spec.edit.picture.clone(),
        trim: trim.clone(),
        past_end: false,
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
    let duration_s = output_duration(trim.as_ref(), duration_s);
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
        device_fault: decoding.device_fault,
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

pub(super) fn set_stream_sar(octx: &mut AVFormatContextOutput, index: usize, sar: ffi::AVRational) {
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
pub(super) fn write_header(
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
