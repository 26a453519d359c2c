//! The chunks joined into the title: each chunk's video packets copied in order, moved by the
//! chunk's start (FFmpeg has no muxer-level join of separately encoded MP4s that keeps exact
//! timestamps: the concat demuxer re-times by durations, so this is the loop it would run),
//! with the source's audio copied or encoded once alongside, into the title's container.

use std::path::{Path, PathBuf};

use kiln_protocol::Container;
use rsmpeg::avcodec::AVCodecParameters;
use rsmpeg::avformat::{AVFormatContextInput, AVFormatContextOutput};
use rsmpeg::avutil::AVDictionary;
use rsmpeg::ffi;

use super::plan::ChunkSpan;
use crate::media::audio::{self, AudioTrack, Shrink};
use crate::media::error::describe;
use crate::media::pipeline::{copy_stream, mux_packet, one_frame, q2d};
use crate::media::{path_cstring, MediaError};

/// What the joined title holds.
#[derive(Debug, Clone)]
pub struct Assembled {
    pub frames: u64,
    pub video_bytes: u64,
    pub file_bytes: u64,
    /// `copied`, `aac`, `opus` or `none`.
    pub audio: &'static str,
}

fn open(path: &Path) -> Result<(AVFormatContextInput, usize), MediaError> {
    let ictx = AVFormatContextInput::open(&path_cstring(path)?, None, &mut None)
        .map_err(|e| MediaError::Io(describe(&format!("open {}", path.display()), &e)))?;
    let (v, _) = ictx
        .find_best_stream(ffi::AVMediaType_AVMEDIA_TYPE_VIDEO)
        .map_err(|e| MediaError::Encode(describe("find the chunk's video", &e)))?
        .ok_or(MediaError::NoVideoStream)?;
    Ok((ictx, v))
}

fn owned_par(ictx: &AVFormatContextInput, index: usize) -> AVCodecParameters {
    let mut par = AVCodecParameters::new();
    par.copy(
        &ictx
            .streams()
            .get(index)
            .expect("stream index from FFmpeg")
            .codecpar(),
    );
    par
}

/// The source's audio, fed to the output up to a point in time.
struct Audio {
    ictx: AVFormatContextInput,
    track: AudioTrack,
    tb: ffi::AVRational,
    done: bool,
}

impl Audio {
    /// Write the source's audio packets that start before `until_s`.
    fn up_to(&mut self, until_s: f64, octx: &mut AVFormatContextOutput) -> Result<(), MediaError> {
        let ai = self.track.in_index();
        while !self.done {
            let Some(p) = self
                .ictx
                .read_packet()
                .map_err(|e| MediaError::Decode(describe("read audio", &e)))?
            else {
                self.done = true;
                break;
            };
            if p.stream_index as usize != ai {
                continue;
            }
            let t = p.pts as f64 * q2d(self.tb);
            self.track.packet(p, octx)?;
            if t >= until_s {
                break;
            }
        }
        Ok(())
    }
}

/// Join `chunks` (each span with the file its encode wrote, in order) of `source` into
/// `output`, a `container` file; the source's video starts at `origin_s` (its first video
/// timestamp), which the joined video keeps so that the audio stays in sync. `audio`: the
/// source's audio goes alongside (shrunk where a size plan said so); `None`: video only (a
/// ladder rendition, packaged with the audio afterwards).
pub(crate) fn assemble(
    source: &Path,
    chunks: &[(ChunkSpan, PathBuf)],
    origin_s: f64,
    output: &Path,
    container: Container,
    audio: Option<Option<Shrink>>,
) -> Result<Assembled, MediaError> {
    let Some((_, first)) = chunks.first() else {
        return Err(MediaError::Encode("no chunks to join".into()));
    };
    let (head, hv) = open(first)?;
    let head_par = owned_par(&head, hv);
    let extradata = |par: &AVCodecParameters| -> Vec<u8> {
        if par.extradata.is_null() || par.extradata_size <= 0 {
            return Vec::new();
        }
        // SAFETY: FFmpeg owns `extradata_size` bytes at `extradata` for the parameters' life.
        unsafe { std::slice::from_raw_parts(par.extradata, par.extradata_size as usize) }.to_vec()
    };
    let head_extra = extradata(&head_par);

    let mut octx = AVFormatContextOutput::create(&path_cstring(output)?, None)
        .map_err(|e| MediaError::Io(describe("create output", &e)))?;
    let head_tb = head.streams().get(hv).expect("video stream").time_base;
    let out_v = copy_stream(&mut octx, container, &head_par, head_tb);
    drop(head);

    let (src, _) = open(source)?;
    let with_audio = audio.is_some();
    let shrink = audio.flatten();
    let mut audio = match crate::media::probe::first_audio_stream(&src).filter(|_| with_audio) {
        Some(ai) => {
            let track = audio::add_track(&src, ai, &mut octx, container, shrink)?;
            let tb = src.streams().get(ai).expect("audio stream").time_base;
            Some(Audio {
                ictx: src,
                track,
                tb,
                done: false,
            })
        }
        None => None,
    };
    // A video-only rendition is read once more to be packaged: no need to move its index.
    let mut header_opts = (container == Container::Mp4 && with_audio)
        .then(|| AVDictionary::new(c"movflags", c"+faststart", 0));
    octx.write_header(&mut header_opts)
        .map_err(|e| MediaError::Encode(describe("write header", &e)))?;

    let (mut frames, mut video_bytes) = (0u64, 0u64);
    let mut last_dts_s = f64::NEG_INFINITY;
    for (span, path) in chunks {
        let (mut ictx, v) = open(path)?;
        let (tb, rate) = {
            let s = ictx.streams().get(v).expect("video stream");
            (s.time_base, s.r_frame_rate)
        };
        let par = owned_par(&ictx, v);
        let frame = one_frame(rate, tb);
        if (par.width, par.height, par.codec_id)
            != (head_par.width, head_par.height, head_par.codec_id)
            || extradata(&par) != head_extra
        {
            return Err(MediaError::Encode(format!(
                "chunk {} was encoded with other stream parameters than chunk 0",
                span.index
            )));
        }
        let shift = ((span.start_s + origin_s) / q2d(tb)).round() as i64;
        let mut got = 0u64;
        while let Some(mut p) = ictx
            .read_packet()
            .map_err(|e| MediaError::Decode(describe("read chunk", &e)))?
        {
            if p.stream_index as usize != v {
                continue;
            }
            p.set_pts(p.pts + shift);
            p.set_dts(p.dts + shift);
            let dts_s = p.dts as f64 * q2d(tb);
            if dts_s <= last_dts_s {
                return Err(MediaError::Encode(format!(
                    "chunk {} overlaps the chunk before it ({dts_s:.3} s <= {last_dts_s:.3} s)",
                    span.index
                )));
            }
            last_dts_s = dts_s;
            if let Some(a) = audio.as_mut() {
                a.up_to(p.pts as f64 * q2d(tb), &mut octx)?;
            }
            if p.duration <= 0 {
                // MP4's demuxer hands samples back without their duration; the muxer needs
                // at least the last one's, or the title loses its last frame.
                p.set_duration(frame);
            }
            video_bytes += p.size as u64;
            got += 1;
            mux_packet(&mut octx, p, tb, out_v, "video")?;
        }
        if got != span.frames {
            return Err(MediaError::Encode(format!(
                "chunk {} holds {got} frames where its span has {}",
                span.index, span.frames
            )));
        }
        frames += got;
    }
    if let Some(a) = audio.as_mut() {
        a.up_to(f64::INFINITY, &mut octx)?;
        a.track.finish(&mut octx)?;
    }
    octx.write_trailer()
        .map_err(|e| MediaError::Encode(describe("write trailer", &e)))?;
    drop(octx);
    let file_bytes = std::fs::metadata(output)
        .map(|m| m.len())
        .map_err(|e| MediaError::Io(format!("stat output: {e}")))?;
    Ok(Assembled {
        frames,
        video_bytes,
        file_bytes,
        audio: audio.as_ref().map(|a| a.track.kind()).unwrap_or("none"),
    })
}
