//! Edits of a video output end to end: a vertical 9:16 cut of a real clip, trimmed, scaled,
//! watermarked and subtitled from the caller's uploads, downloaded and checked with ffprobe;
//! the job shows the edit; refusals name what is wrong.

use crate::prelude::*;

pub async fn run(t: &Target, dir: &Path, _s: &super::State) {
    // An account of its own, so these requests leave acme's per-minute budget to later parts.
    let key = t.own_account_key("editor", "editors").await;
    let clip = t
        .upload(&key, &media("video/bigbuckbunny.mp4"), "bunny.mp4")
        .await;
    let mark_path = dir.join("mark.png");
    let made = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "color=white:s=64x32",
        ])
        .args(["-frames:v", "1"])
        .arg(&mark_path)
        .status()
        .unwrap();
    assert!(made.success());
    let subs_path = dir.join("subs.srt");
    std::fs::write(&subs_path, "1\n00:00:01,500 --> 00:00:03,000\nKiln\n\n").unwrap();
    let mark = t.upload(&key, &mark_path, "mark.png").await;
    let subs = t.upload(&key, &subs_path, "subs.srt").await;

    let r = t
        .post(
            "/api/v1/jobs",
            &key,
            json!({"source": {"upload_id": clip},
                   "outputs": [{"type": "video", "codec": "h264", "preset": "ultrafast",
                                "start": 1, "end": "00:00:03.5",
                                "crop": {"aspect": "9:16", "gravity": "center"},
                                "resolution": "360x640",
                                "watermark": {"upload": mark, "position": "top-right", "opacity": 0.8, "width": 0.2},
                                "subtitles": {"upload": subs}}]}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.json());
    let id = r.json()["jobs"][0]["id"].as_str().unwrap().to_string();

    // Refusals, before anything runs: each names what is wrong.
    let refused = [
        (
            json!({"type": "video", "watermark": {"upload": subs}}),
            422,
            "watermark",
        ),
        (
            json!({"type": "video", "subtitles": {"upload": mark}}),
            422,
            "subtitles",
        ),
        (
            json!({"type": "video", "subtitles": {"upload": "no-such-upload"}}),
            404,
            "no-such-upload",
        ),
        (json!({"type": "video", "start": 60}), 422, "past the end"),
        (
            json!({"type": "video", "crop": "0,0,2000,100"}),
            422,
            "outside",
        ),
        (
            json!({"type": "video", "start": 3, "end": 1}),
            400,
            "after start",
        ),
        (
            json!({"type": "image", "format": "webp", "start": 1}),
            400,
            "video outputs only",
        ),
        (
            json!({"type": "video", "method": "vmaf", "target_vmaf": 90, "end": 2}),
            422,
            "target_vmaf",
        ),
    ];
    // Fleet mode stores sources in S3, where the control plane does not probe them: what
    // needs the media is refused by the node instead, as a failed job saying the same.
    let local = t.replica.is_none();
    for (output, status, needle) in refused {
        let bad = t
            .post(
                "/api/v1/jobs",
                &key,
                json!({"source": {"upload_id": clip}, "outputs": [output.clone()]}),
            )
            .await;
        if status == 422 && !local {
            assert_eq!(bad.status, 202, "{output}: {}", bad.json());
            let failed = bad.json()["jobs"][0]["id"].as_str().unwrap().to_string();
            let doc = t.wait_job(&key, &failed).await;
            assert_eq!(doc["status"], "failed", "{output}: {doc}");
            let msg = doc["error"]["message"].as_str().unwrap_or_default();
            assert!(msg.contains(needle), "{output}: {doc}");
            continue;
        }
        assert_eq!(bad.status, status, "{output}: {}", bad.json());
        let msg = bad.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(msg.contains(needle), "{output}: {msg}");
    }

    let doc = t.wait_job(&key, &id).await;
    assert_eq!(doc["status"], "completed", "{doc}");
    assert_eq!(doc["edit"]["start"], 1.0);
    assert_eq!(doc["edit"]["end"], 3.5);
    assert_eq!(doc["edit"]["crop"], "9:16");
    assert_eq!(doc["edit"]["watermark"]["position"], "top-right");
    assert_eq!(doc["edit"]["subtitles"], true);
    assert_eq!(doc["output"]["width"], 360);
    assert_eq!(doc["output"]["height"], 640);
    let duration = doc["output"]["duration"].as_f64().unwrap();
    assert!((duration - 2.5).abs() < 1e-6, "{doc}");

    let file = t.get(doc["download_url"].as_str().unwrap(), &key).await;
    assert_eq!(file.status, 200);
    let out = dir.join("vertical.mp4");
    std::fs::write(&out, &file.bytes).unwrap();
    let probe = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type,width,height,duration",
        ])
        .args(["-of", "csv=p=0"])
        .arg(&out)
        .output()
        .unwrap();
    let text = String::from_utf8(probe.stdout).unwrap();
    let video = text
        .lines()
        .find(|l| l.starts_with("video"))
        .expect("video");
    let fields: Vec<&str> = video.split(',').collect();
    assert_eq!((fields[1], fields[2]), ("360", "640"), "{text}");
    let v_dur: f64 = fields[3].parse().unwrap();
    assert!((v_dur - 2.5).abs() <= 1.0 / 25.0 + 1e-3, "{text}");
    let audio = text
        .lines()
        .find(|l| l.starts_with("audio"))
        .expect("audio kept");
    let a_dur: f64 = audio.rsplit(',').next().unwrap().parse().unwrap();
    assert!((a_dur - 2.5).abs() < 0.05, "{text}");

    // The watermark sits top right: white in the corner (72x36 at x 272..344, y 16..52).
    let gray = Command::new("ffmpeg")
        .args(["-v", "error", "-ss", "0.2", "-i"])
        .arg(&out)
        .args(["-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "gray", "-"])
        .output()
        .unwrap()
        .stdout;
    assert_eq!(gray.len(), 360 * 640);
    let mut corner = 0u64;
    for y in 20..48 {
        for x in 276..340 {
            corner += gray[y * 360 + x] as u64;
        }
    }
    let corner = corner as f64 / (28.0 * 64.0);
    assert!(
        corner > 180.0,
        "watermark at 80% over the picture: {corner:.0}"
    );
}
