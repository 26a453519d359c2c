//! A trim of a pass or a ladder: frame-accurate (seek to the keyframe before the start,
//! decode from there, drop frames before it), audio cut at packet edges.

use rsmpeg::avcodec::AVPacket;
use rsmpeg::avformat::AVFormatContextInput;
use rsmpeg::avutil::AVFrame;
use rsmpeg::ffi;

/// A trim in the source's own timestamps: where the pass seeks, which frames and audio
/// packets it keeps, and how far their timestamps move so the output starts at zero.
#[derive(Debug, Clone)]
pub(crate) struct Trim {
    pub start_s: f64,
    /// Infinite when the source's duration is unknown and no end was asked.
    pub end_s: f64,
    /// `[start, end)` in the video stream's time base (absolute, first timestamp included).
    pub video: (i64, i64),
    /// The same in the audio stream's time base, when there is audio.
    audio: Option<(i64, i64, ffi::AVRational)>,
}

/// What a trim does with an audio packet.
enum AudioCut {
    Keep(AVPacket),
    Before,
    After,
}

/// Where a decoded frame falls against a trim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameCut {
    Before,
    Keep,
    After,
}

/// The trim of `span` over an open input whose video is stream `v_index` (time base `vtb`,
/// first timestamp `v_start`), already seeked to its start; `None` without a span.
pub(crate) fn open(
    span: Option<(f64, f64)>,
    ictx: &mut AVFormatContextInput,
    v_index: usize,
    v_start: i64,
    vtb: ffi::AVRational,
) -> Option<Trim> {
    let (start, end) = span?;
    let audio_tb = crate::media::probe::first_audio_stream(ictx)
        .and_then(|ai| ictx.streams().get(ai).map(|s| s.time_base));
    let t = Trim::new(start, end, v_start, vtb, audio_tb);
    t.seek(ictx, v_index);
    Some(t)
}

/// `(where progress starts, how long it runs)` in seconds over a source `duration_s` long.
pub(crate) fn progress_span(trim: Option<&Trim>, duration_s: f64) -> (f64, f64) {
    match trim {
        Some(t) if t.end_s.is_finite() => (t.start_s, t.end_s - t.start_s),
        Some(t) => (t.start_s, duration_s - t.start_s),
        None => (0.0, duration_s),
    }
}

/// The output's duration: the span, or `untrimmed_s` (what the output would last without a
/// trim) less the start when the span's end is open.
pub(crate) fn output_duration(trim: Option<&Trim>, untrimmed_s: f64) -> f64 {
    match trim {
        Some(t) if t.end_s.is_finite() => t.end_s - t.start_s,
        Some(t) => (untrimmed_s - t.start_s).max(0.0),
        None => untrimmed_s,
    }
}

/// Keep an audio packet the trim keeps (all of them without one), raising `done` once the
/// trim's end is passed.
pub(crate) fn cut_audio(trim: Option<&Trim>, p: AVPacket, done: &mut bool) -> Option<AVPacket> {
    let Some(t) = trim else { return Some(p) };
    match t.audio(p) {
        AudioCut::Keep(p) => Some(p),
        AudioCut::Before => None,
        AudioCut::After => {
            *done = true;
            None
        }
    }
}

/// A filtered frame's timestamp in the source's time base `in_tb` (a watermark's overlay
/// may hand out a finer `sink_tb`), moved so the trimmed output starts at zero.
pub(crate) fn output_pts(
    trim: Option<&Trim>,
    f: &mut AVFrame,
    sink_tb: ffi::AVRational,
    in_tb: ffi::AVRational,
) {
    if f.pts == ffi::AV_NOPTS_VALUE {
        return;
    }
    let mut pts = f.pts;
    if (sink_tb.num, sink_tb.den) != (in_tb.num, in_tb.den) {
        pts = rescale(pts, sink_tb, in_tb);
    }
    if let Some(t) = trim {
        pts -= t.video.0;
    }
    f.set_pts(pts);
}

impl Trim {
    pub(crate) fn new(
        start_s: f64,
        end_s: f64,
        v_start: i64,
        vtb: ffi::AVRational,
        atb: Option<ffi::AVRational>,
    ) -> Self {
        // Absolute times in microseconds: the video's first timestamp plus the offsets.
        let origin = rescale(v_start, vtb, AV_TIME_BASE_Q);
        let to = |s: f64| {
            if s.is_finite() {
                origin + (s * 1e6).round() as i64
            } else {
                i64::MAX / 4
            }
        };
        let (a, b) = (to(start_s), to(end_s));
        let at = |tb: ffi::AVRational| {
            (
                rescale(a, AV_TIME_BASE_Q, tb),
                rescale(b, AV_TIME_BASE_Q, tb),
            )
        };
        let video = at(vtb);
        Self {
            start_s,
            end_s,
            video,
            audio: atb.map(|tb| {
                let (s, e) = at(tb);
                (s, e, tb)
            }),
        }
    }

    /// Seek to the keyframe at or before the start; frames before it are decoded and dropped.
    fn seek(&self, ictx: &mut AVFormatContextInput, v_index: usize) {
        if self.start_s <= 0.0 {
            return;
        }
        let ts = self.video.0;
        // SAFETY: `ictx` is an open input; avformat_seek_file only repositions its reading.
        let rc = unsafe {
            ffi::avformat_seek_file(ictx.as_mut_ptr(), v_index as i32, i64::MIN, ts, ts, 0)
        };
        if rc < 0 {
            // Unseekable input: read from the start and drop frames instead.
            tracing::debug!(rc, "seek for a trim failed; decoding from the start");
        }
    }

    /// Where a decoded frame at `pts` (the video stream's time base) falls.
    pub(crate) fn frame(&self, pts: i64) -> FrameCut {
        if pts < self.video.0 {
            FrameCut::Before
        } else if pts >= self.video.1 {
            FrameCut::After
        } else {
            FrameCut::Keep
        }
    }

    /// Keep an audio packet that starts inside the span (timestamps moved to the output's
    /// zero): audio is cut at packet edges, each ~21 ms of AAC, while A/V sync stays exact.
    fn audio(&self, mut p: AVPacket) -> AudioCut {
        let Some((start, end, _)) = self.audio else {
            return AudioCut::Keep(p);
        };
        let pts = if p.pts != ffi::AV_NOPTS_VALUE {
            p.pts
        } else {
            p.dts
        };
        if pts == ffi::AV_NOPTS_VALUE {
            return AudioCut::Before;
        }
        if pts < start {
            return AudioCut::Before;
        }
        if pts >= end {
            return AudioCut::After;
        }
        if p.pts != ffi::AV_NOPTS_VALUE {
            p.set_pts(p.pts - start);
        }
        if p.dts != ffi::AV_NOPTS_VALUE {
            p.set_dts(p.dts - start);
        }
        AudioCut::Keep(p)
    }
}

const AV_TIME_BASE_Q: ffi::AVRational = ffi::AVRational {
    num: 1,
    den: ffi::AV_TIME_BASE as i32,
};

fn rescale(v: i64, from: ffi::AVRational, to: ffi::AVRational) -> i64 {
    // SAFETY: av_rescale_q is pure arithmetic on its arguments.
    unsafe { ffi::av_rescale_q(v, from, to) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(pts: i64) -> AVPacket {
        let mut p = AVPacket::new();
        p.set_pts(pts);
        p.set_dts(pts);
        p
    }

    #[test]
    fn spans_map_into_each_streams_time_base_and_cut_audio_at_packet_edges() {
        let vtb = ffi::AVRational { num: 1, den: 12800 };
        let atb = ffi::AVRational { num: 1, den: 48000 };
        // A video that starts at 0.5 s (6400 ticks): the span is measured from there.
        let t = Trim::new(2.0, 4.0, 6400, vtb, Some(atb));
        assert_eq!(t.video, (6400 + 25600, 6400 + 51200));
        let (a0, a1) = (24_000 + 96_000, 24_000 + 192_000);
        assert!(matches!(t.audio(packet(a0 - 1024)), AudioCut::Before));
        match t.audio(packet(a0 + 512)) {
            AudioCut::Keep(p) => assert_eq!((p.pts, p.dts), (512, 512)),
            _ => panic!("inside the span"),
        }
        assert!(matches!(t.audio(packet(a1)), AudioCut::After));
        // No end asked and no duration known: open-ended.
        let open = Trim::new(1.0, f64::INFINITY, 0, vtb, None);
        assert_eq!(open.video.0, 12800);
        assert!(open.video.1 > 1_000_000_000_000_000, "past any real media");
        assert!(matches!(open.audio(packet(5)), AudioCut::Keep(_)));
    }
}
