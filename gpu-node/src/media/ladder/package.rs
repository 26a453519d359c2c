//! A chunked ladder's renditions, each already joined (video only), packaged with the source's
//! audio through the same `dash` muxer setup a whole ladder writes through ([`run::write_header`]:
//! CMAF segments on the keyframe cadence, an MPD and HLS playlists): every packet copied, the
//! streams interleaved by time, the audio copied or encoded once.

use std::path::{Path, PathBuf};

use kiln_protocol::Container;
use rsmpeg::avcodec::{AVCodecParameters, AVPacket};
use rsmpeg::avformat::{AVFormatContextInput, AVFormatContextOutput};
use rsmpeg::ffi;

use super::run;
use crate::media::audio;
use crate::media::error::describe;
use crate::media::pipeline::{copy_stream, mux_packet, one_frame, q2d};
use crate::media::{path_cstring, MediaError};

/// One input's packets of one stream, read a packet ahead.
struct Feed {
    ictx: AVFormatContextInput,
    stream: usize,
    tb: ffi::AVRational,
    /// The output stream and one frame's duration (video); `None` for the audio, which its
    /// track writes.
    out: Option<(usize, i64)>,
    next: Option<AVPacket>,
    done: bool,
}

impl Feed {
    /// The time of the packet read ahead (reading it where there is none), `None` at the end.
    fn peek(&mut self) -> Result<Option<f64>, MediaError> {
        while self.next.is_none() && !self.done {
            match self
                .ictx
                .read_packet()
                .map_err(|e| MediaError::Decode(describe("read a rendition", &e)))?
            {
                Some(p) if p.stream_index as usize == self.stream => self.next = Some(p),
                Some(_) => {}
                None => self.done = true,
            }
        }
        Ok(self.next.as_ref().map(|p| {
            let ts = if p.dts != ffi::AV_NOPTS_VALUE {
                p.dts
            } else {
                p.pts
            };
            ts as f64 * q2d(self.tb)
        }))
    }
}

fn open(path: &Path) -> Result<AVFormatContextInput, MediaError> {
    AVFormatContextInput::open(&path_cstring(path)?, None, &mut None)
        .map_err(|e| MediaError::Io(describe(&format!("open {}", path.display()), &e)))
}

/// Package `renditions` (joined video-only MP4s, largest first) and `source`'s audio (Opus
/// where `opus`, else AAC copied or encoded) as the tree beside `manifest`, segments cut every
/// `gop` frames at `fps`. Returns what became of the audio (`copied`, `aac`, `opus`, `none`).
pub(super) fn package(
    source: &Path,
    renditions: &[PathBuf],
    manifest: &Path,
    gop: u32,
    fps: f64,
    opus: bool,
) -> Result<&'static str, MediaError> {
    let mut octx = AVFormatContextOutput::create(&path_cstring(manifest)?, None)
        .map_err(|e| MediaError::Io(describe("create the dash muxer", &e)))?;
    let mut feeds = Vec::with_capacity(renditions.len() + 1);
    for path in renditions {
        let ictx = open(path)?;
        let (v, _) = ictx
            .find_best_stream(ffi::AVMediaType_AVMEDIA_TYPE_VIDEO)
            .map_err(|e| MediaError::Encode(describe("find a rendition's video", &e)))?
            .ok_or(MediaError::NoVideoStream)?;
        let (par, tb, frame) = {
            let st = ictx.streams().get(v).expect("stream index from FFmpeg");
            let mut par = AVCodecParameters::new();
            par.copy(&st.codecpar());
            (par, st.time_base, one_frame(st.r_frame_rate, st.time_base))
        };
        let sar = par.sample_aspect_ratio;
        let out = copy_stream(&mut octx, Container::Mp4, &par, tb);
        // The muxer compares each stream's aspect with its parameters': both say the same.
        run::set_stream_sar(&mut octx, out, sar);
        feeds.push(Feed {
            ictx,
            stream: v,
            tb,
            out: Some((out, frame)),
            next: None,
            done: false,
        });
    }
    let src = open(source)?;
    let mut track = match crate::media::probe::first_audio_stream(&src) {
        Some(ai) => Some(audio::add_track_with(
            &src,
            ai,
            &mut octx,
            Container::Mp4,
            opus,
            None,
        )?),
        None => None,
    };
    if let Some(t) = &track {
        let ai = t.in_index();
        let tb = src.streams().get(ai).expect("audio stream").time_base;
        feeds.push(Feed {
            ictx: src,
            stream: ai,
            tb,
            out: None,
            next: None,
            done: false,
        });
    }
    run::write_header(&mut octx, gop, fps, track.is_some())?;
    loop {
        // The earliest packet of all the feeds goes next.
        let mut first: Option<(usize, f64)> = None;
        for (i, f) in feeds.iter_mut().enumerate() {
            if let Some(t) = f.peek()? {
                if first.is_none_or(|(_, ft)| t < ft) {
                    first = Some((i, t));
                }
            }
        }
        let Some((i, _)) = first else { break };
        let f = &mut feeds[i];
        let mut p = f.next.take().expect("peeked");
        match (f.out, track.as_mut()) {
            (Some((out, frame)), _) => {
                // MP4's demuxer hands samples back without their duration; the last one's
                // is the title's last frame.
                if p.duration <= 0 {
                    p.set_duration(frame);
                }
                mux_packet(&mut octx, p, f.tb, out, "video")?
            }
            (None, Some(t)) => t.packet(p, &mut octx)?,
            (None, None) => unreachable!("an audio feed has its track"),
        }
    }
    if let Some(t) = track.as_mut() {
        t.finish(&mut octx)?;
    }
    octx.write_trailer()
        .map_err(|e| MediaError::Encode(describe("write the dash trailer", &e)))?;
    Ok(track.as_ref().map(|t| t.kind()).unwrap_or("none"))
}
