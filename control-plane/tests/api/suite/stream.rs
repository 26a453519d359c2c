//! Adaptive streaming: a ladder job end to end (API → node → store → players), its tree
//! served through signed URLs only (FFmpeg's own `ffprobe` plays the signed master playlist
//! over HTTP and decodes every rendition), with the keyed route, `Range`, CORS, refusals, and
//! the whole tree delivered to an S3 destination.

use crate::prelude::*;

/// The URIs a playlist names (segments, init segments, media playlists).
fn uris(playlist: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in playlist.lines().map(str::trim) {
        if line.is_empty() {
            continue;
        }
        if !line.starts_with('#') {
            out.push(line.to_string());
        } else if let Some(i) = line.find("URI=\"") {
            let rest = &line[i + 5..];
            out.push(rest[..rest.find('"').unwrap()].to_string());
        }
    }
    out
}

pub async fn run(t: &Target, _dir: &Path, s: &super::State) {
    let key = s.key.clone();
    let upload = t
        .upload(&key, &media("video/bigbuckbunny.mp4"), "bunny.mp4")
        .await;
    let r = t
        .post(
            "/api/v1/jobs",
            &key,
            json!({"source": {"upload_id": upload},
                   "outputs": [{"type": "ladder", "codec": "h264", "segment_secs": 2, "preset": "ultrafast",
                                "renditions": [{"resolution": "360p", "bitrate_kbps": 600},
                                               {"resolution": "240p", "quality": 30},
                                               {"resolution": "1080p", "bitrate_kbps": 5000}]}],
                   "output": {"s3": t.s3_location(json!({"prefix": "ladders/"}))}}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.json());
    let id = r.json()["jobs"][0]["id"].as_str().unwrap().to_string();
    // Refusals name the field.
    let bad = t
        .post(
            "/api/v1/jobs",
            &key,
            json!({"source": {"upload_id": upload}, "outputs": [{"type": "ladder", "codec": "vp9"}]}),
        )
        .await;
    assert_eq!(bad.code(), "bad_request", "{}", bad.json());
    assert!(bad.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("h264, h265 or av1"));

    let doc = t.wait_job(&key, &id).await;
    assert_eq!(doc["status"], "completed", "{doc}");
    assert_eq!(doc["format"], "m3u8");
    let renditions = doc["encoding"]["renditions"].as_array().unwrap();
    assert_eq!(
        renditions.len(),
        2,
        "1080p is larger than the source: {doc}"
    );
    assert!(doc["encoding"]["ladder_notes"][0]
        .as_str()
        .unwrap()
        .contains("larger than the source"));
    assert_eq!(
        (
            renditions[0]["width"].as_i64(),
            renditions[0]["height"].as_i64()
        ),
        (Some(640), Some(360))
    );
    let signed_master = doc["streaming"]["signed_hls_url"]
        .as_str()
        .unwrap()
        .to_string();
    let signed_mpd = doc["streaming"]["signed_dash_url"]
        .as_str()
        .unwrap()
        .to_string();
    let base = signed_master.trim_end_matches("master.m3u8").to_string();
    assert_eq!(signed_mpd, format!("{base}manifest.mpd"));

    // Every file the manifests name, fetched with no key through the signed folder.
    let master = t.call(Method::GET, &signed_master, None, Body::None).await;
    assert_eq!(master.status, 200);
    assert_eq!(
        master.header("content-type").as_deref(),
        Some("application/vnd.apple.mpegurl")
    );
    assert_eq!(
        master.header("access-control-allow-origin").as_deref(),
        Some("*")
    );
    let master_text = String::from_utf8(master.bytes.clone()).unwrap();
    assert!(master_text.contains("AVERAGE-BANDWIDTH="), "{master_text}");
    let mut segments = 0;
    for playlist in uris(&master_text) {
        let r = t
            .call(Method::GET, &format!("{base}{playlist}"), None, Body::None)
            .await;
        assert_eq!(r.status, 200, "{playlist}");
        for seg in uris(&String::from_utf8(r.bytes).unwrap()) {
            let r = t
                .call(Method::GET, &format!("{base}{seg}"), None, Body::None)
                .await;
            assert_eq!(r.status, 200, "{seg}");
            assert_eq!(
                r.header("content-type").as_deref(),
                Some("video/mp4"),
                "{seg}"
            );
            assert!(!r.bytes.is_empty());
            segments += 1;
        }
    }
    assert!(
        segments >= 3 * 3,
        "3 playlists (2 video, 1 audio) of 3+ files each: {segments}"
    );
    let mpd = t.call(Method::GET, &signed_mpd, None, Body::None).await;
    assert_eq!(
        mpd.header("content-type").as_deref(),
        Some("application/dash+xml")
    );

    // FFmpeg's own player side, over HTTP, through the signed URL only.
    let url = format!("{}{signed_master}", t.base);
    let probed = ffprobe_streams(&url, "codec_type,width,height,nb_read_frames");
    for size in ["video,640,360,", "video,426,240,"] {
        let line = probed
            .lines()
            .find(|l| l.starts_with(size))
            .unwrap_or_else(|| panic!("{probed}"));
        let frames: u64 = line.rsplit(',').next().unwrap().parse().unwrap();
        assert!(frames >= 120, "{line}");
    }
    assert!(probed.lines().any(|l| l.starts_with("audio")), "{probed}");

    // A browser player too: hls.js in headless Chromium, from another origin, signed URLs
    // only. Once (on the embedded default): the tree served is the same on a fleet.
    if t.replica.is_none() {
        let report = crate::browser::play_hls(&url).await;
        let played = &report["played"];
        for (height, past) in [("240", 1.0), ("360", 2.0)] {
            let reached = played[height].as_f64().unwrap_or(0.0);
            assert!(
                reached > past,
                "the {height}p rendition played to {reached} s, not past {past} s: {report}"
            );
        }
        assert_eq!(report["audioTracks"], 1, "{report}");
    }

    // Range on a segment; the keyed route; refusals.
    let first_seg = format!("{base}chunk-stream0-00001.m4s");
    let r = t
        .call_with(
            &t.base,
            Method::GET,
            &first_seg,
            None,
            Body::None,
            &[("range", "bytes=0-99")],
        )
        .await;
    assert_eq!((r.status, r.bytes.len()), (206, 100));
    let keyed = t
        .get(&format!("/api/v1/jobs/{id}/stream/manifest.mpd"), &key)
        .await;
    assert_eq!(keyed.status, 200);
    assert_eq!(keyed.bytes, mpd.bytes);
    // ["", "api", "v1", "stream", id, expires, signature, "master.m3u8"]
    let parts: Vec<&str> = signed_master.split('/').collect();
    let flip = if parts[6].starts_with('0') { "1" } else { "0" };
    let forged = format!(
        "/api/v1/stream/{}/{}/{flip}{}/master.m3u8",
        parts[4],
        parts[5],
        &parts[6][1..]
    );
    assert_eq!(
        t.call(Method::GET, &forged, None, Body::None).await.code(),
        "forbidden"
    );
    assert_eq!(
        t.call(Method::GET, &format!("{base}nothing.m4s"), None, Body::None)
            .await
            .code(),
        "not_found"
    );
    assert_eq!(
        t.get(
            &format!("/api/v1/jobs/{}/stream/master.m3u8", s.compress_id),
            &key
        )
        .await
        .code(),
        "not_found",
        "a progressive output is not a stream"
    );
    assert_eq!(
        t.get(&format!("/api/v1/jobs/{id}/stream/master.m3u8"), &s.other)
            .await
            .code(),
        "not_found"
    );

    // The whole tree in the destination bucket, master last.
    let bucket = t.bucket();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let doc = t.get(&format!("/api/v1/jobs/{id}"), &key).await.json();
        if !doc["destination"].is_null() {
            assert_eq!(doc["destination"]["status"], "delivered", "{doc}");
            break;
        }
        assert!(Instant::now() < deadline, "never delivered: {doc}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let delivered = bucket.list_tree(&format!("ladders/{id}")).await.unwrap();
    for f in [
        "master.m3u8",
        "manifest.mpd",
        "media_0.m3u8",
        "init-stream0.m4s",
        "chunk-stream1-00001.m4s",
    ] {
        assert!(
            delivered.contains(&format!("ladders/{id}/{f}")),
            "{f} not in {delivered:?}"
        );
    }
    assert!(delivered.len() >= segments + 4, "{delivered:?}");

    // Thumbnails and a storyboard: folders too, read through their signed links.
    let r = t
        .post(
            "/api/v1/jobs",
            &key,
            json!({"source": {"upload_id": upload},
                   "outputs": [{"type": "thumbnails", "at": [0, 2.5], "width": 160},
                               {"type": "storyboard", "every": 1, "width": 96, "columns": 3, "format": "webp"}]}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.json());
    let ids: Vec<String> = r.json()["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect();
    let thumbs = t.wait_job(&key, &ids[0]).await;
    assert_eq!(thumbs["status"], "completed", "{thumbs}");
    let index = t
        .call(
            Method::GET,
            thumbs["files"]["signed_entry_url"].as_str().unwrap(),
            None,
            Body::None,
        )
        .await;
    assert_eq!(index.status, 200);
    let base = thumbs["files"]["signed_base_url"].as_str().unwrap();
    for e in index.json().as_array().unwrap() {
        let img = t
            .call(
                Method::GET,
                &format!("{base}{}", e["file"].as_str().unwrap()),
                None,
                Body::None,
            )
            .await;
        assert_eq!(img.header("content-type").as_deref(), Some("image/jpeg"));
        assert_eq!(image::load_from_memory(&img.bytes).unwrap().width(), 160);
    }
    let board = t.wait_job(&key, &ids[1]).await;
    assert_eq!(board["status"], "completed", "{board}");
    let vtt = t
        .call(
            Method::GET,
            board["files"]["signed_entry_url"].as_str().unwrap(),
            None,
            Body::None,
        )
        .await;
    assert_eq!(vtt.header("content-type").as_deref(), Some("text/vtt"));
    let vtt = String::from_utf8(vtt.bytes).unwrap();
    let base = board["files"]["signed_base_url"].as_str().unwrap();
    let sheets: BTreeSet<&str> = vtt
        .lines()
        .filter_map(|l| l.split_once("#xywh="))
        .map(|(f, _)| f)
        .collect();
    assert!(!sheets.is_empty(), "{vtt}");
    for sheet in sheets {
        let img = t
            .call(Method::GET, &format!("{base}{sheet}"), None, Body::None)
            .await;
        assert_eq!(img.header("content-type").as_deref(), Some("image/webp"));
        assert!(image::load_from_memory(&img.bytes).unwrap().width() >= 96);
    }

    per_title(t, &key).await;
}

/// `renditions: "auto"`: a per-title ladder chosen on the node from measured VMAF, its grid
/// and each rung's predicted and measured VMAF on the job, its master playlist served.
async fn per_title(t: &Target, key: &str) {
    let upload = t
        .upload(key, &media("video/carphone_pristine.mp4"), "carphone.mp4")
        .await;
    let r = t
        .post(
            "/api/v1/jobs",
            key,
            json!({"source": {"upload_id": upload},
                   "outputs": [{"type": "ladder", "renditions": "auto", "target_vmaf": 90,
                                "preset": "ultrafast", "segment_secs": 2}]}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.json());
    let id = r.json()["jobs"][0]["id"].as_str().unwrap().to_string();
    let doc = t.wait_job(key, &id).await;
    assert_eq!(doc["status"], "completed", "{doc}");
    let pt = &doc["encoding"]["per_title"];
    assert_eq!(pt["target_vmaf"], 90.0, "{doc}");
    let probes = pt["probes"].as_array().unwrap();
    // 176x144: heights 144 and 96, four CRFs each, then the search.
    assert!(probes.len() >= 8, "{pt}");
    let renditions = doc["encoding"]["renditions"].as_array().unwrap();
    assert_eq!(
        probes.iter().filter(|p| p["chosen"] == true).count(),
        renditions.len()
    );
    for r in renditions {
        assert!(r["vmaf_predicted"].as_f64().is_some(), "{r}");
        assert!(r["vmaf_measured"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["crf"].as_u64().is_some(), "{r}");
    }
    assert!(renditions[0]["vmaf_predicted"].as_f64().unwrap() >= 90.0);
    let master = t
        .call(
            Method::GET,
            doc["streaming"]["signed_hls_url"].as_str().unwrap(),
            None,
            Body::None,
        )
        .await;
    assert_eq!(master.status, 200);
    let text = String::from_utf8(master.bytes).unwrap();
    assert_eq!(
        text.matches("#EXT-X-STREAM-INF").count(),
        renditions.len(),
        "{text}"
    );
}
