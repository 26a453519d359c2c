//! Which encoder a job runs on and the options it gets: rate control, preset and passes mapped
//! onto each FFmpeg encoder's own knobs. Pure decisions, tested as tables.

use std::path::{Path, PathBuf};

use kiln_protocol::{HardwarePolicy, Preset, RateControl, VideoCodec, VideoParams};

use super::capabilities::MediaCapabilities;

/// The encoder chosen for a job, and why a hardware one was not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncoderChoice {
    /// FFmpeg encoder name.
    pub name: &'static str,
    /// Set when the policy asked for or preferred NVENC and the job runs on the CPU anyway.
    pub fallback: Option<String>,
}

impl EncoderChoice {
    /// Whether this is an NVENC encoder.
    pub fn is_nvenc(&self) -> bool {
        self.name.ends_with("_nvenc")
    }
}

/// Pick the encoder: NVENC where the policy allows it and the probe found it working, the
/// codec's CPU encoder otherwise.
pub fn choose_encoder(
    codec: VideoCodec,
    policy: HardwarePolicy,
    caps: &MediaCapabilities,
) -> EncoderChoice {
    let cpu = EncoderChoice {
        name: codec.cpu_encoder(),
        fallback: None,
    };
    if policy == HardwarePolicy::Cpu {
        return cpu;
    }
    let Some(nv) = codec.nvenc_encoder() else {
        return EncoderChoice {
            fallback: policy.wants_gpu().then(|| {
                format!(
                    "no NVENC encoder for {} in FFmpeg 5.1; encoded with {}",
                    codec.as_str(),
                    cpu.name
                )
            }),
            ..cpu
        };
    };
    match caps.encoders.iter().find(|c| c.name == nv) {
        Some(c) if c.available => EncoderChoice {
            name: nv,
            fallback: None,
        },
        found => {
            let why = found
                .and_then(|c| c.reason.clone())
                .unwrap_or_else(|| "not probed".into());
            EncoderChoice {
                // `auto` on a node without NVENC is the normal CPU path, not a fallback.
                fallback: policy.wants_gpu().then(|| {
                    format!(
                        "{nv} unavailable on this node ({why}); encoded with {}",
                        cpu.name
                    )
                }),
                ..cpu
            }
        }
    }
}

/// Rate control as the encoder is asked for it, on the encoder's own scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RateSpec {
    /// Constant quality at this CRF (already mapped onto the codec's scale).
    Crf(u8),
    /// Average bitrate capped by a VBV model.
    Capped {
        bps: i64,
        max_bps: i64,
        buffer_bits: i64,
    },
    /// Average bitrate aimed at a file size: no VBV cap, so the total is as exact as the
    /// encoder can make it.
    Average { bps: i64 },
}

impl RateSpec {
    /// What one pass encodes `params` at, for the rates that need no search or budget:
    /// `crf` and `encoder_crf` as a CRF on the codec's scale, `bitrate` as a VBV-capped
    /// average (the cap at the bitrate and a two-second buffer unless asked otherwise).
    /// `None` for `size` and `vmaf`.
    pub fn one_pass(params: &VideoParams) -> Option<Self> {
        Some(match params.rate {
            RateControl::Crf { quality } => Self::Crf(params.codec.crf_for(quality)),
            RateControl::EncoderCrf { crf } => Self::Crf(crf.min(params.codec.crf_range().1)),
            RateControl::Bitrate {
                kbps,
                max_kbps,
                buffer_kbits,
            } => {
                let bps = kbps as i64 * 1000;
                Self::Capped {
                    bps,
                    max_bps: max_kbps.map(|m| m as i64 * 1000).unwrap_or(bps),
                    buffer_bits: buffer_kbits.map(|b| b as i64 * 1000).unwrap_or(2 * bps),
                }
            }
            RateControl::Size { .. } | RateControl::Vmaf { .. } => return None,
        })
    }
}

/// Which pass of a multi-pass encode this is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pass {
    Only,
    /// First pass: analyse and write statistics to this file.
    First(PathBuf),
    /// Final pass: read the statistics of the first.
    Second(PathBuf),
}

/// Whether an encoder can do a real two-pass encode through FFmpeg 5.1's wrapper.
pub fn supports_two_pass(encoder: &str) -> bool {
    matches!(encoder, "libx264" | "libx265")
}

/// Options for `avcodec_open2` plus the rate fields set on the context.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncoderSettings {
    pub options: Vec<(String, String)>,
    pub bit_rate: i64,
    pub max_rate: i64,
    pub buffer_size: i64,
    /// Frames from one keyframe to the next when fixed (a ladder's segment cadence); 0 leaves
    /// the encoder's own GOP.
    pub gop_size: i32,
}

impl EncoderSettings {
    fn opt(&mut self, k: &str, v: impl Into<String>) {
        self.options.push((k.to_string(), v.into()));
    }
}

/// Make `settings` write headers that do not depend on the content, so that separately encoded
/// chunks share one: x264 otherwise sets the PPS's initial QP from a second pass's statistics
/// (`--stitchable`, made for segmented encodes). x265's, SVT-AV1's and libvpx's headers
/// already depend only on the settings.
pub(crate) fn stitchable(encoder: &str, settings: &mut EncoderSettings) {
    if encoder == "libx264" {
        match settings
            .options
            .iter_mut()
            .find(|(k, _)| k == "x264-params")
        {
            Some((_, v)) => v.push_str(":stitchable=1"),
            None => settings.opt("x264-params", "stitchable=1"),
        }
    }
}

/// x264's and x265's longest GOP unless told otherwise (frames).
const DEFAULT_KEYINT: u64 = 250;

/// Make every chunk of a title whose longest chunk has `frames` one GOP, where that is no
/// longer than 1.5× its encoder's own longest one: a chunk's first frame is a keyframe anyway,
/// and x264 or x265 would put a second just before its end. Chunks cut at scene changes
/// 10.6 s apart (265 frames at 25 fps) measured +5.5 % BD-rate against the whole encode with
/// x264's own GOP, −2.0 % as one GOP (`kiln-bench chunks`, README). The same length for every
/// chunk: x265 writes it into headers that must match.
pub(crate) fn one_gop(encoder: &str, frames: u64, settings: &mut EncoderSettings) {
    if matches!(encoder, "libx264" | "libx265") && frames > 0 && frames <= DEFAULT_KEYINT * 3 / 2 {
        settings.gop_size = frames as i32;
    }
}

/// The cores this process may run on, where that is fewer than the machine has online (the
/// node was pinned, e.g. with `taskset`, to share a host with others).
fn pinned_cores() -> Option<usize> {
    static PINNED: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *PINNED.get_or_init(|| {
        let mine = std::thread::available_parallelism().ok()?.get();
        let online = std::fs::read_to_string("/sys/devices/system/cpu/online").ok()?;
        (mine < count_cpus(&online)?).then_some(mine)
    })
}

/// CPUs in a kernel CPU list (`0-3,8-11`, `0`).
fn count_cpus(list: &str) -> Option<usize> {
    list.trim().split(',').try_fold(0, |n, part| {
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (lo.parse::<usize>().ok()?, hi.parse::<usize>().ok()?),
            None => {
                let c = part.parse::<usize>().ok()?;
                (c, c)
            }
        };
        Some(n + hi.checked_sub(lo)? + 1)
    })
}

/// The settings for `encoder` at `preset` and `rate`, for `pass`.
pub fn settings(encoder: &str, preset: Preset, rate: RateSpec, pass: &Pass) -> EncoderSettings {
    let mut s = EncoderSettings::default();
    match rate {
        RateSpec::Crf(_) => {}
        RateSpec::Capped {
            bps,
            max_bps,
            buffer_bits,
        } => {
            s.bit_rate = bps;
            s.max_rate = max_bps;
            s.buffer_size = buffer_bits;
        }
        RateSpec::Average { bps } => s.bit_rate = bps,
    }
    let stats = |p: &Path| p.to_string_lossy().into_owned();
    match encoder {
        "libx264" => {
            s.opt("preset", preset.for_encoder(encoder));
            if let RateSpec::Crf(crf) = rate {
                s.opt("crf", crf.to_string());
            }
            match pass {
                Pass::Only => {}
                // x264's own fast first pass (what its CLI does unless --slow-firstpass): the
                // statistics that matter (frame costs, types) barely change, the pass is ~3×
                // faster.
                Pass::First(p) => s.opt(
                    "x264-params",
                    format!(
                        "pass=1:stats={}:ref=1:subme=2:me=dia:analyse=none:trellis=0:8x8dct=0",
                        stats(p)
                    ),
                ),
                Pass::Second(p) => s.opt("x264-params", format!("pass=2:stats={}", stats(p))),
            }
        }
        "libx265" => {
            s.opt("preset", preset.for_encoder(encoder));
            if let RateSpec::Crf(crf) = rate {
                s.opt("crf", crf.to_string());
            }
            let mut params = "log-level=error".to_string();
            if let Some(n) = pinned_cores() {
                // x265's thread pool moves its workers onto every core of the NUMA node
                // (libnuma), out of a node pinned to fewer: under `taskset -c 1` its workers
                // ran with CPUs 0-1 allowed (`pools=1` too) and competed with the node pinned
                // there. Without a pool it keeps the node's cores, parallel over frames.
                params.push_str(&format!(":pools=none:frame-threads={}", n.min(16)));
            }
            match pass {
                Pass::Only => {}
                Pass::First(p) => params.push_str(&format!(":pass=1:stats={}", stats(p))),
                Pass::Second(p) => params.push_str(&format!(":pass=2:stats={}", stats(p))),
            }
            s.opt("x265-params", params);
        }
        "libsvtav1" => {
            s.opt("preset", preset.for_encoder(encoder));
            match rate {
                RateSpec::Crf(crf) => s.opt("crf", crf.to_string()),
                // SVT-AV1 1.4 has CBR only with low-delay prediction; VBR (no cap) otherwise.
                RateSpec::Capped { .. } | RateSpec::Average { .. } => {
                    s.max_rate = 0;
                    s.buffer_size = 0;
                }
            }
        }
        "libvpx-vp9" => {
            s.opt("deadline", "good");
            s.opt("cpu-used", preset.vp9_cpu_used().to_string());
            s.opt("row-mt", "1");
            if let RateSpec::Crf(crf) = rate {
                // Constant quality needs b:v 0 (otherwise it is constrained quality).
                s.opt("crf", crf.to_string());
            }
        }
        nv if nv.ends_with("_nvenc") => {
            s.opt("preset", preset.for_encoder(encoder));
            s.opt("tune", "hq");
            s.opt("rc", "vbr");
            match rate {
                RateSpec::Crf(cq) => s.opt("cq", cq.to_string()),
                // NVENC's own two-pass (full-resolution first pass) in one call.
                RateSpec::Average { .. } => s.opt("multipass", "fullres"),
                RateSpec::Capped { .. } => {}
            }
        }
        _ => {}
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::capabilities::{CodecProbe, MediaCapabilities};

    #[test]
    fn kernel_cpu_lists_are_counted() {
        assert_eq!(count_cpus("0-15\n"), Some(16));
        assert_eq!(count_cpus("0"), Some(1));
        assert_eq!(count_cpus("0-3,8-11"), Some(8));
        assert_eq!(count_cpus("3-1"), None);
        assert_eq!(count_cpus("x"), None);
    }

    fn caps(nvenc: bool) -> MediaCapabilities {
        let probe = |name: &'static str, ok: bool| CodecProbe {
            name,
            available: ok,
            reason: (!ok).then(|| "No capable devices found".to_string()),
        };
        MediaCapabilities {
            encoders: vec![
                probe("libx264", true),
                probe("libx265", true),
                probe("libsvtav1", true),
                probe("h264_nvenc", nvenc),
                probe("hevc_nvenc", nvenc),
            ],
            decoders: vec![],
            cuda: probe("cuda", nvenc),
        }
    }

    #[test]
    fn encoder_choice_follows_policy_and_probe() {
        use HardwarePolicy::*;
        use VideoCodec::*;
        // (codec, policy, node has NVENC, encoder, fallback recorded)
        let cases = [
            (H264, Auto, true, "h264_nvenc", false),
            (H264, Auto, false, "libx264", false),
            (H264, Cpu, true, "libx264", false),
            (H264, Gpu, false, "libx264", true),
            (H265, Gpu, true, "hevc_nvenc", false),
            (Av1, Gpu, true, "libsvtav1", true),
            (Av1, Auto, true, "libsvtav1", false),
            (Vp9, Auto, false, "libvpx-vp9", false),
        ];
        for (codec, policy, nv, want, fallback) in cases {
            let c = choose_encoder(codec, policy, &caps(nv));
            assert_eq!(c.name, want, "{codec:?} {policy:?} nvenc={nv}");
            assert_eq!(
                c.fallback.is_some(),
                fallback,
                "{codec:?} {policy:?}: {c:?}"
            );
        }
        let c = choose_encoder(H264, Gpu, &caps(false));
        assert!(c.fallback.unwrap().contains("No capable devices found"));
    }

    fn opt<'a>(s: &'a EncoderSettings, k: &str) -> Option<&'a str> {
        s.options
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn crf_and_presets_reach_each_encoder() {
        let s = settings("libx264", Preset::Veryfast, RateSpec::Crf(23), &Pass::Only);
        assert_eq!(opt(&s, "crf"), Some("23"));
        assert_eq!(opt(&s, "preset"), Some("veryfast"));
        assert_eq!(s.bit_rate, 0);
        let s = settings("libsvtav1", Preset::Medium, RateSpec::Crf(35), &Pass::Only);
        assert_eq!((opt(&s, "crf"), opt(&s, "preset")), (Some("35"), Some("8")));
        let s = settings("libvpx-vp9", Preset::Medium, RateSpec::Crf(33), &Pass::Only);
        assert_eq!((opt(&s, "crf"), s.bit_rate), (Some("33"), 0));
        let s = settings("hevc_nvenc", Preset::Slow, RateSpec::Crf(28), &Pass::Only);
        assert_eq!(
            (opt(&s, "cq"), opt(&s, "rc"), opt(&s, "preset")),
            (Some("28"), Some("vbr"), Some("p5"))
        );
    }

    #[test]
    fn bitrates_and_passes() {
        let capped = RateSpec::Capped {
            bps: 1_000_000,
            max_bps: 1_500_000,
            buffer_bits: 2_000_000,
        };
        let s = settings("libx264", Preset::Medium, capped, &Pass::Only);
        assert_eq!(
            (s.bit_rate, s.max_rate, s.buffer_size),
            (1_000_000, 1_500_000, 2_000_000)
        );
        assert_eq!(opt(&s, "crf"), None);
        // SVT-AV1 1.4 cannot cap VBR outside low delay: the cap is dropped, the average kept.
        let s = settings("libsvtav1", Preset::Medium, capped, &Pass::Only);
        assert_eq!((s.bit_rate, s.max_rate), (1_000_000, 0));

        let stats = PathBuf::from("/tmp/j1.stats");
        let s = settings(
            "libx264",
            Preset::Medium,
            RateSpec::Average { bps: 500_000 },
            &Pass::First(stats.clone()),
        );
        assert!(opt(&s, "x264-params")
            .unwrap()
            .starts_with("pass=1:stats=/tmp/j1.stats"));
        let s = settings(
            "libx265",
            Preset::Medium,
            RateSpec::Average { bps: 500_000 },
            &Pass::Second(stats),
        );
        assert_eq!(
            opt(&s, "x265-params"),
            Some("log-level=error:pass=2:stats=/tmp/j1.stats")
        );
        assert!(supports_two_pass("libx265") && !supports_two_pass("libsvtav1"));
        let s = settings(
            "h264_nvenc",
            Preset::Medium,
            RateSpec::Average { bps: 500_000 },
            &Pass::Only,
        );
        assert_eq!(opt(&s, "multipass"), Some("fullres"));
    }
}
