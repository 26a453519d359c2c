//! Convertly's multipart settings, translated into Kiln outputs: one setting for every file
//! (`format`, `compression`, `resize`, `resizeWidth`, `resizeHeight`) or a JSON array with one
//! value per file (`formats`, `compressions`, `resizes`, `resizeWidths`, `resizeHeights`).
//!
//! Convertly does not document the pixel sizes of its resize presets; Kiln's are:
//! `original` (none), `website` (inside 1920×1080), `email` (600 wide), `instagram` (1080×1080,
//! cropped to fill), `linkedin` (1200×627, cropped), `ecommerce` (inside 2000×2000, letterboxed
//! on white), `square` (`resizeWidth`², default 1080, cropped), `width` / `height` (that side).
//! Video outputs take `original`, `width` and `height`. `compression` (1–100, default 82) is the
//! image quality; for video it maps onto Kiln's quality as CRF = 51 − 0.33 × compression
//! (82 → 24).

use std::collections::{BTreeMap, HashMap};

use kiln_gpu_node::imaging::{InputFormat, OutputFormat};
use serde_json::Value;

use crate::error::ApiError;
use crate::submission::params::{parse_output, video_params};
use crate::submission::Output;

/// Convertly's default `compression`.
pub const DEFAULT_COMPRESSION: u8 = 82;

/// The text fields of a Convertly request.
pub struct Settings(pub HashMap<String, String>);

/// What kind of media a file is, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Image(InputFormat),
    Video,
}

impl Kind {
    pub fn sniff(head: &[u8]) -> Self {
        InputFormat::sniff(head).map_or(Self::Video, Self::Image)
    }
}

impl Settings {
    fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    /// Per-file values of `single`/`plural` for `n` files: the array (which must hold `n`
    /// values), else the single value for every file, else none.
    fn per_file(
        &self,
        single: &str,
        plural: &str,
        n: usize,
    ) -> Result<Vec<Option<String>>, ApiError> {
        if let Some(raw) = self.get(plural) {
            let arr: Vec<Value> = serde_json::from_str(raw).map_err(|_| {
                ApiError::BadRequest(format!("{plural} must be a JSON array, got {raw:?}"))
            })?;
            if arr.len() != n {
                return Err(ApiError::BadRequest(format!(
                    "{plural} has {} values for {n} file(s): give one per file",
                    arr.len()
                )));
            }
            return Ok(arr
                .into_iter()
                .map(|v| match v {
                    Value::Null => None,
                    Value::String(s) => Some(s),
                    other => Some(other.to_string()),
                })
                .collect());
        }
        Ok(vec![self.get(single).map(str::to_string); n])
    }

    /// A flag (`true`/`false`), default `default`.
    pub fn flag(&self, k: &str, default: bool) -> Result<bool, ApiError> {
        match self.get(k) {
            None => Ok(default),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(v) => Err(ApiError::BadRequest(format!(
                "{k} must be true or false, got {v:?}"
            ))),
        }
    }

    /// Refuse what Kiln cannot honour, rather than ignore it.
    pub fn refuse_unsupported(&self, files: usize) -> Result<(), ApiError> {
        for (single, plural) in [("autoOrient", "autoOrients"), ("mono", "monos")] {
            for v in self.per_file(single, plural, files)?.into_iter().flatten() {
                let want_default = single == "autoOrient";
                if v != want_default.to_string() {
                    return Err(ApiError::BadRequest(format!(
                        "{single}={v} is not supported: Kiln always applies the EXIF orientation and does not trace SVG"
                    )));
                }
            }
        }
        if self.get("callbackUrl").is_some() {
            return Err(ApiError::BadRequest(
                "callbackUrl is not supported by this server: poll GET /api/jobs/{id}".into(),
            ));
        }
        Ok(())
    }

    /// The output of each file: `convert` to the asked format, or `compress` keeping it.
    pub fn outputs(&self, compress: bool, kinds: &[Kind]) -> Result<Vec<Output>, ApiError> {
        let n = kinds.len();
        let formats = self.per_file("format", "formats", n)?;
        let compressions = self.per_file("compression", "compressions", n)?;
        let resizes = self.per_file("resize", "resizes", n)?;
        let widths = self.per_file("resizeWidth", "resizeWidths", n)?;
        let heights = self.per_file("resizeHeight", "resizeHeights", n)?;
        let mut out = Vec::with_capacity(n);
        for (i, kind) in kinds.iter().enumerate() {
            let format = match (&formats[i], compress) {
                (Some(f), false) => f.to_ascii_lowercase(),
                (_, true) => match kind {
                    Kind::Image(f) => OutputFormat::keep(*f).as_str().to_string(),
                    Kind::Video => "mp4".into(),
                },
                (None, false) => {
                    return Err(ApiError::BadRequest(
                        "format (or formats, one per file) is required".into(),
                    ))
                }
            };
            let compression = match &compressions[i] {
                None => DEFAULT_COMPRESSION,
                Some(c) => match c.parse::<u8>() {
                    Ok(v) if (1..=100).contains(&v) => v,
                    _ => {
                        return Err(ApiError::BadRequest(format!(
                            "compression must be 1–100, got {c:?}"
                        )))
                    }
                },
            };
            let resize = resizes[i].as_deref().unwrap_or("original");
            out.push(output(
                i,
                &format,
                compression,
                resize,
                widths[i].as_deref(),
                heights[i].as_deref(),
            )?);
        }
        Ok(out)
    }
}

fn side(name: &str, v: Option<&str>, mode: &str) -> Result<String, ApiError> {
    match v.map(str::parse::<u32>) {
        Some(Ok(n)) if (1..=16384).contains(&n) => Ok(n.to_string()),
        None if mode == "square" => Ok("1080".into()),
        _ => Err(ApiError::BadRequest(format!(
            "resize={mode} needs {name}, a width in pixels (1–16384)"
        ))),
    }
}

/// One file's output.
fn output(
    i: usize,
    format: &str,
    compression: u8,
    resize: &str,
    width: Option<&str>,
    height: Option<&str>,
) -> Result<Output, ApiError> {
    let mut o = serde_json::Map::new();
    let mut set = |k: &str, v: &str| {
        o.insert(k.into(), Value::String(v.into()));
    };
    let video = match format {
        "mp4" => Some("h264"),
        "webm" => Some("vp9"),
        "mov" | "heif" | "svg" | "pdf" | "mp3" | "wav" | "ogg" | "m4a" | "flac" | "zip" | "tar"
        | "tgz" | "7z" | "rar" | "gz" | "bz2" | "xz" => {
            return Err(ApiError::BadRequest(format!(
                "format {format:?} is not one this server makes: images jpg, png, webp, avif, tiff, gif; video mp4, webm"
            )))
        }
        _ => None,
    };
    if let Some(codec) = video {
        set("codec", codec);
        set("format", format);
        let crf = (51.0 - 0.33 * compression as f64).round().clamp(18.0, 51.0) as u8;
        set("quality", &crf.to_string());
        match resize {
            "original" => {}
            "width" => set("resolution", &side("resizeWidth", width, resize)?),
            "height" => set(
                "resolution",
                &format!("{}p", side("resizeHeight", height, resize)?),
            ),
            other => {
                return Err(ApiError::BadRequest(format!(
                    "resize={other} applies to images; video takes original, width or height"
                )))
            }
        }
        let fields: HashMap<String, String> = o
            .into_iter()
            .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_string()))
            .collect();
        return video_params(&fields)
            .map(Output::Video)
            .map_err(|e| ApiError::BadRequest(e.to_string()));
    }
    set("type", "image");
    set("format", format);
    set("quality", &compression.to_string());
    match resize {
        "original" => {}
        "website" => {
            set("width", "1920");
            set("height", "1080");
            set("fit", "inside");
        }
        "email" => {
            set("width", "600");
            set("fit", "inside");
        }
        "instagram" => {
            set("width", "1080");
            set("height", "1080");
            set("fit", "cover");
        }
        "linkedin" => {
            set("width", "1200");
            set("height", "627");
            set("fit", "cover");
        }
        "ecommerce" => {
            set("width", "2000");
            set("height", "2000");
            set("fit", "contain");
            set("background", "white");
        }
        "square" => {
            let w = side("resizeWidth", width, resize)?;
            set("width", &w);
            set("height", &w);
            set("fit", "cover");
        }
        "width" => set("width", &side("resizeWidth", width, resize)?),
        "height" => set("height", &side("resizeHeight", height, resize)?),
        other => {
            return Err(ApiError::BadRequest(format!(
                "resize must be original, website, email, instagram, linkedin, ecommerce, square, width or height, got {other:?}"
            )))
        }
    }
    parse_output(i, &o).map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// The fields of an image output, as `/convert` takes them (for a synchronous conversion).
pub fn image_fields(o: &Output) -> Option<BTreeMap<String, String>> {
    match o {
        Output::Image(p) => Some(p.fields.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        Settings(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn per_file_arrays_and_single_values() {
        let png = Kind::Image(InputFormat::Png);
        let s = settings(&[
            ("formats", r#"["webp","avif"]"#),
            ("compressions", "[82, 60]"),
            ("resizes", r#"["original","square"]"#),
        ]);
        let out = s.outputs(false, &[png, png]).unwrap();
        let f = |i: usize| image_fields(&out[i]).unwrap();
        assert_eq!(f(0)["format"], "webp");
        assert_eq!(f(0)["quality"], "82");
        assert!(!f(0).contains_key("width"));
        assert_eq!(
            (
                f(1)["format"].as_str(),
                f(1)["width"].as_str(),
                f(1)["fit"].as_str()
            ),
            ("avif", "1080", "cover")
        );
        assert_eq!(f(1)["quality"], "60");
        // One value for every file.
        let s = settings(&[("format", "jpg"), ("resize", "email")]);
        let out = s.outputs(false, &[png, png, png]).unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(image_fields(&out[2]).unwrap()["width"], "600");
        // Compress keeps the format; video goes to H.264 at the mapped quality.
        let out = settings(&[("compression", "82")])
            .outputs(true, &[Kind::Image(InputFormat::Jpeg), Kind::Video])
            .unwrap();
        assert_eq!(image_fields(&out[0]).unwrap()["format"], "jpg");
        match &out[1] {
            Output::Video(p) => assert_eq!(
                (p.codec.as_str(), &p.rate),
                ("h264", &kiln_protocol::RateControl::Crf { quality: 24 })
            ),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn refusals_are_clear() {
        let png = Kind::Image(InputFormat::Png);
        for (pairs, files) in [
            (vec![("formats", r#"["webp"]"#)], 2),
            (vec![("formats", "webp")], 1),
            (vec![], 1),
            (vec![("format", "mov")], 1),
            (vec![("format", "webp"), ("compression", "0")], 1),
            (vec![("format", "webp"), ("resize", "width")], 1),
            (vec![("format", "webp"), ("resize", "huge")], 1),
            (vec![("format", "mp4"), ("resize", "instagram")], 1),
        ] {
            let kinds = vec![png; files];
            assert!(
                matches!(
                    settings(&pairs).outputs(false, &kinds),
                    Err(ApiError::BadRequest(_))
                ),
                "{pairs:?}"
            );
        }
        assert!(settings(&[("autoOrient", "false")])
            .refuse_unsupported(1)
            .is_err());
        assert!(settings(&[("autoOrient", "true"), ("mono", "false")])
            .refuse_unsupported(1)
            .is_ok());
        assert!(settings(&[("callbackUrl", "https://x")])
            .refuse_unsupported(1)
            .is_err());
    }
}
