//! `size` jobs' arithmetic: the video bitrate that makes a file of a target size, and the
//! correction after an encode missed it.

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
         (audio takes {audio_kbps:.1} kbps); the least Kiln plans for is {min_kbps} kbps"
    )]
    TooSmall {
        target_mb: f64,
        duration_s: f64,
        audio_kbps: f64,
        video_kbps: f64,
        min_kbps: f64,
    },
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
