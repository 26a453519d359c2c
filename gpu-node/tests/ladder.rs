//! Adaptive-streaming ladders on real clips, checked by FFmpeg's own `ffprobe` reading the
//! HLS master playlist, each media playlist and the MPD: every rendition decodes, lasts as
//! long as the source (within a frame), has its keyframes at the same timestamps as every
//! other rendition, and keeps to its bitrate.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::AtomicBool;

use common::media;
use kiln_gpu_node::media::{encode_ladder, LadderOutcome};
use kiln_protocol::ladder::Packaging;
use kiln_protocol::{HardwarePolicy, LadderParams, Preset, Resolution, Rung, RungRate, VideoCodec};

fn probe(args: &[&str], target: &Path) -> String {
    let out = Command::new("ffprobe")
        .args(["-v", "error"])
        .args(args)
        .arg(target)
        .output()
        .expect("ffprobe runs");
    assert!(
        out.status.success(),
        "ffprobe {args:?} {}: {}",
        target.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// (keyframe timestamps, frames decoded, duration) of a playlist's video.
fn video_of(playlist: &Path) -> (Vec<f64>, u64, f64) {
    let packets = probe(
        &[
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=pts_time,flags",
            "-of",
            "csv=p=0",
        ],
        playlist,
    );
    let keys: Vec<f64> = packets
        .lines()
        .filter(|l| l.split(',').nth(1).is_some_and(|f| f.starts_with('K')))
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect();
    let frames: u64 = probe(
        &[
            "-select_streams",
            "v:0",
            "-count_frames",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
        ],
        playlist,
    )
    .lines()
    .next()
    .unwrap()
    .trim()
    .parse()
    .unwrap();
    let duration: f64 = probe(
        &["-show_entries", "format=duration", "-of", "csv=p=0"],
        playlist,
    )
    .lines()
    .next()
    .unwrap()
    .trim()
    .parse()
    .unwrap();
    (keys, frames, duration)
}

fn source_video(path: &Path) -> (u64, f64, f64) {
    let out = probe(
        &[
            "-select_streams",
            "v:0",
            "-count_frames",
            "-show_entries",
            "stream=nb_read_frames,r_frame_rate,duration",
            "-of",
            "csv=p=0:nk=0",
        ],
        path,
    );
    let mut frames = 0;
    let mut fps = 0.0;
    let mut duration = 0.0;
    for kv in out.lines().next().unwrap().trim().split(',') {
        match kv.split_once('=') {
            Some(("nb_read_frames", v)) => frames = v.parse().unwrap(),
            Some(("duration", v)) => duration = v.parse().unwrap(),
            Some(("r_frame_rate", v)) => {
                let (n, d) = v.split_once('/').unwrap();
                fps = n.parse::<f64>().unwrap() / d.parse::<f64>().unwrap();
            }
            _ => {}
        }
    }
    (frames, fps, duration)
}

fn rung(h: u32, rate: RungRate) -> Rung {
    Rung {
        resolution: Resolution::Height { height: h },
        rate,
    }
}

fn run(src: &Path, dir: &Path, params: &LadderParams) -> LadderOutcome {
    let cancel = AtomicBool::new(false);
    let mut last = 0.0f32;
    let out = encode_ladder(src, dir, params, &cancel, &mut |p| {
        assert!(p.percent >= last, "progress went back");
        last = p.percent;
    })
    .expect("the ladder encodes");
    out
}

/// The checks every ladder must pass; returns each rendition's keyframe timestamps.
fn check_ladder(src: &Path, dir: &Path, out: &LadderOutcome, sizes: &[(u32, u32)], audio: bool) {
    let (src_frames, fps, src_duration) = source_video(src);
    let frame = 1.0 / fps;
    let master = std::fs::read_to_string(dir.join("master.m3u8")).unwrap();
    let variants: Vec<&str> = master
        .lines()
        .filter(|l| l.starts_with("#EXT-X-STREAM-INF:"))
        .collect();
    assert_eq!(variants.len(), sizes.len(), "{master}");
    for (v, (w, h)) in variants.iter().zip(sizes) {
        for attr in ["BANDWIDTH=", "AVERAGE-BANDWIDTH=", "CODECS=", "FRAME-RATE="] {
            assert!(v.contains(attr), "{attr} missing: {v}");
        }
        assert!(v.contains(&format!("RESOLUTION={w}x{h}")), "{v}");
    }
    assert_eq!(out.report.renditions.len(), sizes.len());
    assert_eq!(out.files.last().unwrap(), Path::new("master.m3u8"));

    // ffprobe reads the master playlist: every variant's streams are there.
    let streams = probe(
        &[
            "-show_entries",
            "stream=codec_type,width,height",
            "-of",
            "csv=p=0",
        ],
        &dir.join("master.m3u8"),
    );
    for (w, h) in sizes {
        assert!(
            streams
                .lines()
                .any(|l| l.starts_with(&format!("video,{w},{h}"))),
            "{streams}"
        );
    }
    if audio {
        assert!(streams.lines().any(|l| l.starts_with("audio")), "{streams}");
    }
    // …and the MPD: one video stream per rendition (and the audio).
    let dash = probe(
        &[
            "-show_entries",
            "stream=codec_type,width,height",
            "-of",
            "csv=p=0",
        ],
        &dir.join("manifest.mpd"),
    );
    // (ffprobe lists each stream again under its program: count distinct ones. A per-title
    // ladder may have two rungs of one size, so distinct sizes are what can be compared.)
    let dash_video = dash
        .lines()
        .filter(|l| l.starts_with("video"))
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let distinct = sizes
        .iter()
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    assert_eq!(dash_video, distinct, "{dash}");
    assert_eq!(
        dash.lines().any(|l| l.starts_with("audio")),
        audio,
        "{dash}"
    );

    let mut first_keys: Option<Vec<f64>> = None;
    for (i, r) in out.report.renditions.iter().enumerate() {
        let (keys, frames, duration) = video_of(&dir.join(&r.playlist));
        assert_eq!(frames, src_frames, "rendition {i}: every frame decodes");
        assert!(
            (duration - src_duration).abs() <= frame + 1e-3,
            "rendition {i}: {duration} s vs the source's {src_duration} s"
        );
        // Keyframes on the segment cadence, the same in every rendition.
        let gop = out.report.keyframe_interval.unwrap() as f64 / fps;
        for pair in keys.windows(2) {
            assert!(
                (pair[1] - pair[0] - gop).abs() < frame / 2.0,
                "rendition {i}: {keys:?}"
            );
        }
        match &first_keys {
            None => first_keys = Some(keys),
            Some(k0) => assert_eq!(&keys, k0, "rendition {i} keyframes differ from rendition 0"),
        }
        // Bitrate rungs keep to their target: the video's own mean from its segments.
        if let Some(kbps) = r.target_kbps {
            let measured = segment_bytes(dir, i) as f64 * 8.0 / src_duration / 1000.0;
            assert!(
                measured <= kbps as f64 * 1.15 && measured >= kbps as f64 * 0.4,
                "rendition {i}: {measured:.0} kbps for a {kbps} kbps target"
            );
            assert!(r.bandwidth >= r.average_bandwidth, "{r:?}");
        }
    }
}

#[test]
fn h264_ladder_of_three_with_audio_once() {
    let src = media("video/bigbuckbunny.mp4");
    let dir = tempfile::tempdir().unwrap();
    let params = LadderParams {
        codec: VideoCodec::H264,
        per_title: None,
        renditions: Some(vec![
            rung(720, RungRate::Bitrate { kbps: 1500 }),
            rung(360, RungRate::Bitrate { kbps: 600 }),
            rung(240, RungRate::Quality { quality: 28 }),
        ]),
        segment_secs: 2,
        packaging: Packaging::both(),
        preset: Some(Preset::Veryfast),
        hardware: HardwarePolicy::Cpu,
        audio: Default::default(),
        edit: Default::default(),
        chunk_secs: None,
    };
    let out = run(&src, dir.path(), &params);
    check_ladder(
        &src,
        dir.path(),
        &out,
        &[(1280, 720), (640, 360), (426, 240)],
        true,
    );
    // The AAC track is copied once, as its own rendition.
    assert_eq!(out.report.audio, "copied");
    let master = std::fs::read_to_string(dir.path().join("master.m3u8")).unwrap();
    assert_eq!(master.matches("TYPE=AUDIO").count(), 1, "{master}");
    assert!(
        out.report.renditions[0].codecs.starts_with("avc1."),
        "{:?}",
        out.report.renditions[0]
    );
}

#[test]
fn av1_ladder_keyframes_line_up() {
    let src = media("video/bikes.mp4");
    let dir = tempfile::tempdir().unwrap();
    let params = LadderParams {
        codec: VideoCodec::Av1,
        per_title: None,
        renditions: Some(vec![
            rung(272, RungRate::Quality { quality: 30 }),
            rung(136, RungRate::Bitrate { kbps: 150 }),
        ]),
        segment_secs: 2,
        packaging: Packaging::both(),
        preset: Some(Preset::Svt(12)),
        hardware: HardwarePolicy::Cpu,
        audio: Default::default(),
        edit: Default::default(),
        chunk_secs: None,
    };
    let out = run(&src, dir.path(), &params);
    check_ladder(&src, dir.path(), &out, &[(640, 272), (320, 136)], false);
    assert!(
        out.report.renditions[0].codecs.starts_with("av01."),
        "{:?}",
        out.report.renditions[0]
    );
}

#[test]
fn dash_only_ladders_keep_no_playlists_and_a_failed_one_leaves_nothing() {
    let src = media("video/bikes.mp4");
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    let params = LadderParams {
        codec: VideoCodec::H264,
        per_title: None,
        renditions: None,
        segment_secs: 4,
        packaging: vec![Packaging::Dash],
        preset: Some(Preset::Ultrafast),
        hardware: HardwarePolicy::Cpu,
        audio: Default::default(),
        edit: Default::default(),
        chunk_secs: None,
    };
    let out = run(&src, &tree, &params);
    assert_eq!(out.files.last().unwrap(), Path::new("manifest.mpd"));
    assert!(
        out.files
            .iter()
            .all(|f| f.extension().is_none_or(|e| e != "m3u8")),
        "{:?}",
        out.files
    );
    // 640x272: the default ladder's one rung that fits, 240p.
    assert_eq!((out.width, out.height), (564, 240));

    let junk = dir.path().join("junk.mp4");
    std::fs::write(&junk, b"not a video at all").unwrap();
    let failed = dir.path().join("failed");
    let err = encode_ladder(
        &junk,
        &failed,
        &params,
        &AtomicBool::new(false),
        &mut |_| {},
    )
    .unwrap_err();
    assert_eq!(err.code().as_str(), "invalid_media", "{err}");
    assert!(!failed.exists());
}

#[test]
fn an_edited_ladder_is_trimmed_cropped_and_marked_once_for_every_rendition() {
    use kiln_gpu_node::media::{encode_ladder_edited, EditFiles};
    use kiln_protocol::edit::{Asset, Crop, Edit, Gravity, Watermark};
    let src = media("video/bigbuckbunny.mp4");
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    let mark = dir.path().join("mark.png");
    common::ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "color=white:s=64x32",
        "-frames:v",
        "1",
        mark.to_str().unwrap(),
    ]);
    let mut w = Watermark::new(Asset::Key("k".into()));
    w.width_fraction = Some(0.25);
    let params = LadderParams {
        codec: VideoCodec::H264,
        per_title: None,
        renditions: Some(vec![
            rung(480, RungRate::Bitrate { kbps: 900 }),
            rung(240, RungRate::Quality { quality: 28 }),
        ]),
        segment_secs: 1,
        packaging: Packaging::both(),
        preset: Some(Preset::Veryfast),
        hardware: HardwarePolicy::Cpu,
        audio: Default::default(),
        edit: Edit {
            start_s: Some(1.0),
            end_s: Some(3.5),
            crop: Some(Crop::parse("1:1", Gravity::Center).unwrap()),
            watermark: Some(w),
            ..Edit::default()
        },
        chunk_secs: None,
    };
    let files = EditFiles {
        watermark: Some(mark),
        subtitles: None,
    };
    let out = encode_ladder_edited(
        &src,
        &tree,
        &params,
        &files,
        &AtomicBool::new(false),
        &mut |_| {},
    )
    .expect("the edited ladder encodes");
    assert!((out.duration_s - 2.5).abs() < 1e-6, "{}", out.duration_s);
    assert_eq!((out.width, out.height), (480, 480));
    let master = std::fs::read_to_string(tree.join("master.m3u8")).unwrap();
    assert!(master.contains("RESOLUTION=480x480"), "{master}");
    assert!(master.contains("RESOLUTION=240x240"), "{master}");
    let mut keys0: Option<Vec<f64>> = None;
    for (i, r) in out.report.renditions.iter().enumerate() {
        let playlist = tree.join(&r.playlist);
        let (keys, frames, duration) = video_of(&playlist);
        // 25 fps, [1.0, 3.5): frames 25 … 87.
        assert_eq!(frames, 63, "rendition {i}");
        assert!(
            (duration - 2.5).abs() <= 0.04 + 1e-3,
            "rendition {i}: {duration}"
        );
        match &keys0 {
            None => keys0 = Some(keys),
            Some(k) => assert_eq!(&keys, k, "rendition {i}"),
        }
        // The watermark, laid once at the top size, is in every rendition, bottom right.
        let side = r.height as usize;
        let gray = Command::new("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(&playlist)
            .args(["-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "gray", "-"])
            .output()
            .unwrap()
            .stdout;
        assert_eq!(gray.len(), side * side);
        // At 480: 120x60 at 16 px from the corner; at 240 half that.
        let s = side as f64 / 480.0;
        let (x0, x1) = ((480.0 - 16.0 - 116.0) * s, (480.0 - 20.0) * s);
        let (y0, y1) = ((480.0 - 16.0 - 56.0) * s, (480.0 - 20.0) * s);
        let mut sum = 0.0;
        let mut n = 0.0;
        for y in y0 as usize..y1 as usize {
            for x in x0 as usize..x1 as usize {
                sum += gray[y * side + x] as f64;
                n += 1.0;
            }
        }
        assert!(sum / n > 200.0, "rendition {i}: {:.0}", sum / n);
    }
}

#[test]
fn an_av1_ladder_with_opus_audio_once() {
    let src = media("video/bigbuckbunny.mp4");
    let dir = tempfile::tempdir().unwrap();
    let params = LadderParams {
        codec: VideoCodec::Av1,
        per_title: None,
        renditions: Some(vec![
            rung(360, RungRate::Quality { quality: 30 }),
            rung(180, RungRate::Quality { quality: 34 }),
        ]),
        segment_secs: 2,
        packaging: Packaging::both(),
        preset: Some(Preset::Svt(12)),
        hardware: HardwarePolicy::Cpu,
        audio: kiln_protocol::ladder::LadderAudio::Opus,
        edit: Default::default(),
        chunk_secs: None,
    };
    let out = run(&src, dir.path(), &params);
    check_ladder(&src, dir.path(), &out, &[(640, 360), (320, 180)], true);
    // The 6-channel AAC is encoded once, to stereo Opus, as its own rendition.
    assert_eq!(out.report.audio, "opus");
    let master = std::fs::read_to_string(dir.path().join("master.m3u8")).unwrap();
    assert_eq!(master.matches("TYPE=AUDIO").count(), 1, "{master}");
    assert!(
        master.contains("av01.") && master.contains(",opus\""),
        "{master}"
    );
    let audio = probe(
        &[
            "-select_streams",
            "a:0",
            "-show_entries",
            "stream=codec_name,channels",
            "-of",
            "csv=p=0",
        ],
        &dir.path().join("manifest.mpd"),
    );
    assert_eq!(audio.lines().next(), Some("opus,2"), "{audio}");
}

#[test]
fn a_per_title_ladder_lies_on_its_measured_hull_and_meets_its_target() {
    // The first 4 s of the real street clip (640x272, no audio): probed whole.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("bikes4s.mp4");
    common::ffmpeg(&[
        "-i",
        media("video/bikes.mp4").to_str().unwrap(),
        "-t",
        "4",
        "-c",
        "copy",
        src.to_str().unwrap(),
    ]);
    let out_dir = dir.path().join("ladder");
    let target = 93.0;
    let params = LadderParams {
        codec: VideoCodec::H264,
        per_title: Some(kiln_protocol::PerTitle {
            target_vmaf: target,
        }),
        renditions: None,
        segment_secs: 2,
        packaging: Packaging::both(),
        preset: Some(Preset::Veryfast),
        hardware: HardwarePolicy::Cpu,
        audio: Default::default(),
        edit: Default::default(),
        chunk_secs: None,
    };
    let out = run(&src, &out_dir, &params);
    let pt = out.report.per_title.clone().expect("a per-title report");
    assert!(pt.whole, "a 4 s source is probed whole");
    // The grid: 4 heights (272, 240, 182, 136) × 4 CRFs, then the search at the top height.
    assert!(pt.probes.len() >= 16, "{} probes", pt.probes.len());
    let heights: std::collections::BTreeSet<u32> = pt.probes.iter().map(|p| p.height).collect();
    assert_eq!(
        heights.into_iter().collect::<Vec<_>>(),
        [136, 182, 240, 272]
    );

    // The hull the report flags is the hull of the reported points, recomputed here.
    let points: Vec<(f64, f64)> = pt.probes.iter().map(|p| (p.kbps, p.vmaf)).collect();
    let hull = kiln_gpu_node::quality::hull::upper_hull(&points);
    for (i, p) in pt.probes.iter().enumerate() {
        assert_eq!(p.on_hull, hull.contains(&i), "probe {i}: {p:?}");
        assert!(!p.chosen || p.on_hull, "chosen off the hull: {p:?}");
    }
    // Every rendition is a chosen hull point, top first, 1.5× or more apart in bitrate.
    let chosen: Vec<_> = pt.probes.iter().filter(|p| p.chosen).collect();
    assert_eq!(chosen.len(), out.report.renditions.len());
    assert!(
        out.report.renditions.len() >= 2,
        "{:?}",
        out.report.renditions
    );
    for r in &out.report.renditions {
        assert!(
            chosen
                .iter()
                .any(|p| (p.width, p.height, Some(p.crf), Some(p.vmaf))
                    == (r.width, r.height, r.crf, r.vmaf_predicted)),
            "{r:?} is not a chosen probe"
        );
    }
    for w in out.report.renditions.windows(2) {
        let (a, b) = (w[0].kbps_predicted.unwrap(), w[1].kbps_predicted.unwrap());
        assert!(a >= 1.5 * b, "{a} kbps then {b} kbps");
        assert!(w[1].height <= w[0].height);
    }
    // The top rung is the cheapest hull point at the target, and the whole encode meets it.
    let top = &out.report.renditions[0];
    assert!(top.vmaf_predicted.unwrap() >= target, "{top:?}");
    assert!(pt
        .probes
        .iter()
        .filter(|p| p.on_hull && p.vmaf >= target)
        .all(|p| p.kbps >= top.kbps_predicted.unwrap()));
    let measured = top.vmaf_measured.expect("the top rung was measured");
    assert!(
        (measured - top.vmaf_predicted.unwrap()).abs() < 2.0,
        "measured {measured} vs predicted {:?}",
        top.vmaf_predicted
    );
    assert_eq!(pt.met, measured >= target);
    assert!(measured >= target - 1.0, "{measured}");
    // Lower rungs measure lower.
    for w in out.report.renditions.windows(2) {
        assert!(w[1].vmaf_measured.unwrap() < w[0].vmaf_measured.unwrap());
    }
    // And it is a ladder like any other: every rendition decodes whole, keyframes aligned.
    let sizes: Vec<(u32, u32)> = out
        .report
        .renditions
        .iter()
        .map(|r| (r.width, r.height))
        .collect();
    check_ladder(&src, &out_dir, &out, &sizes, false);
    // The probes were cleaned up: only the tree is left.
    assert!(!dir.path().join("ladder.per-title").exists());
}

#[test]
fn a_rung_whose_even_size_bends_the_aspect_past_the_muxers_tolerance_still_muxes() {
    // carphone is 176x144 with a 12:11 sample aspect, 194x144 as displayed: at 96 lines that is
    // 129.3 wide, and an even 130 bends the aspect by half a per cent, past the 0.4 % FFmpeg's
    // muxer allows between a stream and its encoder unless both state the same SAR.
    let src = media("video/carphone_pristine.mp4");
    let dir = tempfile::tempdir().unwrap();
    let params = LadderParams {
        codec: VideoCodec::H264,
        per_title: None,
        renditions: Some(vec![
            rung(144, RungRate::Quality { quality: 30 }),
            rung(96, RungRate::Quality { quality: 30 }),
        ]),
        segment_secs: 2,
        packaging: Packaging::both(),
        preset: Some(Preset::Ultrafast),
        hardware: HardwarePolicy::Cpu,
        audio: Default::default(),
        edit: Default::default(),
        chunk_secs: None,
    };
    let out = run(&src, dir.path(), &params);
    let sizes: Vec<(u32, u32)> = out
        .report
        .renditions
        .iter()
        .map(|r| (r.width, r.height))
        .collect();
    assert_eq!((sizes[0].1, sizes[1].1), (144, 96), "{sizes:?}");
    check_ladder(&src, dir.path(), &out, &sizes, false);
}

/// Bytes of rendition `i`'s segments in a ladder's folder.
fn segment_bytes(dir: &Path, i: usize) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("chunk-stream{i}-"))
        })
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

#[test]
fn a_chunked_ladder_cuts_on_segments_and_matches_the_whole_one() {
    // bigbuckbunny looped to 21 s at 640x360 with its AAC: 4 chunks of 3 two-second
    // segments and a last one of 4 segments and a half.
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("long.mp4");
    common::ffmpeg(&[
        "-stream_loop",
        "-1",
        "-i",
        media("video/bigbuckbunny.mp4").to_str().unwrap(),
        "-t",
        "21",
        "-vf",
        "scale=640:360",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-c:a",
        "copy",
        src.to_str().unwrap(),
    ]);
    let mut params = LadderParams {
        codec: VideoCodec::H264,
        per_title: None,
        renditions: Some(vec![
            rung(360, RungRate::Quality { quality: 26 }),
            rung(240, RungRate::Bitrate { kbps: 300 }),
        ]),
        segment_secs: 2,
        packaging: Packaging::both(),
        preset: Some(Preset::Veryfast),
        hardware: HardwarePolicy::Cpu,
        audio: Default::default(),
        edit: Default::default(),
        chunk_secs: None,
    };
    let whole_dir = tmp.path().join("whole");
    let whole = run(&src, &whole_dir, &params);
    params.chunk_secs = Some(6.0);
    let dir = tmp.path().join("chunked");
    let out = run(&src, &dir, &params);
    let sizes = [(640, 360), (426, 240)];
    check_ladder(&src, &dir, &out, &sizes, true);
    assert_eq!(out.report.audio, "copied");

    // Every chunk × rendition encoded once, chunks of whole segments.
    let chunks = out
        .report
        .chunks
        .as_ref()
        .expect("a chunked ladder lists its chunks");
    assert_eq!((chunks.total, chunks.done), (8, 8), "{chunks:?}");
    assert_eq!(chunks.chunks.len(), 8);
    for (n, c) in chunks.chunks.iter().enumerate() {
        assert_eq!((c.index, c.rung), ((n / 2) as u32, Some((n % 2) as u32)));
        assert_eq!(c.frames % 50, if n < 6 { 0 } else { 25 }, "{c:?}");
        assert!(c.bytes > 0 && c.attempts == 1, "{c:?}");
    }

    // The same segments as the whole ladder: keyframes at the same times, as many segments,
    // as many bytes give or take a few per cent.
    for (i, (c, w)) in out
        .report
        .renditions
        .iter()
        .zip(&whole.report.renditions)
        .enumerate()
    {
        let (keys, ..) = video_of(&dir.join(&c.playlist));
        let (whole_keys, ..) = video_of(&whole_dir.join(&w.playlist));
        assert_eq!(keys, whole_keys, "rendition {i}");
        let (a, b) = (segment_bytes(&dir, i), segment_bytes(&whole_dir, i));
        let off = (a as f64 - b as f64) / b as f64;
        eprintln!(
            "rendition {i}: {:+.1} % against the whole ladder",
            off * 100.0
        );
        assert!(
            off.abs() < 0.05,
            "rendition {i}: {a} bytes chunked, {b} whole"
        );
    }
    let playlist = |d: &Path| std::fs::read_to_string(d.join("media_0.m3u8")).unwrap();
    assert_eq!(
        playlist(&dir).matches("#EXTINF").count(),
        playlist(&whole_dir).matches("#EXTINF").count()
    );
    // Nothing of the chunks is left beside the tree.
    assert!(!tmp.path().join("chunked.chunks").exists());
}
