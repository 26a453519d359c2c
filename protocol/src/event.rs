//! What nodes tell the control plane about a job. Nothing else flows back up the stack.

use serde::{Deserialize, Serialize};

use crate::JobErrorCode;

/// One report from a node about one job attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeEvent {
    /// The job this event is about.
    pub job_id: String,
    /// Which attempt of the job (1-based); stale attempts' events are ignored.
    pub attempt: u32,
    /// The node that sent it.
    pub node_id: String,
    /// When the node sent it (ms since epoch).
    pub at_ms: i64,
    /// What happened.
    pub kind: NodeEventKind,
}

/// What happened to a job on a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
// One event per job state change: the size of a Completed event's report is not worth a box.
#[allow(clippy::large_enum_variant)]
pub enum NodeEventKind {
    /// The node took the job and started work.
    Started,
    /// Work is `percent` done, encoding at `fps`, with `eta_s` seconds to go.
    Progress {
        percent: f32,
        fps: f32,
        eta_s: Option<f32>,
        /// A title in chunks: where its chunks stand.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        chunks: Option<ChunkCounts>,
    },
    /// The output is in storage.
    Completed {
        output_key: String,
        output_size: u64,
        /// Width × height and duration of what was produced, for the status endpoint.
        width: u32,
        height: u32,
        duration_s: f64,
        /// How the output was made (encoder, hardware, passes, fallbacks).
        #[serde(default)]
        report: EncodeReport,
    },
    /// The job failed on this node.
    Failed {
        code: JobErrorCode,
        message: String,
        retryable: bool,
    },
    /// The queue took the job back from `node_id` (its lease expired, or the node handed it
    /// back while draining) and queued it again as `next_attempt`. Written by the queue in the
    /// same atomic step as the re-enqueue, so the database can never miss it.
    Requeued { next_attempt: u32, reason: String },
    /// The queue took the job back but it had used every attempt: it is in the dead-letter
    /// queue and will not run again.
    DeadLettered { reason: String },
}

/// How a video output was made: what a client or operator needs to understand the result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EncodeReport {
    /// The FFmpeg encoder that produced the video (`libx264`, `h264_nvenc`, …).
    pub encoder: String,
    /// The decoder that read the source (`h264`, or `h264` with `hwaccel` `cuda`).
    pub decoder: String,
    /// `cuda` when frames were decoded (and scaled) on the GPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hwaccel: Option<String>,
    /// The GPU (CUDA index on its node) that decoded or encoded it, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<u32>,
    /// Why a hardware path was not taken when the policy asked for or preferred it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware_fallback: Option<String>,
    /// Encoder passes run (2 for a two-pass size job; more when a correction was needed).
    pub passes: u32,
    /// `copied`, `aac`, `opus` or `none`.
    pub audio: String,
    /// For `size` jobs whose audio would have taken more than its share of the target: what it
    /// was re-encoded to so the picture keeps its bits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_shrunk: Option<AudioShrink>,
    /// Display rotation of the source that was applied to the pixels (degrees clockwise).
    #[serde(default)]
    pub rotation: i32,
    /// For `size` jobs: the target in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_size: Option<u64>,
    /// For `crf` jobs whose first encode came out larger than the input: what was done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_guard: Option<String>,
    /// Whether the output is larger than the input (only when the request allowed it).
    #[serde(default)]
    pub larger_than_input: bool,
    /// For `target_vmaf` jobs: the CRF chosen and the score achieved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vmaf: Option<VmafReport>,
    /// For ladders: every rendition, largest first, with its measured bandwidth.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub renditions: Vec<RenditionReport>,
    /// For ladders: rungs dropped or merged (no upscaling, no duplicates).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ladder_notes: Vec<String>,
    /// For ladders: frames from one keyframe to the next, the same in every rendition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyframe_interval: Option<u32>,
    /// For per-title ladders (`renditions: "auto"`): what was measured and chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_title: Option<PerTitleReport>,
    /// For outputs encoded in chunks: every chunk with its span, frames, size and time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<ChunksReport>,
}

/// A `size` job's audio, re-encoded smaller to fit the target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AudioShrink {
    /// The source track's bitrate (kbps; 128 assumed where its container did not say).
    pub source_kbps: f64,
    /// The bitrate it was encoded at (kbps).
    pub kbps: u32,
    /// 2 (stereo) or 1 (mono).
    pub channels: u32,
    /// `aac` or `opus`.
    pub codec: String,
}

/// Where a title's chunks stand: live while it encodes (from the node's progress), final once
/// it is done (from its report).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChunkCounts {
    pub total: u32,
    /// Encoded and stored.
    pub done: u32,
    /// Started by a node and not yet done.
    pub running: u32,
    /// Queued (or being cut and measured) and not yet started.
    pub queued: u32,
    /// Tries that failed and were run again (a chunk error, or a node lost mid-chunk).
    pub failed: u32,
}

impl ChunksReport {
    /// A finished title's counts: every chunk done, each attempt past a chunk's first one a
    /// failed try.
    pub fn counts(&self) -> ChunkCounts {
        ChunkCounts {
            total: self.total,
            done: self.done,
            running: 0,
            queued: self.total.saturating_sub(self.done),
            failed: self
                .chunks
                .iter()
                .map(|c| c.attempts.saturating_sub(1))
                .sum(),
        }
    }
}

/// How a title encoded in chunks was cut and encoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChunksReport {
    /// The chunk length asked for (s).
    pub chunk_secs: f64,
    /// Whether the title was chunked because it is long (no `chunk_secs` on the job).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub auto: bool,
    pub total: u32,
    pub done: u32,
    /// Chunks encoded at the same time.
    pub slots: u32,
    /// Scene changes found in the title (cuts are made at those near the chunk length).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scene_changes: Option<u32>,
    /// For `bitrate` and `size` titles: seconds the fast first pass took that measured each
    /// chunk's complexity (the title's bits are shared by it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate_secs: Option<f64>,
    pub chunks: Vec<ChunkEntry>,
}

/// One chunk of a title.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChunkEntry {
    pub index: u32,
    /// Where it starts in the source (s).
    pub start_s: f64,
    pub frames: u64,
    /// Whether it starts on a source keyframe (else it was decoded from the one before).
    pub on_keyframe: bool,
    /// Whether it starts at a scene change (the title is cut at one where one falls near the
    /// chunk length asked for).
    #[serde(default)]
    pub at_scene: bool,
    /// Video bytes it encoded to.
    pub bytes: u64,
    pub attempts: u32,
    /// Seconds its encode took.
    pub secs: f64,
    /// For `bitrate` and `size` titles: the video bitrate this chunk was aimed at (kbps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kbps: Option<f64>,
    /// For `bitrate` and `size` titles: the bytes the first pass made of it (its complexity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate_bytes: Option<u64>,
    /// The node that encoded it, where the chunks went through the queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// A ladder's chunk: which rendition (0 the largest; one entry per chunk and rendition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rung: Option<u32>,
}

/// How a per-title ladder was chosen: every probe encode of the sampled scenes with its
/// bitrate and VMAF, which lie on the convex hull, and which became rungs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PerTitleReport {
    /// The VMAF asked of the top rung.
    pub target_vmaf: f64,
    /// Whether the top rung's VMAF measured on the whole output reached the target.
    pub met: bool,
    /// Seconds of the source each probe encoded.
    pub sampled_secs: f64,
    /// Whether the source was probed whole (too short to sample).
    pub whole: bool,
    /// Every probe: the resolution × CRF grid, then the top rung's CRF search.
    pub probes: Vec<ProbePoint>,
}

/// One probe encode of a per-title search.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProbePoint {
    pub width: u32,
    pub height: u32,
    /// The encoder's own CRF.
    pub crf: u8,
    /// Video bitrate of the probe, kbps.
    pub kbps: f64,
    /// VMAF against the source at the source's size (pooled mean).
    pub vmaf: f64,
    /// Whether the point lies on the upper convex hull of (log bitrate, VMAF).
    pub on_hull: bool,
    /// Whether the point became a rung.
    pub chosen: bool,
}

/// One rendition of a ladder, as its playlists describe it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RenditionReport {
    pub width: u32,
    pub height: u32,
    /// The RFC 6381 codec string (`avc1.64001f`, `hvc1.1.6.L93.B0`, `av01.0.05M.08`).
    pub codecs: String,
    /// Peak bitrate of any one segment, audio included (HLS `BANDWIDTH`), bits/s.
    pub bandwidth: u64,
    /// Mean bitrate over the whole rendition, audio included (`AVERAGE-BANDWIDTH`), bits/s.
    pub average_bandwidth: u64,
    /// The bitrate asked for, when the rung was a bitrate rung.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_kbps: Option<u32>,
    /// The quality asked for, when the rung was a quality rung.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<u8>,
    /// The rendition's HLS media playlist, relative to the master.
    pub playlist: String,
    /// Per-title rungs: the encoder's own CRF the rung was encoded at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crf: Option<u8>,
    /// Per-title rungs: the video bitrate the sampled scenes predicted, kbps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kbps_predicted: Option<f64>,
    /// Per-title rungs: the VMAF the sampled scenes predicted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vmaf_predicted: Option<f64>,
    /// Per-title rungs: VMAF of the whole rendition against the source, measured after
    /// encoding (pooled mean, at the source's size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vmaf_measured: Option<f64>,
}

/// What a `target_vmaf` encode chose and achieved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VmafReport {
    /// The VMAF asked for.
    pub target: f64,
    /// The chosen CRF, on the encoder's own scale.
    pub crf: u8,
    /// VMAF of the whole output against the source (pooled mean, vmaf_v0.6.1).
    pub achieved: f64,
    /// 5th-percentile frame VMAF of the output: how its worst moments look.
    pub achieved_p5: f64,
    /// What the search predicted from the sampled scenes at that CRF.
    pub predicted: f64,
    /// The video size the samples predicted, in bytes.
    pub predicted_size_bytes: u64,
    /// Whether the samples met the target at some CRF (false: even the best CRF fell short,
    /// and the lowest CRF was used).
    pub met: bool,
    /// Sample encodes the search took.
    pub probes: u32,
    /// Where the CRF was searched: `title` (one CRF for the whole title, found on its sampled
    /// scenes; a title in chunks encodes every chunk at it).
    #[serde(default = "title_scope")]
    pub search: String,
}

fn title_scope() -> String {
    "title".into()
}
