//! The rsmpeg pipeline on real media, every codec and container, checked with FFmpeg's own
//! tools (ffprobe for what was written, the psnr filter for how good it is).

mod common;

use std::path::Path;
use std::sync::atomic::AtomicBool;

use common::{ffmpeg, ffprobe, ffprobe_format, media, psnr};
use kiln_gpu_node::media::{self, MediaError};
use kiln_protocol::{Container, JobErrorCode, Resolution, VideoCodec, VideoParams};

fn params(codec: VideoCodec, quality: u8, res: &str) -> VideoParams {
    VideoParams {
        resolution: Resolution::parse(res).unwrap(),
        ..VideoParams::crf(codec, quality)
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
    let (r, progress) = run(
        &media("video/bikes.mp4"),
        &out,
        &params(VideoCodec::H264, 28, "320"),
    );
    let outcome = r.expect("transcode");
    assert_eq!((outcome.width, outcome.height), (320, 136));
    assert_eq!(outcome.frames, 250);
    assert_eq!(outcome.report.audio, "none");
    assert_eq!(outcome.report.encoder, "libx264");
    assert_eq!(outcome.report.passes, 1);
    assert_eq!(outcome.output_size, std::fs::metadata(&out).unwrap().len());
    assert!(
        progress.windows(2).all(|w| w[0] <= w[1]),
        "progress went backwards: {progress:?}"
    );
    assert_eq!(progress.last(), Some(&100.0));

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
    let (r, _) = run(
        &media("video/bigbuckbunny.mp4"),
        &out,
        &params(VideoCodec::H264, 30, "360p"),
    );
    assert_eq!(r.expect("transcode").report.audio, "copied");
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

/// Every codec at the default quality (Konvrt's 23, mapped per codec) on a real clip: the
/// right codec in the right container, every frame, and PSNR above a floor per codec. The
/// floors sit about 1.5 dB under what this clip measures, so a broken mapping or a scaler
/// mistake fails while encoder version noise does not.
#[test]
fn every_codec_meets_its_quality_floor() {
    let dir = tempfile::tempdir().unwrap();
    let src = media("video/bikes.mp4");
    // (codec, container, ffprobe codec name, container name, PSNR floor dB)
    let cases = [
        // measured here: 40.7, 38.5, 41.3, 40.4 dB
        (VideoCodec::H264, Container::Mp4, "h264", "mov", 39.0),
        (VideoCodec::H265, Container::Mkv, "hevc", "matroska", 37.0),
        (VideoCodec::Av1, Container::Mp4, "av1", "mov", 39.5),
        (VideoCodec::Vp9, Container::Webm, "vp9", "webm", 39.0),
    ];
    for (codec, container, probe_name, format, floor) in cases {
        let out = dir
            .path()
            .join(format!("q-{}.{}", codec.as_str(), container.extension()));
        let p = VideoParams {
            container,
            ..params(codec, 23, "320")
        };
        let (r, _) = run(&src, &out, &p);
        let o = r.unwrap_or_else(|e| panic!("{codec:?}: {e}"));
        assert_eq!(o.frames, 250, "{codec:?}");
        assert_eq!(o.report.encoder, codec.cpu_encoder());
        let v = &ffprobe(&out)[0];
        assert_eq!(
            (v.codec.as_str(), v.width, v.height),
            (probe_name, 320, 136),
            "{codec:?}"
        );
        let (fmt, duration) = ffprobe_format(&out);
        assert!(fmt.contains(format), "{codec:?}: container {fmt}");
        assert!((duration - 10.0).abs() <= 0.1, "{codec:?}: {duration}");
        let db = psnr(&out, &src, 320, 136);
        eprintln!("{codec:?}: {db:.2} dB, {} bytes", o.output_size);
        assert!(
            db >= floor,
            "{codec:?}: PSNR {db:.2} dB below its {floor} dB floor"
        );
    }
}

#[test]
fn audio_is_reencoded_where_the_container_cannot_hold_it() {
    let dir = tempfile::tempdir().unwrap();
    // AAC 5.1 into WebM: Opus (stereo).
    let out = dir.path().join("bbb.webm");
    let p = VideoParams {
        container: Container::Webm,
        preset: Some(kiln_protocol::Preset::Svt(12)),
        ..params(VideoCodec::Av1, 30, "240p")
    };
    let (r, _) = run(&media("video/bigbuckbunny.mp4"), &out, &p);
    assert_eq!(r.expect("transcode").report.audio, "opus");
    let streams = ffprobe(&out);
    let a = streams.iter().find(|s| s.kind == "audio").expect("audio");
    assert_eq!(a.codec, "opus");
    let (fmt, duration) = ffprobe_format(&out);
    assert!(fmt.contains("webm"), "{fmt}");
    assert!((duration - 5.3).abs() < 0.15, "{duration}");

    // PCM into MP4: AAC. And of two audio tracks only the first is kept.
    let src = dir.path().join("pcm.mkv");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=160x90:rate=25:duration=2",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=44100:duration=2",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=880:sample_rate=22050:duration=2",
        "-map",
        "0",
        "-map",
        "1",
        "-map",
        "2",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-c:a:0",
        "pcm_s16le",
        "-c:a:1",
        "flac",
        src.to_str().unwrap(),
    ]);
    let out = dir.path().join("pcm.mp4");
    let (r, _) = run(&src, &out, &params(VideoCodec::H264, 23, ""));
    assert_eq!(r.expect("transcode").report.audio, "aac");
    let streams = ffprobe(&out);
    let audio: Vec<_> = streams.iter().filter(|s| s.kind == "audio").collect();
    assert_eq!(audio.len(), 1, "only the first track: {streams:?}");
    assert_eq!(audio[0].codec, "aac");
    assert!((audio[0].duration - 2.0).abs() < 0.1, "{:?}", audio[0]);
    // The first track (440 Hz at 44.1 kHz) is the one kept.
    let rate = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "a:0", "-show_entries"])
        .args(["stream=sample_rate", "-of", "csv=p=0"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&rate.stdout).trim(), "44100");
}

#[test]
fn containers_refuse_codecs_they_cannot_hold() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.webm");
    let p = VideoParams {
        container: Container::Webm,
        ..params(VideoCodec::H264, 23, "")
    };
    let (r, _) = run(&media("video/bikes.mp4"), &out, &p);
    assert_eq!(r.unwrap_err().code(), JobErrorCode::InvalidSettings);
    assert!(!out.exists());
}

#[test]
fn garbage_and_truncated_inputs_fail_with_stable_codes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.mp4");
    let p = params(VideoCodec::H264, 23, "");

    let junk = dir.path().join("junk.mp4");
    std::fs::write(&junk, vec![0x5au8; 50_000]).unwrap();
    let (r, _) = run(&junk, &out, &p);
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
    for codec in [VideoCodec::H264, VideoCodec::Av1] {
        let (r, _) = run(&cut, &out, &params(codec, 23, "320"));
        let err = r.unwrap_err();
        assert_eq!(err.code(), JobErrorCode::DecodeFailed, "{codec:?}: {err}");
        assert!(!out.exists());
    }

    // Header cut off entirely.
    let head = dir.path().join("head.mp4");
    std::fs::write(&head, &bytes[..2000]).unwrap();
    let (r, _) = run(&head, &out, &p);
    assert_eq!(r.unwrap_err().code(), JobErrorCode::InvalidMedia);

    // Corrupted in the middle (bytes overwritten, length kept): FFmpeg conceals what it can,
    // as the CLI does; the job either completes with every frame slot or fails cleanly.
    let mut bad = bytes.clone();
    let mid = bad.len() / 2;
    for b in &mut bad[mid..mid + 20_000] {
        *b ^= 0xa5;
    }
    let corrupt = dir.path().join("corrupt.mp4");
    std::fs::write(&corrupt, &bad).unwrap();
    let (r, _) = run(&corrupt, &out, &p);
    match r {
        Ok(o) => assert!(o.frames > 200, "{o:?}"),
        Err(e) => {
            assert_eq!(e.code(), JobErrorCode::DecodeFailed, "{e}");
            assert!(!out.exists());
        }
    }
}

#[test]
fn probe_reports_what_ffprobe_reports() {
    let info = media::probe(&media("video/bigbuckbunny.mp4")).unwrap();
    assert_eq!(
        (info.width, info.height, info.video_codec.as_str()),
        (1280, 720, "h264")
    );
    assert!(info.has_audio);
    assert_eq!(info.audio_codec.as_deref(), Some("aac"));
    assert!(info.audio_bitrate > 0);
    assert_eq!((info.rotation, info.bit_depth), (0, 8));
    assert!((info.duration_s - 5.31).abs() < 0.05, "{}", info.duration_s);
    assert!(matches!(
        media::probe(Path::new("/nonexistent.mp4")),
        Err(MediaError::InvalidMedia(_))
    ));
}
