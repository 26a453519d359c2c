//! Validating stills outputs: `{"type": "thumbnails", "at": [secs…] | "every": 10, "width":
//! 320, "format": "jpg|webp"}` and `{"type": "storyboard", "every": 5, "width": 160,
//! "columns": 10, "format": …}`.

use kiln_protocol::stills::{StillFormat, StoryboardParams, ThumbnailParams};
use serde_json::{Map, Value};

use super::SubmitError;

fn bad(i: usize, m: impl std::fmt::Display) -> SubmitError {
    SubmitError::Invalid(format!("outputs[{i}]: {m}"))
}

fn only(i: usize, o: &Map<String, Value>, known: &[&str]) -> Result<(), SubmitError> {
    match o.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(bad(
            i,
            format!(
                "{} outputs take {}; {k:?} is not one of them",
                o["type"].as_str().unwrap_or(""),
                known.join(", ")
            ),
        )),
        None => Ok(()),
    }
}

fn number(i: usize, o: &Map<String, Value>, k: &str) -> Result<Option<f64>, SubmitError> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| bad(i, format!("{k} must be a number"))),
    }
}

fn whole(i: usize, o: &Map<String, Value>, k: &str, default: u32) -> Result<u32, SubmitError> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| bad(i, format!("{k} must be a whole number"))),
    }
}

fn format(i: usize, o: &Map<String, Value>) -> Result<StillFormat, SubmitError> {
    match o.get("format") {
        None | Some(Value::Null) => Ok(StillFormat::Jpg),
        Some(Value::String(s)) => StillFormat::parse(s)
            .ok_or_else(|| bad(i, format!("format must be jpg or webp, got {s:?}"))),
        Some(_) => Err(bad(i, "format must be jpg or webp")),
    }
}

pub fn thumbnails(i: usize, o: &Map<String, Value>) -> Result<ThumbnailParams, SubmitError> {
    only(i, o, &["type", "at", "every", "width", "format"])?;
    let at = match o.get("at") {
        None | Some(Value::Null) => None,
        Some(Value::Array(list)) => Some(
            list.iter()
                .map(|v| {
                    v.as_f64()
                        .ok_or_else(|| bad(i, "at lists times in seconds"))
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(v) => Some(vec![v
            .as_f64()
            .ok_or_else(|| bad(i, "at lists times in seconds"))?]),
    };
    let p = ThumbnailParams {
        at,
        every: number(i, o, "every")?,
        width: whole(i, o, "width", 320)?,
        format: format(i, o)?,
    };
    p.validate().map_err(|m| bad(i, m))?;
    Ok(p)
}

pub fn storyboard(i: usize, o: &Map<String, Value>) -> Result<StoryboardParams, SubmitError> {
    only(i, o, &["type", "every", "width", "columns", "format"])?;
    let p = StoryboardParams {
        every: number(i, o, "every")?.unwrap_or(5.0),
        width: whole(i, o, "width", 160)?,
        columns: whole(i, o, "columns", 10)?,
        format: format(i, o)?,
    };
    p.validate().map_err(|m| bad(i, m))?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn stills_outputs_are_validated() {
        let t = thumbnails(
            0,
            &obj(json!({"type": "thumbnails", "at": [1, 2.5], "format": "webp"})),
        )
        .unwrap();
        assert_eq!(
            (t.at.unwrap(), t.width, t.format),
            (vec![1.0, 2.5], 320, StillFormat::Webp)
        );
        let s = storyboard(0, &obj(json!({"type": "storyboard"}))).unwrap();
        assert_eq!((s.every, s.width, s.columns), (5.0, 160, 10));
        for (o, want) in [
            (
                json!({"type": "thumbnails", "at": [1], "every": 2}),
                "not both",
            ),
            (
                json!({"type": "thumbnails", "format": "png"}),
                "jpg or webp",
            ),
            (json!({"type": "thumbnails", "width": 9000}), "width"),
            (json!({"type": "storyboard", "every": 0}), "every"),
            (
                json!({"type": "storyboard", "rows": 3}),
                "\"rows\" is not one of them",
            ),
        ] {
            let r = if o["type"] == "thumbnails" {
                thumbnails(2, &obj(o.clone())).map(|_| ())
            } else {
                storyboard(2, &obj(o.clone())).map(|_| ())
            };
            match r {
                Err(SubmitError::Invalid(m)) => assert!(
                    m.starts_with("outputs[2]: ") && m.contains(want),
                    "{o}: {m}"
                ),
                other => panic!("{o}: {other:?}"),
            }
        }
    }
}
