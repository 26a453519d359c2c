//! The request fields of an image conversion (`format`, `quality`, `width`, …), parsed the
//! same way for `POST /api/v1/convert`, for image outputs of `POST /api/v1/jobs`, and on the
//! node that runs such a job.

use std::collections::BTreeMap;

use super::{ConvertParams, Fit, Gravity, OutputFormat};
use crate::gpu::Filter;

/// Build the parameters from a map of fields; the first field that does not parse is the
/// error. Unknown fields are ignored.
pub fn from_fields(
    fields: &BTreeMap<String, String>,
    base: ConvertParams,
) -> Result<ConvertParams, String> {
    let mut params = base;
    for (k, v) in fields {
        apply_field(&mut params, k, v.trim())?;
    }
    Ok(params)
}

/// Apply one form field. Names follow Konvrt (`format`, `quality`, `width`, `height`) with the
/// blog's `maxWidth`/`maxHeight` and sharp's `fit`, `position`/`gravity`, `background`,
/// `kernel`/`filter`, `lossless`.
pub fn apply_field(params: &mut ConvertParams, name: &str, v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Ok(());
    }
    let bad = |what: &str| format!("{name}: {what}, got {v:?}");
    match name {
        "format" => {
            params.format = Some(
                OutputFormat::parse(v)
                    .ok_or_else(|| bad("use jpg, png, webp, avif, gif or tiff"))?,
            )
        }
        "quality" => {
            params.quality = match v.parse::<u8>() {
                Ok(q) if (1..=100).contains(&q) => Some(q),
                _ => return Err(bad("quality is a whole number between 1 and 100")),
            }
        }
        "width" | "w" => params.width = Some(parse_side(name, v)?),
        "height" | "h" => params.height = Some(parse_side(name, v)?),
        "maxWidth" | "max_width" => {
            params.width = Some(parse_side(name, v)?);
            params.fit = Fit::Inside;
        }
        "maxHeight" | "max_height" => {
            params.height = Some(parse_side(name, v)?);
            params.fit = Fit::Inside;
        }
        "fit" => {
            params.fit = Fit::parse(v).ok_or_else(|| bad("use inside, cover, contain or fill"))?
        }
        "gravity" | "position" | "crop" => {
            params.gravity = Gravity::parse(v).ok_or_else(|| {
                bad("use center, north, south, east, west, north_east, north_west, south_east, south_west or entropy")
            })?
        }
        "background" => params.background = Some(parse_colour(v).ok_or_else(|| bad("use #rrggbb, #rrggbbaa, white, black or transparent"))?),
        "kernel" | "filter" => {
            params.filter = Filter::parse(v)
                .ok_or_else(|| bad("use lanczos3, mitchell, catmull_rom, bilinear or box"))?
        }
        "lossless" => {
            params.lossless = match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" => false,
                _ => return Err(bad("use true or false")),
            }
        }
        _ => {}
    }
    Ok(())
}

/// `#rgb`, `#rrggbb`, `#rrggbbaa` (with or without `#`) or a few names.
fn parse_colour(v: &str) -> Option<[u8; 4]> {
    match v.to_ascii_lowercase().as_str() {
        "white" => return Some([255, 255, 255, 255]),
        "black" => return Some([0, 0, 0, 255]),
        "transparent" => return Some([0, 0, 0, 0]),
        _ => {}
    }
    let hex = v.trim_start_matches('#');
    if !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).ok();
    match hex.len() {
        3 => {
            let d = |i: usize| u8::from_str_radix(&hex[i..i + 1], 16).ok().map(|n| n * 17);
            Some([d(0)?, d(1)?, d(2)?, 255])
        }
        6 => Some([byte(0)?, byte(2)?, byte(4)?, 255]),
        8 => Some([byte(0)?, byte(2)?, byte(4)?, byte(6)?]),
        _ => None,
    }
}

fn parse_side(name: &str, v: &str) -> Result<u32, String> {
    match v.trim().parse::<u32>() {
        Ok(n) if (1..=16_384).contains(&n) => Ok(n),
        _ => Err(format!(
            "{name} must be a whole number of pixels between 1 and 16384, got {v:?}"
        )),
    }
}
