//! Where a title is cut, ~`target_s` apart: at a scene change ([`super::scenes`]) where one
//! falls near the mark, else at the source's own keyframe nearest it (from a demux of the
//! video packets), else — a stretch with neither for longer than a chunk — frame-exact on the
//! mark. A chunk that does not start on a source keyframe decodes from the keyframe before.

use std::path::Path;

use rsmpeg::avformat::AVFormatContextInput;
use rsmpeg::ffi;

use crate::media::error::describe;
use crate::media::pipeline::q2d;
use crate::media::{path_cstring, MediaError};

/// One chunk of a title: `[start_s, end_s)` from the video's first timestamp, as a trim
/// takes it, and the frames whose timestamps fall inside.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkSpan {
    pub index: usize,
    pub start_s: f64,
    /// Infinite for the last chunk (to the end of the source).
    pub end_s: f64,
    pub frames: u64,
    /// Whether the chunk starts on a source keyframe (else it is decoded from the one before).
    pub on_keyframe: bool,
    /// Whether it starts at a scene change.
    pub at_scene: bool,
}

/// A title's frames as the demuxer sees them: timestamps from the first one, in seconds
/// (exact multiples of the stream's time base), and which are keyframes.
#[derive(Debug, Clone, Default)]
pub struct FrameIndex {
    /// `(t, keyframe)` in presentation order.
    pub frames: Vec<(f64, bool)>,
    /// The first frame's timestamp in the source (s).
    pub origin_s: f64,
    /// The stream's frame rate as FFmpeg guesses it, where it has one.
    pub frame_rate: Option<ffi::AVRational>,
}

impl FrameIndex {
    /// Read every video packet of `input` (demux only).
    pub fn read(input: &Path) -> Result<Self, MediaError> {
        let url = path_cstring(input)?;
        let mut ictx = AVFormatContextInput::open(&url, None, &mut None)
            .map_err(|e| MediaError::InvalidMedia(describe("open input", &e)))?;
        let (v, _) = ictx
            .find_best_stream(ffi::AVMediaType_AVMEDIA_TYPE_VIDEO)
            .map_err(|e| MediaError::InvalidMedia(describe("find video stream", &e)))?
            .ok_or(MediaError::NoVideoStream)?;
        let (tb, frame_rate) = {
            let st = ictx.streams().get(v).expect("stream index from FFmpeg");
            let rate = st.guess_framerate().filter(|r| r.num > 0 && r.den > 0);
            (st.time_base, rate)
        };
        let mut raw: Vec<(i64, bool)> = Vec::new();
        while let Some(p) = ictx
            .read_packet()
            .map_err(|e| MediaError::Decode(describe("read packet", &e)))?
        {
            if p.stream_index as usize != v {
                continue;
            }
            let ts = if p.pts != ffi::AV_NOPTS_VALUE {
                p.pts
            } else {
                p.dts
            };
            if ts == ffi::AV_NOPTS_VALUE {
                return Err(MediaError::InvalidMedia(
                    "a video packet without timestamps: the title cannot be cut".into(),
                ));
            }
            raw.push((ts, p.flags & ffi::AV_PKT_FLAG_KEY as i32 != 0));
        }
        raw.sort_by_key(|&(ts, _)| ts);
        let first = raw.first().map(|&(ts, _)| ts).unwrap_or(0);
        let step = q2d(tb);
        Ok(Self {
            origin_s: first as f64 * step,
            frame_rate,
            frames: raw
                .into_iter()
                .map(|(ts, key)| ((ts - first) as f64 * step, key))
                .collect(),
        })
    }
}

/// Cut `index` into chunks of about `target_s` (none shorter than half of it, but a title
/// shorter than that is one chunk): within `[target_s / 2, target_s * 3 / 2]` of the last cut,
/// at the scene change (of `scenes`, times as `index` has them) nearest each `target_s` mark,
/// else at the keyframe nearest it, else frame-exact on the mark.
pub fn plan(index: &FrameIndex, target_s: f64, scenes: &[f64]) -> Vec<ChunkSpan> {
    let f = &index.frames;
    let (min, max) = (target_s / 2.0, target_s * 1.5);
    let total = f.last().map(|&(t, _)| t).unwrap_or(0.0);
    // Which frames start a scene: each scene time to the first frame at or after it (half a
    // millisecond of slack for rounding).
    let mut scene = vec![false; f.len()];
    for &t in scenes {
        let i = f.partition_point(|&(ft, _)| ft < t - 5e-4);
        if let Some(s) = scene.get_mut(i) {
            *s = i > 0;
        }
    }
    let nearest = |last: f64, mark: f64, pick: &dyn Fn(usize) -> bool| {
        f.iter()
            .enumerate()
            .filter(|&(i, &(t, _))| t >= last + min && t <= last + max && pick(i))
            .min_by(|a, b| (a.1 .0 - mark).abs().total_cmp(&(b.1 .0 - mark).abs()))
            .map(|(i, _)| i)
    };
    // Cut positions, as indices into `f`.
    let mut cuts = vec![0usize];
    loop {
        let last = f[*cuts.last().unwrap()].0;
        if total - last < target_s + min {
            break;
        }
        let mark = last + target_s;
        let cut = nearest(last, mark, &|i| scene[i])
            .or_else(|| nearest(last, mark, &|i| f[i].1))
            .unwrap_or_else(|| f.partition_point(|&(t, _)| t < mark));
        if cut >= f.len() {
            break;
        }
        cuts.push(cut);
    }
    let mut spans = Vec::with_capacity(cuts.len());
    for (n, &c) in cuts.iter().enumerate() {
        let next = cuts.get(n + 1).copied();
        spans.push(ChunkSpan {
            index: n,
            start_s: f.get(c).map(|&(t, _)| t).unwrap_or(0.0),
            end_s: next.map(|i| f[i].0).unwrap_or(f64::INFINITY),
            frames: (next.unwrap_or(f.len()) - c) as u64,
            on_keyframe: f.get(c).is_none_or(|&(_, k)| k),
            at_scene: scene.get(c).copied().unwrap_or(false),
        });
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(n: usize, fps: f64, keys: &[usize]) -> FrameIndex {
        FrameIndex {
            frames: (0..n)
                .map(|i| (i as f64 / fps, i == 0 || keys.contains(&i)))
                .collect(),
            origin_s: 0.0,
            frame_rate: None,
        }
    }

    #[test]
    fn cuts_at_keyframes_near_the_target_and_covers_every_frame_once() {
        // 60 s at 25 fps with a keyframe every 2 s and one odd one at 11.2 s.
        let keys: Vec<usize> = (1..30).map(|k| k * 50).chain([280]).collect();
        let spans = plan(&frames(1500, 25.0, &keys), 10.0, &[]);
        let starts: Vec<f64> = spans.iter().map(|s| s.start_s).collect();
        assert_eq!(starts, vec![0.0, 10.0, 20.0, 30.0, 40.0, 50.0]);
        assert!(spans.iter().all(|s| s.on_keyframe));
        assert_eq!(spans.iter().map(|s| s.frames).sum::<u64>(), 1500);
        assert!(spans.last().unwrap().end_s.is_infinite());
        for w in spans.windows(2) {
            assert_eq!(w[0].end_s, w[1].start_s);
        }
    }

    #[test]
    fn a_long_stretch_without_keyframes_is_cut_frame_exact() {
        // 40 s, one keyframe at the start only.
        let spans = plan(&frames(1000, 25.0, &[]), 10.0, &[]);
        assert_eq!(spans.len(), 4);
        assert!(!spans[1].on_keyframe);
        assert_eq!(spans[1].start_s, 10.0);
        assert_eq!(spans.iter().map(|s| s.frames).sum::<u64>(), 1000);
    }

    #[test]
    fn a_short_title_is_one_chunk_and_no_chunk_is_a_sliver() {
        assert_eq!(plan(&frames(200, 25.0, &[100]), 10.0, &[]).len(), 1);
        // 24 s: 10 + 14, not 10 + 10 + 4.
        let spans = plan(&frames(600, 25.0, &[250, 500]), 10.0, &[]);
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[1].frames, 350);
    }

    #[test]
    fn a_scene_change_near_the_mark_wins_over_a_keyframe() {
        // 60 s at 25 fps, keyframes every 2 s; scenes change at 8.4 s (no keyframe there),
        // 17.0 s and 33.0 s, and at 2.0 s (too close to the start to cut).
        let keys: Vec<usize> = (1..30).map(|k| k * 50).collect();
        let scenes = [2.0, 8.4, 17.0, 33.0];
        let spans = plan(&frames(1500, 25.0, &keys), 10.0, &scenes);
        let starts: Vec<f64> = spans.iter().map(|s| s.start_s).collect();
        // 8.4 and 17.0 (scenes), 26.0 (no scene within 22–32: the keyframe nearest the 27 mark,
        // the first of two as near), 33.0 (a scene), then keyframes on the cadence.
        assert_eq!(starts, [0.0, 8.4, 17.0, 26.0, 33.0, 42.0, 52.0]);
        assert!(spans[1].at_scene && !spans[1].on_keyframe);
        assert!(spans[2].at_scene && !spans[2].on_keyframe);
        assert!(!spans[3].at_scene && spans[3].on_keyframe);
        assert!(spans[4].at_scene);
        assert_eq!(spans.iter().map(|s| s.frames).sum::<u64>(), 1500);
        // Every chunk between half and one and a half times the target, the last one aside.
        for w in spans.windows(2) {
            let len = w[1].start_s - w[0].start_s;
            assert!((5.0..=15.0).contains(&len), "{starts:?}");
        }
    }
}
