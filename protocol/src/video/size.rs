//! `size` jobs' arithmetic: the video bitrate that makes a file of a target size (with the
//! audio shrunk first when it would eat the budget), and the correction after an encode
//! missed it.

/// Bytes in the API's MB.
pub const BYTES_PER_MB: f64 = 1_000_000.0;

/// Lowest video bitrate a `size` job may be planned at: below this the picture is mush and
/// rate control stops being able to hit a target at all.
pub const MIN_VIDEO_BPS: f64 = 24_000.0;

/// Share of a file the MP4/WebM/MKV framing takes, planned for up front (measured on Kiln's
/// outputs: 0.3–1 %).
pub const MUX_OVERHEAD: f64 = 0.008;

/// Why a target size cannot be met.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SizePlanError {
    #[error("the source's duration is unknown, so a target size cannot be planned")]
    UnknownDuration,
    #[error(
        "a {target_mb} MB target leaves {video_kbps:.1} kbps for the video over {duration_s:.1} s \
         ({}); the least Kiln plans for is {min_kbps} kbps",
        audio_note(*.audio_kbps)
    )]
    TooSmall {
        target_mb: f64,
        duration_s: f64,
        audio_kbps: f64,
        video_kbps: f64,
        min_kbps: f64,
    },
}

/// Audio bitrate assumed when the container does not say.
pub const ASSUMED_AUDIO_BPS: f64 = 128_000.0;

/// Most of a `size` file's bits the audio may keep: past this it is re-encoded smaller, so a
/// tight target spends its bits on the picture.
pub const AUDIO_SHARE: f64 = 0.25;

/// The bitrates (bits/s, channels) a `size` job's audio steps down through: stereo to 32 kbps,
/// mono below that (AAC and Opus both stay intelligible there).
pub const AUDIO_STEPS: [(u32, u32); 7] = [
    (128_000, 2),
    (96_000, 2),
    (64_000, 2),
    (48_000, 2),
    (32_000, 2),
    (24_000, 1),
    (16_000, 1),
];

/// A source's audio track as a `size` plan sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SourceAudio {
    /// Bits per second ([`ASSUMED_AUDIO_BPS`] where the container does not say).
    pub bps: f64,
    pub channels: u32,
}

/// What a `size` plan does with the audio.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AudioBudget {
    /// No audio track.
    None,
    /// Kept as it is (copied where the container holds it).
    Keep { bps: f64 },
    /// Re-encoded at `bps` with `channels` so the picture keeps its share.
    Shrink { bps: u32, channels: u32 },
}

impl AudioBudget {
    /// Bits per second the audio is planned to take.
    pub fn bps(&self) -> f64 {
        match *self {
            Self::None => 0.0,
            Self::Keep { bps } => bps,
            Self::Shrink { bps, .. } => bps as f64,
        }
    }
}

/// A `size` job's plan: the video's bitrate and what happens to the audio.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SizePlan {
    pub video_bps: f64,
    pub audio: AudioBudget,
}

/// Plan a file of `target_bytes` lasting `duration_s`. The audio is kept while it takes at
/// most [`AUDIO_SHARE`] of the bits; past that it steps down through [`AUDIO_STEPS`] to the
/// largest step within the share (the smallest when none is), and the target is refused only
/// when even then the video would get less than [`MIN_VIDEO_BPS`].
pub fn plan_size(
    target_bytes: f64,
    duration_s: f64,
    audio: Option<SourceAudio>,
) -> Result<SizePlan, SizePlanError> {
    if duration_s <= 0.0 || !duration_s.is_finite() {
        return Err(SizePlanError::UnknownDuration);
    }
    let total_bps = target_bytes * 8.0 * (1.0 - MUX_OVERHEAD) / duration_s;
    let budget = match audio {
        None => AudioBudget::None,
        Some(a) if a.bps <= AUDIO_SHARE * total_bps => AudioBudget::Keep { bps: a.bps },
        Some(a) => {
            let steps: Vec<AudioBudget> = AUDIO_STEPS
                .iter()
                .filter(|(bps, _)| (*bps as f64) < a.bps)
                .map(|&(bps, ch)| AudioBudget::Shrink {
                    bps,
                    channels: ch.min(a.channels.max(1)),
                })
                .collect();
            steps
                .iter()
                .copied()
                .find(|s| s.bps() <= AUDIO_SHARE * total_bps)
                .or(steps.last().copied())
                .unwrap_or(AudioBudget::Keep { bps: a.bps })
        }
    };
    let video_bps = plan_video_bps(target_bytes, duration_s, budget.bps())?;
    Ok(SizePlan {
        video_bps,
        audio: budget,
    })
}

fn audio_note(kbps: f64) -> String {
    if kbps > 0.0 {
        format!("audio takes {kbps:.1} kbps at the least")
    } else {
        "no audio".into()
    }
}

/// Video bits per second for a file of `target_bytes` lasting `duration_s`, of which the audio
/// takes `audio_bps`.
pub fn plan_video_bps(
    target_bytes: f64,
    duration_s: f64,
    audio_bps: f64,
) -> Result<f64, SizePlanError> {
    if duration_s <= 0.0 || !duration_s.is_finite() {
        return Err(SizePlanError::UnknownDuration);
    }
    let total_bps = target_bytes * 8.0 * (1.0 - MUX_OVERHEAD) / duration_s;
    let video_bps = total_bps - audio_bps;
    if video_bps < MIN_VIDEO_BPS {
        return Err(SizePlanError::TooSmall {
            target_mb: target_bytes / BYTES_PER_MB,
            duration_s,
            audio_kbps: audio_bps / 1000.0,
            video_kbps: video_bps / 1000.0,
            min_kbps: MIN_VIDEO_BPS / 1000.0,
        });
    }
    Ok(video_bps)
}

/// The next video bitrate after an encode at `video_bps` produced `achieved_bytes` in all, of
/// which `other_bytes` were audio and container: scale the video share to fit the target.
pub fn correct_video_bps(
    video_bps: f64,
    target_bytes: f64,
    achieved_bytes: f64,
    other_bytes: f64,
) -> f64 {
    let achieved_video = (achieved_bytes - other_bytes).max(1.0);
    let wanted_video = (target_bytes - other_bytes).max(1.0);
    // Rate control is not linear at the extremes; damp big jumps so a correction cannot
    // overshoot the other way.
    let ratio = (wanted_video / achieved_video).clamp(0.5, 2.0);
    (video_bps * ratio).max(MIN_VIDEO_BPS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_plans_leave_room_for_audio_and_framing() {
        // 10 MB over 60 s with 128 kbps audio.
        let v = plan_video_bps(10e6, 60.0, 128_000.0).unwrap();
        let total = 10e6 * 8.0 * (1.0 - MUX_OVERHEAD) / 60.0;
        assert!((v - (total - 128_000.0)).abs() < 1e-6);
        assert!(v > 1_100_000.0 && v < 1_200_000.0, "{v}");
        assert_eq!(
            plan_video_bps(1e6, 0.0, 0.0),
            Err(SizePlanError::UnknownDuration)
        );
        assert!(matches!(
            plan_video_bps(0.1e6, 600.0, 128_000.0),
            Err(SizePlanError::TooSmall { .. })
        ));
    }

    fn src(kbps: f64, channels: u32) -> Option<SourceAudio> {
        Some(SourceAudio {
            bps: kbps * 1000.0,
            channels,
        })
    }

    #[test]
    fn audio_shrinks_before_a_target_is_refused() {
        // (target MB, seconds, source audio) → audio plan; `None` where refused.
        let table: [(f64, f64, Option<SourceAudio>, Option<AudioBudget>); 8] = [
            // Roomy: 8 MB for 55 s keeps 128 kbps (11 % of the bits).
            (
                8.0,
                55.0,
                src(128.0, 2),
                Some(AudioBudget::Keep { bps: 128e3 }),
            ),
            // The case: 1 MB for 55 s with 128 kbps MP3 (144 kbps in all) → 32 kbps.
            (
                1.0,
                55.0,
                src(128.0, 2),
                Some(AudioBudget::Shrink {
                    bps: 32_000,
                    channels: 2,
                }),
            ),
            // 2 MB: 289 kbps in all, a quarter is 72 → 64 kbps stereo.
            (
                2.0,
                55.0,
                src(128.0, 2),
                Some(AudioBudget::Shrink {
                    bps: 64_000,
                    channels: 2,
                }),
            ),
            // Tighter than any step's share: the smallest step, mono.
            (
                0.5,
                55.0,
                src(128.0, 2),
                Some(AudioBudget::Shrink {
                    bps: 16_000,
                    channels: 1,
                }),
            ),
            // A mono source stays mono.
            (
                2.0,
                55.0,
                src(128.0, 1),
                Some(AudioBudget::Shrink {
                    bps: 64_000,
                    channels: 1,
                }),
            ),
            // A source already below every step it would go to is kept.
            (
                0.3,
                55.0,
                src(12.0, 1),
                Some(AudioBudget::Keep { bps: 12e3 }),
            ),
            // No audio.
            (0.3, 55.0, None, Some(AudioBudget::None)),
            // Even 16 kbps mono leaves the video under its floor: refused.
            (0.2, 55.0, src(128.0, 2), None),
        ];
        for (mb, secs, audio, want) in table {
            let got = plan_size(mb * BYTES_PER_MB, secs, audio);
            match want {
                Some(w) => {
                    let p = got.unwrap_or_else(|e| panic!("{mb} MB: {e}"));
                    assert_eq!(p.audio, w, "{mb} MB {audio:?}");
                    let total = mb * BYTES_PER_MB * 8.0 * (1.0 - MUX_OVERHEAD) / secs;
                    assert!((p.video_bps + w.bps() - total).abs() < 1e-6);
                }
                None => {
                    let e = got.unwrap_err();
                    assert!(
                        e.to_string()
                            .contains("(audio takes 16.0 kbps at the least)"),
                        "{e}"
                    );
                }
            }
        }
    }

    #[test]
    fn corrections_move_toward_the_target() {
        // Overshot by 20 % with nothing but video: scale down by 1/1.2.
        let next = correct_video_bps(1_000_000.0, 10e6, 12e6, 0.0);
        assert!((next - 1_000_000.0 / 1.2).abs() < 1.0);
        // Audio is not scaled: only the video share is.
        let next = correct_video_bps(1_000_000.0, 10e6, 11e6, 1e6);
        assert!((next - 900_000.0).abs() < 1.0);
        // Damped: never more than double or half.
        assert_eq!(correct_video_bps(100_000.0, 10e6, 1e6, 0.0), 200_000.0);
    }
}
