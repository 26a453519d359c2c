//! Stills from a video: thumbnails at chosen times or on a cadence, and storyboards (sprite
//! sheets of tiles plus a WebVTT file mapping time ranges to `#xywh=` tiles, as players'
//! seek-preview features expect).

use serde::{Deserialize, Serialize};

/// The image formats stills are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StillFormat {
    #[default]
    Jpg,
    Webp,
}

impl StillFormat {
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "jpg" | "jpeg" => Some(Self::Jpg),
            "webp" => Some(Self::Webp),
            _ => None,
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Self::Jpg => "jpg",
            Self::Webp => "webp",
        }
    }
}

/// The most thumbnails one job makes.
pub const MAX_THUMBNAILS: usize = 500;
/// The most storyboard tiles one job makes.
pub const MAX_TILES: usize = 2000;
/// The entry file of a thumbnails job: the list of what was made.
pub const THUMBNAILS_INDEX: &str = "thumbnails.json";
/// The entry file of a storyboard job.
pub const STORYBOARD_VTT: &str = "storyboard.vtt";

/// Thumbnails at `at` seconds, or every `every` seconds from 0 (default every 10 s).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThumbnailParams {
    #[serde(default)]
    pub at: Option<Vec<f64>>,
    #[serde(default)]
    pub every: Option<f64>,
    /// Width in pixels; height follows the display aspect.
    pub width: u32,
    #[serde(default)]
    pub format: StillFormat,
}

/// A storyboard: one tile every `every` seconds, `columns` × `columns` tiles per sheet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoryboardParams {
    pub every: f64,
    /// Tile width in pixels; height follows the display aspect.
    pub width: u32,
    pub columns: u32,
    #[serde(default)]
    pub format: StillFormat,
}

fn check_width(w: u32) -> Result<(), String> {
    if (16..=3840).contains(&w) {
        Ok(())
    } else {
        Err(format!("width must be between 16 and 3840, got {w}"))
    }
}

fn check_every(e: f64) -> Result<(), String> {
    if e.is_finite() && (0.1..=3600.0).contains(&e) {
        Ok(())
    } else {
        Err(format!(
            "every must be between 0.1 and 3600 seconds, got {e}"
        ))
    }
}

impl ThumbnailParams {
    pub fn validate(&self) -> Result<(), String> {
        check_width(self.width)?;
        match (&self.at, self.every) {
            (Some(_), Some(_)) => Err("give at or every, not both".into()),
            (Some(at), None) => {
                if at.is_empty() || at.len() > MAX_THUMBNAILS {
                    return Err(format!("at must list 1 to {MAX_THUMBNAILS} times"));
                }
                if at.iter().any(|t| !t.is_finite() || *t < 0.0) {
                    return Err("at lists times in seconds from 0".into());
                }
                Ok(())
            }
            (None, Some(e)) => check_every(e),
            (None, None) => Ok(()),
        }
    }

    /// The times to take, in order, for a video of `duration_s` (times past the end are
    /// taken at the last frame).
    pub fn times(&self, duration_s: f64) -> Vec<f64> {
        let mut t: Vec<f64> = match (&self.at, self.every) {
            (Some(at), _) => at.clone(),
            (None, every) => cadence(every.unwrap_or(10.0), duration_s, MAX_THUMBNAILS),
        };
        t.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
        t
    }
}

impl StoryboardParams {
    pub fn validate(&self) -> Result<(), String> {
        check_width(self.width)?;
        check_every(self.every)?;
        if !(1..=20).contains(&self.columns) {
            return Err("columns must be between 1 and 20".into());
        }
        Ok(())
    }

    /// Tile start times for a video of `duration_s`.
    pub fn times(&self, duration_s: f64) -> Vec<f64> {
        cadence(self.every, duration_s, MAX_TILES)
    }
}

/// 0, e, 2e, … below `duration_s` (at least one), at most `max`.
fn cadence(every: f64, duration_s: f64, max: usize) -> Vec<f64> {
    let n = if duration_s > 0.0 {
        ((duration_s / every).ceil() as usize).max(1)
    } else {
        1
    };
    (0..n.min(max)).map(|i| i as f64 * every).collect()
}

/// `HH:MM:SS.mmm`, as WebVTT writes times.
pub fn vtt_time(secs: f64) -> String {
    let ms = (secs.max(0.0) * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_validation() {
        let t = ThumbnailParams {
            at: None,
            every: Some(4.0),
            width: 320,
            format: StillFormat::Jpg,
        };
        assert_eq!(t.times(10.0), [0.0, 4.0, 8.0]);
        assert!(t.validate().is_ok());
        let at = ThumbnailParams {
            at: Some(vec![3.0, 1.0]),
            every: None,
            ..t.clone()
        };
        assert_eq!(at.times(10.0), [1.0, 3.0]);
        assert!(ThumbnailParams {
            every: Some(2.0),
            ..at.clone()
        }
        .validate()
        .unwrap_err()
        .contains("not both"));
        assert!(ThumbnailParams {
            width: 5,
            ..t.clone()
        }
        .validate()
        .is_err());
        let s = StoryboardParams {
            every: 2.0,
            width: 160,
            columns: 5,
            format: StillFormat::Webp,
        };
        assert_eq!(s.times(5.3).len(), 3);
        assert!(StoryboardParams {
            columns: 0,
            ..s.clone()
        }
        .validate()
        .is_err());
        assert_eq!(vtt_time(3725.5), "01:02:05.500");
        assert_eq!(StillFormat::parse("JPEG"), Some(StillFormat::Jpg));
    }
}
