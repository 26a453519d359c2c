//! A `size` job's encodes: the plan (the audio shrunk first where it would eat the target),
//! two passes where the encoder has them, then corrections until the file lands.

use std::sync::atomic::AtomicBool;

use kiln_protocol::video::{correct_video_bps, plan_size, AudioBudget};
use kiln_protocol::AudioShrink;

use super::{Job, Progress, SIZE_TOLERANCE};
use crate::media::audio::Shrink;
use crate::media::encoder::{self, Pass, RateSpec};
use crate::media::pipeline::PassResult;
use crate::media::MediaError;

/// Encodes a `size` job may take beyond its planned passes to get there.
const MAX_CORRECTIONS: u32 = 2;

impl Job<'_> {
    /// Encode to `target` bytes: two passes where the encoder has them, then corrections of
    /// the video bitrate until the file lands within tolerance.
    pub(super) fn encode_to_size(
        &mut self,
        target: f64,
        cancel: &AtomicBool,
        on_progress: &mut dyn FnMut(Progress),
    ) -> Result<PassResult, MediaError> {
        let plan = plan_size(target, self.info.duration_s, self.info.source_audio())
            .map_err(|e| MediaError::InvalidSettings(e.to_string()))?;
        if let AudioBudget::Shrink { bps, channels } = plan.audio {
            self.audio_shrink = Some(Shrink { bps, channels });
        }
        let mut bps = plan.video_bps;
        let two_pass = encoder::supports_two_pass(self.encoder.name);
        if two_pass {
            let _ = std::fs::remove_file(&self.stats);
            let first = Pass::First(self.stats.clone());
            let out = self.pass1_out.clone();
            self.pass_to(
                &out,
                RateSpec::Average { bps: bps as i64 },
                first,
                false,
                cancel,
                on_progress,
            )?;
            let _ = std::fs::remove_file(&out);
        }
        let mut corrections = 0;
        loop {
            let pass = if two_pass {
                Pass::Second(self.stats.clone())
            } else {
                Pass::Only
            };
            let result = self.pass(
                RateSpec::Average { bps: bps as i64 },
                pass,
                true,
                cancel,
                on_progress,
            )?;
            let off = (result.file_bytes as f64 - target) / target;
            if off.abs() <= SIZE_TOLERANCE || corrections == MAX_CORRECTIONS {
                return Ok(result);
            }
            let other = result.file_bytes.saturating_sub(result.video_bytes) as f64;
            let next = correct_video_bps(bps, target, result.file_bytes as f64, other);
            tracing::info!(
                achieved = result.file_bytes,
                target,
                bps,
                next,
                "size off target by {:.1}%; correcting",
                off * 100.0
            );
            bps = next;
            corrections += 1;
            self.planned += 1;
        }
    }

    /// What the report says of audio a size plan shrank (`kind` is what the pass wrote).
    pub(super) fn audio_shrunk(&self, kind: &str) -> Option<AudioShrink> {
        self.audio_shrink?.report(self.info.source_audio(), kind)
    }

    /// An average bitrate encoded in two passes where the encoder has them (the first pass's
    /// output thrown away), in one otherwise: a chunk of a title whose bits are shared lands
    /// within a few percent of its aim this way, where one pass of a few seconds misses by
    /// ten or more.
    pub(crate) fn rate_passes(
        &mut self,
        rate: RateSpec,
        with_audio: bool,
        cancel: &AtomicBool,
        on_progress: &mut dyn FnMut(Progress),
    ) -> Result<PassResult, MediaError> {
        if !encoder::supports_two_pass(self.encoder.name) {
            return self.pass(rate, Pass::Only, with_audio, cancel, on_progress);
        }
        self.planned = self.planned.max(2);
        let _ = std::fs::remove_file(&self.stats);
        let out = self.pass1_out.clone();
        let first = Pass::First(self.stats.clone());
        self.pass_to(&out, rate, first, false, cancel, on_progress)?;
        let _ = std::fs::remove_file(&out);
        let second = Pass::Second(self.stats.clone());
        self.pass(rate, second, with_audio, cancel, on_progress)
    }
}
