//! Video job settings: codec, rate control, speed preset, container and hardware policy, with
//! the pure arithmetic both sides need (quality scales, target-size bitrates).

use serde::{Deserialize, Serialize};

use crate::job::Resolution;

mod size;

pub use size::{
    correct_video_bps, plan_size, plan_video_bps, AudioBudget, SizePlan, SizePlanError,
    SourceAudio, ASSUMED_AUDIO_BPS, AUDIO_SHARE, AUDIO_STEPS, BYTES_PER_MB, MIN_VIDEO_BPS,
    MUX_OVERHEAD,
};

/// Settings of a video transcode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoParams {
    /// Output video codec.
    pub codec: VideoCodec,
    /// How the encoder spends bits.
    pub rate: RateControl,
    /// Speed/efficiency trade-off; `None` is the codec's default (`medium`, SVT-AV1 preset 8).
    #[serde(default)]
    pub preset: Option<Preset>,
    /// Output size; `None` keeps the source's.
    pub resolution: Option<Resolution>,
    /// Output container.
    #[serde(default)]
    pub container: Container,
    /// Whether to use NVDEC/NVENC.
    #[serde(default)]
    pub hardware: HardwarePolicy,
    /// Whether a resolution larger than the source is allowed.
    #[serde(default)]
    pub allow_upscale: bool,
    /// Whether a `crf` output may end up larger than its input.
    #[serde(default)]
    pub allow_larger: bool,
    /// Trim, crop, watermark and subtitles, applied before encoding.
    #[serde(default, skip_serializing_if = "crate::edit::Edit::is_empty")]
    pub edit: crate::edit::Edit,
    /// Encode in chunks of about this many seconds, cut at the source's keyframes, spread over
    /// the fleet, joined into one file (unedited crf, bitrate and size outputs). `Some(0)`:
    /// never; `None`: in chunks of [`AUTO_CHUNK_SECS`] where the source is longer than the
    /// node's threshold (`KILN_CHUNK_AUTO_SECS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_secs: Option<f64>,
}

/// The range of `chunk_secs` (besides 0, never).
pub const CHUNK_SECS: std::ops::RangeInclusive<f64> = 2.0..=300.0;

/// Chunk length of a title chunked because it is long (`chunk_secs` not given).
pub const AUTO_CHUNK_SECS: f64 = 30.0;

/// Sources longer than this are encoded in chunks unless the job says otherwise (a node's
/// `KILN_CHUNK_AUTO_SECS` changes it; 0 turns it off).
pub const DEFAULT_CHUNK_AUTO_SECS: f64 = 600.0;

impl VideoParams {
    /// A `crf` job at `quality` with every other setting at its default.
    pub fn crf(codec: VideoCodec, quality: u8) -> Self {
        Self {
            codec,
            rate: RateControl::Crf { quality },
            preset: None,
            resolution: None,
            container: Container::default_for(codec),
            hardware: HardwarePolicy::Auto,
            allow_upscale: false,
            allow_larger: false,
            edit: crate::edit::Edit::default(),
            chunk_secs: None,
        }
    }
}

/// Video codecs the API names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VideoCodec {
    H264,
    H265,
    Av1,
    Vp9,
}

impl VideoCodec {
    /// Every codec, in the order the API documents them.
    pub const ALL: [Self; 4] = [Self::H264, Self::H265, Self::Av1, Self::Vp9];

    /// Parse the API's codec name (`h264`, `h265`, `av1`, `vp9` and their common aliases).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "h264" | "avc" | "x264" | "libx264" => Some(Self::H264),
            "h265" | "hevc" | "x265" | "libx265" => Some(Self::H265),
            "av1" | "svt-av1" | "svtav1" | "libsvtav1" => Some(Self::Av1),
            "vp9" | "libvpx-vp9" => Some(Self::Vp9),
            _ => None,
        }
    }

    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::H264 => "h264",
            Self::H265 => "h265",
            Self::Av1 => "av1",
            Self::Vp9 => "vp9",
        }
    }

    /// The CPU encoder FFmpeg runs for this codec.
    pub fn cpu_encoder(self) -> &'static str {
        match self {
            Self::H264 => "libx264",
            Self::H265 => "libx265",
            Self::Av1 => "libsvtav1",
            Self::Vp9 => "libvpx-vp9",
        }
    }

    /// The NVENC encoder for this codec, where one exists in FFmpeg 5.1.
    pub fn nvenc_encoder(self) -> Option<&'static str> {
        match self {
            Self::H264 => Some("h264_nvenc"),
            Self::H265 => Some("hevc_nvenc"),
            // av1_nvenc needs FFmpeg 6 and an Ada GPU; VP9 has no NVENC encoder.
            Self::Av1 | Self::Vp9 => None,
        }
    }

    /// The range of the encoder's own CRF scale (what `EncoderCrf` and the target search use).
    pub fn crf_range(self) -> (u8, u8) {
        match self {
            Self::H264 | Self::H265 => (0, 51),
            Self::Av1 | Self::Vp9 => (0, 63),
        }
    }

    /// Map Konvrt's `quality` (an x264-style CRF, 18 best … 51 smallest) onto this codec's own
    /// CRF scale, so one number means about the same visual quality on every codec.
    ///
    /// x265's CRF 28 looks like x264's 23 (FFmpeg's H.265 guide), so +5; SVT-AV1 and VP9 use
    /// 0–63, where 35 and 33 are the usual counterparts of x264's 23.
    pub fn crf_for(self, quality: u8) -> u8 {
        let q = quality.min(51);
        match self {
            Self::H264 => q,
            Self::H265 => (q + 5).min(51),
            Self::Av1 => (q + 12).min(63),
            Self::Vp9 => (q + 10).min(63),
        }
    }
}

/// Output containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Container {
    /// MP4 with the index first (faststart), for progressive playback.
    #[default]
    Mp4,
    /// WebM: AV1 or VP9 with Opus audio.
    Webm,
    /// Matroska: any codec, audio nearly always copied.
    Mkv,
}

impl Container {
    /// Parse `mp4`, `webm`, `mkv` (also `matroska`).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "mp4" | "m4v" => Some(Self::Mp4),
            "webm" => Some(Self::Webm),
            "mkv" | "matroska" => Some(Self::Mkv),
            _ => None,
        }
    }

    /// File extension without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Mp4 => "mp4",
            Self::Webm => "webm",
            Self::Mkv => "mkv",
        }
    }

    /// The MIME type downloads are served with.
    pub fn mime(self) -> &'static str {
        match self {
            Self::Mp4 => "video/mp4",
            Self::Webm => "video/webm",
            Self::Mkv => "video/x-matroska",
        }
    }

    /// The container a codec gets when the request names none.
    pub fn default_for(codec: VideoCodec) -> Self {
        match codec {
            VideoCodec::Vp9 => Self::Webm,
            _ => Self::Mp4,
        }
    }

    /// Whether this container can carry `codec` (WebM takes only AV1 and VP9).
    pub fn holds(self, codec: VideoCodec) -> bool {
        match self {
            Self::Webm => matches!(codec, VideoCodec::Av1 | VideoCodec::Vp9),
            Self::Mp4 | Self::Mkv => true,
        }
    }
}

/// How the encoder spends bits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum RateControl {
    /// Constant quality on Konvrt's 18–51 scale, mapped per codec by [`VideoCodec::crf_for`].
    Crf { quality: u8 },
    /// Average bitrate with a VBV cap: `max_kbps` (default = `kbps`) over a buffer of
    /// `buffer_kbits` (default = 2 × `kbps`).
    Bitrate {
        kbps: u32,
        #[serde(default)]
        max_kbps: Option<u32>,
        #[serde(default)]
        buffer_kbits: Option<u32>,
    },
    /// A target file size in MB (1 MB = 1,000,000 bytes), audio and container included.
    Size { target_mb: f64 },
    /// The largest CRF whose VMAF (vmaf_v0.6.1, pooled mean, against the source) still meets
    /// `target`: searched on sampled scenes, then one full encode, whose score is reported.
    Vmaf { target: f64 },
    /// The encoder's own CRF (x264/x265 0–51, SVT-AV1/VP9 0–63, NVENC's `cq`), one pass, no size
    /// guard: what the tuning harness sweeps and the target search probes.
    EncoderCrf { crf: u8 },
}

impl RateControl {
    /// The API name of the method.
    pub fn method(&self) -> &'static str {
        match self {
            Self::Crf { .. } => "crf",
            Self::Bitrate { .. } => "bitrate",
            Self::Size { .. } => "size",
            Self::Vmaf { .. } => "vmaf",
            Self::EncoderCrf { .. } => "encoder_crf",
        }
    }
}

/// The VMAF targets a quality search takes (`target_vmaf` outputs, per-title ladders): below 40
/// a search has nothing sensible to find; 99+ only lossless-like CRFs reach.
pub const TARGET_VMAF: std::ops::RangeInclusive<f64> = 40.0..=99.0;

/// Lowest quality value Konvrt's API takes.
pub const QUALITY_MIN: u8 = 18;
/// Highest (smallest file) quality value.
pub const QUALITY_MAX: u8 = 51;
/// Quality when the request gives none (x264's own default CRF).
pub const QUALITY_DEFAULT: u8 = 23;

/// Encoder speed presets: x264's names for every codec, mapped per encoder by the node; AV1
/// also takes SVT-AV1's own 0–13.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Preset {
    Ultrafast,
    Superfast,
    Veryfast,
    Faster,
    Fast,
    Medium,
    Slow,
    Slower,
    Veryslow,
    /// SVT-AV1's own preset number (0 slowest … 13 fastest).
    Svt(u8),
}

const PRESET_NAMES: [(&str, Preset); 9] = [
    ("ultrafast", Preset::Ultrafast),
    ("superfast", Preset::Superfast),
    ("veryfast", Preset::Veryfast),
    ("faster", Preset::Faster),
    ("fast", Preset::Fast),
    ("medium", Preset::Medium),
    ("slow", Preset::Slow),
    ("slower", Preset::Slower),
    ("veryslow", Preset::Veryslow),
];

impl Preset {
    /// Parse a preset for `codec`: a name from `ultrafast` to `veryslow`, or 0–13 for AV1.
    pub fn parse_for(codec: VideoCodec, s: &str) -> Result<Self, String> {
        let p = Self::try_from(s.to_string())?;
        if matches!(p, Self::Svt(_)) && codec != VideoCodec::Av1 {
            return Err(format!(
                "a numeric preset is SVT-AV1's scale and applies to av1 only; use ultrafast … veryslow for {}",
                codec.as_str()
            ));
        }
        Ok(p)
    }

    /// 0 (fastest) … 8 (slowest) for the named presets.
    pub fn level(self) -> Option<usize> {
        PRESET_NAMES.iter().position(|(_, p)| *p == self)
    }

    /// The value the given encoder's `preset` option takes.
    pub fn for_encoder(self, encoder: &str) -> String {
        let level = self.level();
        match (encoder, self, level) {
            ("libsvtav1", Self::Svt(n), _) => n.to_string(),
            // SVT-AV1: 13 fastest … 0 slowest; medium = 8, its usual VOD speed.
            ("libsvtav1", _, Some(l)) => [13, 12, 11, 10, 9, 8, 6, 4, 2][l].to_string(),
            // NVENC: p1 fastest … p7 slowest.
            (e, _, Some(l)) if e.ends_with("_nvenc") => {
                format!("p{}", [1, 1, 2, 3, 3, 4, 5, 6, 7][l])
            }
            // libvpx-vp9 takes `cpu-used` (8 fastest … 0 slowest) instead; see `vp9_cpu_used`.
            (_, _, Some(l)) => PRESET_NAMES[l].0.to_string(),
            // An SVT number given to another encoder: the nearest named speed.
            (_, Self::Svt(n), None) => {
                let l = 8usize.saturating_sub((n as usize * 8).div_ceil(13));
                Self::from_level(l).for_encoder(encoder)
            }
            _ => "medium".to_string(),
        }
    }

    /// libvpx-vp9's `cpu-used` for this preset.
    pub fn vp9_cpu_used(self) -> u8 {
        match self.level() {
            Some(l) => [8, 7, 6, 5, 4, 3, 2, 1, 0][l],
            None => 4,
        }
    }

    fn from_level(l: usize) -> Self {
        PRESET_NAMES[l.min(8)].1
    }
}

impl TryFrom<String> for Preset {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let t = s.trim().to_ascii_lowercase();
        if let Some((_, p)) = PRESET_NAMES.iter().find(|(n, _)| *n == t) {
            return Ok(*p);
        }
        match t.parse::<u8>() {
            Ok(n) if n <= 13 => Ok(Self::Svt(n)),
            _ => Err(format!(
                "preset must be one of ultrafast, superfast, veryfast, faster, fast, medium, slow, \
                 slower, veryslow (or 0–13 for av1), got {s:?}"
            )),
        }
    }
}

impl From<Preset> for String {
    fn from(p: Preset) -> String {
        match p {
            Preset::Svt(n) => n.to_string(),
            named => PRESET_NAMES[named.level().expect("named preset")]
                .0
                .to_string(),
        }
    }
}

/// Whether a job may use NVDEC/NVENC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HardwarePolicy {
    /// NVDEC and NVENC where this node has them, CPU otherwise.
    #[default]
    Auto,
    /// CPU decode and CPU encoders only (best compression per bit).
    Cpu,
    /// Ask for NVENC; where the node has none the job runs on the CPU and says why.
    Gpu,
    /// Require NVENC: the job is scheduled only onto nodes whose NVENC opened for its codec,
    /// and waits (saying why in its status) while no live node has one.
    Nvenc,
}

impl HardwarePolicy {
    /// Whether the job asked for NVENC (preferred or required).
    pub fn wants_gpu(self) -> bool {
        matches!(self, Self::Gpu | Self::Nvenc)
    }

    /// Parse `auto`, `cpu`, `gpu`, `nvenc`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Some(Self::Auto),
            "cpu" | "none" | "software" => Some(Self::Cpu),
            "gpu" | "hardware" => Some(Self::Gpu),
            "nvenc" | "require_gpu" => Some(Self::Nvenc),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rate_method_names_are_the_serde_tags() {
        for rate in [
            RateControl::Crf { quality: 23 },
            RateControl::Bitrate {
                kbps: 800,
                max_kbps: None,
                buffer_kbits: None,
            },
            RateControl::Size { target_mb: 2.0 },
            RateControl::Vmaf { target: 95.0 },
            RateControl::EncoderCrf { crf: 30 },
        ] {
            assert_eq!(
                serde_json::to_value(&rate).unwrap()["method"],
                rate.method()
            );
        }
    }

    use super::*;

    #[test]
    fn codec_names() {
        assert_eq!(VideoCodec::parse("H264"), Some(VideoCodec::H264));
        assert_eq!(VideoCodec::parse("libx264"), Some(VideoCodec::H264));
        assert_eq!(VideoCodec::parse("hevc"), Some(VideoCodec::H265));
        assert_eq!(VideoCodec::parse("AV1"), Some(VideoCodec::Av1));
        assert_eq!(VideoCodec::parse("vp9"), Some(VideoCodec::Vp9));
        assert_eq!(VideoCodec::parse("h266"), None);
    }

    #[test]
    fn quality_maps_onto_each_codecs_scale() {
        // (codec, konvrt quality, encoder crf)
        let cases = [
            (VideoCodec::H264, 23, 23),
            (VideoCodec::H264, 51, 51),
            (VideoCodec::H265, 23, 28),
            (VideoCodec::H265, 18, 23),
            (VideoCodec::H265, 51, 51),
            (VideoCodec::Av1, 23, 35),
            (VideoCodec::Av1, 18, 30),
            (VideoCodec::Av1, 51, 63),
            (VideoCodec::Vp9, 23, 33),
            (VideoCodec::Vp9, 51, 61),
        ];
        for (codec, q, want) in cases {
            assert_eq!(codec.crf_for(q), want, "{codec:?} quality {q}");
        }
        // Monotone: a higher quality number never means a lower CRF.
        for codec in VideoCodec::ALL {
            for q in QUALITY_MIN..QUALITY_MAX {
                assert!(codec.crf_for(q) <= codec.crf_for(q + 1));
            }
        }
    }

    #[test]
    fn presets_map_per_encoder() {
        let cases = [
            (Preset::Medium, "libx264", "medium"),
            (Preset::Veryfast, "libx265", "veryfast"),
            (Preset::Medium, "libsvtav1", "8"),
            (Preset::Ultrafast, "libsvtav1", "13"),
            (Preset::Veryslow, "libsvtav1", "2"),
            (Preset::Svt(5), "libsvtav1", "5"),
            (Preset::Medium, "h264_nvenc", "p4"),
            (Preset::Veryslow, "hevc_nvenc", "p7"),
            (Preset::Svt(13), "libx264", "ultrafast"),
            (Preset::Svt(0), "libx264", "veryslow"),
        ];
        for (p, enc, want) in cases {
            assert_eq!(p.for_encoder(enc), want, "{p:?} on {enc}");
        }
        assert_eq!(Preset::Medium.vp9_cpu_used(), 3);
        assert_eq!(
            Preset::parse_for(VideoCodec::Av1, " 8 "),
            Ok(Preset::Svt(8))
        );
        assert!(Preset::parse_for(VideoCodec::H264, "8").is_err());
        assert!(Preset::parse_for(VideoCodec::Av1, "14").is_err());
        assert!(Preset::parse_for(VideoCodec::H264, "turbo").is_err());
        let json = serde_json::to_string(&Preset::Slow).unwrap();
        assert_eq!(json, "\"slow\"");
        assert_eq!(serde_json::from_str::<Preset>(&json).unwrap(), Preset::Slow);
    }

    #[test]
    fn containers_hold_what_they_can() {
        assert!(Container::Webm.holds(VideoCodec::Av1));
        assert!(!Container::Webm.holds(VideoCodec::H264));
        assert!(Container::Mkv.holds(VideoCodec::H265));
        assert_eq!(Container::default_for(VideoCodec::Vp9), Container::Webm);
        assert_eq!(Container::parse("Matroska"), Some(Container::Mkv));
    }
}
