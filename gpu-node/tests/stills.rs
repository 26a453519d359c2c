//! Thumbnails and storyboards on real clips: the images decode at the planned size, the
//! index lists them, the storyboard's WebVTT parses, its cues cover the video end to end and
//! every `#xywh=` tile lies inside its sprite sheet and shows the frame a thumbnail of the
//! same time shows.

mod common;

use std::sync::atomic::AtomicBool;

use common::media;
use kiln_gpu_node::media::stills::{storyboard, thumbnails};
use kiln_protocol::stills::{StillFormat, StoryboardParams, ThumbnailParams};

fn parse_vtt_time(s: &str) -> f64 {
    let parts: Vec<f64> = s.split(':').map(|p| p.parse().unwrap()).collect();
    parts[0] * 3600.0 + parts[1] * 60.0 + parts[2]
}

#[test]
fn thumbnails_at_times_and_past_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let p = ThumbnailParams {
        at: Some(vec![2.5, 0.0, 99.0]),
        every: None,
        width: 320,
        format: StillFormat::Webp,
    };
    let out = thumbnails(
        &media("video/bigbuckbunny.mp4"),
        dir.path(),
        &p,
        &AtomicBool::new(false),
    )
    .unwrap();
    assert_eq!((out.width, out.height), (320, 180));
    assert_eq!(out.files.len(), 4);
    assert_eq!(out.files.last().unwrap().to_str(), Some("thumbnails.json"));
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("thumbnails.json")).unwrap())
            .unwrap();
    let times: Vec<f64> = index
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["time"].as_f64().unwrap())
        .collect();
    assert_eq!(times, [0.0, 2.5, 99.0]);
    let mut images = Vec::new();
    for e in index.as_array().unwrap() {
        let img = image::open(dir.path().join(e["file"].as_str().unwrap())).unwrap();
        assert_eq!((img.width(), img.height()), (320, 180));
        images.push(img.to_rgb8());
    }
    // Different moments of an animation are different pictures.
    let diff = images[0]
        .pixels()
        .zip(images[1].pixels())
        .map(|(a, b)| (a[1] as i32 - b[1] as i32).unsigned_abs() as u64)
        .sum::<u64>() as f64
        / (320.0 * 180.0);
    assert!(
        diff > 3.0,
        "the 0 s and 2.5 s thumbnails look the same ({diff})"
    );
}

#[test]
fn storyboard_tiles_lie_inside_their_sprites_and_match_thumbnails() {
    let src = media("video/bikes.mp4");
    let dir = tempfile::tempdir().unwrap();
    let p = StoryboardParams {
        every: 2.0,
        width: 160,
        columns: 2,
        format: StillFormat::Jpg,
    };
    let out = storyboard(&src, dir.path(), &p, &AtomicBool::new(false)).unwrap();
    // 10 s every 2 s: 5 tiles, 4 per sheet → 2 sheets.
    assert_eq!(out.files.len(), 3, "{:?}", out.files);
    let vtt = std::fs::read_to_string(dir.path().join("storyboard.vtt")).unwrap();
    assert!(vtt.starts_with("WEBVTT\n"));
    let mut cues = Vec::new();
    for block in vtt.split("\n\n").skip(1) {
        let mut lines = block.lines();
        let (a, b) = lines.next().unwrap().split_once(" --> ").unwrap();
        let target = lines.next().unwrap();
        let (file, xywh) = target.split_once("#xywh=").unwrap();
        let n: Vec<u32> = xywh.split(',').map(|v| v.parse().unwrap()).collect();
        cues.push((parse_vtt_time(a), parse_vtt_time(b), file.to_string(), n));
    }
    assert_eq!(cues.len(), 5);
    assert_eq!(cues[0].0, 0.0);
    for w in cues.windows(2) {
        assert!((w[1].0 - w[0].1).abs() < 1e-3, "cues leave a gap: {w:?}");
    }
    assert!(
        (cues[4].1 - 10.0).abs() < 0.1,
        "the last cue ends with the video: {:?}",
        cues[4]
    );
    let thumb_dir = tempfile::tempdir().unwrap();
    let thumb = ThumbnailParams {
        at: Some(vec![6.0]),
        every: None,
        width: 160,
        format: StillFormat::Jpg,
    };
    thumbnails(&src, thumb_dir.path(), &thumb, &AtomicBool::new(false)).unwrap();
    let at6 = image::open(thumb_dir.path().join("thumb-00001.jpg"))
        .unwrap()
        .to_rgb8();
    for (i, (start, _, file, n)) in cues.iter().enumerate() {
        let sheet = image::open(dir.path().join(file)).unwrap().to_rgb8();
        let [x, y, w, h] = n[..] else { panic!("{n:?}") };
        assert_eq!((w, h), (160, 68));
        assert!(
            x + w <= sheet.width() && y + h <= sheet.height(),
            "tile {i} {n:?} outside {file}"
        );
        if *start == 6.0 {
            let tile = image::imageops::crop_imm(&sheet, x, y, w, h).to_image();
            let diff = tile
                .pixels()
                .zip(at6.pixels())
                .map(|(a, b)| (a[1] as i32 - b[1] as i32).unsigned_abs() as u64)
                .sum::<u64>() as f64
                / (w * h) as f64;
            assert!(diff < 6.0, "the 6 s tile is not the 6 s frame ({diff})");
        }
    }
}
