//! Edits of video outputs on real and generated clips, each checked with the `ffmpeg` CLI:
//! a trim starts on the asked frame (not the keyframe before it) with audio of the same span,
//! a crop keeps the part asked for, a watermark lands where asked at its opacity, subtitles
//! show on their cue times (timed against the source, also under a trim).

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::AtomicBool;

use common::{ffmpeg, ffprobe, media};
use kiln_gpu_node::media::{transcode, transcode_edited, EditFiles, MediaError};
use kiln_protocol::edit::{Asset, Crop, Edit, Gravity, Subtitles, Watermark};
use kiln_protocol::{VideoCodec, VideoParams};

/// One frame of `path` at `at_s` (accurate seek), as raw pixels of `pix_fmt`.
fn frame(path: &Path, at_s: f64, pix_fmt: &str) -> Vec<u8> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-ss", &format!("{at_s:.3}"), "-i"])
        .arg(path)
        .args(["-frames:v", "1", "-f", "rawvideo", "-pix_fmt", pix_fmt, "-"])
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn psnr(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(
        a.len(),
        b.len(),
        "frame sizes differ (an empty one: no frame there)"
    );
    let mse = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    10.0 * (255.0f64.powi(2) / mse.max(1e-9)).log10()
}

/// Mean of the gray pixels of `rect` (x, y, w, h) in a `width`-wide frame.
fn mean(gray: &[u8], width: u32, (x, y, w, h): (u32, u32, u32, u32)) -> f64 {
    let mut sum = 0u64;
    for row in y..y + h {
        for col in x..x + w {
            sum += gray[(row * width + col) as usize] as u64;
        }
    }
    sum as f64 / (w * h) as f64
}

fn edited(edit: Edit) -> VideoParams {
    VideoParams {
        edit,
        ..VideoParams::crf(VideoCodec::H264, 20)
    }
}

fn run(
    src: &Path,
    out: &Path,
    p: &VideoParams,
    files: &EditFiles,
) -> kiln_gpu_node::media::TranscodeOutcome {
    transcode_edited(src, out, p, files, &AtomicBool::new(false), &mut |_| {}).unwrap()
}

#[test]
fn a_trim_starts_on_the_asked_frame_with_audio_of_the_same_span() {
    // Big Buck Bunny's only keyframe is at 0: a keyframe snap would start there.
    let src = media("video/bigbuckbunny.mp4");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("trim.mp4");
    let p = edited(Edit {
        start_s: Some(2.0),
        end_s: Some(4.0),
        ..Edit::default()
    });
    let o = run(&src, &out, &p, &EditFiles::default());
    assert!((o.duration_s - 2.0).abs() < 1e-6, "{}", o.duration_s);
    let streams = ffprobe(&out);
    let video = streams.iter().find(|s| s.kind == "video").unwrap();
    let audio = streams
        .iter()
        .find(|s| s.kind == "audio")
        .expect("audio kept");
    // 25 fps: 50 frames, the video within a frame of 2 s, the audio within an AAC packet.
    assert!((49..=51).contains(&video.nb_frames), "{video:?}");
    assert!(
        (video.duration - 2.0).abs() <= 1.0 / 25.0 + 1e-3,
        "{video:?}"
    );
    assert!((audio.duration - 2.0).abs() < 0.05, "{audio:?}");

    let first = frame(&out, 0.0, "gray");
    let asked = frame(&src, 2.0, "gray");
    let keyframe = frame(&src, 0.0, "gray");
    let on_frame = psnr(&first, &asked);
    let snapped = psnr(&first, &keyframe);
    assert!(
        on_frame > 30.0,
        "first frame vs source at 2.0 s: {on_frame:.1} dB"
    );
    assert!(
        snapped < on_frame - 8.0,
        "vs the keyframe at 0: {snapped:.1} dB"
    );
    let last = frame(&out, 1.9, "gray");
    let src_last = frame(&src, 3.9, "gray");
    assert!(psnr(&last, &src_last) > 30.0);
}

#[test]
fn a_crop_keeps_the_part_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("halves.mp4");
    // Left half red, right half blue.
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "color=red:s=320x240:d=1",
        "-f",
        "lavfi",
        "-i",
        "color=blue:s=320x240:d=1",
        "-filter_complex",
        "hstack",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        src.to_str().unwrap(),
    ]);
    let cases = [
        (
            Crop::Rect {
                x: 320,
                y: 0,
                width: 320,
                height: 240,
            },
            (320, 240),
            "blue",
        ),
        (
            Crop::parse("1:1", Gravity::Left).unwrap(),
            (240, 240),
            "red",
        ),
        (
            Crop::parse("9:16", Gravity::Right).unwrap(),
            (134, 240),
            "blue",
        ),
    ];
    for (crop, (w, h), colour) in cases {
        let out = dir.path().join("crop.mp4");
        let o = run(
            &src,
            &out,
            &edited(Edit {
                crop: Some(crop),
                ..Edit::default()
            }),
            &EditFiles::default(),
        );
        assert_eq!((o.width, o.height), (w, h), "{crop:?}");
        let v = &ffprobe(&out)[0];
        assert_eq!((v.width, v.height), (w, h));
        let rgb = frame(&out, 0.5, "rgb24");
        let px = (w * h) as usize;
        let avg = |c: usize| {
            rgb.iter()
                .skip(c)
                .step_by(3)
                .map(|v| *v as f64)
                .sum::<f64>()
                / px as f64
        };
        let (r, b) = (avg(0), avg(2));
        match colour {
            "red" => assert!(r > 180.0 && b < 60.0, "{crop:?}: r {r:.0} b {b:.0}"),
            _ => assert!(b > 180.0 && r < 60.0, "{crop:?}: r {r:.0} b {b:.0}"),
        }
    }
    // The crop goes before the resolution: a 9:16 cut scaled to 480p height.
    let out = dir.path().join("crop480.mp4");
    let p = VideoParams {
        resolution: kiln_protocol::Resolution::parse("1080x1920").unwrap(),
        allow_upscale: true,
        ..edited(Edit {
            crop: Some(Crop::parse("9:16", Gravity::Center).unwrap()),
            ..Edit::default()
        })
    };
    let o = run(&src, &out, &p, &EditFiles::default());
    assert_eq!((o.width, o.height), (1080, 1920));
}

#[test]
fn a_watermark_lands_where_asked_at_its_opacity() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("black.mp4");
    let mark = dir.path().join("mark.png");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "color=black:s=320x240:d=1",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        src.to_str().unwrap(),
    ]);
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "color=white:s=40x20",
        "-frames:v",
        "1",
        mark.to_str().unwrap(),
    ]);
    let files = EditFiles {
        watermark: Some(mark.clone()),
        subtitles: None,
    };
    let mut w = Watermark::new(Asset::Key("k".into()));
    w.position = Gravity::TopLeft;
    w.margin_px = 10;
    w.opacity = 0.5;
    let out = dir.path().join("wm.mp4");
    run(
        &src,
        &out,
        &edited(Edit {
            watermark: Some(w.clone()),
            ..Edit::default()
        }),
        &files,
    );
    let gray = frame(&out, 0.5, "gray");
    let inside = mean(&gray, 320, (14, 14, 32, 12));
    let outside = mean(&gray, 320, (100, 100, 100, 100));
    assert!(
        (100.0..160.0).contains(&inside),
        "half-opaque white over black: {inside:.0}"
    );
    assert!(outside < 30.0, "{outside:.0}");

    // Bottom right, a quarter of the width (80x40), opaque: at x 230..310, y 190..230.
    w.position = Gravity::BottomRight;
    w.opacity = 1.0;
    w.width_fraction = Some(0.25);
    run(
        &src,
        &out,
        &edited(Edit {
            watermark: Some(w),
            ..Edit::default()
        }),
        &files,
    );
    let gray = frame(&out, 0.5, "gray");
    assert!(mean(&gray, 320, (234, 194, 72, 32)) > 200.0);
    assert!(mean(&gray, 320, (0, 0, 200, 150)) < 30.0);
    assert!(
        mean(&gray, 320, (312, 194, 8, 32)) < 60.0,
        "the margin stays clear"
    );
}

#[test]
fn subtitles_show_on_their_cue_times_against_the_source_under_a_trim() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("black3.mp4");
    let subs = dir.path().join("subs.srt");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "color=black:s=320x240:d=3:r=25",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        src.to_str().unwrap(),
    ]);
    std::fs::write(
        &subs,
        "1\n00:00:01,000 --> 00:00:02,000\nKILN KILN KILN\n\n",
    )
    .unwrap();
    let files = EditFiles {
        watermark: None,
        subtitles: Some(subs),
    };
    let p = edited(Edit {
        start_s: Some(0.5),
        subtitles: Some(Subtitles {
            file: Asset::Key("k".into()),
        }),
        ..Edit::default()
    });
    let out = dir.path().join("subs.mp4");
    let o = run(&src, &out, &p, &files);
    assert!((o.duration_s - 2.5).abs() < 1e-6);
    let bright = |t: f64| {
        let g = frame(&out, t, "gray");
        g[(160 * 320) as usize..]
            .iter()
            .filter(|v| **v > 180)
            .count()
    };
    // Output 1.0 s is source 1.5 s: inside the cue. Output 0.2 s and 2.0 s are outside it.
    assert!(bright(1.0) > 50, "text rendered: {}", bright(1.0));
    assert_eq!(bright(0.2), 0);
    assert_eq!(bright(2.0), 0);
}

#[test]
fn edits_that_cannot_apply_are_refused() {
    let src = media("video/bikes.mp4");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.mp4");
    let cases = [
        Edit {
            start_s: Some(30.0),
            ..Edit::default()
        },
        Edit {
            crop: Some(Crop::Rect {
                x: 600,
                y: 0,
                width: 100,
                height: 100,
            }),
            ..Edit::default()
        },
        Edit {
            watermark: Some(Watermark::new(Asset::Key("k".into()))),
            ..Edit::default()
        },
    ];
    for e in cases {
        match transcode(
            &src,
            &out,
            &edited(e.clone()),
            &AtomicBool::new(false),
            &mut |_| {},
        ) {
            Err(MediaError::InvalidSettings(m)) => assert!(!m.is_empty()),
            other => panic!("{e:?}: {other:?}"),
        }
        assert!(!out.exists());
    }
}
