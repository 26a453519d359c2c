//! Sampled scenes for a target-quality search (as ab-av1 does): a few short stretches spread
//! over the source, cut losslessly into one clip, so each probe encodes seconds instead of the
//! whole source. A source shorter than twice the samples' total is used whole.

use std::path::Path;

use super::frames::{pix_fmt_for_depth, FrameReader, FrameWriter};
use super::QualityError;

/// Where the samples lie: `(start, length)` in seconds, or the whole source.
#[derive(Debug, Clone, PartialEq)]
pub enum SamplePlan {
    Whole,
    Segments(Vec<(f64, f64)>),
}

/// `count` samples of `length` seconds, centred on evenly spaced points of a source lasting
/// `duration_s` (never at the very start or end, where titles and fades sit).
pub fn plan(duration_s: f64, count: u32, length: f64) -> SamplePlan {
    let total = count as f64 * length;
    if count == 0 || length <= 0.0 || duration_s <= 0.0 || duration_s <= 2.0 * total {
        return SamplePlan::Whole;
    }
    let segments = (1..=count)
        .map(|i| {
            let centre = duration_s * i as f64 / (count + 1) as f64;
            ((centre - length / 2.0).max(0.0), length)
        })
        .collect();
    SamplePlan::Segments(segments)
}

/// What was cut.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleClip {
    pub frames: u64,
    /// Seconds of source the samples cover.
    pub duration_s: f64,
}

/// Cut `segments` of `source` into `out` (FFV1 in Matroska, the source's size and depth).
pub fn extract(
    source: &Path,
    segments: &[(f64, f64)],
    out: &Path,
) -> Result<SampleClip, QualityError> {
    let mut reader = FrameReader::open(source)?;
    let info = reader.info();
    let (fmt, _) = pix_fmt_for_depth(info.bit_depth);
    let (w, h) = (info.width & !1, info.height & !1);
    reader.convert_to(w, h, fmt);
    let mut writer = FrameWriter::create(out, w, h, fmt, info.fps)?;
    let mut covered = 0.0;
    for &(start, length) in segments {
        reader.seek(start)?;
        let end = start + length;
        let mut next = reader.next_from(start)?;
        while let Some((t, mut frame)) = next {
            if t >= end {
                break;
            }
            writer.write(&mut frame)?;
            next = reader.next_frame_timed()?;
        }
        covered += length;
    }
    let frames = writer.frames();
    writer.finish()?;
    if frames == 0 {
        return Err(QualityError::Vmaf(
            "the sampled scenes decoded to no frames".into(),
        ));
    }
    Ok(SampleClip {
        frames,
        duration_s: covered,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_sources_are_used_whole() {
        assert_eq!(plan(10.0, 3, 2.0), SamplePlan::Whole);
        assert_eq!(plan(12.0, 3, 2.0), SamplePlan::Whole);
        assert_eq!(plan(0.0, 3, 2.0), SamplePlan::Whole);
    }

    #[test]
    fn samples_spread_evenly_away_from_the_ends() {
        let SamplePlan::Segments(s) = plan(100.0, 3, 4.0) else {
            panic!("a 100 s source is sampled")
        };
        assert_eq!(s, vec![(23.0, 4.0), (48.0, 4.0), (73.0, 4.0)]);
    }
}
