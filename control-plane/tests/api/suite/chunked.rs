//! A video output encoded in chunks (`chunk_secs`): the job lists its chunks, the download
//! holds every frame of the source and its audio; what chunking cannot do yet is refused. A
//! ladder in chunks: one piece per chunk and rendition, played whole through its signed master
//! playlist.

use crate::prelude::*;

pub async fn run(t: &Target, dir: &Path, _s: &super::State) {
    // An account of its own, so these requests leave the others' per-minute budgets alone.
    let key = t.own_account_key("chunker", "chunkers").await;
    let clip = t
        .upload(&key, &media("video/bigbuckbunny.mp4"), "bunny.mp4")
        .await;

    for (output, needle) in [
        (json!({"type": "video", "chunk_secs": 1}), "chunk_secs"),
        (
            json!({"type": "video", "chunk_secs": 2, "start": 1}),
            "chunk_secs does not yet apply",
        ),
    ] {
        let bad = t
            .post(
                "/api/v1/jobs",
                &key,
                json!({"source": {"upload_id": clip}, "outputs": [output.clone()]}),
            )
            .await;
        assert_eq!(bad.status, 400, "{output}: {}", bad.json());
        let msg = bad.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(msg.contains(needle), "{output}: {msg}");
    }

    let r = t
        .post(
            "/api/v1/jobs",
            &key,
            json!({"source": {"upload_id": clip},
                   "outputs": [{"type": "video", "codec": "h264", "preset": "ultrafast",
                                "resolution": "360p", "chunk_secs": 2}]}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.json());
    let id = r.json()["jobs"][0]["id"].as_str().unwrap().to_string();
    let doc = t.wait_job(&key, &id).await;
    assert_eq!(doc["status"], "completed", "{doc}");
    // 5.3 s with one keyframe: cut frame-exact at 2 s and 4 s.
    let chunks = &doc["encoding"]["chunks"];
    assert_eq!(chunks["total"], 3, "{doc}");
    assert_eq!(chunks["done"], 3, "{doc}");
    let list = chunks["chunks"].as_array().unwrap();
    let frames: u64 = list.iter().map(|c| c["frames"].as_u64().unwrap()).sum();
    assert_eq!(frames, 132, "{doc}");
    assert_eq!(list[1]["on_keyframe"], false, "{doc}");
    // The job's own counts, final once done.
    assert_eq!(
        doc["chunks"],
        json!({"total": 3, "done": 3, "running": 0, "queued": 0, "failed": 0}),
        "{doc}"
    );

    let file = t.get(doc["download_url"].as_str().unwrap(), &key).await;
    assert_eq!(file.status, 200);
    let out = dir.join("chunked.mp4");
    std::fs::write(&out, &file.bytes).unwrap();
    let text = ffprobe_streams(out.to_str().unwrap(), "codec_type,height,nb_read_frames");
    assert!(text.lines().any(|l| l == "video,360,132"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("audio")), "{text}");

    // A size target in chunks: met on the whole file, the 384 kbps 5.1 audio shrunk to fit
    // (0.3 MB over 5.3 s is 449 kbps in all; a quarter of it is 112), each chunk aimed by its
    // complexity.
    let r = t
        .post(
            "/api/v1/jobs",
            &key,
            json!({"source": {"upload_id": clip},
                   "outputs": [{"type": "video", "codec": "h264", "preset": "veryfast",
                                "resolution": "360p", "method": "size",
                                "target_size_mb": 0.3, "chunk_secs": 2}]}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.json());
    let id = r.json()["jobs"][0]["id"].as_str().unwrap().to_string();
    let doc = t.wait_job(&key, &id).await;
    assert_eq!(doc["status"], "completed", "{doc}");
    let size = doc["output_size"].as_f64().unwrap();
    assert!((size - 300_000.0).abs() / 300_000.0 <= 0.05, "{doc}");
    let enc = &doc["encoding"];
    assert_eq!(enc["target_size"], 300_000, "{doc}");
    assert_eq!(enc["audio_shrunk"]["kbps"], 96, "{doc}");
    assert_eq!(enc["audio_shrunk"]["channels"], 2, "{doc}");
    assert_eq!(enc["audio"], "aac", "{doc}");
    let list = enc["chunks"]["chunks"].as_array().unwrap();
    assert_eq!(list.len(), 3, "{doc}");
    assert!(
        list.iter()
            .all(|c| c["kbps"].as_f64().unwrap() > 0.0 && c["estimate_bytes"].as_u64().unwrap() > 0),
        "{doc}"
    );

    ladder(t, &key, &clip).await;
}

/// A ladder in 2 s chunks of 2 s segments: bigbuckbunny's 132 frames cut at 50 and 100 (the
/// last 32 frames, over half a chunk, their own), two renditions each, every frame in each rendition as FFmpeg
/// plays the signed master playlist.
async fn ladder(t: &Target, key: &str, clip: &str) {
    let bad = t
        .post(
            "/api/v1/jobs",
            key,
            json!({"source": {"upload_id": clip},
                   "outputs": [{"type": "ladder", "chunk_secs": 2, "crop": "1:1"}]}),
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.json());
    let r = t
        .post(
            "/api/v1/jobs",
            key,
            json!({"source": {"upload_id": clip},
                   "outputs": [{"type": "ladder", "codec": "h264", "segment_secs": 2,
                                "preset": "ultrafast", "chunk_secs": 2,
                                "renditions": [{"resolution": "360p", "bitrate_kbps": 600},
                                               {"resolution": "240p", "quality": 30}]}]}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.json());
    let id = r.json()["jobs"][0]["id"].as_str().unwrap().to_string();
    let doc = t.wait_job(key, &id).await;
    assert_eq!(doc["status"], "completed", "{doc}");
    let chunks = &doc["encoding"]["chunks"];
    assert_eq!(
        (chunks["total"].as_u64(), chunks["done"].as_u64()),
        (Some(6), Some(6)),
        "{doc}"
    );
    let list = chunks["chunks"].as_array().unwrap();
    let pieces: Vec<(u64, u64, u64)> = list
        .iter()
        .map(|c| {
            (
                c["index"].as_u64().unwrap(),
                c["rung"].as_u64().unwrap(),
                c["frames"].as_u64().unwrap(),
            )
        })
        .collect();
    let want = [
        (0, 0, 50),
        (0, 1, 50),
        (1, 0, 50),
        (1, 1, 50),
        (2, 0, 32),
        (2, 1, 32),
    ];
    assert_eq!(pieces, want, "{doc}");
    assert_eq!(
        doc["chunks"],
        json!({"total": 6, "done": 6, "running": 0, "queued": 0, "failed": 0}),
        "{doc}"
    );
    assert_eq!(doc["encoding"]["keyframe_interval"], 50, "{doc}");
    let url = format!(
        "{}{}",
        t.base,
        doc["streaming"]["signed_hls_url"].as_str().unwrap()
    );
    let probed = ffprobe_streams(&url, "codec_type,width,height,nb_read_frames");
    for size in ["video,640,360,132", "video,426,240,132"] {
        assert!(probed.lines().any(|l| l == size), "{size}: {probed}");
    }
    assert!(probed.lines().any(|l| l.starts_with("audio")), "{probed}");
}
