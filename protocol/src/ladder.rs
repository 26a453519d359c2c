//! Adaptive-streaming ladders: the renditions a `ladder` job encodes from one decode, their
//! packaging (HLS and DASH over the same CMAF segments), and the documented default ladder.

use serde::{Deserialize, Serialize};

use crate::job::Resolution;
use crate::video::{HardwarePolicy, Preset, VideoCodec};

/// Settings of a ladder job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LadderParams {
    /// Video codec of every rendition (`h264`, `h265` or `av1`).
    pub codec: VideoCodec,
    /// The rungs, largest first; `None` is the [`default_ladder`] capped at the source size
    /// (or, with `per_title`, the rungs the node measures).
    #[serde(default)]
    pub renditions: Option<Vec<Rung>>,
    /// `renditions: "auto"`: a per-title ladder chosen from measured quality.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_title: Option<PerTitle>,
    /// Target segment length in seconds; every rendition has a keyframe on this cadence.
    #[serde(default = "default_segment_secs")]
    pub segment_secs: u32,
    /// Which manifests to write over the segments.
    #[serde(default = "Packaging::both")]
    pub packaging: Vec<Packaging>,
    /// Speed/efficiency trade-off of every rendition's encoder.
    #[serde(default)]
    pub preset: Option<Preset>,
    /// Whether to use NVDEC/NVENC.
    #[serde(default)]
    pub hardware: HardwarePolicy,
    /// The audio rendition's codec (AAC copied when the source has it, else encoded once).
    #[serde(default, skip_serializing_if = "LadderAudio::is_aac")]
    pub audio: LadderAudio,
    /// Trim, crop, watermark and subtitles, applied once before the renditions are scaled.
    #[serde(default, skip_serializing_if = "crate::edit::Edit::is_empty")]
    pub edit: crate::edit::Edit,
    /// Encode in chunks of about this many seconds (rounded to whole segments, so every chunk
    /// boundary is a segment boundary), each chunk × rendition its own queue entry across the
    /// fleet, the renditions joined and packaged once. `Some(0)`: never; `None`: in chunks of
    /// [`crate::video::AUTO_CHUNK_SECS`] where the source is longer than the node's threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_secs: Option<f64>,
}

/// A per-title ladder's settings: the node encodes sampled scenes at a grid of resolutions ×
/// CRFs, scores each with VMAF against the source, and picks the rungs on the convex hull.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PerTitle {
    /// The VMAF (vmaf_v0.6.1, pooled mean) of the top rung.
    #[serde(default = "default_target_vmaf")]
    pub target_vmaf: f64,
}

impl Default for PerTitle {
    fn default() -> Self {
        Self {
            target_vmaf: DEFAULT_TARGET_VMAF,
        }
    }
}

fn default_target_vmaf() -> f64 {
    DEFAULT_TARGET_VMAF
}

/// The top rung's VMAF when a per-title request names none (what most platforms aim their
/// top rung at: indistinguishable from the source on a TV at normal viewing distance).
pub const DEFAULT_TARGET_VMAF: f64 = 95.0;
/// The `target_vmaf` values a per-title ladder accepts (those of `target_vmaf` outputs).
pub use crate::video::TARGET_VMAF;

/// The codec of a ladder's one audio rendition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LadderAudio {
    /// AAC-LC: every HLS and DASH player.
    #[default]
    Aac,
    /// Opus in fMP4: what AV1 and WebM-minded players (Chrome, Firefox, Android) prefer.
    Opus,
}

impl LadderAudio {
    /// Parse `aac` or `opus`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "aac" => Some(Self::Aac),
            "opus" => Some(Self::Opus),
            _ => None,
        }
    }

    fn is_aac(&self) -> bool {
        *self == Self::Aac
    }
}

fn default_segment_secs() -> u32 {
    DEFAULT_SEGMENT_SECS
}

/// Segment length when a request names none (what Apple's authoring guide recommends less
/// than 6 s for; most platforms use 4 s or 6 s).
pub const DEFAULT_SEGMENT_SECS: u32 = 4;
/// The segment lengths a ladder accepts.
pub const SEGMENT_SECS: std::ops::RangeInclusive<u32> = 1..=20;
/// The most renditions a ladder may have.
pub const MAX_RUNGS: usize = 8;

/// One rung of a ladder.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rung {
    /// Output size (as the player shows it; width follows the source's aspect for `720p`).
    pub resolution: Resolution,
    /// How the rung spends bits.
    pub rate: RungRate,
}

/// A rung's rate control.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum RungRate {
    /// An average bitrate, capped (peak 1.5× over a 2 s buffer) so the playlist's
    /// `BANDWIDTH` is something a player can trust.
    Bitrate { kbps: u32 },
    /// Constant quality on Kiln's quality scale (x264-style CRF; mapped for each codec).
    Quality { quality: u8 },
}

/// A manifest format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Packaging {
    /// `master.m3u8` and one media playlist per rendition.
    Hls,
    /// `manifest.mpd`.
    Dash,
}

impl Packaging {
    /// HLS and DASH (the same CMAF segments serve both).
    pub fn both() -> Vec<Self> {
        vec![Self::Hls, Self::Dash]
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "hls" | "m3u8" => Some(Self::Hls),
            "dash" | "mpd" => Some(Self::Dash),
            _ => None,
        }
    }
}

impl LadderParams {
    /// The file a ladder's output key names: the HLS master playlist when HLS is written, the
    /// MPD otherwise. The rest of the tree lies beside it.
    pub fn entry_file(&self) -> &'static str {
        if self.packaging.contains(&Packaging::Hls) {
            MASTER_PLAYLIST
        } else {
            DASH_MANIFEST
        }
    }

    /// Check what the node would otherwise refuse late: codec, segment length, rung count.
    pub fn validate(&self) -> Result<(), String> {
        if self.codec == VideoCodec::Vp9 {
            return Err(
                "ladders are encoded in h264, h265 or av1 (CMAF segments); vp9 is not offered"
                    .into(),
            );
        }
        if !SEGMENT_SECS.contains(&self.segment_secs) {
            return Err(format!(
                "segment_secs must be between {} and {}",
                SEGMENT_SECS.start(),
                SEGMENT_SECS.end()
            ));
        }
        if self.packaging.is_empty() {
            return Err("packaging must name hls, dash or both".into());
        }
        if let Some(c) = self.chunk_secs.filter(|&c| c != 0.0) {
            if !crate::video::CHUNK_SECS.contains(&c) {
                return Err(format!(
                    "chunk_secs must be 0 (never) or between {} and {}",
                    crate::video::CHUNK_SECS.start(),
                    crate::video::CHUNK_SECS.end()
                ));
            }
            if !self.edit.is_empty() {
                return Err(
                    "chunk_secs does not yet apply to trimmed, cropped, watermarked or subtitled outputs"
                        .into(),
                );
            }
        }
        if let Some(pt) = &self.per_title {
            if self.renditions.is_some() {
                return Err("renditions are either a list of rungs or \"auto\", not both".into());
            }
            if !TARGET_VMAF.contains(&pt.target_vmaf) {
                return Err(format!(
                    "target_vmaf must be between {} and {}",
                    TARGET_VMAF.start(),
                    TARGET_VMAF.end()
                ));
            }
            if !self.edit.is_empty() {
                // The grid is scored against the source's own frames; a trimmed, cropped or
                // marked picture would need its own reference.
                return Err("renditions \"auto\" measures the source as it is: it does not combine with start, end, crop, watermark or subtitles yet".into());
            }
        }
        if let Some(r) = &self.renditions {
            if r.is_empty() || r.len() > MAX_RUNGS {
                return Err(format!("renditions must have 1 to {MAX_RUNGS} rungs"));
            }
            for rung in r {
                match rung.rate {
                    RungRate::Bitrate { kbps } if !(50..=100_000).contains(&kbps) => {
                        return Err("bitrate_kbps must be between 50 and 100000".into())
                    }
                    RungRate::Quality { quality } if quality > 51 => {
                        return Err("quality must be between 0 and 51".into())
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

/// The HLS master playlist's name in a ladder's tree.
pub const MASTER_PLAYLIST: &str = "master.m3u8";
/// The DASH manifest's name in a ladder's tree.
pub const DASH_MANIFEST: &str = "manifest.mpd";

/// The standard H.264 ladder (heights and kbps), largest first: Apple's HLS authoring
/// guide's rungs, trimmed to one per common height.
pub const H264_LADDER: [(u32, u32); 7] = [
    (2160, 14_000),
    (1440, 9_000),
    (1080, 5_000),
    (720, 2_800),
    (480, 1_400),
    (360, 800),
    (240, 400),
];

/// The share of the H.264 bitrate a codec needs for about the same quality (HEVC ~60 %,
/// AV1 ~50 %: the usual figures of published BD-rate comparisons).
pub fn bitrate_share(codec: VideoCodec) -> f64 {
    match codec {
        VideoCodec::H264 => 1.0,
        VideoCodec::H265 => 0.6,
        VideoCodec::Av1 | VideoCodec::Vp9 => 0.5,
    }
}

/// The default ladder for a source `src_h` pixels tall (display height): every standard rung
/// no taller than the source, at most 5 of them; a source shorter than the smallest rung gets
/// one rung at its own size, its bitrate scaled by area.
pub fn default_ladder(codec: VideoCodec, src_h: u32) -> Vec<Rung> {
    let share = bitrate_share(codec);
    let rung = |h: u32, kbps: f64| Rung {
        resolution: Resolution::Height { height: h },
        rate: RungRate::Bitrate {
            kbps: ((kbps * share).round() as u32).max(50),
        },
    };
    let fit: Vec<Rung> = H264_LADDER
        .iter()
        .filter(|(h, _)| *h <= src_h)
        .take(5)
        .map(|(h, k)| rung(*h, *k as f64))
        .collect();
    if !fit.is_empty() {
        return fit;
    }
    let (h0, k0) = H264_LADDER[H264_LADDER.len() - 1];
    let even = src_h.max(2) & !1;
    let scale = (even as f64 / h0 as f64).powi(2);
    vec![rung(even, k0 as f64 * scale)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heights(l: &[Rung]) -> Vec<u32> {
        l.iter()
            .map(|r| match r.resolution {
                Resolution::Height { height } => height,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn default_ladder_is_capped_at_the_source_and_scaled_per_codec() {
        assert_eq!(
            heights(&default_ladder(VideoCodec::H264, 1080)),
            [1080, 720, 480, 360, 240]
        );
        assert_eq!(
            heights(&default_ladder(VideoCodec::H264, 720)),
            [720, 480, 360, 240]
        );
        assert_eq!(
            heights(&default_ladder(VideoCodec::H264, 2160)),
            [2160, 1440, 1080, 720, 480]
        );
        // 640x272: 240p only; 176x144: one rung at its own height, scaled down.
        assert_eq!(heights(&default_ladder(VideoCodec::H264, 272)), [240]);
        let tiny = default_ladder(VideoCodec::H264, 144);
        assert_eq!(heights(&tiny), [144]);
        assert_eq!(tiny[0].rate, RungRate::Bitrate { kbps: 144 });
        let av1 = default_ladder(VideoCodec::Av1, 720);
        assert_eq!(av1[0].rate, RungRate::Bitrate { kbps: 1400 });
    }

    #[test]
    fn validation_names_what_is_wrong() {
        let mut p = LadderParams {
            codec: VideoCodec::H264,
            renditions: None,
            per_title: None,
            segment_secs: 4,
            packaging: Packaging::both(),
            preset: None,
            hardware: HardwarePolicy::Auto,
            audio: Default::default(),
            edit: Default::default(),
            chunk_secs: None,
        };
        assert!(p.validate().is_ok());
        assert_eq!(p.entry_file(), MASTER_PLAYLIST);
        p.packaging = vec![Packaging::Dash];
        assert_eq!(p.entry_file(), DASH_MANIFEST);
        p.segment_secs = 0;
        assert!(p.validate().unwrap_err().contains("segment_secs"));
        p.segment_secs = 4;
        p.renditions = Some(vec![]);
        assert!(p.validate().unwrap_err().contains("1 to 8"));
        p.renditions = Some(vec![Rung {
            resolution: Resolution::Height { height: 720 },
            rate: RungRate::Bitrate { kbps: 10 },
        }]);
        assert!(p.validate().unwrap_err().contains("bitrate_kbps"));
        p.renditions = None;
        p.per_title = Some(PerTitle { target_vmaf: 100.0 });
        assert!(p.validate().unwrap_err().contains("target_vmaf"));
        p.per_title = Some(PerTitle::default());
        assert!(p.validate().is_ok());
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<LadderParams>(&json).unwrap(), p);
        p.renditions = Some(vec![Rung {
            resolution: Resolution::Height { height: 720 },
            rate: RungRate::Bitrate { kbps: 1000 },
        }]);
        assert!(p.validate().unwrap_err().contains("not both"));
        p.renditions = None;
        p.edit.start_s = Some(1.0);
        assert!(p.validate().unwrap_err().contains("auto"));
        p.edit = Default::default();
        p.per_title = None;
        p.codec = VideoCodec::Vp9;
        assert!(p.validate().unwrap_err().contains("vp9"));
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<LadderParams>(&json).unwrap(), p);
    }
}
