//! The rsmpeg pipeline on real media, checked with FFmpeg's own tools.

mod common;

use std::path::Path;
use std::sync::atomic::AtomicBool;

use common::{ffmpeg, ffprobe, media};
use kiln_gpu_node::media::{self, MediaError};
use kiln_protocol::{JobErrorCode, Resolution, VideoCodec, VideoParams};

fn params(crf: u8, res: &str) -> VideoParams {
    VideoParams {
        codec: VideoCodec::H264,
        crf,
        resolution: Resolution::parse(res).unwrap(),
    }
}

fn run(
    input: &Path,
    out: &Path,
    p: &VideoParams,
) -> (Result<media::TranscodeOutcome, MediaError>, Vec<f32>) {
    let mut seen = Vec::new();
    let r = media::transcode(input, out, p, &AtomicBool::new(false), &mut |pr| {
        seen.push(pr.percent)
    });
    (r, seen)
}

#[test]
fn bikes_downscaled_to_requested_size_with_duration_kept() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bikes.mp4");
    let (r, progress) = run(&media("video/bikes.mp4"), &out, &params(28, "320"));
    let outcome = r.expect("transcode");
    assert_eq!((outcome.width, outcome.height), (320, 136));
    assert_eq!(outcome.frames, 250);
    assert!(!outcome.audio_copied);
    assert!(
        progress.windows(2).all(|w| w[0] <= w[1]),
        "progress went backwards: {progress:?}"
    );
    assert!(progress.iter().all(|p| (0.0..100.0).contains(p)));

    let streams = ffprobe(&out);
    assert_eq!(streams.len(), 1, "{streams:?}");
    let v = &streams[0];
    assert_eq!((v.codec.as_str(), v.width, v.height), ("h264", 320, 136));
    // 10 s at 25 fps: within two frames.
    assert!((v.duration - 10.0).abs() <= 0.08, "duration {}", v.duration);
}

#[test]
fn audio_is_copied_and_720p_shorthand_keeps_aspect() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bbb.mp4");
    let (r, _) = run(&media("video/bigbuckbunny.mp4"), &out, &params(30, "360p"));
    assert!(r.expect("transcode").audio_copied);
    let streams = ffprobe(&out);
    let v = streams.iter().find(|s| s.kind == "video").expect("video");
    let a = streams
        .iter()
        .find(|s| s.kind == "audio")
        .expect("audio kept");
    assert_eq!((v.codec.as_str(), v.width, v.height), ("h264", 640, 360));
    assert_eq!(a.codec, "aac");
    assert!((v.duration - 5.28).abs() <= 0.08, "duration {}", v.duration);
    // faststart: the index is written before the media data.
    let bytes = std::fs::read(&out).unwrap();
    let find = |tag: &[u8]| bytes.windows(4).position(|w| w == tag).unwrap();
    assert!(
        find(b"moov") < find(b"mdat"),
        "moov must come first (faststart)"
    );
}

#[test]
fn quality_holds_at_default_crf() {
    // Same size in and out, so PSNR compares like with like.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q.mp4");
    let src = media("video/bikes.mp4");
    let (r, _) = run(&src, &out, &params(23, "original"));
    r.expect("transcode");
    let log = ffmpeg(&[
        "-i",
        out.to_str().unwrap(),
        "-i",
        src.to_str().unwrap(),
        "-lavfi",
        "psnr",
        "-f",
        "null",
        "-",
    ]);
    let avg: f64 = log
        .split("average:")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no PSNR in ffmpeg output: {log}"));
    assert!(
        avg >= 35.0,
        "PSNR {avg} dB below the 35 dB floor for CRF 23"
    );
}

#[test]
fn odd_sized_generated_source_becomes_even() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("odd.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=176x100:rate=30:duration=1",
        "-vf",
        "scale=171:97",
        "-pix_fmt",
        "yuv444p",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        src.to_str().unwrap(),
    ]);
    let out = dir.path().join("out.mp4");
    let (r, _) = run(&src, &out, &params(23, ""));
    let o = r.expect("transcode");
    assert_eq!((o.width, o.height, o.frames), (172, 98, 30));
    let v = &ffprobe(&out)[0];
    assert_eq!((v.width, v.height), (172, 98));
}

#[test]
fn garbage_and_truncated_inputs_fail_with_stable_codes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.mp4");

    let junk = dir.path().join("junk.mp4");
    std::fs::write(&junk, vec![0x5au8; 50_000]).unwrap();
    let (r, _) = run(&junk, &out, &params(23, ""));
    assert_eq!(r.unwrap_err().code(), JobErrorCode::InvalidMedia);
    assert!(!out.exists(), "no output may be left behind");

    // A faststart copy cut in half: the header opens, the media data ends early.
    let fast = dir.path().join("fast.mp4");
    ffmpeg(&[
        "-i",
        media("video/bikes.mp4").to_str().unwrap(),
        "-c",
        "copy",
        "-movflags",
        "+faststart",
        fast.to_str().unwrap(),
    ]);
    let bytes = std::fs::read(&fast).unwrap();
    let cut = dir.path().join("cut.mp4");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let (r, _) = run(&cut, &out, &params(23, "320"));
    let err = r.unwrap_err();
    assert_eq!(err.code(), JobErrorCode::DecodeFailed, "{err}");
    assert!(!out.exists());

    // Header cut off entirely.
    let head = dir.path().join("head.mp4");
    std::fs::write(&head, &bytes[..2000]).unwrap();
    let (r, _) = run(&head, &out, &params(23, ""));
    assert_eq!(r.unwrap_err().code(), JobErrorCode::InvalidMedia);
}

#[test]
fn probe_reports_what_ffprobe_reports() {
    let info = media::probe(&media("video/bigbuckbunny.mp4")).unwrap();
    assert_eq!(
        (info.width, info.height, info.video_codec.as_str()),
        (1280, 720, "h264")
    );
    assert!(info.has_audio);
    assert!((info.duration_s - 5.31).abs() < 0.05, "{}", info.duration_s);
    assert!(matches!(
        media::probe(Path::new("/nonexistent.mp4")),
        Err(MediaError::InvalidMedia(_))
    ));
}
