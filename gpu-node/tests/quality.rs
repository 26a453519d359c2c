//! Quality metrics against the reference tools on real clips: Kiln's VMAF, PSNR and SSIM (libvmaf
//! through rsmpeg-decoded frames) match libvmaf's own `vmaf` CLI and FFmpeg's psnr filter on the
//! same pair; sampled scenes are cut frame-exact; a `target_vmaf` encode meets its target and
//! reports the score it measured.

mod common;

use std::path::Path;
use std::sync::atomic::AtomicBool;

use common::{ffmpeg, ffprobe, media};
use kiln_gpu_node::media as kmedia;
use kiln_gpu_node::quality::{self, samples, vmaf, QualityError};
use kiln_protocol::{Preset, RateControl, VideoCodec, VideoParams};

/// Pooled means from libvmaf's own `vmaf` CLI on the same pair, decoded to Y4M by `ffmpeg`.
fn reference_scores(reference: &Path, distorted: &Path, dir: &Path) -> vmaf::ReferenceScores {
    let (r, d, json) = (dir.join("r.y4m"), dir.join("d.y4m"), dir.join("v.json"));
    for (src, y4m) in [(reference, &r), (distorted, &d)] {
        ffmpeg(&[
            "-i",
            src.to_str().unwrap(),
            "-pix_fmt",
            "yuv420p",
            y4m.to_str().unwrap(),
        ]);
    }
    vmaf::reference_scores(&r, &d, 2, &json).unwrap()
}

#[test]
fn scores_match_the_vmaf_cli_and_ffmpegs_psnr_on_a_real_pair() {
    let dir = tempfile::tempdir().unwrap();
    let (r, d) = (
        media("video/carphone_pristine.mp4"),
        media("video/carphone_distorted.mp4"),
    );
    let s = quality::compare(&r, &d, 2).unwrap();
    assert_eq!(s.frames, 120);
    assert_eq!((s.width, s.height), (176, 144));
    let vmaf::ReferenceScores { vmaf, psnr_y, ssim } = reference_scores(&r, &d, dir.path());
    assert!(
        (s.vmaf.mean - vmaf).abs() < 1e-3,
        "vmaf {} vs CLI {vmaf}",
        s.vmaf.mean
    );
    assert!(
        (s.psnr_y.mean - psnr_y).abs() < 1e-3,
        "psnr {} vs CLI {psnr_y}",
        s.psnr_y.mean
    );
    assert!(
        (s.ssim.mean - ssim).abs() < 1e-4,
        "ssim {} vs CLI {ssim}",
        s.ssim.mean
    );
    // FFmpeg's psnr filter per frame, pooled the same way (mean of frame PSNRs).
    let stats = dir.path().join("psnr.log");
    ffmpeg(&[
        "-i",
        d.to_str().unwrap(),
        "-i",
        r.to_str().unwrap(),
        "-lavfi",
        &format!("[0:v][1:v]psnr=stats_file={}", stats.display()),
        "-f",
        "null",
        "-",
    ]);
    let frames: Vec<(f64, f64)> = std::fs::read_to_string(&stats)
        .unwrap()
        .lines()
        .map(|l| {
            let f = |k: &str| -> f64 {
                l.split_whitespace()
                    .find_map(|kv| kv.strip_prefix(k))
                    .unwrap()
                    .parse()
                    .unwrap()
            };
            (f("psnr_y:"), f("psnr_avg:"))
        })
        .collect();
    assert_eq!(frames.len(), 120);
    let ff_y = frames.iter().map(|f| f.0).sum::<f64>() / 120.0;
    assert!(
        (s.psnr_y.mean - ff_y).abs() < 0.01,
        "psnr_y {} vs ffmpeg {ff_y}",
        s.psnr_y.mean
    );
    assert!(
        s.psnr_yuv.mean > s.psnr_y.mean,
        "chroma is cleaner than luma here"
    );
    assert!(s.vmaf.p1 <= s.vmaf.p5 && s.vmaf.p5 <= s.vmaf.mean && s.vmaf.min <= s.vmaf.p1);
}

#[test]
fn a_file_against_itself_scores_at_the_top_and_unrelated_files_are_refused() {
    let r = media("video/bikes.mp4");
    let s = quality::compare(&r, &r, 2).unwrap();
    assert_eq!(s.frames, 250);
    assert!(s.vmaf.mean > 97.0, "{}", s.vmaf.mean);
    assert_eq!(
        s.psnr_y.min, 60.0,
        "libvmaf caps identical 8-bit frames at 60 dB"
    );
    assert!((s.ssim.min - 1.0).abs() < 1e-9);
    match quality::compare(&r, &media("video/carphone_pristine.mp4"), 2) {
        Err(QualityError::FrameCount {
            reference: 250,
            distorted: 120,
        }) => {}
        other => panic!("expected a frame-count refusal, got {other:?}"),
    }
    assert!(quality::compare(&r, Path::new("/nonexistent.mp4"), 1).is_err());
}

#[test]
fn sampled_scenes_are_cut_frame_exact() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("samples.mkv");
    // bikes: 25 fps; two one-second samples.
    let clip =
        samples::extract(&media("video/bikes.mp4"), &[(2.0, 1.0), (6.0, 1.0)], &out).unwrap();
    assert_eq!(clip.frames, 50);
    let p = &ffprobe(&out)[0];
    assert_eq!((p.codec.as_str(), p.width, p.height), ("ffv1", 640, 272));
    // Lossless: the first sampled frame is the source's frame at 2.0 s, bit for bit.
    let raw = |args: &[&str], name: &str| {
        let path = dir.path().join(name);
        let mut a = args.to_vec();
        a.extend([
            "-frames:v",
            "1",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "yuv420p",
            path.to_str().unwrap(),
        ]);
        ffmpeg(&a);
        std::fs::read(path).unwrap()
    };
    let src = media("video/bikes.mp4");
    let a = raw(&["-ss", "2", "-i", src.to_str().unwrap()], "a.yuv");
    let b = raw(&["-i", out.to_str().unwrap()], "b.yuv");
    assert_eq!(a.len(), 640 * 272 * 3 / 2);
    assert!(
        a == b,
        "the sample's first frame differs from the source's at 2.0 s"
    );
}

fn target_params(target: f64) -> VideoParams {
    VideoParams {
        rate: RateControl::Vmaf { target },
        preset: Some(Preset::Veryfast),
        ..VideoParams::crf(VideoCodec::H264, 23)
    }
}

#[test]
fn target_vmaf_meets_its_target_and_reports_what_it_measured() {
    let dir = tempfile::tempdir().unwrap();
    let src = media("video/bikes.mp4");
    let out = dir.path().join("out.mp4");
    let mut percents = Vec::new();
    let o = kmedia::transcode(
        &src,
        &out,
        &target_params(90.0),
        &AtomicBool::new(false),
        &mut |p| percents.push(p.percent),
    )
    .unwrap();
    let v = o.report.vmaf.clone().expect("a vmaf report");
    assert!(v.met && v.achieved >= 90.0, "{v:?}");
    assert!(v.probes >= 2 && v.probes <= 7, "{v:?}");
    assert!((10..=51).contains(&v.crf));
    // A 10 s source is probed whole, so the prediction is the final encode itself.
    assert!((v.achieved - v.predicted).abs() < 0.05, "{v:?}");
    assert_eq!(v.predicted_size_bytes, o.output_size);
    // The score is the output's: measured again independently here.
    let again = quality::compare(&src, &out, 2).unwrap();
    assert!((again.vmaf.mean - v.achieved).abs() < 0.01);
    // One CRF higher misses the target (the search found the edge), within the probes made.
    let mut higher = target_params(0.0);
    higher.rate = RateControl::EncoderCrf { crf: v.crf + 1 };
    let h = dir.path().join("higher.mp4");
    kmedia::transcode(&src, &h, &higher, &AtomicBool::new(false), &mut |_| {}).unwrap();
    let hs = quality::compare(&src, &h, 2).unwrap();
    assert!(
        hs.vmaf.mean < 90.0,
        "crf {} also meets 90: {}",
        v.crf + 1,
        hs.vmaf.mean
    );
    assert!(percents.windows(2).all(|w| w[0] <= w[1]), "{percents:?}");
    assert!(
        !dir.path().join("out.vmaf-search").exists(),
        "scratch removed"
    );
}

#[test]
fn a_long_source_is_searched_on_samples_and_the_prediction_holds() {
    let dir = tempfile::tempdir().unwrap();
    // 30 s: four 3 s samples (12 s) are searched instead of the whole.
    let src = dir.path().join("long.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x180:rate=25:duration=30",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-crf",
        "12",
        src.to_str().unwrap(),
    ]);
    let params = target_params(93.0);
    let searched = quality::target::find_crf(
        &src,
        &params,
        93.0,
        &quality::target::SearchOptions {
            samples: 4,
            sample_s: 3.0,
            threads: 2,
        },
        &dir.path().join("scratch"),
        &AtomicBool::new(false),
        &mut |_| {},
    )
    .unwrap();
    assert!(!searched.whole);
    assert!(searched.found.met);
    let out = dir.path().join("out.mp4");
    let mut p = params.clone();
    p.rate = RateControl::EncoderCrf {
        crf: searched.found.crf as u8,
    };
    let o = kmedia::transcode(&src, &out, &p, &AtomicBool::new(false), &mut |_| {}).unwrap();
    let full = quality::compare(&src, &out, 2).unwrap();
    // The samples predict the whole: score within 2 VMAF, size within 25 %.
    assert!(
        (full.vmaf.mean - searched.found.score).abs() < 2.0,
        "{} vs {}",
        full.vmaf.mean,
        searched.found.score
    );
    let ratio = searched.predicted_bytes as f64 / o.output_size as f64;
    assert!(
        (0.75..1.25).contains(&ratio),
        "predicted {} vs {}",
        searched.predicted_bytes,
        o.output_size
    );
}
