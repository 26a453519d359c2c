//! What protects a node from one source: the largest picture, duration and stream count a
//! source may have (checked at submission from the probe, and again by the node that runs a
//! job whose source the control plane could not probe), and a wall-clock budget per job
//! derived from the source's duration and picture size, so a pathological input (a decode that
//! never ends, timestamps that loop) cannot hold a slot for ever.
//!
//! The CPU a job can use is bounded by the same budget: its decoders run on at most
//! [`decoder_threads`] threads, so CPU time ≤ threads × wall-clock budget.

use std::time::Duration;

/// Pixels of a 1920×1080 picture: the unit a budget's rate is given in.
const PIXELS_1080P: f64 = 1920.0 * 1080.0;

/// Every job gets at least this long (s): fetching, probing, opening encoders, uploading.
pub const BUDGET_BASE_SECS: f64 = 300.0;

/// Seconds of wall clock allowed per second of 1080p source, per unit of work: 1/30 of real
/// time, slower than any CPU encoder Kiln runs at its slowest preset on two cores.
pub const BUDGET_SECS_PER_SOURCE_SECOND: f64 = 30.0;

/// The limits a source is held to, and how generous budgets are. Both the control plane and
/// the node read them from the same variables.
#[derive(Debug, Clone, Copy, PartialEq, clap::Args)]
pub struct SourceLimits {
    /// The widest source picture accepted (pixels).
    #[arg(long, env = "KILN_MAX_SOURCE_WIDTH", default_value_t = 8192, global = true,
          value_parser = clap::value_parser!(u32).range(16..=65536))]
    pub max_width: u32,
    /// The tallest source picture accepted (pixels).
    #[arg(long, env = "KILN_MAX_SOURCE_HEIGHT", default_value_t = 8192, global = true,
          value_parser = clap::value_parser!(u32).range(16..=65536))]
    pub max_height: u32,
    /// The longest source accepted (seconds).
    #[arg(
        long,
        env = "KILN_MAX_SOURCE_DURATION_SECS",
        default_value_t = 21_600.0,
        global = true
    )]
    pub max_duration_secs: f64,
    /// The most streams (video, audio, subtitles, data) a source may hold.
    #[arg(long, env = "KILN_MAX_SOURCE_STREAMS", default_value_t = 32, global = true,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_streams: u32,
    /// Scales every job's wall-clock budget (2: twice as long; 0: no budget).
    #[arg(
        long,
        env = "KILN_JOB_BUDGET_FACTOR",
        default_value_t = 1.0,
        global = true
    )]
    pub budget_factor: f64,
}

impl Default for SourceLimits {
    fn default() -> Self {
        Self {
            max_width: 8192,
            max_height: 8192,
            max_duration_secs: 21_600.0,
            max_streams: 32,
            budget_factor: 1.0,
        }
    }
}

/// What of a source the limits look at (from a probe).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SourceShape {
    pub width: u32,
    pub height: u32,
    /// Seconds; 0 when the container does not say.
    pub duration_s: f64,
    pub streams: u32,
}

impl SourceLimits {
    /// `Err` saying which limit `shape` passes, in words for the caller.
    pub fn check(&self, shape: &SourceShape) -> Result<(), String> {
        if shape.width > self.max_width || shape.height > self.max_height {
            return Err(format!(
                "the source is {}×{}; this server accepts at most {}×{}",
                shape.width, shape.height, self.max_width, self.max_height
            ));
        }
        if shape.duration_s > self.max_duration_secs {
            return Err(format!(
                "the source lasts {:.0} s; this server accepts at most {:.0} s",
                shape.duration_s, self.max_duration_secs
            ));
        }
        if shape.streams > self.max_streams {
            return Err(format!(
                "the source has {} streams; this server accepts at most {}",
                shape.streams, self.max_streams
            ));
        }
        Ok(())
    }

    /// The most pixels a decoded frame may have: a stream whose pictures grow past the limit
    /// mid-way is refused by the decoder itself.
    pub fn max_pixels(&self) -> u64 {
        self.max_width as u64 * self.max_height as u64
    }

    /// The wall-clock budget of a job over `shape` that does `work` units (1 for one encode;
    /// more for a ladder's rungs or a quality search), or `None` with no budget. A source whose
    /// duration is unknown is budgeted as the longest one accepted.
    pub fn budget(&self, shape: &SourceShape, work: f64) -> Option<Duration> {
        if self.budget_factor.is_nan()
            || self.budget_factor <= 0.0
            || !self.budget_factor.is_finite()
        {
            return None;
        }
        let duration = if shape.duration_s > 0.0 && shape.duration_s.is_finite() {
            shape.duration_s.min(self.max_duration_secs)
        } else {
            self.max_duration_secs
        };
        // Small pictures still cost a decoder and an encoder per frame: a quarter of 1080p at
        // least.
        let size = (shape.width as f64 * shape.height as f64 / PIXELS_1080P).max(0.25);
        let secs =
            BUDGET_BASE_SECS + duration * size * BUDGET_SECS_PER_SOURCE_SECOND * work.max(1.0);
        Some(Duration::from_secs_f64(secs * self.budget_factor))
    }
}

/// Threads each decoder may run: the host's cores shared among the jobs that run at once
/// (`slots`), at least 1 and at most 16 (FFmpeg's own ceiling for automatic threads).
pub fn decoder_threads(slots: usize) -> i32 {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    (cores / slots.max(1)).clamp(1, 16) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(width: u32, height: u32, duration_s: f64, streams: u32) -> SourceShape {
        SourceShape {
            width,
            height,
            duration_s,
            streams,
        }
    }

    #[test]
    fn each_limit_refuses_what_passes_it_and_only_that() {
        let l = SourceLimits::default();
        assert!(l.check(&shape(8192, 4320, 3600.0, 3)).is_ok());
        assert!(l.check(&shape(4320, 8192, 21_600.0, 32)).is_ok());
        let wide = l.check(&shape(8193, 100, 1.0, 1)).unwrap_err();
        assert!(wide.contains("8193×100"), "{wide}");
        assert!(l.check(&shape(100, 8193, 1.0, 1)).is_err());
        let long = l.check(&shape(640, 360, 21_601.0, 2)).unwrap_err();
        assert!(long.contains("21601 s"), "{long}");
        let many = l.check(&shape(640, 360, 10.0, 33)).unwrap_err();
        assert!(many.contains("33 streams"), "{many}");
        let tight = SourceLimits {
            max_width: 640,
            max_height: 480,
            max_duration_secs: 5.0,
            max_streams: 1,
            budget_factor: 1.0,
        };
        assert!(tight.check(&shape(640, 480, 5.0, 1)).is_ok());
        assert!(tight.check(&shape(640, 480, 5.5, 1)).is_err());
        assert_eq!(tight.max_pixels(), 640 * 480);
    }

    #[test]
    fn budgets_grow_with_duration_size_and_work() {
        let l = SourceLimits::default();
        let hd = l.budget(&shape(1920, 1080, 10.0, 2), 1.0).unwrap();
        assert_eq!(hd, Duration::from_secs(300 + 300));
        let uhd = l.budget(&shape(3840, 2160, 10.0, 2), 1.0).unwrap();
        assert_eq!(uhd, Duration::from_secs(300 + 1200));
        let ladder = l.budget(&shape(1920, 1080, 10.0, 2), 4.0).unwrap();
        assert_eq!(ladder, Duration::from_secs(300 + 1200));
        // A tiny picture costs a quarter of 1080p.
        let tiny = l.budget(&shape(64, 64, 10.0, 1), 1.0).unwrap();
        assert_eq!(tiny, Duration::from_secs(300 + 75));
        // Unknown duration: budgeted as the longest source accepted, not for ever.
        let unknown = l.budget(&shape(1920, 1080, 0.0, 1), 1.0).unwrap();
        assert_eq!(unknown, Duration::from_secs(300 + 21_600 * 30));
        let half = SourceLimits {
            budget_factor: 0.5,
            ..l
        };
        assert_eq!(
            half.budget(&shape(1920, 1080, 10.0, 2), 1.0).unwrap(),
            Duration::from_secs(300)
        );
        let off = SourceLimits {
            budget_factor: 0.0,
            ..l
        };
        assert_eq!(off.budget(&shape(1920, 1080, 10.0, 2), 1.0), None);
    }

    #[test]
    fn decoder_threads_share_the_cores() {
        let cores = std::thread::available_parallelism().unwrap().get() as i32;
        assert_eq!(decoder_threads(1), cores.clamp(1, 16));
        assert_eq!(decoder_threads(10_000), 1);
        assert!(decoder_threads(0) >= 1);
    }
}
