//! The sweep a spec file asks for (TOML), expanded into encodes.
//!
//! ```toml
//! name = "x264 vs x265 on street footage"
//! clips = ["../shared/media/video/bikes.mp4"]   # relative to the spec file
//! resolutions = ["source", "360p"]             # optional; a ladder gets a convex hull
//! baseline = "x264 medium"                     # optional; BD-rates are against it
//!
//! [[encoders]]
//! encoder = "x264"                             # x264, x265, svt-av1, vp9, nvenc-h264, nvenc-h265
//! presets = ["veryfast", "medium"]
//! crf = [20, 24, 28, 32]                       # or bitrates_kbps = [300, 600, 1200, 2400]
//! ```

use std::path::{Path, PathBuf};

use kiln_protocol::{
    Container, HardwarePolicy, Preset, RateControl, Resolution, VideoCodec, VideoParams,
};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    #[serde(default)]
    pub name: Option<String>,
    pub clips: Vec<PathBuf>,
    #[serde(default)]
    pub resolutions: Vec<String>,
    #[serde(default)]
    pub baseline: Option<String>,
    pub encoders: Vec<EncoderSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderSpec {
    pub encoder: String,
    #[serde(default)]
    pub presets: Vec<String>,
    #[serde(default)]
    pub crf: Vec<u8>,
    #[serde(default)]
    pub bitrates_kbps: Vec<u32>,
}

/// One encoder at one preset and resolution: a rate-distortion curve's worth of encodes.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `x264 medium`, plus ` 360p` when the sweep has several resolutions.
    pub label: String,
    pub encoder: String,
    pub preset: String,
    pub resolution: String,
}

/// One encode of the sweep.
#[derive(Debug, Clone)]
pub struct Encode {
    pub clip: PathBuf,
    pub config: Config,
    /// `crf 23` or `1200 kbps`.
    pub point: String,
    pub params: VideoParams,
}

/// The codec and hardware policy an encoder name means: a codec or CPU encoder name as the
/// API takes them (`x264`, `libx265`, `svt-av1`, `vp9`, …), or NVENC as `nvenc-h264`,
/// `nvenc-h265`, `h264_nvenc`, `hevc_nvenc`.
pub fn encoder(name: &str) -> Result<(VideoCodec, HardwarePolicy), String> {
    let lower = name.to_ascii_lowercase();
    let (codec, hardware) = match lower
        .strip_prefix("nvenc-")
        .or_else(|| lower.strip_suffix("_nvenc"))
    {
        Some(codec) => (codec, HardwarePolicy::Nvenc),
        None => (lower.as_str(), HardwarePolicy::Cpu),
    };
    match VideoCodec::parse(codec) {
        Some(c) if hardware == HardwarePolicy::Cpu || c.nvenc_encoder().is_some() => {
            Ok((c, hardware))
        }
        _ => Err(format!(
            "unknown encoder {name:?}: use x264, x265, svt-av1, vp9, nvenc-h264 or nvenc-h265"
        )),
    }
}

impl Spec {
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let spec = Self::parse(&text, path.parent().unwrap_or(Path::new(".")))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        spec.check()?;
        Ok(spec)
    }

    /// A spec from its TOML text, relative clip paths taken from `base` (not yet looked for
    /// on disk). The fuzz target `tune_spec` feeds it arbitrary text.
    pub fn parse(text: &str, base: &Path) -> Result<Self, String> {
        let mut spec: Spec = toml::from_str(text).map_err(|e| e.to_string())?;
        for c in &mut spec.clips {
            if c.is_relative() {
                *c = base.join(&*c);
            }
        }
        Ok(spec)
    }

    fn check(&self) -> Result<(), String> {
        if self.clips.is_empty() || self.encoders.is_empty() {
            return Err("a spec needs at least one clip and one encoder".into());
        }
        for c in &self.clips {
            if !c.is_file() {
                return Err(format!("clip {} does not exist", c.display()));
            }
        }
        Ok(())
    }

    /// Every encode, in a stable order (clip, encoder, preset, resolution, rate point).
    pub fn expand(&self) -> Result<Vec<Encode>, String> {
        let resolutions = if self.resolutions.is_empty() {
            vec!["source".to_string()]
        } else {
            self.resolutions.clone()
        };
        let ladder = resolutions.len() > 1;
        let mut out = Vec::new();
        for clip in &self.clips {
            for e in &self.encoders {
                let (codec, hardware) = encoder(&e.encoder)?;
                if e.crf.is_empty() == e.bitrates_kbps.is_empty() {
                    return Err(format!(
                        "encoder {}: give either `crf` or `bitrates_kbps`",
                        e.encoder
                    ));
                }
                let (_, crf_max) = codec.crf_range();
                if let Some(c) = e.crf.iter().find(|c| **c > crf_max) {
                    return Err(format!("{}: crf {c} is past {crf_max}", e.encoder));
                }
                let presets = if e.presets.is_empty() {
                    vec![default_preset(codec).to_string()]
                } else {
                    e.presets.clone()
                };
                for p in &presets {
                    let preset = Preset::parse_for(codec, p)
                        .map_err(|why| format!("{}: preset {p:?}: {why}", e.encoder))?;
                    for r in &resolutions {
                        let resolution = match r.as_str() {
                            "source" | "" => None,
                            r => Resolution::parse(r)
                                .map_err(|why| format!("resolution {r:?}: {why}"))?,
                        };
                        let mut label = format!("{} {p}", e.encoder);
                        if ladder {
                            label.push(' ');
                            label.push_str(r);
                        }
                        let config = Config {
                            label,
                            encoder: e.encoder.clone(),
                            preset: p.clone(),
                            resolution: r.clone(),
                        };
                        let rates: Vec<(String, RateControl)> = if e.crf.is_empty() {
                            e.bitrates_kbps
                                .iter()
                                .map(|k| {
                                    (
                                        format!("{k} kbps"),
                                        RateControl::Bitrate {
                                            kbps: *k,
                                            max_kbps: None,
                                            buffer_kbits: None,
                                        },
                                    )
                                })
                                .collect()
                        } else {
                            e.crf
                                .iter()
                                .map(|c| (format!("crf {c}"), RateControl::EncoderCrf { crf: *c }))
                                .collect()
                        };
                        for (point, rate) in rates {
                            out.push(Encode {
                                clip: clip.clone(),
                                config: config.clone(),
                                point,
                                params: VideoParams {
                                    codec,
                                    rate,
                                    preset: Some(preset),
                                    resolution,
                                    container: Container::Mkv,
                                    hardware,
                                    allow_upscale: false,
                                    allow_larger: true,
                                    edit: Default::default(),
                                    chunk_secs: None,
                                },
                            });
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// The configuration BD-rates are measured against: the spec's `baseline`, else the first.
    pub fn baseline(&self, encodes: &[Encode]) -> Result<String, String> {
        let first = encodes
            .first()
            .map(|e| e.config.label.clone())
            .ok_or("nothing to encode")?;
        match &self.baseline {
            None => Ok(first),
            Some(b) if encodes.iter().any(|e| e.config.label == *b) => Ok(b.clone()),
            Some(b) => Err(format!(
                "baseline {b:?} is not one of the sweep's configurations"
            )),
        }
    }
}

fn default_preset(codec: VideoCodec) -> &'static str {
    match codec {
        VideoCodec::Av1 => "8",
        _ => "medium",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> Spec {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn a_spec_expands_to_every_combination_in_order() {
        let s = spec(
            r#"
            clips = ["a.mp4"]
            resolutions = ["source", "360p"]
            baseline = "x265 medium source"
            [[encoders]]
            encoder = "x264"
            presets = ["veryfast", "medium"]
            crf = [20, 30]
            [[encoders]]
            encoder = "x265"
            bitrates_kbps = [500]
            "#,
        );
        let e = s.expand().unwrap();
        // x264: 2 presets × 2 resolutions × 2 CRFs; x265: 1 × 2 × 1.
        assert_eq!(e.len(), 10);
        assert_eq!(e[0].config.label, "x264 veryfast source");
        assert_eq!(e[0].point, "crf 20");
        assert_eq!(e[0].params.rate, RateControl::EncoderCrf { crf: 20 });
        assert_eq!(e[2].config.label, "x264 veryfast 360p");
        assert_eq!(e[2].params.resolution, Resolution::parse("360p").unwrap());
        assert_eq!(e[9].config.label, "x265 medium 360p");
        assert!(matches!(
            e[9].params.rate,
            RateControl::Bitrate { kbps: 500, .. }
        ));
        assert_eq!(s.baseline(&e).unwrap(), "x265 medium source");
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        let bad = [
            (
                "clips = [\"a\"]\n[[encoders]]\nencoder = \"x266\"\ncrf = [1]",
                "unknown encoder",
            ),
            (
                "clips = [\"a\"]\n[[encoders]]\nencoder = \"x264\"",
                "either `crf`",
            ),
            (
                "clips = [\"a\"]\n[[encoders]]\nencoder = \"x264\"\ncrf = [52]",
                "past 51",
            ),
            (
                "clips = [\"a\"]\n[[encoders]]\nencoder = \"x264\"\npresets = [\"7\"]\ncrf = [20]",
                "preset",
            ),
        ];
        for (text, why) in bad {
            let err = spec(text).expand().unwrap_err();
            assert!(err.contains(why), "{err}");
        }
        assert!(toml::from_str::<Spec>("clips = []\nfoo = 1\nencoders = []").is_err());
        let s = spec(
            "clips = [\"a\"]\nbaseline = \"nope\"\n[[encoders]]\nencoder = \"x264\"\ncrf = [20]",
        );
        assert!(s.baseline(&s.expand().unwrap()).is_err());
    }
}
