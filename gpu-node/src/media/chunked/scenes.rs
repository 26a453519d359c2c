//! Where a title's scenes change, so its chunks can be cut there: a chunk's first frame is a
//! fresh keyframe, and at a scene change the encoder would have placed one anyway.
//!
//! One decode of the video, cheap: the CPU decoder on every core with its loop filter
//! skipped (blockier pictures, the same cuts), each frame shrunk to a thumbnail and scored
//! against the one before by FFmpeg's own `scdet` filter, which passes on only the frames
//! past its threshold.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use rsmpeg::avformat::AVFormatContextInput;
use rsmpeg::avutil::AVFrame;
use rsmpeg::ffi;
use rsmpeg::UnsafeDerefMut;

use crate::media::error::describe;
use crate::media::filter::{FilterGraph, Pulled};
use crate::media::pipeline::{decode, q2d};
use crate::media::{path_cstring, MediaError};

/// `scdet`'s score (0–100, the mean absolute frame difference past the previous one's) above
/// which a frame starts a new scene: FFmpeg's own default.
pub const THRESHOLD: f64 = 10.0;

/// Width of the thumbnails scored.
const THUMB_WIDTH: u32 = 160;

/// The times of the frames of `input` that start a new scene, in seconds from `origin_s` (the
/// first frame's timestamp, as [`super::FrameIndex`] has it), in order.
pub fn detect(input: &Path, origin_s: f64, cancel: &AtomicBool) -> Result<Vec<f64>, MediaError> {
    let mut ictx = AVFormatContextInput::open(&path_cstring(input)?, None, &mut None)
        .map_err(|e| MediaError::InvalidMedia(describe("open input", &e)))?;
    let (v, decoder) = ictx
        .find_best_stream(ffi::AVMediaType_AVMEDIA_TYPE_VIDEO)
        .map_err(|e| MediaError::InvalidMedia(describe("find video stream", &e)))?
        .ok_or(MediaError::NoVideoStream)?;
    let (tb, fr) = {
        let st = ictx.streams().get(v).expect("stream index from FFmpeg");
        (st.time_base, st.guess_framerate().filter(|r| r.num > 0))
    };
    let mut dec = decode::open(&ictx, v, &decoder, tb, fr, None)?.dec;
    // SAFETY: a plain field the decoder reads for every frame (FFmpeg: "decoding: set by user",
    // at any time; frame threads copy it from this context).
    unsafe { dec.deref_mut().skip_loop_filter = ffi::AVDiscard_AVDISCARD_ALL };

    let mut scorer = Scorer {
        graph: None,
        tb,
        fr,
        origin_s,
        cuts: Vec::new(),
    };
    decode::each_frame(&mut ictx, v, &mut dec, cancel, &mut |f| {
        scorer.frame(Some(f))?;
        Ok(true)
    })?;
    scorer.frame(None)?;
    Ok(scorer.cuts)
}

struct Scorer {
    /// Built on the first frame (its size and pixel format).
    graph: Option<FilterGraph>,
    tb: ffi::AVRational,
    fr: Option<ffi::AVRational>,
    origin_s: f64,
    cuts: Vec<f64>,
}

impl Scorer {
    /// Score `frame` (`None`: flush) and keep the times of the scene changes that come out.
    fn frame(&mut self, frame: Option<AVFrame>) -> Result<(), MediaError> {
        let err = |e: String| MediaError::Decode(format!("scene detection: {e}"));
        let mut frame = frame;
        if let Some(f) = frame.as_mut() {
            f.set_pts(f.best_effort_timestamp);
            if self.graph.is_none() {
                let chain = format!(
                    "scale=w={THUMB_WIDTH}:h=-2:flags=fast_bilinear,scdet=threshold={THRESHOLD}:sc_pass=1"
                );
                self.graph = Some(FilterGraph::video(f, self.tb, self.fr, &chain).map_err(err)?);
            }
        }
        let Some(g) = self.graph.as_mut() else {
            return Ok(());
        };
        g.push(frame.as_mut()).map_err(err)?;
        let step = q2d(g.sink_time_base());
        loop {
            match g.pull().map_err(err)? {
                Pulled::Frame(f) if f.pts != ffi::AV_NOPTS_VALUE => {
                    self.cuts.push(f.pts as f64 * step - self.origin_s)
                }
                Pulled::Frame(_) => {}
                Pulled::Again | Pulled::End => return Ok(()),
            }
        }
    }
}
