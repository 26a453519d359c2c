//! Job specs: what the control plane asks a node to do.

use serde::{Deserialize, Serialize};

use crate::video::VideoParams;

/// One unit of work for a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// The job's id (a UUIDv7 string, so ids sort by creation time).
    pub id: String,
    /// Which attempt this is (1-based).
    pub attempt: u32,
    /// Storage key of the source media.
    pub source_key: String,
    /// Storage key the output must be written to (the same on every attempt, so retries
    /// overwrite rather than duplicate).
    pub output_key: String,
    /// What to do.
    pub task: Task,
}

impl JobSpec {
    /// The queue class this job is scheduled through: which nodes may take it. A node
    /// consumes exactly the classes its probed capabilities serve (see [`crate::queue`]).
    pub fn class(&self) -> String {
        match &self.task {
            Task::Video(p) => video_class(p.codec, p.hardware),
            Task::Image(_) => IMAGE_CLASS.to_string(),
            Task::Ladder(p) => video_class(p.codec, p.hardware),
            // Stills decode and write images: every node can (like image jobs).
            Task::Thumbnails(_) | Task::Storyboard(_) => IMAGE_CLASS.to_string(),
            Task::Chunk(c) => chunk_class(c.params.codec, c.params.hardware),
        }
    }
}

/// `h264` (any node that can encode H.264, on NVENC or the CPU), `h264:cpu` (a CPU encoder
/// is required) or `h264:nvenc` (NVENC is required).
pub fn video_class(codec: crate::VideoCodec, hw: crate::HardwarePolicy) -> String {
    use crate::HardwarePolicy::*;
    match hw {
        Auto | Gpu => codec.as_str().to_string(),
        Cpu => format!("{}:cpu", codec.as_str()),
        Nvenc => format!("{}:nvenc", codec.as_str()),
    }
}

/// The class of a title's chunks: `chunk:` and the title's own class, so a node waiting on
/// its title's chunks can take chunks, and only chunks, meanwhile. Every node that serves a
/// video class serves its chunk class.
pub fn chunk_class(codec: crate::VideoCodec, hw: crate::HardwarePolicy) -> String {
    format!("{CHUNK_CLASS_PREFIX}{}", video_class(codec, hw))
}

/// What every chunk class starts with.
pub const CHUNK_CLASS_PREFIX: &str = "chunk:";

/// The queue class of image jobs: every node serves it (on its GPU or its CPU).
pub const IMAGE_CLASS: &str = "image";

/// The kinds of work a node can do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Task {
    /// Transcode a video.
    Video(VideoParams),
    /// Convert or resize an image.
    Image(ImageParams),
    /// Encode an adaptive-streaming ladder (HLS/DASH over CMAF segments) from one decode; the
    /// output key names the entry manifest and the tree lies beside it.
    Ladder(crate::ladder::LadderParams),
    /// Thumbnails of a video (a tree: the images and `thumbnails.json`).
    Thumbnails(crate::stills::ThumbnailParams),
    /// A storyboard of a video (a tree: sprite sheets and `storyboard.vtt`).
    Storyboard(crate::stills::StoryboardParams),
    /// One chunk of a title encoded in chunks across the fleet: queued by the node that holds
    /// the title's job, encoded by whichever node of the class claims it, its bitstream and
    /// result stored beside the title's output for that node to join.
    Chunk(ChunkTask),
}

/// One chunk of a title ([`Task::Chunk`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkTask {
    /// The title's job (a cancel of it stops the chunk).
    pub parent_id: String,
    pub index: u32,
    /// Which encode of the title this belongs to (2 when a `size` title is aimed again).
    pub round: u32,
    /// `[start_s, end_s)` from the source's first video timestamp; `end_s` `None` runs to the
    /// end of the source.
    pub start_s: f64,
    pub end_s: Option<f64>,
    /// Frames the chunk must hold.
    pub frames: u64,
    /// Frames of the title's longest chunk: every chunk's GOP is set from it, the same for all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub longest: Option<u64>,
    /// The title's settings (codec, preset, resolution, hardware).
    pub params: VideoParams,
    /// The video bitrate the chunk is aimed at, where the title's bits are shared (bits/s).
    pub aim_bps: Option<f64>,
    /// Storage key the chunk's result (JSON: frames, bytes, node, …) is written to; the
    /// bitstream goes to the job's `output_key`.
    pub result_key: String,
    /// A ladder's chunk: one rendition of it (its size and rate in `params`, at
    /// `params.resolution` exactly), with keyframes on the segment cadence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ladder: Option<LadderChunk>,
}

/// How a ladder rendition's chunk differs from a title's: fixed, closed GOPs of `gop` frames
/// (so that every rendition's keyframes, and the segments cut at them, line up) and the
/// sample aspect that gives every rendition the top one's display aspect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LadderChunk {
    /// The rendition, 0 the largest.
    pub rung: u32,
    /// The chunk of the title this is a rendition of.
    pub chunk: u32,
    pub gop: u32,
    /// Sample aspect ratio, `[num, den]`.
    pub sar: [i32; 2],
}

/// Settings of an image conversion: the same fields, with the same meaning and validation,
/// as `POST /api/v1/convert` takes (`format`, `quality`, `width`, `height`, `fit`, …). The
/// control plane validates them at submission; the node parses them with the same code.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageParams {
    pub fields: std::collections::BTreeMap<String, String>,
}

/// A requested output size: exact, or one side with the other following the aspect ratio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fit", rename_all = "snake_case")]
pub enum Resolution {
    /// Exactly `width` × `height`.
    Exact { width: u32, height: u32 },
    /// This height, width from the source's display aspect (`720p`).
    Height { height: u32 },
    /// This width, height from the source's display aspect.
    Width { width: u32 },
    /// This height at most: a taller source is scaled down to it (width following the
    /// aspect), a shorter one keeps its size (Convertrilo's `no-upscale` resolutions).
    AtMost { height: u32 },
}

/// Why a resolution string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("resolution must look like 1280x720, 720p or 1280 (width), between 16 and 8192: got {0:?}")]
pub struct ResolutionError(pub String);

const MIN_SIDE: u32 = 16;
const MAX_SIDE: u32 = 8192;

impl Resolution {
    /// Parse `1280x720`, `720p`, `1280` (a width), `x720`/`-1:720`-free forms are not taken.
    /// `original`, `source` or an empty string mean "keep the source size" (`Ok(None)`).
    pub fn parse(s: &str) -> Result<Option<Self>, ResolutionError> {
        let t = s.trim().to_ascii_lowercase();
        let err = || ResolutionError(s.to_string());
        let side = |v: &str| -> Result<u32, ResolutionError> {
            let n: u32 = v.trim().parse().map_err(|_| err())?;
            if (MIN_SIDE..=MAX_SIDE).contains(&n) {
                Ok(n)
            } else {
                Err(err())
            }
        };
        if t.is_empty() || t == "original" || t == "source" {
            return Ok(None);
        }
        let named = match t.as_str() {
            "4k" | "2160p" => Some(2160),
            "1440p" => Some(1440),
            _ => None,
        };
        if let Some(height) = named {
            return Ok(Some(Self::Height { height }));
        }
        if let Some(h) = t.strip_suffix('p') {
            return Ok(Some(Self::Height { height: side(h)? }));
        }
        if let Some((w, h)) = t.split_once(['x', '*', ':']) {
            return Ok(Some(Self::Exact {
                width: side(w)?,
                height: side(h)?,
            }));
        }
        Ok(Some(Self::Width { width: side(&t)? }))
    }

    /// The output size for a source of `src_w` × `src_h` display pixels, rounded to even
    /// numbers because 4:2:0 chroma needs them.
    pub fn output_size(this: Option<Self>, src_w: u32, src_h: u32) -> (u32, u32) {
        let even = |v: f64| ((v / 2.0).round() as u32 * 2).max(2);
        let (w, h) = (src_w.max(1) as f64, src_h.max(1) as f64);
        match this {
            None => (even(w), even(h)),
            Some(Self::Exact { width, height }) => (even(width as f64), even(height as f64)),
            Some(Self::Height { height }) => (even(w * height as f64 / h), even(height as f64)),
            Some(Self::Width { width }) => (even(width as f64), even(h * width as f64 / w)),
            Some(Self::AtMost { height }) if h > height as f64 => {
                (even(w * height as f64 / h), even(height as f64))
            }
            Some(Self::AtMost { .. }) => (even(w), even(h)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::*;

    #[test]
    fn parses_the_forms_the_api_takes() {
        let cases: &[(&str, Option<Resolution>)] = &[
            (
                "1280x720",
                Some(Resolution::Exact {
                    width: 1280,
                    height: 720,
                }),
            ),
            (
                " 640X360 ",
                Some(Resolution::Exact {
                    width: 640,
                    height: 360,
                }),
            ),
            ("720p", Some(Resolution::Height { height: 720 })),
            ("4k", Some(Resolution::Height { height: 2160 })),
            ("854", Some(Resolution::Width { width: 854 })),
            ("original", None),
            ("", None),
        ];
        for (input, want) in cases {
            assert_eq!(Resolution::parse(input).unwrap(), *want, "{input}");
        }
        for bad in ["big", "0x0", "10x10", "99999x2", "720i", "x", "-5p"] {
            assert!(Resolution::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn output_sizes_are_even_and_keep_aspect() {
        let cases = [
            (None, (641, 273), (642, 274)),
            (
                Some(Resolution::Height { height: 360 }),
                (1280, 720),
                (640, 360),
            ),
            (
                Some(Resolution::Height { height: 136 }),
                (640, 272),
                (320, 136),
            ),
            (
                Some(Resolution::Width { width: 320 }),
                (640, 272),
                (320, 136),
            ),
            (
                Some(Resolution::Exact {
                    width: 101,
                    height: 51,
                }),
                (640, 272),
                (102, 52),
            ),
            (
                Some(Resolution::Height { height: 720 }),
                (176, 144),
                (880, 720),
            ),
            (
                Some(Resolution::AtMost { height: 1080 }),
                (640, 272),
                (640, 272),
            ),
            (
                Some(Resolution::AtMost { height: 360 }),
                (1280, 720),
                (640, 360),
            ),
        ];
        for (res, (sw, sh), want) in cases {
            assert_eq!(
                Resolution::output_size(res, sw, sh),
                want,
                "{res:?} of {sw}x{sh}"
            );
        }
    }

    #[test]
    fn job_spec_round_trips_through_json() {
        let spec = JobSpec {
            id: "j1".into(),
            attempt: 1,
            source_key: "sources/j1".into(),
            output_key: "outputs/j1.mp4".into(),
            task: Task::Video(VideoParams {
                codec: VideoCodec::Av1,
                rate: RateControl::Size { target_mb: 2.5 },
                preset: Some(Preset::Svt(8)),
                resolution: Some(Resolution::Height { height: 720 }),
                container: Container::Webm,
                hardware: HardwarePolicy::Cpu,
                allow_upscale: false,
                allow_larger: true,
                edit: Default::default(),
                chunk_secs: None,
            }),
        };
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<JobSpec>(&json).unwrap(), spec);
    }
}
