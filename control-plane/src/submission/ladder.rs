//! Validating a ladder output: `{"type": "ladder", …}` on the jobs API, and `/compress` with
//! `format=hls|dash|cmaf` (the default ladder, or `renditions` as `720p@2800,480p@q26`).

use std::collections::HashMap;

use kiln_protocol::ladder::{LadderAudio, Packaging, DEFAULT_SEGMENT_SECS, DEFAULT_TARGET_VMAF};
use kiln_protocol::video::{QUALITY_MAX, QUALITY_MIN};
use kiln_protocol::{
    HardwarePolicy, LadderParams, PerTitle, Preset, Resolution, Rung, RungRate, VideoCodec,
};
use serde_json::Value;

use super::SubmitError;

/// Whether `/compress`'s `format` asks for a ladder, and which packaging.
pub fn packaging_for_format(format: &str) -> Option<Vec<Packaging>> {
    match format.trim().to_ascii_lowercase().as_str() {
        "hls" | "m3u8" => Some(vec![Packaging::Hls]),
        "dash" | "mpd" => Some(vec![Packaging::Dash]),
        "cmaf" => Some(Packaging::both()),
        _ => None,
    }
}

fn bad(m: impl Into<String>) -> SubmitError {
    SubmitError::Invalid(m.into())
}

fn codec(v: Option<&str>) -> Result<VideoCodec, SubmitError> {
    match v {
        None => Ok(VideoCodec::H264),
        Some(c) => match VideoCodec::parse(c) {
            Some(VideoCodec::Vp9) | None => Err(bad(format!(
                "unsupported ladder codec {c:?}: ladders are h264, h265 or av1"
            ))),
            Some(c) => Ok(c),
        },
    }
}

fn preset(codec: VideoCodec, v: Option<&str>) -> Result<Option<Preset>, SubmitError> {
    v.map(|p| Preset::parse_for(codec, p).map_err(bad))
        .transpose()
}

fn hardware(v: Option<&str>) -> Result<HardwarePolicy, SubmitError> {
    match v {
        None => Ok(HardwarePolicy::Auto),
        Some(h) => HardwarePolicy::parse(h).ok_or_else(|| {
            bad(format!(
                "hardware must be auto, cpu, gpu or nvenc, got {h:?}"
            ))
        }),
    }
}

fn resolution(v: &str) -> Result<Resolution, SubmitError> {
    match Resolution::parse(v) {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err(bad("a rendition needs a resolution such as 720p")),
        Err(e) => Err(bad(e.to_string())),
    }
}

fn quality(q: i64) -> Result<RungRate, SubmitError> {
    if (QUALITY_MIN as i64..=QUALITY_MAX as i64).contains(&q) {
        Ok(RungRate::Quality { quality: q as u8 })
    } else {
        Err(bad(format!(
            "quality must be {QUALITY_MIN}–{QUALITY_MAX}, got {q}"
        )))
    }
}

fn finish(p: LadderParams) -> Result<LadderParams, SubmitError> {
    p.validate().map_err(bad)?;
    Ok(p)
}

/// `target_vmaf` of a per-title ladder: a number in [`TARGET_VMAF`], only with `"auto"`.
fn per_title(auto: bool, target: Option<f64>) -> Result<Option<PerTitle>, SubmitError> {
    match (auto, target) {
        (false, None) => Ok(None),
        (false, Some(_)) => Err(bad(
            "target_vmaf goes with renditions \"auto\" (a per-title ladder)",
        )),
        (true, t) => Ok(Some(PerTitle {
            target_vmaf: t.unwrap_or(DEFAULT_TARGET_VMAF),
        })),
    }
}

/// Validate the jobs API's ladder output object.
pub fn ladder_output(
    i: usize,
    o: &serde_json::Map<String, Value>,
) -> Result<LadderParams, SubmitError> {
    let at = |e: SubmitError| match e {
        SubmitError::Invalid(m) => SubmitError::Invalid(format!("outputs[{i}]: {m}")),
        other => other,
    };
    // Edits (start, end, crop, watermark, subtitles) as on video outputs.
    let o = &super::edit::flatten(o).map_err(at)?;
    let text = |k: &str| -> Result<Option<String>, SubmitError> {
        match o.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err(bad(format!("{k} must be a string"))),
        }
    };
    let known = [
        "type",
        "codec",
        "renditions",
        "target_vmaf",
        "segment_secs",
        "packaging",
        "preset",
        "hardware",
        "audio",
        "chunk_secs",
    ];
    if let Some(k) = o
        .keys()
        .find(|k| !known.contains(&k.as_str()) && !super::edit::FIELDS.contains(&k.as_str()))
    {
        return Err(at(bad(format!(
            "ladder outputs take {} and the edits start, end, crop, watermark, subtitles; {k:?} is not one of them",
            known.join(", ")
        ))));
    }
    let mut edit_fields = std::collections::HashMap::new();
    for k in super::edit::FIELDS {
        if let Some(v) = text(k).map_err(at)? {
            edit_fields.insert(k, v);
        }
    }
    let edit = super::edit::from_fields(&|k: &str| {
        edit_fields
            .get(k)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    })
    .map_err(at)?;
    let codec = codec(text("codec").map_err(at)?.as_deref()).map_err(at)?;
    let auto = o.get("renditions").and_then(Value::as_str) == Some("auto");
    let target = match o.get("target_vmaf") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_f64()
                .ok_or_else(|| at(bad("target_vmaf must be a number")))?,
        ),
    };
    let per_title = per_title(auto, target).map_err(at)?;
    let renditions = match o.get("renditions") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s == "auto" => None,
        Some(Value::Array(rungs)) => Some(
            rungs
                .iter()
                .enumerate()
                .map(|(j, r)| rung(r).map_err(|e| at(prefix(&format!("renditions[{j}]"), e))))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => return Err(at(bad("renditions must be a list of rungs or \"auto\""))),
    };
    let segment_secs = match o.get("segment_secs") {
        None | Some(Value::Null) => DEFAULT_SEGMENT_SECS,
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| at(bad("segment_secs must be a whole number of seconds")))?,
    };
    let packaging = match o.get("packaging") {
        None | Some(Value::Null) => Packaging::both(),
        Some(Value::String(s)) => vec![packaging(s).map_err(at)?],
        Some(Value::Array(list)) => list
            .iter()
            .map(|v| match v.as_str() {
                Some(s) => packaging(s),
                None => Err(bad("packaging lists hls and/or dash")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(at)?,
        Some(_) => return Err(at(bad("packaging lists hls and/or dash"))),
    };
    finish(LadderParams {
        codec,
        renditions,
        per_title,
        segment_secs,
        packaging,
        preset: preset(codec, text("preset").map_err(at)?.as_deref()).map_err(at)?,
        hardware: hardware(text("hardware").map_err(at)?.as_deref()).map_err(at)?,
        audio: audio(text("audio").map_err(at)?.as_deref()).map_err(at)?,
        edit,
        chunk_secs: super::params::chunk_secs(text("chunk_secs").map_err(at)?.as_deref())
            .map_err(at)?,
    })
    .map_err(at)
}

fn audio(a: Option<&str>) -> Result<LadderAudio, SubmitError> {
    match a {
        None => Ok(LadderAudio::Aac),
        Some(a) => LadderAudio::parse(a)
            .ok_or_else(|| bad(format!("audio must be aac or opus, got {a:?}"))),
    }
}

fn prefix(p: &str, e: SubmitError) -> SubmitError {
    match e {
        SubmitError::Invalid(m) => SubmitError::Invalid(format!("{p}: {m}")),
        other => other,
    }
}

fn packaging(s: &str) -> Result<Packaging, SubmitError> {
    Packaging::parse(s).ok_or_else(|| bad(format!("packaging must be hls or dash, got {s:?}")))
}

/// `{"resolution": "720p", "bitrate_kbps": 2800}` or `{"resolution": "720p", "quality": 24}`.
fn rung(v: &Value) -> Result<Rung, SubmitError> {
    let o = v
        .as_object()
        .ok_or_else(|| bad("a rung is an object with resolution and bitrate_kbps or quality"))?;
    let res = o
        .get("resolution")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("a rung needs resolution, such as \"720p\""))?;
    let rate = match (o.get("bitrate_kbps"), o.get("quality")) {
        (Some(b), None) => RungRate::Bitrate {
            kbps: b
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| bad("bitrate_kbps must be a whole number"))?,
        },
        (None, Some(q)) => quality(
            q.as_i64()
                .ok_or_else(|| bad("quality must be a whole number"))?,
        )?,
        _ => return Err(bad("a rung takes exactly one of bitrate_kbps and quality")),
    };
    if let Some(k) = o
        .keys()
        .find(|k| !matches!(k.as_str(), "resolution" | "bitrate_kbps" | "quality"))
    {
        return Err(bad(format!(
            "a rung takes resolution, bitrate_kbps or quality; not {k:?}"
        )));
    }
    Ok(Rung {
        resolution: resolution(res)?,
        rate,
    })
}

/// `/compress`'s fields for a ladder: `codec`, `preset`, `hardware`, `segment_secs` and
/// `renditions` as `1080p@5000,720p@2800,480p@q26` (kbps, or `q` and a quality).
pub fn ladder_from_fields(
    fields: &HashMap<String, String>,
    packaging: Vec<Packaging>,
) -> Result<LadderParams, SubmitError> {
    let get = |k: &str| fields.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let codec = codec(get("codec"))?;
    let target = get("target_vmaf")
        .map(|t| {
            t.parse::<f64>()
                .map_err(|_| bad(format!("target_vmaf must be a number, got {t:?}")))
        })
        .transpose()?;
    let per_title = per_title(get("renditions") == Some("auto"), target)?;
    let renditions = match get("renditions") {
        None | Some("auto") => None,
        Some(list) => Some(
            list.split(',')
                .map(|r| {
                    let (res, rate) = r.trim().split_once('@').ok_or_else(|| {
                        bad(format!(
                            "renditions: {r:?} should look like 720p@2800 or 720p@q24"
                        ))
                    })?;
                    let rate = match rate.trim().strip_prefix(['q', 'Q']) {
                        Some(q) => quality(
                            q.parse()
                                .map_err(|_| bad(format!("renditions: bad quality in {r:?}")))?,
                        )?,
                        None => RungRate::Bitrate {
                            kbps: rate
                                .trim()
                                .parse()
                                .map_err(|_| bad(format!("renditions: bad bitrate in {r:?}")))?,
                        },
                    };
                    Ok(Rung {
                        resolution: resolution(res)?,
                        rate,
                    })
                })
                .collect::<Result<Vec<_>, SubmitError>>()?,
        ),
    };
    let segment_secs = match get("segment_secs") {
        None => DEFAULT_SEGMENT_SECS,
        Some(s) => s
            .parse()
            .map_err(|_| bad(format!("segment_secs must be a whole number, got {s:?}")))?,
    };
    finish(LadderParams {
        codec,
        renditions,
        per_title,
        segment_secs,
        packaging,
        preset: preset(codec, get("preset"))?,
        hardware: hardware(get("hardware"))?,
        audio: audio(get("audio"))?,
        edit: super::edit::from_fields(&get)?,
        chunk_secs: super::params::chunk_secs(get("chunk_secs"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn err(r: Result<LadderParams, SubmitError>) -> String {
        match r {
            Err(SubmitError::Invalid(m)) => m,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn ladder_objects_are_validated_field_by_field() {
        let p = ladder_output(
            0,
            &obj(json!({"type": "ladder", "codec": "av1", "segment_secs": 2,
                "renditions": [{"resolution": "720p", "bitrate_kbps": 2000}, {"resolution": "360p", "quality": 30}],
                "packaging": ["hls"]})),
        )
        .unwrap();
        assert_eq!(p.codec, VideoCodec::Av1);
        assert_eq!(p.packaging, [Packaging::Hls]);
        let r = p.renditions.unwrap();
        assert_eq!(r[0].rate, RungRate::Bitrate { kbps: 2000 });
        assert_eq!(r[1].rate, RungRate::Quality { quality: 30 });

        let d = ladder_output(0, &obj(json!({"type": "ladder"}))).unwrap();
        assert_eq!(
            (d.codec, d.segment_secs, d.renditions),
            (VideoCodec::H264, 4, None)
        );
        assert_eq!(d.audio, LadderAudio::Aac);
        assert!(d.edit.is_empty());
        assert_eq!(d.per_title, None);

        // Per-title: "auto", with the default target or the one asked for.
        let a = ladder_output(0, &obj(json!({"type": "ladder", "renditions": "auto"}))).unwrap();
        assert_eq!(
            (a.renditions, a.per_title),
            (None, Some(PerTitle::default()))
        );
        let a = ladder_output(
            0,
            &obj(json!({"type": "ladder", "renditions": "auto", "target_vmaf": 90.5})),
        )
        .unwrap();
        assert_eq!(a.per_title.unwrap().target_vmaf, 90.5);

        // Opus audio and the edits of video outputs, objects or flat fields alike.
        let e = ladder_output(
            0,
            &obj(
                json!({"type": "ladder", "codec": "av1", "audio": "opus", "start": 2, "end": "0:10",
                "crop": {"aspect": "9:16"}, "watermark": {"upload": "u1", "opacity": 0.5}}),
            ),
        )
        .unwrap();
        assert_eq!(e.audio, LadderAudio::Opus);
        assert_eq!((e.edit.start_s, e.edit.end_s), (Some(2.0), Some(10.0)));
        assert!(e.edit.crop.is_some());
        assert_eq!(e.edit.watermark.unwrap().opacity, 0.5);

        for (o, want) in [
            (
                json!({"type": "ladder", "codec": "vp9"}),
                "h264, h265 or av1",
            ),
            (
                json!({"type": "ladder", "target_vmaf": 90}),
                "goes with renditions \"auto\"",
            ),
            (
                json!({"type": "ladder", "renditions": "auto", "target_vmaf": 100}),
                "target_vmaf must be between 40 and 99",
            ),
            (
                json!({"type": "ladder", "renditions": "auto", "target_vmaf": "high"}),
                "target_vmaf must be a number",
            ),
            (
                json!({"type": "ladder", "renditions": "auto", "crop": "9:16"}),
                "does not combine with start, end, crop",
            ),
            (
                json!({"type": "ladder", "renditions": [{"resolution": "720p"}]}),
                "renditions[0]: a rung takes exactly one",
            ),
            (
                json!({"type": "ladder", "renditions": [{"resolution": "huge", "quality": 20}]}),
                "resolution must look like",
            ),
            (
                json!({"type": "ladder", "segment_secs": 60}),
                "segment_secs",
            ),
            (
                json!({"type": "ladder", "packaging": ["smooth"]}),
                "hls or dash",
            ),
            (
                json!({"type": "ladder", "crf": 20}),
                "\"crf\" is not one of them",
            ),
            (json!({"type": "ladder", "audio": "mp3"}), "aac or opus"),
            (
                json!({"type": "ladder", "start": 5, "end": 1}),
                "after start",
            ),
        ] {
            let m = err(ladder_output(3, &obj(o.clone())));
            assert!(m.starts_with("outputs[3]: "), "{m}");
            assert!(m.contains(want), "{o}: {m}");
        }
    }

    #[test]
    fn compress_fields_make_a_ladder() {
        let f: HashMap<String, String> = [
            ("codec", "h265"),
            ("renditions", "720p@1800, 360p@q28"),
            ("segment_secs", "6"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let p = ladder_from_fields(&f, packaging_for_format("dash").unwrap()).unwrap();
        assert_eq!((p.codec, p.segment_secs), (VideoCodec::H265, 6));
        assert_eq!(p.packaging, [Packaging::Dash]);
        assert_eq!(
            p.renditions.unwrap()[1].rate,
            RungRate::Quality { quality: 28 }
        );
        assert_eq!(packaging_for_format("CMAF"), Some(Packaging::both()));
        assert_eq!(packaging_for_format("mp4"), None);
        let mut edited = f.clone();
        edited.insert("end".into(), "4.5".into());
        edited.insert("crop".into(), "0,0,640,360".into());
        edited.insert("audio".into(), "opus".into());
        let p = ladder_from_fields(&edited, Packaging::both()).unwrap();
        assert_eq!((p.edit.end_s, p.audio), (Some(4.5), LadderAudio::Opus));
        let mut auto = f.clone();
        auto.insert("renditions".into(), "auto".into());
        auto.insert("target_vmaf".into(), "93".into());
        let p = ladder_from_fields(&auto, Packaging::both()).unwrap();
        assert_eq!(p.per_title.unwrap().target_vmaf, 93.0);
        assert_eq!(p.renditions, None);
        let mut bad = f.clone();
        bad.insert("renditions".into(), "720p".into());
        assert!(err(ladder_from_fields(&bad, Packaging::both())).contains("720p@2800"));
    }
}
