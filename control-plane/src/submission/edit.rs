//! A video output's edits as requests give them: `start`/`end`, `crop`, `watermark` and
//! `subtitles`, the same fields on `/compress`'s form and on the jobs API (whose objects are
//! flattened into those fields first); then the uploads they name resolved to stored files.

use kiln_protocol::edit::{parse_time, Asset, Crop, Edit, Gravity, Subtitles, Watermark};
use serde_json::{Map, Value};

use super::{Output, Outputs, SubmitError};
use crate::AppState;

/// The flat fields edits take.
pub const FIELDS: [&str; 10] = [
    "start",
    "end",
    "crop",
    "crop_gravity",
    "watermark",
    "watermark_position",
    "watermark_margin",
    "watermark_opacity",
    "watermark_width",
    "subtitles",
];

/// Turn the jobs API's edit objects into flat fields: `crop: {x, y, width, height}` or
/// `{aspect, gravity}`, `watermark: {upload, position, margin, opacity, width}`, `subtitles:
/// {upload}`. Scalars pass as they are.
pub fn flatten(o: &Map<String, Value>) -> Result<Map<String, Value>, SubmitError> {
    let mut out = Map::new();
    for (k, v) in o {
        let Value::Object(inner) = v else {
            out.insert(k.clone(), v.clone());
            continue;
        };
        let field = |name: &str| inner.get(name).cloned();
        let bad = |allowed: &str| {
            SubmitError::Invalid(format!("{k} takes {allowed}; unknown keys in {v}"))
        };
        let only = |allowed: &[&str]| inner.keys().all(|key| allowed.contains(&key.as_str()));
        match k.as_str() {
            "crop" if inner.contains_key("aspect") => {
                if !only(&["aspect", "gravity"]) {
                    return Err(bad("{aspect, gravity}"));
                }
                out.insert("crop".into(), field("aspect").unwrap_or(Value::Null));
                if let Some(g) = field("gravity") {
                    out.insert("crop_gravity".into(), g);
                }
            }
            "crop" => {
                if !only(&["x", "y", "width", "height"]) {
                    return Err(bad("{x, y, width, height} or {aspect, gravity}"));
                }
                let mut parts = Vec::new();
                for name in ["x", "y", "width", "height"] {
                    match field(name) {
                        Some(Value::Number(n)) => parts.push(n.to_string()),
                        None if name == "x" || name == "y" => parts.push("0".into()),
                        _ => {
                            return Err(SubmitError::Invalid(format!(
                                "crop.{name} must be a whole number of pixels"
                            )))
                        }
                    }
                }
                out.insert("crop".into(), Value::String(parts.join(",")));
            }
            "watermark" => {
                if !only(&["upload", "position", "margin", "opacity", "width"]) {
                    return Err(bad("{upload, position, margin, opacity, width}"));
                }
                out.insert("watermark".into(), field("upload").unwrap_or(Value::Null));
                for name in ["position", "margin", "opacity", "width"] {
                    if let Some(v) = field(name) {
                        out.insert(format!("watermark_{name}"), v);
                    }
                }
            }
            "subtitles" => {
                if !only(&["upload"]) {
                    return Err(bad("{upload}"));
                }
                out.insert("subtitles".into(), field("upload").unwrap_or(Value::Null));
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Ok(out)
}

/// Validate the edit fields (see [`FIELDS`]).
pub fn from_fields<'f>(get: &dyn Fn(&str) -> Option<&'f str>) -> Result<Edit, SubmitError> {
    let bad = SubmitError::Invalid;
    let time = |k: &str| -> Result<Option<f64>, SubmitError> {
        get(k)
            .map(|v| {
                parse_time(v).ok_or_else(|| {
                    bad(format!(
                        "{k} must be seconds (12.5) or a timecode (00:01:02.5), got {v:?}"
                    ))
                })
            })
            .transpose()
    };
    let gravity = |k: &str, default: Gravity| -> Result<Gravity, SubmitError> {
        match get(k) {
            None => Ok(default),
            Some(g) => Gravity::parse(g).ok_or_else(|| {
                bad(format!(
                    "{k} must be center, top, bottom, left, right, top-left, top-right, bottom-left or bottom-right, got {g:?}"
                ))
            }),
        }
    };
    let number = |k: &str, lo: f64, hi: f64| -> Result<Option<f64>, SubmitError> {
        get(k)
            .map(|v| match v.parse::<f64>() {
                Ok(n) if n.is_finite() && (lo..=hi).contains(&n) => Ok(n),
                _ => Err(bad(format!(
                    "{k} must be a number from {lo} to {hi}, got {v:?}"
                ))),
            })
            .transpose()
    };
    let upload = |k: &str| get(k).map(|id| Asset::Upload(id.to_string()));
    let mut edit = Edit {
        start_s: time("start")?,
        end_s: time("end")?,
        ..Edit::default()
    };
    edit.check_times().map_err(bad)?;
    if let Some(c) = get("crop") {
        edit.crop = Some(Crop::parse(c, gravity("crop_gravity", Gravity::Center)?).map_err(bad)?);
    } else if get("crop_gravity").is_some() {
        return Err(bad(
            "crop_gravity places an aspect crop; give crop too".into()
        ));
    }
    match upload("watermark") {
        Some(image) => {
            let mut w = Watermark::new(image);
            w.position = gravity("watermark_position", w.position)?;
            if let Some(m) = number("watermark_margin", 0.0, 4096.0)? {
                w.margin_px = m as u32;
            }
            if let Some(o) = number("watermark_opacity", 0.0, 1.0)? {
                w.opacity = o as f32;
            }
            w.width_fraction = number("watermark_width", 0.01, 1.0)?.map(|f| f as f32);
            edit.watermark = Some(w);
        }
        None => {
            if let Some(k) = FIELDS[5..9].iter().find(|k| get(k).is_some()) {
                return Err(bad(format!(
                    "{k} sets up a watermark; give watermark (an upload id) too"
                )));
            }
        }
    }
    edit.subtitles = upload("subtitles").map(|file| Subtitles { file });
    Ok(edit)
}

/// Resolve every upload an edit names to its stored object (the caller's own, not expired).
pub async fn resolve_assets(
    state: &AppState,
    account_id: &str,
    outputs: &mut Outputs,
) -> Result<(), SubmitError> {
    let all: Vec<&mut Output> = match outputs {
        Outputs::Each(o) => o.iter_mut().collect(),
        Outputs::PerSource(per) => per.iter_mut().flatten().collect(),
    };
    for o in all {
        let edit = match o {
            Output::Video(p) => &mut p.edit,
            Output::Ladder(p) => &mut p.edit,
            _ => continue,
        };
        for asset in edit.assets_mut() {
            let Asset::Upload(id) = asset else { continue };
            let up = super::source::usable_upload(state, account_id, id).await?;
            *asset = Asset::Key(up.object_key);
        }
    }
    Ok(())
}

/// Refuse a watermark that is not an image or subtitles FFmpeg cannot read, where the store
/// is local (a remote store's files are read by the node, which fails the job as clearly).
pub async fn check_assets(state: &AppState, edit: &Edit) -> Result<(), SubmitError> {
    let local = |a: &Asset| match a {
        Asset::Key(k) => state.store.local_path(k),
        Asset::Upload(_) => None,
    };
    let unprocessable = |what: &str, e: kiln_gpu_node::media::MediaError| {
        SubmitError::Unprocessable(format!("{what}: {e}"))
    };
    if let Some(path) = edit.watermark.as_ref().and_then(|w| local(&w.image)) {
        tokio::task::spawn_blocking(move || kiln_gpu_node::media::edit::check_watermark(&path))
            .await
            .map_err(|e| SubmitError::Internal(Box::new(e)))?
            .map_err(|e| unprocessable("watermark", e))?;
    }
    if let Some(path) = edit.subtitles.as_ref().and_then(|s| local(&s.file)) {
        tokio::task::spawn_blocking(move || kiln_gpu_node::media::edit::check_subtitles(&path))
            .await
            .map_err(|e| SubmitError::Internal(Box::new(e)))?
            .map_err(|e| unprocessable("subtitles", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;

    fn edit_of(v: Value) -> Result<Edit, SubmitError> {
        let flat = flatten(v.as_object().unwrap())?;
        let fields: HashMap<String, String> = flat
            .into_iter()
            .map(|(k, v)| {
                let s = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                (k, s)
            })
            .collect();
        from_fields(&|k| fields.get(k).map(String::as_str))
    }

    #[test]
    fn objects_and_flat_fields_mean_the_same_edit() {
        let a = edit_of(json!({
            "start": "00:00:01.5", "end": 4,
            "crop": {"aspect": "9:16", "gravity": "left"},
            "watermark": {"upload": "u1", "position": "top-left", "opacity": 0.5, "width": 0.2},
            "subtitles": {"upload": "u2"}
        }))
        .unwrap();
        let b = edit_of(json!({
            "start": 1.5, "end": "4", "crop": "9:16", "crop_gravity": "left",
            "watermark": "u1", "watermark_position": "top-left", "watermark_opacity": "0.5",
            "watermark_width": 0.2, "subtitles": "u2"
        }))
        .unwrap();
        assert_eq!(a, b);
        assert_eq!((a.start_s, a.end_s), (Some(1.5), Some(4.0)));
        let w = a.watermark.unwrap();
        assert_eq!(
            (w.position, w.opacity, w.margin_px),
            (Gravity::TopLeft, 0.5, 16)
        );
        let rect = edit_of(json!({"crop": {"x": 10, "y": 20, "width": 320, "height": 240}}))
            .unwrap()
            .crop;
        assert_eq!(
            rect,
            Some(Crop::Rect {
                x: 10,
                y: 20,
                width: 320,
                height: 240
            })
        );
    }

    #[test]
    fn bad_edits_are_refused_with_the_field_named() {
        for (v, needle) in [
            (json!({"start": 5, "end": 2}), "after start"),
            (json!({"start": "soon"}), "start must be"),
            (json!({"crop": "9:0"}), "crop"),
            (
                json!({"crop": {"x": 1, "width": "wide", "height": 2}}),
                "crop.width",
            ),
            (
                json!({"crop": {"aspect": "1:1", "anchor": "top"}}),
                "unknown keys",
            ),
            (json!({"crop_gravity": "top"}), "give crop too"),
            (json!({"watermark_opacity": 0.5}), "give watermark"),
            (
                json!({"watermark": "u", "watermark_opacity": 2}),
                "watermark_opacity",
            ),
            (
                json!({"watermark": {"upload": "u", "position": "up"}}),
                "watermark_position",
            ),
            (
                json!({"subtitles": {"upload": "u", "font": "x"}}),
                "unknown keys",
            ),
        ] {
            match edit_of(v.clone()) {
                Err(SubmitError::Invalid(m)) => assert!(m.contains(needle), "{v}: {m}"),
                other => panic!("{v}: {other:?}"),
            }
        }
    }
}
