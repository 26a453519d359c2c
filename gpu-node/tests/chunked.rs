//! One title in chunks, on a real clip looped past a minute: the chunked encode against the
//! same encode made whole (frames, duration, size, VMAF with Kiln's own quality code), chunk
//! starts as keyframes, audio carried once; a source with no keyframe for 40 s; a cancel.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{ffmpeg, ffprobe, ffprobe_format, media, packet_times};
use kiln_gpu_node::media::{self, chunked, MediaError};
use kiln_gpu_node::quality;
use kiln_protocol::{Preset, VideoCodec, VideoParams};

/// bigbuckbunny looped to `secs` at 320x180 with AAC audio; `gop` frames between keyframes
/// (scene cuts off when `gop` is large, so the stretch has no keyframe at all).
fn long_source(dir: &Path, secs: u32, gop: u32) -> PathBuf {
    let out = dir.join(format!("long-{secs}-{gop}.mp4"));
    let x264 = format!(
        "keyint={gop}:min-keyint={gop}:scenecut={}",
        if gop > 250 { 0 } else { 40 }
    );
    ffmpeg(&[
        "-stream_loop",
        "-1",
        "-i",
        media("video/bigbuckbunny.mp4").to_str().unwrap(),
        "-t",
        &secs.to_string(),
        "-vf",
        "scale=320:180",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-x264-params",
        &x264,
        "-c:a",
        "aac",
        "-b:a",
        "64k",
        out.to_str().unwrap(),
    ]);
    out
}

/// bikes (10 s, cut between shots) then bigbuckbunny played `plays` times (5.28 s each), at
/// 320x180 and 25 fps, video only, x264 with `x264_params`: a scene change where they meet,
/// and stretches of different complexity.
fn bikes_then_bunny(dir: &Path, plays: u32, x264_params: &str) -> PathBuf {
    let out = dir.join(format!(
        "bikes-bunny-{plays}-{}.mp4",
        x264_params.replace(':', "_")
    ));
    let chain = "[0:v]scale=320:180,setsar=1,fps=25[a];[1:v]scale=320:180,setsar=1,fps=25[b];\
                 [a][b]concat=n=2:v=1:a=0[v]";
    ffmpeg(&[
        "-i",
        media("video/bikes.mp4").to_str().unwrap(),
        "-stream_loop",
        &(plays - 1).to_string(),
        "-i",
        media("video/bigbuckbunny.mp4").to_str().unwrap(),
        "-filter_complex",
        chain,
        "-map",
        "[v]",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-x264-params",
        x264_params,
        out.to_str().unwrap(),
    ]);
    out
}

fn params() -> VideoParams {
    let mut p = VideoParams::crf(VideoCodec::H264, 23);
    p.preset = Some(Preset::Veryfast);
    p
}

/// Frames decoded by the `ffmpeg` CLI, which must decode the file without one error.
fn decoded_frames(path: &Path) -> u64 {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn codec_tag(path: &Path) -> String {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=codec_tag_string", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn keyframe_times(path: &Path) -> Vec<f64> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-skip_frame",
            "nokey",
        ])
        .args(["-show_entries", "frame=pts_time", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .collect()
}

#[test]
fn a_chunked_encode_matches_the_same_encode_made_whole() {
    let dir = tempfile::tempdir().unwrap();
    let src = long_source(dir.path(), 62, 100);
    let whole = dir.path().join("whole.mp4");
    let o = media::transcode(
        &src,
        &whole,
        &params(),
        &AtomicBool::new(false),
        &mut |_| {},
    )
    .unwrap();
    let joined = dir.path().join("chunked.mp4");
    let last = std::sync::Mutex::new(0.0f32);
    let c = chunked::transcode_chunked(
        &src,
        &joined,
        &params(),
        10.0,
        2,
        &AtomicBool::new(false),
        &|p, _| {
            let mut l = last.lock().unwrap();
            assert!(p >= *l - 1e-3, "progress went back from {} to {p}", *l);
            *l = p;
        },
    )
    .unwrap();
    assert_eq!(*last.lock().unwrap(), 100.0);
    assert!(
        !joined.with_extension("chunks").exists(),
        "scratch left behind"
    );

    // Every frame once, at the source's times.
    let n = c.chunks.len();
    assert!((5..=8).contains(&n), "{n} chunks of ~10 s in 62 s");
    // The clip loops every 5.28 s: a scene change at each join at least, and cuts made there.
    assert!(c.scene_changes.unwrap() >= 11, "{:?}", c.scene_changes);
    assert!(
        c.chunks.iter().filter(|ch| ch.span.at_scene).count() >= n - 2,
        "{:?}",
        c.chunks.iter().map(|ch| &ch.span).collect::<Vec<_>>()
    );
    assert_eq!(c.assembled.frames, o.frames);
    // Both keep every frame of the source, its last one's duration included (Kiln's packets
    // once had none, and MP4 then dropped the last frame: 1549 of 1550 decoded).
    assert_eq!(decoded_frames(&whole), decoded_frames(&src));
    assert_eq!(decoded_frames(&joined), decoded_frames(&whole));
    assert_eq!(decoded_frames(&joined), o.frames);
    let (_, dw) = ffprobe_format(&whole);
    let (_, dc) = ffprobe_format(&joined);
    assert!((dw - dc).abs() <= 0.04, "whole {dw} s, chunked {dc} s");
    assert!((dw - 62.0).abs() <= 0.02, "whole {dw} s of 62");
    let streams = ffprobe(&joined);
    assert!(
        streams
            .iter()
            .any(|s| s.kind == "audio" && s.codec == "aac"),
        "{streams:?}"
    );
    assert_eq!(c.assembled.audio, "copied");
    // Each chunk starts on a keyframe of the joined file.
    let keys = keyframe_times(&joined);
    for ch in &c.chunks {
        assert!(
            keys.iter().any(|k| (k - ch.span.start_s).abs() < 0.02),
            "chunk {} at {} s: keyframes {keys:?}",
            ch.span.index,
            ch.span.start_s
        );
        assert_eq!(ch.attempts, 1);
    }

    // Size and quality as the whole encode's.
    let (sw, sc) = (
        std::fs::metadata(&whole).unwrap().len() as f64,
        std::fs::metadata(&joined).unwrap().len() as f64,
    );
    assert!(
        (sc / sw - 1.0).abs() <= 0.05,
        "chunked {sc} B vs whole {sw} B"
    );
    let vw = quality::compare(&src, &whole, 2).unwrap().vmaf.mean;
    let vc = quality::compare(&src, &joined, 2).unwrap().vmaf.mean;
    assert!(
        (vw - vc).abs() <= 0.5,
        "VMAF whole {vw:.2}, chunked {vc:.2}"
    );
    eprintln!(
        "{n} chunks: {sc} B vs {sw} B ({:+.1} %), VMAF {vc:.2} vs {vw:.2}",
        (sc / sw - 1.0) * 100.0
    );
}

/// Two real clips joined (bikes, then bigbuckbunny) with one keyframe in all: the scene
/// detection finds the join, and the title is cut there, frame-exact.
#[test]
fn a_scene_change_is_found_and_cut_at() {
    let dir = tempfile::tempdir().unwrap();
    let src = bikes_then_bunny(dir.path(), 1, "keyint=1000:min-keyint=1000:scenecut=0");
    assert_eq!(keyframe_times(&src).len(), 1, "one keyframe in all");
    let index = chunked::FrameIndex::read(&src).unwrap();
    let cuts = chunked::scenes::detect(&src, index.origin_s, &AtomicBool::new(false)).unwrap();
    assert!(cuts.windows(2).all(|w| w[0] < w[1]), "{cuts:?}");
    assert!(cuts.iter().any(|t| (t - 10.0).abs() < 0.03), "{cuts:?}");
    // bikes cuts between its own shots too (1.2, 3.0, 5.5, 7.5 and 9.7 s): asked for 10 s
    // chunks, the cut goes to the scene change nearest the mark, the join.
    let spans = chunked::plan(&index, 10.0, &cuts);
    assert!(
        spans
            .iter()
            .any(|s| s.at_scene && !s.on_keyframe && (s.start_s - 10.0).abs() < 0.03),
        "{spans:?} (scene changes {cuts:?})"
    );
    let cancel = AtomicBool::new(true);
    assert!(matches!(
        chunked::scenes::detect(&src, index.origin_s, &cancel),
        Err(MediaError::Cancelled)
    ));
}

#[test]
fn a_source_without_keyframes_is_cut_frame_exact() {
    let dir = tempfile::tempdir().unwrap();
    let src = long_source(dir.path(), 40, 100_000);
    assert_eq!(keyframe_times(&src).len(), 1, "one keyframe in 40 s");
    let out = dir.path().join("out.mkv");
    let mut p = params();
    p.container = kiln_protocol::Container::Mkv;
    p.chunk_secs = Some(10.0);
    // As a job runs it: progress with fps and ETA, the chunks on the report.
    let seen = std::sync::Mutex::new(Vec::new());
    let o = chunked::transcode(&src, &out, &p, &AtomicBool::new(false), &|pr| {
        seen.lock().unwrap().push(pr)
    })
    .unwrap();
    let seen = seen.into_inner().unwrap();
    assert!(
        seen.iter()
            .any(|pr| pr.percent > 0.0 && pr.percent < 100.0 && pr.fps > 0.0 && pr.eta_s.is_some()),
        "{seen:?}"
    );
    let report = o.report.chunks.expect("the chunks on the report");
    assert_eq!((report.total, report.done), (4, 4));
    assert!(report.chunks[1..].iter().all(|ch| !ch.on_keyframe));
    assert_eq!(report.chunks.iter().map(|c| c.frames).sum::<u64>(), 1000);
    assert_eq!((o.width, o.height, o.frames), (320, 180, 1000));
    assert_eq!(o.report.encoder, "libx264");
    assert_eq!(decoded_frames(&out), 40 * 25);
    let (_, d) = ffprobe_format(&out);
    assert!((d - 40.0).abs() <= 0.05, "{d} s");
}

#[test]
fn cancelling_stops_every_chunk_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let src = long_source(dir.path(), 40, 100);
    let out = dir.path().join("out.mp4");
    let cancel = AtomicBool::new(false);
    let mut p = params();
    p.preset = Some(Preset::Slow);
    let r = chunked::transcode_chunked(&src, &out, &p, 10.0, 2, &cancel, &|pct, _| {
        if pct > 5.0 {
            cancel.store(true, Ordering::SeqCst);
        }
    });
    assert!(matches!(r, Err(MediaError::Cancelled)), "{r:?}");
    assert!(!out.exists());
    assert!(!out.with_extension("chunks").exists());
}

#[test]
fn outputs_chunking_cannot_split_yet_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.mp4");
    // A VMAF target reaches the chunks as the CRF its search found (`chunked::transcode`).
    let mut vmaf = params();
    vmaf.rate = kiln_protocol::RateControl::Vmaf { target: 90.0 };
    let mut edited = params();
    edited.edit.start_s = Some(1.0);
    for p in [vmaf, edited] {
        let r = chunked::transcode_chunked(
            &media("video/bikes.mp4"),
            &out,
            &p,
            10.0,
            2,
            &AtomicBool::new(false),
            &|_, _| {},
        );
        assert!(matches!(r, Err(MediaError::InvalidSettings(_))), "{r:?}");
    }
}

/// Global rate control: a `size` title in chunks lands within ±5 % of its target, its bits
/// shared by each chunk's measured complexity (aims differ, the busiest chunk's the highest);
/// a `bitrate` title averages its bitrate over the whole title, not chunk by chunk.
#[test]
fn size_and_bitrate_targets_hold_for_the_whole_title() {
    let dir = tempfile::tempdir().unwrap();
    // Not the looped clip: cut at its scene changes, its chunks would be the same loops.
    let src = bikes_then_bunny(dir.path(), 7, "keyint=100:min-keyint=100:scenecut=40");
    let out = dir.path().join("sized.mp4");
    let mut p = params();
    p.rate = kiln_protocol::RateControl::Size { target_mb: 2.5 };
    let c =
        chunked::transcode_chunked(&src, &out, &p, 10.0, 2, &AtomicBool::new(false), &|_, _| {})
            .unwrap();
    let size = std::fs::metadata(&out).unwrap().len() as f64;
    let off = (size - 2.5e6) / 2.5e6;
    let aims: Vec<f64> = c.chunks.iter().map(|ch| ch.aimed_bps.unwrap()).collect();
    let estimates: Vec<u64> = c
        .chunks
        .iter()
        .map(|ch| ch.estimate_bytes.unwrap())
        .collect();
    let got: Vec<f64> = c
        .chunks
        .iter()
        .map(|ch| ch.video_bytes as f64 * 8.0 / 1000.0)
        .collect();
    eprintln!(
        "size: {size} bytes ({:+.2} %) in {} round(s), first pass {:.1} s; aims {aims:.0?} bps,          estimates {estimates:?} B, spent {got:.0?} kbit",
        off * 100.0,
        c.rounds,
        c.estimate_secs.unwrap()
    );
    assert!(
        off.abs() <= 0.05,
        "{size} bytes is {:+.1} % off",
        off * 100.0
    );
    assert_eq!(decoded_frames(&out), c.assembled.frames);
    let (lo, hi) = aims
        .iter()
        .fold((f64::MAX, 0.0f64), |(l, h), &a| (l.min(a), h.max(a)));
    assert!(hi > lo * 1.1, "aims do not follow complexity: {aims:?}");
    let busiest = (0..estimates.len()).max_by_key(|&i| estimates[i]).unwrap();
    let quietest = (0..estimates.len()).min_by_key(|&i| estimates[i]).unwrap();
    assert!(aims[busiest] > aims[quietest], "{aims:?} for {estimates:?}");

    let out = dir.path().join("bitrate.mp4");
    p.rate = kiln_protocol::RateControl::Bitrate {
        kbps: 250,
        max_kbps: Some(500),
        buffer_kbits: None,
    };
    let c =
        chunked::transcode_chunked(&src, &out, &p, 10.0, 2, &AtomicBool::new(false), &|_, _| {})
            .unwrap();
    let (_, secs) = ffprobe_format(&out);
    let kbps = c.assembled.video_bytes as f64 * 8.0 / secs / 1000.0;
    eprintln!("bitrate: {kbps:.0} kbps of video for 250");
    assert!(
        (kbps - 250.0).abs() / 250.0 < 0.08,
        "{kbps:.0} kbps for 250"
    );
}

/// x265 (open GOPs by default), SVT-AV1 and libvpx joined as seamlessly as x264: every frame
/// decodes, none lost or doubled, the size close to the whole encode's.
#[test]
fn every_codec_joins_without_a_seam() {
    let dir = tempfile::tempdir().unwrap();
    let src = long_source(dir.path(), 16, 50);
    let frames = decoded_frames(&src);
    for codec in [VideoCodec::H265, VideoCodec::Av1, VideoCodec::Vp9] {
        let mut p = VideoParams::crf(codec, 23);
        p.preset = Some(Preset::Veryfast);
        // HEVC in MP4, where Apple players need it tagged `hvc1`; the others in MKV.
        p.container = match codec {
            VideoCodec::H265 => kiln_protocol::Container::Mp4,
            _ => kiln_protocol::Container::Mkv,
        };
        let ext = p.container.extension();
        let whole = dir.path().join(format!("whole-{}.{ext}", codec.as_str()));
        media::transcode(&src, &whole, &p, &AtomicBool::new(false), &mut |_| {})
            .unwrap_or_else(|e| panic!("{codec:?}: {e}"));
        let joined = dir.path().join(format!("chunked-{}.{ext}", codec.as_str()));
        let c = chunked::transcode_chunked(
            &src,
            &joined,
            &p,
            4.0,
            2,
            &AtomicBool::new(false),
            &|_, _| {},
        )
        .unwrap_or_else(|e| panic!("{codec:?}: {e}"));
        assert!(c.chunks.len() >= 3, "{codec:?}: {} chunks", c.chunks.len());
        assert_eq!(decoded_frames(&joined), frames, "{codec:?}");
        if codec == VideoCodec::H265 {
            assert_eq!(codec_tag(&whole), "hvc1");
            assert_eq!(
                codec_tag(&joined),
                "hvc1",
                "the joined title tags HEVC as a whole one"
            );
        }
        let (sw, sc) = (
            std::fs::metadata(&whole).unwrap().len() as f64,
            std::fs::metadata(&joined).unwrap().len() as f64,
        );
        eprintln!(
            "{codec:?}: {} chunks, {:+.1} % size",
            c.chunks.len(),
            (sc / sw - 1.0) * 100.0
        );
        assert!(
            (sc / sw - 1.0).abs() <= 0.10,
            "{codec:?}: chunked {sc} B vs whole {sw} B"
        );
    }
}

/// A variable-frame-rate source keeps every frame's time across the chunk joins.
#[test]
fn variable_frame_rate_survives_the_joins() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("vfr.mkv");
    // 300 frames spaced 20 ms / 60 ms in turn (12 s), a keyframe every 50 frames.
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=160x120:rate=25:duration=12",
        "-vf",
        "settb=1/1000,setpts='(floor(N/2)*0.08+mod(N,2)*0.02)/TB'",
        "-frames:v",
        "300",
        "-fps_mode",
        "passthrough",
        "-enc_time_base",
        "1/1000",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        "50",
        src.to_str().unwrap(),
    ]);
    let want = packet_times(&src);
    let out = dir.path().join("vfr.mp4");
    let c = chunked::transcode_chunked(
        &src,
        &out,
        &params(),
        3.0,
        2,
        &AtomicBool::new(false),
        &|_, _| {},
    )
    .unwrap();
    assert!(c.chunks.len() >= 3, "{} chunks", c.chunks.len());
    let got = packet_times(&out);
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert!(
            ((g - got[0]) - (w - want[0])).abs() < 0.002,
            "timing changed: {got:?} vs {want:?}"
        );
    }
    assert_eq!(decoded_frames(&out), 300);
}
