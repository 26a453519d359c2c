//! Validating what a submission asks for: video settings (`/compress`'s fields), output
//! objects of the jobs API, Convertly's formats × qualities × sizes, webhook options. Every
//! dialect translates its own fields into these, so validation and its messages are one.

use std::collections::{BTreeMap, HashMap};

use kiln_gpu_node::imaging::{self, OutputFormat};
use kiln_protocol::video::{QUALITY_DEFAULT, QUALITY_MAX, QUALITY_MIN};
use kiln_protocol::{
    Container, HardwarePolicy, ImageParams, Preset, RateControl, Resolution, VideoCodec,
    VideoParams,
};
use serde_json::{json, Value};

use super::{Output, SubmitError, Webhook};
use crate::netguard::UrlPolicy;

/// The VMAF targets `target_vmaf` takes ([`kiln_protocol::video::TARGET_VMAF`]).
pub const VMAF_TARGET_MIN: f64 = *kiln_protocol::video::TARGET_VMAF.start();
pub const VMAF_TARGET_MAX: f64 = *kiln_protocol::video::TARGET_VMAF.end();

/// `chunk_secs` as a video or ladder output takes it: seconds in
/// [`kiln_protocol::video::CHUNK_SECS`], or 0 (`off`): never in chunks, however long the source.
pub(super) fn chunk_secs(v: Option<&str>) -> Result<Option<f64>, SubmitError> {
    let (lo, hi) = (
        *kiln_protocol::video::CHUNK_SECS.start(),
        *kiln_protocol::video::CHUNK_SECS.end(),
    );
    match v.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some("0" | "0.0" | "off") => Ok(Some(0.0)),
        Some(v) => match v.parse::<f64>() {
            Ok(n) if n.is_finite() && (lo..=hi).contains(&n) => Ok(Some(n)),
            _ => Err(SubmitError::Invalid(format!(
                "chunk_secs must be a number from {lo} to {hi}, got {v:?}"
            ))),
        },
    }
}

/// Validated settings from the text fields: `codec`, `quality`, `method` (`crf`, `bitrate`,
/// `size`, `vmaf`), `bitrate` / `max_bitrate` / `buffer_size` (kbps, kbit), `target_size_mb`,
/// `target_vmaf`, `encoder_crf` (the encoder's own CRF scale, for tuning),
/// `resolution`, `preset`, `format` (`mp4`, `webm`, `mkv`), `hardware` (`auto`, `cpu`, `gpu`, `nvenc`),
/// `allow_upscale`, `allow_larger`, `chunk_secs` (encode in chunks of about that many seconds;
/// 0 never; absent, the node chunks sources longer than its `KILN_CHUNK_AUTO_SECS`).
pub fn video_params(fields: &HashMap<String, String>) -> Result<VideoParams, SubmitError> {
    let get = |k: &str| fields.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let bad = SubmitError::Invalid;
    let number = |k: &str, lo: f64, hi: f64| -> Result<Option<f64>, SubmitError> {
        match get(k) {
            None => Ok(None),
            Some(v) => match v.parse::<f64>() {
                Ok(n) if n.is_finite() && (lo..=hi).contains(&n) => Ok(Some(n)),
                _ => Err(bad(format!(
                    "{k} must be a number from {lo} to {hi}, got {v:?}"
                ))),
            },
        }
    };
    let flag = |k: &str| -> Result<bool, SubmitError> {
        match get(k).map(str::to_ascii_lowercase).as_deref() {
            None | Some("false" | "0" | "no") => Ok(false),
            Some("true" | "1" | "yes") => Ok(true),
            Some(v) => Err(bad(format!("{k} must be true or false, got {v:?}"))),
        }
    };
    let codec = match get("codec") {
        None => VideoCodec::H264,
        Some(c) => VideoCodec::parse(c).ok_or_else(|| {
            bad(format!(
                "unsupported codec {c:?}: supported codecs are h264, h265, av1, vp9"
            ))
        })?,
    };
    let quality = match get("quality") {
        None => QUALITY_DEFAULT,
        Some(q) => match q.parse::<u8>() {
            Ok(v) if (QUALITY_MIN..=QUALITY_MAX).contains(&v) => v,
            _ => {
                return Err(bad(format!(
                    "quality must be a whole number from {QUALITY_MIN} (best) to {QUALITY_MAX} (smallest), got {q:?}"
                )))
            }
        },
    };
    let bitrate = number("bitrate", 16.0, 500_000.0)?;
    let target = number("target_size_mb", 0.001, 1_000_000.0)?;
    let target_vmaf = number("target_vmaf", VMAF_TARGET_MIN, VMAF_TARGET_MAX)?;
    let (_, crf_max) = codec.crf_range();
    let encoder_crf = number("encoder_crf", 0.0, crf_max as f64)?;
    let method = match get("method") {
        Some(m) => m.to_ascii_lowercase(),
        // No method named: the field that was given says which.
        None if target_vmaf.is_some() => "vmaf".into(),
        None if encoder_crf.is_some() => "encoder_crf".into(),
        None if target.is_some() => "size".into(),
        None if bitrate.is_some() => "bitrate".into(),
        None => "crf".into(),
    };
    let rate = match method.as_str() {
        "crf" | "quality" => RateControl::Crf { quality },
        "bitrate" | "abr" | "vbr" => RateControl::Bitrate {
            kbps: bitrate.ok_or_else(|| bad("method bitrate needs `bitrate` (kbps)".into()))?
                as u32,
            max_kbps: number("max_bitrate", 16.0, 1_000_000.0)?.map(|v| v as u32),
            buffer_kbits: number("buffer_size", 16.0, 2_000_000.0)?.map(|v| v as u32),
        },
        "size" | "target_size" => RateControl::Size {
            target_mb: target.ok_or_else(|| bad("method size needs `target_size_mb`".into()))?,
        },
        "vmaf" | "target_vmaf" => RateControl::Vmaf {
            target: target_vmaf.ok_or_else(|| {
                bad(format!(
                    "method vmaf needs `target_vmaf` ({VMAF_TARGET_MIN}–{VMAF_TARGET_MAX})"
                ))
            })?,
        },
        "encoder_crf" => RateControl::EncoderCrf {
            crf: encoder_crf
                .filter(|c| c.fract() == 0.0)
                .ok_or_else(|| {
                    bad(format!(
                        "method encoder_crf needs `encoder_crf`, a whole number from 0 to {crf_max} for {}",
                        codec.as_str()
                    ))
                })? as u8,
        },
        m => {
            return Err(bad(format!(
                "unsupported method {m:?}: supported methods are crf, bitrate, size, vmaf, encoder_crf"
            )))
        }
    };
    if target_vmaf.is_some() && !matches!(rate, RateControl::Vmaf { .. }) {
        return Err(bad(format!(
            "target_vmaf chooses the rate itself and cannot go with method {method}"
        )));
    }
    let preset = get("preset")
        .map(|p| Preset::parse_for(codec, p).map_err(bad))
        .transpose()?;
    let container = match get("format").or(get("container")) {
        None => Container::default_for(codec),
        Some(f) => Container::parse(f)
            .ok_or_else(|| bad(format!("unsupported format {f:?}: use mp4, webm or mkv")))?,
    };
    if !container.holds(codec) {
        return Err(bad(format!(
            "{} cannot hold {}: webm takes av1 or vp9",
            container.extension(),
            codec.as_str()
        )));
    }
    let hardware = match get("hardware") {
        None => HardwarePolicy::Auto,
        Some(h) => HardwarePolicy::parse(h).ok_or_else(|| {
            bad(format!(
                "hardware must be auto, cpu, gpu or nvenc, got {h:?}"
            ))
        })?,
    };
    if hardware == HardwarePolicy::Nvenc && codec.nvenc_encoder().is_none() {
        return Err(bad(format!(
            "hardware=nvenc: there is no NVENC encoder for {} (h264 and h265 have one)",
            codec.as_str()
        )));
    }
    let resolution =
        Resolution::parse(get("resolution").unwrap_or("")).map_err(|e| bad(e.to_string()))?;
    let edit = super::edit::from_fields(&get)?;
    let chunk_secs = chunk_secs(get("chunk_secs"))?;
    if chunk_secs.is_some_and(|c| c > 0.0) && !edit.is_empty() {
        return Err(bad(
            "chunk_secs does not yet apply to trimmed, cropped, watermarked or subtitled outputs"
                .into(),
        ));
    }
    Ok(VideoParams {
        codec,
        rate,
        preset,
        resolution,
        container,
        hardware,
        allow_upscale: flag("allow_upscale")?,
        allow_larger: flag("allow_larger")?,
        edit,
        chunk_secs,
    })
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => None,
        _ => Some(String::from("\u{0}")),
    }
}

/// Validate one output object.
pub fn parse_output(i: usize, o: &serde_json::Map<String, Value>) -> Result<Output, SubmitError> {
    match o.get("type").and_then(Value::as_str) {
        Some("ladder") => return super::ladder::ladder_output(i, o).map(Output::Ladder),
        Some("thumbnails") => return super::stills::thumbnails(i, o).map(Output::Thumbnails),
        Some("storyboard") => return super::stills::storyboard(i, o).map(Output::Storyboard),
        _ => {}
    }
    let at = |e: SubmitError| match e {
        SubmitError::Invalid(m) => SubmitError::Invalid(format!("outputs[{i}]: {m}")),
        other => other,
    };
    let o = &super::edit::flatten(o).map_err(at)?;
    let mut fields = HashMap::new();
    for (k, v) in o {
        match scalar(v) {
            Some(s) if s.contains('\u{0}') => {
                return Err(SubmitError::Invalid(format!(
                    "outputs[{i}].{k} must be a string, number or boolean"
                )))
            }
            Some(s) => {
                fields.insert(k.clone(), s);
            }
            None => {}
        }
    }
    let ty = fields.remove("type");
    let is_image = match ty.as_deref() {
        Some("image") => true,
        Some("video") => false,
        Some(t) => {
            return Err(SubmitError::Invalid(format!(
            "outputs[{i}].type must be video, image, ladder, thumbnails or storyboard, got {t:?}"
        )))
        }
        None => {
            !fields.contains_key("codec")
                && fields
                    .get("format")
                    .is_some_and(|f| OutputFormat::parse(f).is_some())
        }
    };
    if is_image {
        // (An image's own `crop` is its gravity.)
        if let Some(k) = super::edit::FIELDS
            .iter()
            .find(|k| **k != "crop" && fields.contains_key(**k))
        {
            return Err(SubmitError::Invalid(format!(
                "outputs[{i}].{k} edits video outputs only"
            )));
        }
        let format = fields.get("format").cloned().unwrap_or_default();
        if OutputFormat::parse(&format).is_none() {
            return Err(SubmitError::Invalid(format!(
                "outputs[{i}]: image outputs need `format`: jpg, png, webp, avif, gif or tiff"
            )));
        }
        let fields: BTreeMap<String, String> = fields.into_iter().collect();
        imaging::params::from_fields(&fields, imaging::ConvertParams::default())
            .map_err(|m| SubmitError::Invalid(format!("outputs[{i}]: {m}")))?;
        Ok(Output::Image(ImageParams { fields }))
    } else {
        Ok(Output::Video(video_params(&fields).map_err(at)?))
    }
}

/// Convertly's batch form: one output per format (image formats and/or video codecs) ×
/// quality × size, in that order.
pub fn batch_outputs(
    formats: &[String],
    qualities_in: &[u8],
    sizes_in: &[String],
) -> Result<Vec<Output>, SubmitError> {
    if formats.is_empty() {
        return Err(SubmitError::Invalid("formats: give at least one".into()));
    }
    let qualities: Vec<Option<u8>> = if qualities_in.is_empty() {
        vec![None]
    } else {
        qualities_in.iter().copied().map(Some).collect()
    };
    let sizes: Vec<Option<&str>> = if sizes_in.is_empty() {
        vec![None]
    } else {
        sizes_in.iter().map(|s| Some(s.as_str())).collect()
    };
    let mut outputs = Vec::new();
    for f in formats {
        let video = VideoCodec::parse(f).is_some();
        if !video && OutputFormat::parse(f).is_none() {
            return Err(SubmitError::Invalid(format!(
                "formats: {f:?} is neither an image format (jpg, png, webp, avif, gif, tiff) nor a video codec (h264, h265, av1, vp9)"
            )));
        }
        for q in &qualities {
            for size in &sizes {
                let mut o = serde_json::Map::new();
                if video {
                    o.insert("codec".into(), json!(f));
                    if let Some(size) = size {
                        o.insert("resolution".into(), json!(size));
                    }
                } else {
                    o.insert("type".into(), json!("image"));
                    o.insert("format".into(), json!(f));
                    if let Some(size) = size {
                        match size.split_once(['x', 'X']) {
                            Some((w, h)) => {
                                o.insert("width".into(), json!(w));
                                o.insert("height".into(), json!(h));
                            }
                            None => {
                                o.insert("width".into(), json!(size));
                            }
                        }
                    }
                }
                if let Some(q) = q {
                    o.insert("quality".into(), json!(q));
                }
                outputs.push(parse_output(outputs.len(), &o)?);
            }
        }
    }
    Ok(outputs)
}

/// Validate a webhook URL and its events (`job.completed`, `job.failed` and `job.cancelled`
/// are always sent; `job.progress` on request).
pub fn webhook_options(
    policy: &UrlPolicy,
    url: Option<&str>,
    events: &[String],
) -> Result<Webhook, SubmitError> {
    let url = url.map(str::trim).filter(|u| !u.is_empty());
    if let Some(u) = url {
        policy
            .check(u)
            .map_err(|e| SubmitError::Invalid(format!("webhook_url: {e}")))?;
    }
    let mut progress = false;
    for e in events {
        match e.as_str() {
            "job.progress" => progress = true,
            "job.completed" | "job.failed" | "job.cancelled" => {}
            other => {
                return Err(SubmitError::Invalid(format!(
                    "webhook_events: unknown event {other:?} (job.completed, job.failed, job.cancelled, job.progress)"
                )))
            }
        }
    }
    if progress && url.is_none() {
        return Err(SubmitError::Invalid(
            "webhook_events needs a webhook_url".into(),
        ));
    }
    Ok(Webhook {
        url: url.map(str::to_string),
        progress,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn outputs_are_typed_by_their_fields() {
        assert!(matches!(
            parse_output(
                0,
                &obj(json!({"codec": "h265", "quality": 28, "resolution": "720p"}))
            ),
            Ok(Output::Video(_))
        ));
        assert!(matches!(
            parse_output(0, &obj(json!({"format": "webp", "width": 300}))),
            Ok(Output::Image(_))
        ));
        assert!(matches!(
            parse_output(0, &obj(json!({"format": "mkv"}))),
            Ok(Output::Video(_))
        ));
        for bad in [
            json!({"codec": "h266"}),
            json!({"type": "audio"}),
            json!({"type": "image"}),
            json!({"format": "webp", "width": 0}),
            json!({"codec": "h264", "quality": [1]}),
            json!({"format": "png", "fit": "squash"}),
        ] {
            assert!(
                matches!(parse_output(3, &obj(bad.clone())), Err(SubmitError::Invalid(m)) if m.contains("outputs[3]")),
                "{bad}"
            );
        }
    }

    fn fields(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn target_vmaf_picks_the_vmaf_method_and_refuses_mixes() {
        let p = video_params(&fields(&[("codec", "av1"), ("target_vmaf", "95")])).unwrap();
        assert_eq!(p.rate, RateControl::Vmaf { target: 95.0 });
        let p = video_params(&fields(&[("method", "vmaf"), ("target_vmaf", "90.5")])).unwrap();
        assert_eq!(p.rate, RateControl::Vmaf { target: 90.5 });
        let p = video_params(&fields(&[("codec", "av1"), ("encoder_crf", "55")])).unwrap();
        assert_eq!(p.rate, RateControl::EncoderCrf { crf: 55 });
        for bad in [
            vec![("target_vmaf", "100")],
            vec![("target_vmaf", "20")],
            vec![("target_vmaf", "high")],
            vec![("method", "vmaf")],
            vec![("method", "crf"), ("target_vmaf", "95")],
            vec![("method", "encoder_crf")],
            vec![("codec", "h264"), ("encoder_crf", "52")],
            vec![("encoder_crf", "20.5")],
        ] {
            assert!(video_params(&fields(&bad)).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn defaults_and_validation() {
        let p = video_params(&fields(&[])).unwrap();
        assert_eq!(p, VideoParams::crf(VideoCodec::H264, 23));
        let p = video_params(&fields(&[("quality", "28"), ("resolution", "720p")])).unwrap();
        assert_eq!(p.rate, RateControl::Crf { quality: 28 });
        assert_eq!(p.resolution, Some(Resolution::Height { height: 720 }));

        let p = video_params(&fields(&[
            ("codec", "av1"),
            ("method", "size"),
            ("target_size_mb", "2.5"),
            ("preset", "8"),
            ("format", "webm"),
            ("hardware", "cpu"),
            ("allow_upscale", "true"),
        ]))
        .unwrap();
        assert_eq!(p.rate, RateControl::Size { target_mb: 2.5 });
        assert_eq!(
            (p.codec, p.preset, p.container, p.hardware, p.allow_upscale),
            (
                VideoCodec::Av1,
                Some(Preset::Svt(8)),
                Container::Webm,
                HardwarePolicy::Cpu,
                true
            )
        );
        let p = video_params(&fields(&[("codec", "h265"), ("hardware", "nvenc")])).unwrap();
        assert_eq!(p.hardware, HardwarePolicy::Nvenc);
        // A bitrate alone implies the bitrate method; VBV defaults are left to the node.
        let p = video_params(&fields(&[("codec", "hevc"), ("bitrate", "800")])).unwrap();
        assert_eq!(
            p.rate,
            RateControl::Bitrate {
                kbps: 800,
                max_kbps: None,
                buffer_kbits: None
            }
        );
        assert_eq!(
            video_params(&fields(&[("codec", "vp9")]))
                .unwrap()
                .container,
            Container::Webm
        );

        for bad in [
            vec![("codec", "h266")],
            vec![("quality", "52")],
            vec![("quality", "17")],
            vec![("quality", "high")],
            vec![("resolution", "huge")],
            vec![("method", "lossless")],
            vec![("method", "bitrate")],
            vec![("method", "size")],
            vec![("target_size_mb", "-1")],
            vec![("bitrate", "NaN")],
            vec![("preset", "ludicrous")],
            vec![("preset", "8")],
            vec![("format", "avi")],
            vec![("format", "webm")],
            vec![("hardware", "tpu")],
            vec![("codec", "av1"), ("hardware", "nvenc")],
            vec![("allow_larger", "maybe")],
        ] {
            assert!(
                matches!(video_params(&fields(&bad)), Err(SubmitError::Invalid(_))),
                "{bad:?}"
            );
        }
    }
}
