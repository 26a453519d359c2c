//! Edge-case sources made with FFmpeg's own generators: odd sizes, rotation, upscaling, VFR,
//! 10-bit; and cancellation of every encoder mid-encode.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use common::{ffmpeg, ffprobe, media, packet_times, psnr};
use kiln_gpu_node::media::{self, MediaError};
use kiln_protocol::{JobErrorCode, Preset, Resolution, VideoCodec, VideoParams};

/// The cancellation test times how fast an encode stops, so it runs alone: every other test
/// here holds this lock shared, the cancellation test holds it exclusively.
static CPU: RwLock<()> = RwLock::new(());

fn shared_cpu() -> RwLockReadGuard<'static, ()> {
    CPU.read().unwrap_or_else(|e| e.into_inner())
}

fn run(input: &Path, out: &Path, p: &VideoParams) -> Result<media::TranscodeOutcome, MediaError> {
    media::transcode(input, out, p, &AtomicBool::new(false), &mut |_| {})
}

fn at(codec: VideoCodec, res: &str) -> VideoParams {
    VideoParams {
        resolution: Resolution::parse(res).unwrap(),
        ..VideoParams::crf(codec, 23)
    }
}

#[test]
fn odd_sized_source_becomes_even() {
    let _cpu = shared_cpu();
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
    let o = run(&src, &out, &at(VideoCodec::H264, "")).unwrap();
    assert_eq!((o.width, o.height, o.frames), (172, 98, 30));
    let v = &ffprobe(&out)[0];
    assert_eq!(
        (v.width, v.height, v.pix_fmt.as_str()),
        (172, 98, "yuv420p")
    );
}

/// Set the first track's display matrix to a 90° clockwise rotation, as phones write it
/// (FFmpeg 5.1's muxer has no option for it).
fn rotate_90(path: &Path) {
    let mut b = std::fs::read(path).unwrap();
    let i = b.windows(4).position(|w| w == b"tkhd").expect("tkhd");
    let m: [i32; 9] = [0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x4000_0000];
    for (k, v) in m.iter().enumerate() {
        let at = i + 44 + 4 * k;
        b[at..at + 4].copy_from_slice(&v.to_be_bytes());
    }
    std::fs::write(path, b).unwrap();
}

#[test]
fn rotation_is_applied_to_the_pixels_like_the_cli_does() {
    let _cpu = shared_cpu();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("phone.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x180:rate=25:duration=1",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-qp",
        "0",
        src.to_str().unwrap(),
    ]);
    rotate_90(&src);
    let info = media::probe(&src).unwrap();
    assert_eq!((info.rotation, info.display_size()), (90, (180, 320)));

    let out = dir.path().join("out.mp4");
    let o = run(&src, &out, &at(VideoCodec::H264, "")).unwrap();
    assert_eq!((o.width, o.height, o.report.rotation), (180, 320, 90));
    let v = &ffprobe(&out)[0];
    assert_eq!((v.width, v.height), (180, 320));
    // The CLI's autorotated frames are the reference: same direction, same pixels.
    let reference = dir.path().join("cli.mkv");
    ffmpeg(&[
        "-i",
        src.to_str().unwrap(),
        "-c:v",
        "ffv1",
        reference.to_str().unwrap(),
    ]);
    let db = psnr(&out, &reference, 180, 320);
    assert!(
        db > 35.0,
        "rotated output differs from the CLI's: {db:.1} dB"
    );

    // A height request on a portrait source means the displayed height.
    let out = dir.path().join("small.mp4");
    let o = run(&src, &out, &at(VideoCodec::H264, "160p")).unwrap();
    assert_eq!((o.width, o.height), (90, 160));
}

#[test]
fn upscaling_is_refused_unless_asked_for() {
    let _cpu = shared_cpu();
    let dir = tempfile::tempdir().unwrap();
    let src = media("video/carphone_pristine.mp4");
    let out = dir.path().join("up.mp4");
    let err = run(&src, &out, &at(VideoCodec::H264, "288p")).unwrap_err();
    assert_eq!(err.code(), JobErrorCode::InvalidSettings);
    assert!(err.to_string().contains("allow_upscale"), "{err}");
    assert!(!out.exists());
    let p = VideoParams {
        allow_upscale: true,
        ..at(VideoCodec::H264, "288p")
    };
    let o = run(&src, &out, &p).unwrap();
    // Its pixels are 128:117 wide: 288 lines show 386 square pixels across.
    assert_eq!((o.width, o.height), (386, 288));
}

#[test]
fn variable_frame_rate_timing_is_kept() {
    let _cpu = shared_cpu();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("vfr.mkv");
    // 60 frames whose spacing alternates 20 ms / 60 ms: no constant rate anywhere.
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=160x120:rate=25:duration=2.4",
        "-vf",
        "settb=1/1000,setpts='(floor(N/2)*0.08+mod(N,2)*0.02)/TB'",
        "-frames:v",
        "60",
        "-fps_mode",
        "passthrough",
        "-enc_time_base",
        "1/1000",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        src.to_str().unwrap(),
    ]);
    let want = packet_times(&src);
    let gaps: Vec<f64> = want.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().filter(|g| (**g - 0.02).abs() < 0.002).count() >= 28,
        "the generated source is not VFR: {gaps:?}"
    );
    let out = dir.path().join("vfr.mp4");
    let o = run(&src, &out, &at(VideoCodec::H264, "")).unwrap();
    assert_eq!(o.frames, 60);
    let got = packet_times(&out);
    assert_eq!(got.len(), want.len());
    let t0 = (got[0], want[0]);
    for (g, w) in got.iter().zip(&want) {
        assert!(
            ((g - t0.0) - (w - t0.1)).abs() < 0.002,
            "timing changed: {got:?} vs {want:?}"
        );
    }
}

#[test]
fn ten_bit_sources_stay_ten_bit_where_the_codec_allows() {
    let _cpu = shared_cpu();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("ten.mkv");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x180:rate=25:duration=1",
        "-pix_fmt",
        "yuv420p10le",
        "-c:v",
        "libx265",
        "-preset",
        "ultrafast",
        "-x265-params",
        "log-level=error",
        src.to_str().unwrap(),
    ]);
    assert_eq!(media::probe(&src).unwrap().bit_depth, 10);
    for (codec, want) in [
        (VideoCodec::H265, "yuv420p10le"),
        (VideoCodec::Av1, "yuv420p10le"),
        (VideoCodec::H264, "yuv420p"),
    ] {
        let out = dir.path().join(format!("ten-{}.mp4", codec.as_str()));
        let mut p = at(codec, "");
        p.preset = Some(Preset::Veryfast);
        run(&src, &out, &p).unwrap_or_else(|e| panic!("{codec:?}: {e}"));
        let v = &ffprobe(&out)[0];
        assert_eq!(v.pix_fmt, want, "{codec:?}");
        let db = psnr(&out, &src, 320, 180);
        assert!(db > 35.0, "{codec:?}: {db:.1} dB");
    }
}

/// Threads of this process named `kiln-encode`: an encoder thread lives until its encoder
/// is closed (which joins the encoder's own workers).
fn encoder_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .flatten()
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|n| n.trim() == "kiln-encode")
                })
                .count()
        })
        .unwrap_or(0)
}

/// Wait for every encoder thread to end: a cancelled encoder winds down off the job's clock,
/// but it must wind down.
fn encoders_closed(after: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while encoder_threads() > 0 {
        assert!(
            Instant::now() < deadline,
            "{after}: the encoder never closed after the cancel"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Cancelling mid-encode returns within a second, leaves no output, and every encoder
/// (SVT-AV1 included, which hangs if closed carelessly) shuts down. Timed alone, with the
/// last codec's encoder closed, so that the second measures the cancel and not a CPU shared
/// with other encodes.
#[test]
fn cancellation_stops_every_encoder_within_a_second() {
    let _cpu = CPU.write().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let src = media("video/bigbuckbunny.mp4");
    encoders_closed("the tests before");
    for codec in VideoCodec::ALL {
        let out = dir.path().join(format!("cancel-{}.mkv", codec.as_str()));
        let mut p = VideoParams::crf(codec, 23);
        p.container = kiln_protocol::Container::Mkv;
        p.preset = Some(Preset::Slow);
        let cancel = Arc::new(AtomicBool::new(false));
        let started = Arc::new(AtomicBool::new(false));
        let worker = {
            let (cancel, started, out, src, p) = (
                cancel.clone(),
                started.clone(),
                out.clone(),
                src.clone(),
                p.clone(),
            );
            std::thread::spawn(move || {
                let r = media::transcode(&src, &out, &p, &cancel, &mut |pr| {
                    if pr.percent > 0.0 {
                        started.store(true, Ordering::SeqCst);
                    }
                });
                (r, Instant::now())
            })
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !started.load(Ordering::SeqCst) && !worker.is_finished() {
            assert!(Instant::now() < deadline, "{codec:?} never started");
            std::thread::sleep(Duration::from_millis(20));
        }
        let asked = Instant::now();
        cancel.store(true, Ordering::SeqCst);
        let (r, returned) = worker.join().unwrap();
        let took = returned.duration_since(asked);
        assert!(
            matches!(r, Err(MediaError::Cancelled)),
            "{codec:?}: {:?}",
            r.map(|o| o.frames)
        );
        assert!(
            took < Duration::from_secs(1),
            "{codec:?} took {took:?} to stop"
        );
        assert!(!out.exists(), "{codec:?} left its output");
        eprintln!("{codec:?}: stopped {took:?} after cancel");
        encoders_closed(&format!("{codec:?}"));
    }
}
