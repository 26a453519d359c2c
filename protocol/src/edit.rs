//! Edits of a video output, applied before it is encoded: a frame-accurate trim, a crop (a
//! rectangle, or an aspect such as `9:16` placed by gravity), a watermark image and burned-in
//! subtitles. The control plane validates them; the node plans them with the same code.

use serde::{Deserialize, Serialize};

/// What is done to the picture and the timeline before encoding. Empty by default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Edit {
    /// Where the output starts in the source (s); frame-accurate, not a keyframe snap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_s: Option<f64>,
    /// Where the output ends in the source (s), exclusive; past the source's end means its end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_s: Option<f64>,
    /// The part of the displayed picture kept (before scaling to the resolution).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crop: Option<Crop>,
    /// An image laid over the output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<Watermark>,
    /// An SRT or WebVTT file rendered into the picture, timed against the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtitles: Option<Subtitles>,
}

impl Edit {
    /// Whether nothing is edited.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// Whether the picture is filtered (a crop, a watermark or subtitles), not only trimmed.
    pub fn touches_picture(&self) -> bool {
        self.crop.is_some() || self.watermark.is_some() || self.subtitles.is_some()
    }

    /// The stored files the edit reads.
    pub fn assets(&self) -> impl Iterator<Item = &Asset> {
        self.watermark
            .iter()
            .map(|w| &w.image)
            .chain(self.subtitles.iter().map(|s| &s.file))
    }

    /// The same, to resolve in place.
    pub fn assets_mut(&mut self) -> impl Iterator<Item = &mut Asset> {
        self.watermark
            .iter_mut()
            .map(|w| &mut w.image)
            .chain(self.subtitles.iter_mut().map(|s| &mut s.file))
    }

    /// Check the trim on its own: times finite, not negative, `start` before `end`.
    pub fn check_times(&self) -> Result<(), String> {
        for (name, v) in [("start", self.start_s), ("end", self.end_s)] {
            if let Some(v) = v {
                if !v.is_finite() || v < 0.0 {
                    return Err(format!(
                        "{name} must be a time in seconds of 0 or more, got {v}"
                    ));
                }
            }
        }
        if let (Some(s), Some(e)) = (self.start_s, self.end_s) {
            if e <= s {
                return Err(format!("end ({e}s) must come after start ({s}s)"));
            }
        }
        Ok(())
    }

    /// The span `[start, end)` of a source `duration_s` long that the output covers, or why
    /// there is none (`start` at or past the end). An unknown duration (0) leaves `end` open.
    pub fn span(&self, duration_s: f64) -> Result<(f64, f64), String> {
        self.check_times()?;
        let start = self.start_s.unwrap_or(0.0);
        let mut end = self.end_s.unwrap_or(f64::INFINITY);
        if duration_s > 0.0 {
            if start >= duration_s {
                return Err(format!(
                    "start ({start}s) is at or past the end of the {duration_s:.3}s source"
                ));
            }
            end = end.min(duration_s);
        }
        Ok((start, end))
    }
}

/// Where a placed thing sits: a side, a corner or the centre.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Gravity {
    #[default]
    Center,
    Top,
    Bottom,
    Left,
    Right,
    TopLeft,
    TopRight,
    BottomLeft,
    BottomRight,
}

impl Gravity {
    /// Parse `center`, `top`, `bottom-right`, … (also `_` for `-`, and compass names).
    pub fn parse(s: &str) -> Option<Self> {
        Some(
            match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
                "center" | "centre" | "middle" => Self::Center,
                "top" | "north" => Self::Top,
                "bottom" | "south" => Self::Bottom,
                "left" | "west" => Self::Left,
                "right" | "east" => Self::Right,
                "top-left" | "northwest" => Self::TopLeft,
                "top-right" | "northeast" => Self::TopRight,
                "bottom-left" | "southwest" => Self::BottomLeft,
                "bottom-right" | "southeast" => Self::BottomRight,
                _ => return None,
            },
        )
    }

    /// Fractions (0 left/top, 0.5 centre, 1 right/bottom) along each axis.
    pub fn fractions(self) -> (f64, f64) {
        match self {
            Self::Center => (0.5, 0.5),
            Self::Top => (0.5, 0.0),
            Self::Bottom => (0.5, 1.0),
            Self::Left => (0.0, 0.5),
            Self::Right => (1.0, 0.5),
            Self::TopLeft => (0.0, 0.0),
            Self::TopRight => (1.0, 0.0),
            Self::BottomLeft => (0.0, 1.0),
            Self::BottomRight => (1.0, 1.0),
        }
    }

    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Center => "center",
            Self::Top => "top",
            Self::Bottom => "bottom",
            Self::Left => "left",
            Self::Right => "right",
            Self::TopLeft => "top-left",
            Self::TopRight => "top-right",
            Self::BottomLeft => "bottom-left",
            Self::BottomRight => "bottom-right",
        }
    }
}

/// The part of the displayed picture kept.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Crop {
    /// A rectangle in displayed pixels (rotation and sample aspect applied).
    Rect {
        x: u32,
        y: u32,
        width: u32,
        height: u32,
    },
    /// The largest rectangle of aspect `num:den` that fits, placed by `gravity`.
    Aspect {
        num: u32,
        den: u32,
        #[serde(default)]
        gravity: Gravity,
    },
}

/// A resolved crop: even offsets and sizes, inside the picture (4:2:0 chroma needs both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropRect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

impl Crop {
    /// Parse the API's text form: `x,y,w,h` or an aspect `w:h` (gravity given apart).
    pub fn parse(s: &str, gravity: Gravity) -> Result<Self, String> {
        let s = s.trim();
        let nums = |parts: Vec<&str>| -> Option<Vec<u32>> {
            parts.iter().map(|p| p.trim().parse::<u32>().ok()).collect()
        };
        if let Some((a, b)) = s.split_once(':') {
            return match nums(vec![a, b]).as_deref() {
                Some(&[num, den]) if num > 0 && den > 0 => Ok(Self::Aspect { num, den, gravity }),
                _ => Err(format!(
                    "crop {s:?}: an aspect is two whole numbers above 0, like 9:16"
                )),
            };
        }
        match nums(s.split(',').collect()).as_deref() {
            Some(&[x, y, width, height]) if width > 0 && height > 0 => Ok(Self::Rect {
                x,
                y,
                width,
                height,
            }),
            _ => Err(format!(
                "crop {s:?}: give x,y,width,height in pixels (like 0,0,640,360) or an aspect like 9:16"
            )),
        }
    }

    /// Resolve against a displayed picture of `w`×`h`.
    pub fn resolve(&self, w: u32, h: u32) -> Result<CropRect, String> {
        let even_down = |v: u32| v & !1;
        let rect = match *self {
            Self::Rect {
                x,
                y,
                width,
                height,
            } => {
                if x.saturating_add(width) > w || y.saturating_add(height) > h {
                    return Err(format!(
                        "crop {width}x{height} at {x},{y} reaches outside the {w}x{h} picture"
                    ));
                }
                CropRect {
                    x: even_down(x),
                    y: even_down(y),
                    width: even_down(width),
                    height: even_down(height),
                }
            }
            Self::Aspect { num, den, gravity } => {
                // The largest num:den rectangle inside w×h.
                let (mut cw, mut ch) = (w as u64, w as u64 * den as u64 / num as u64);
                if ch > h as u64 {
                    ch = h as u64;
                    cw = h as u64 * num as u64 / den as u64;
                }
                let (cw, ch) = (even_down(cw as u32), even_down(ch as u32));
                let (fx, fy) = gravity.fractions();
                CropRect {
                    x: even_down(((w - cw) as f64 * fx).round() as u32),
                    y: even_down(((h - ch) as f64 * fy).round() as u32),
                    width: cw,
                    height: ch,
                }
            }
        };
        if rect.width < 16 || rect.height < 16 {
            return Err(format!(
                "crop leaves {}x{}; the smallest picture Kiln encodes is 16x16",
                rect.width, rect.height
            ));
        }
        Ok(rect)
    }
}

/// A stored file an edit reads: an id from `POST /uploads` as the caller gives it, resolved by
/// the control plane to the store key the node fetches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Asset {
    Upload(String),
    Key(String),
}

/// An image laid over the output picture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Watermark {
    pub image: Asset,
    #[serde(default = "default_position")]
    pub position: Gravity,
    /// Distance from the edges it sits against, in output pixels.
    #[serde(default = "default_margin")]
    pub margin_px: u32,
    /// 0 (invisible) … 1 (as the image is).
    #[serde(default = "default_opacity")]
    pub opacity: f32,
    /// Its width as a fraction of the output width; `None` keeps the image's own size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width_fraction: Option<f32>,
}

fn default_position() -> Gravity {
    Gravity::BottomRight
}
fn default_margin() -> u32 {
    16
}
fn default_opacity() -> f32 {
    1.0
}

impl Watermark {
    /// A watermark of `image` with the defaults: bottom right, 16 px margin, opaque.
    pub fn new(image: Asset) -> Self {
        Self {
            image,
            position: default_position(),
            margin_px: default_margin(),
            opacity: default_opacity(),
            width_fraction: None,
        }
    }

    /// FFmpeg `overlay` position expressions (`W`,`H` the picture, `w`,`h` the image).
    pub fn overlay_xy(&self) -> (String, String) {
        let m = self.margin_px;
        let (fx, fy) = self.position.fractions();
        let axis = |f: f64, big: &str, small: &str| {
            if f == 0.0 {
                format!("{m}")
            } else if f == 1.0 {
                format!("{big}-{small}-{m}")
            } else {
                format!("({big}-{small})/2")
            }
        };
        (axis(fx, "W", "w"), axis(fy, "H", "h"))
    }
}

/// Subtitles burned into the picture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subtitles {
    pub file: Asset,
}

/// Parse a time: seconds (`12.5`) or a timecode (`00:01:02.5`, `1:02`).
pub fn parse_time(s: &str) -> Option<f64> {
    let s = s.trim();
    let mut total = 0.0;
    let parts: Vec<&str> = s.split(':').collect();
    if parts.is_empty() || parts.len() > 3 {
        return None;
    }
    for (i, p) in parts.iter().enumerate() {
        let v: f64 = p.trim().parse().ok()?;
        if !v.is_finite() || v < 0.0 || (i > 0 && v >= 60.0) {
            return None;
        }
        total = total * 60.0 + v;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crops_resolve_inside_the_picture_with_even_edges() {
        let r = |x, y, width, height| CropRect {
            x,
            y,
            width,
            height,
        };
        type Case = (Crop, (u32, u32), Result<CropRect, ()>);
        let cases: [Case; 7] = [
            (
                Crop::parse("9:16", Gravity::Center).unwrap(),
                (1920, 1080),
                Ok(r(656, 0, 606, 1080)),
            ),
            (
                Crop::parse("9:16", Gravity::Left).unwrap(),
                (1920, 1080),
                Ok(r(0, 0, 606, 1080)),
            ),
            (
                Crop::parse("9:16", Gravity::Right).unwrap(),
                (1920, 1080),
                Ok(r(1314, 0, 606, 1080)),
            ),
            (
                Crop::parse("1:1", Gravity::Top).unwrap(),
                (640, 1136),
                Ok(r(0, 0, 640, 640)),
            ),
            (
                Crop::parse("16:9", Gravity::Bottom).unwrap(),
                (640, 272),
                Ok(r(78, 0, 482, 272)),
            ),
            (
                Crop::parse("11,21,101,51", Gravity::Center).unwrap(),
                (640, 360),
                Ok(r(10, 20, 100, 50)),
            ),
            (
                Crop::parse("600,0,100,100", Gravity::Center).unwrap(),
                (640, 360),
                Err(()),
            ),
        ];
        for (crop, (w, h), want) in cases {
            assert_eq!(
                crop.resolve(w, h).map_err(|_| ()),
                want,
                "{crop:?} of {w}x{h}"
            );
        }
        assert!(Crop::parse("0,0,8,8", Gravity::Center)
            .unwrap()
            .resolve(64, 64)
            .is_err());
        for bad in ["", "9:0", "a:b", "1,2,3", "0,0,0,10", "1,2,3,4,5"] {
            assert!(Crop::parse(bad, Gravity::Center).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn spans_clip_to_the_source_and_refuse_what_is_empty() {
        let e = |s: Option<f64>, en: Option<f64>| Edit {
            start_s: s,
            end_s: en,
            ..Edit::default()
        };
        assert_eq!(e(None, None).span(10.0), Ok((0.0, 10.0)));
        assert_eq!(e(Some(2.0), Some(4.5)).span(10.0), Ok((2.0, 4.5)));
        assert_eq!(e(Some(2.0), Some(40.0)).span(10.0), Ok((2.0, 10.0)));
        assert!(e(Some(10.0), None).span(10.0).is_err());
        assert!(e(Some(3.0), Some(3.0)).span(10.0).is_err());
        assert!(e(Some(-1.0), None).span(10.0).is_err());
        assert_eq!(e(Some(1.0), None).span(0.0), Ok((1.0, f64::INFINITY)));
    }

    #[test]
    fn times_and_positions_parse() {
        assert_eq!(parse_time("12.5"), Some(12.5));
        assert_eq!(parse_time("1:02"), Some(62.0));
        assert_eq!(parse_time("01:00:02.5"), Some(3602.5));
        for bad in ["", "x", "1:60", "-1", "1:2:3:4", "inf"] {
            assert_eq!(parse_time(bad), None, "{bad:?}");
        }
        let mut w = Watermark::new(Asset::Key("k".into()));
        assert_eq!(w.overlay_xy(), ("W-w-16".into(), "H-h-16".into()));
        w.position = Gravity::Top;
        w.margin_px = 8;
        assert_eq!(w.overlay_xy(), ("(W-w)/2".into(), "8".into()));
        assert_eq!(Gravity::parse("bottom_left"), Some(Gravity::BottomLeft));
        assert_eq!(Gravity::parse("sideways"), None);
    }

    #[test]
    fn an_empty_edit_is_left_out_of_the_json() {
        assert_eq!(serde_json::to_string(&Edit::default()).unwrap(), "{}");
        let e = Edit {
            watermark: Some(Watermark::new(Asset::Upload("u1".into()))),
            ..Edit::default()
        };
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["watermark"]["image"]["upload"], "u1");
        assert_eq!(serde_json::from_value::<Edit>(json).unwrap(), e);
    }
}
