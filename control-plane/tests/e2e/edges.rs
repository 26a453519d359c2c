//! Bad input, oversize uploads, and rate control, codecs and containers through the API.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_stable_errors_and_the_service_keeps_serving() {
    let s = Server::start().await;
    let bikes = std::fs::read(media("video/bikes.mp4")).unwrap();

    // Not media at all.
    let (code, body) = s
        .compress(
            Part::bytes(b"hello, I am a text file\n".repeat(100)).file_name("notes.mp4"),
            &[],
        )
        .await;
    assert!(code == 415 || code == 422, "{code} {body}");
    assert!(
        ["unsupported_media", "unprocessable"].contains(&error_code(&body)),
        "{body}"
    );

    // An MP4 cut off before its index: refused up front.
    let (code, body) = s
        .compress(
            Part::bytes(bikes[..bikes.len() / 3].to_vec()).file_name("cut.mp4"),
            &[],
        )
        .await;
    let truncated_job = if code == 202 {
        // Where the index comes first, the cut is only found while decoding: the job fails.
        Some(body["job_id"].as_str().unwrap().to_string())
    } else {
        assert_eq!((code, error_code(&body)), (422, "unprocessable"), "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains("media"),
            "{body}"
        );
        None
    };

    // A faststart MP4 cut in half: accepted (the header is fine), then the job fails cleanly.
    let dir = tempfile::tempdir().unwrap();
    let fast = dir.path().join("fast.mp4");
    let st = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(media("video/bikes.mp4"))
        .args(["-c", "copy", "-movflags", "+faststart"])
        .arg(&fast)
        .status()
        .unwrap();
    assert!(st.success());
    let fast = std::fs::read(&fast).unwrap();
    let (code, body) = s
        .compress(
            Part::bytes(fast[..fast.len() / 2].to_vec()).file_name("half.mp4"),
            &[],
        )
        .await;
    assert_eq!(code, 202, "{body}");
    let half_id = body["job_id"].as_str().unwrap().to_string();

    // Missing file, wrong codec, bad quality, bad resolution.
    let r = s
        .post_form("/api/v1/compress", Form::new().text("codec", "h264"))
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(&r.json().await.unwrap()), "bad_request");
    for fields in [
        vec![("codec", "h266")],
        vec![("quality", "99")],
        vec![("resolution", "enormous")],
    ] {
        let (code, body) = s
            .compress(Part::bytes(bikes.clone()).file_name("b.mp4"), &fields)
            .await;
        assert_eq!(
            (code, error_code(&body)),
            (400, "bad_request"),
            "{fields:?}: {body}"
        );
    }
    // Not multipart at all.
    let r = s
        .http
        .post(s.url("/api/v1/compress"))
        .bearer_auth(KEY)
        .header("content-type", "application/json")
        .body("{\"file\": 1")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());

    // Images: corrupt, unsupported output format, missing file.
    let r = s
        .post_form(
            "/api/v1/convert",
            Form::new().part(
                "file",
                Part::bytes(b"\x89PNG\r\n\x1a\nbroken".to_vec()).file_name("x.png"),
            ),
        )
        .await;
    assert!(r.status() == 415 || r.status() == 422, "{}", r.status());
    let r = s
        .post_form(
            "/api/v1/convert",
            Form::new()
                .part("file", file_part(&media("photo/coffee.png")))
                .text("format", "bmp"),
        )
        .await;
    assert_eq!(r.status(), 400);
    let r = s
        .post_form("/api/v1/convert", Form::new().text("format", "png"))
        .await;
    assert_eq!(r.status(), 400);
    for (field, value) in [
        ("fit", "squash"),
        ("position", "upward"),
        ("background", "#12"),
        ("kernel", "nearest"),
        ("quality", "0"),
        ("lossless", "maybe"),
        ("maxWidth", "-5"),
    ] {
        let r = s
            .post_form(
                "/api/v1/convert",
                Form::new()
                    .part("file", file_part(&media("photo/chelsea.png")))
                    .text(field, value),
            )
            .await;
        assert_eq!(r.status(), 400, "{field}={value}");
        assert_eq!(error_code(&r.json().await.unwrap()), "bad_request");
    }
    // A truncated JPEG is 422; a file that is no image Kiln reads is 415.
    let jpg = std::fs::read(media("photo/rocket.jpg")).unwrap();
    let r = s
        .post_form(
            "/api/v1/convert",
            Form::new().part(
                "file",
                Part::bytes(jpg[..jpg.len() / 2].to_vec()).file_name("cut.jpg"),
            ),
        )
        .await;
    assert_eq!(r.status(), 422);
    assert_eq!(error_code(&r.json().await.unwrap()), "unprocessable");
    let r = s
        .post_form(
            "/api/v1/convert",
            Form::new().part("file", Part::bytes(b"BM....".to_vec()).file_name("x.bmp")),
        )
        .await;
    assert_eq!(r.status(), 415);
    assert_eq!(error_code(&r.json().await.unwrap()), "unsupported_media");

    // Unknown job ids are 404; downloads of unfinished jobs are 409.
    let (code, body) = s
        .get_json(&format!("/api/v1/status/{}", uuid::Uuid::now_v7()))
        .await;
    assert_eq!((code, error_code(&body)), (404, "not_found"));
    let (code, body) = s.get_json("/api/v1/status/not-a-uuid").await;
    assert_eq!((code, error_code(&body)), (404, "not_found"));

    // The broken jobs end failed with a stable code and FFmpeg's message...
    for id in truncated_job.iter().chain([&half_id]) {
        let last = s.wait(id).await.pop().unwrap();
        assert_eq!(last["status"], "failed", "{last}");
        let code = last["error"]["code"].as_str().unwrap();
        assert!(["decode_failed", "invalid_media"].contains(&code), "{last}");
        assert!(!last["error"]["message"].as_str().unwrap().is_empty());
        let r = s.download(id).await;
        assert_eq!(r.status(), 409);
    }

    // ...and a good job submitted after all that still completes.
    let (code, body) = s
        .compress(
            Part::bytes(bikes).file_name("ok.mp4"),
            &[("resolution", "160")],
        )
        .await;
    assert_eq!(code, 202, "{body}");
    let last = s
        .wait(body["job_id"].as_str().unwrap())
        .await
        .pop()
        .unwrap();
    assert_eq!(last["status"], "completed", "{last}");
    assert_eq!(last["output"]["width"], 160);

    let metrics = s
        .http
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("kiln_jobs_finished_total{status=\"failed\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kiln_jobs_finished_total{status=\"completed\"} 1"),
        "{metrics}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_uploads_get_413_and_leave_nothing_behind() {
    let s = Server::start_with(|c| {
        c.max_upload_bytes = 100_000;
        c.max_image_bytes = 50_000;
    })
    .await;
    let (code, body) = s.compress(file_part(&media("video/bikes.mp4")), &[]).await;
    assert_eq!(
        (code, error_code(&body)),
        (413, "payload_too_large"),
        "{body}"
    );
    let sources = s._dir.path().join("storage/sources");
    let left = std::fs::read_dir(&sources).map(|d| d.count()).unwrap_or(0);
    assert_eq!(
        left,
        0,
        "a refused upload was left in {}",
        sources.display()
    );

    // A text field can't be used to smuggle a huge body past the streaming upload.
    let (code, body) = s
        .compress(
            Part::bytes(vec![1u8; 10]).file_name("x.mp4"),
            &[("codec", &"h".repeat(10_000))],
        )
        .await;
    assert_eq!((code, error_code(&body)), (400, "bad_request"), "{body}");

    let r = s
        .post_form(
            "/api/v1/convert",
            Form::new().part("file", file_part(&media("photo/coffee.png"))),
        )
        .await;
    assert_eq!(r.status(), 413);
    assert_eq!(error_code(&r.json().await.unwrap()), "payload_too_large");

    // Still serving.
    let r = s.http.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    s.stop().await;
}

/// Every codec and rate-control mode through the HTTP API: a `size` job lands within ±5 % and
/// its status says what it aimed at, what it achieved and how; WebM downloads as WebM; what
/// cannot be done on this source is refused up front with 422.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_control_codecs_and_containers_through_the_api() {
    let server = Server::start().await;
    let bbb = media("video/bigbuckbunny.mp4");

    let (code, body) = server
        .compress(
            file_part(&bbb),
            &[
                ("codec", "av1"),
                ("method", "size"),
                ("target_size_mb", "0.5"),
                ("resolution", "360p"),
                ("format", "webm"),
            ],
        )
        .await;
    assert_eq!(code, 202, "{body}");
    let id = body["job_id"].as_str().unwrap().to_string();
    let seen = server.wait(&id).await;
    assert_forward_only(&seen);
    let done = seen.last().unwrap();
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        (done["method"].as_str(), done["format"].as_str()),
        (Some("size"), Some("webm"))
    );
    assert_eq!(done["target_size"], 500_000);
    let size = done["output_size"].as_f64().unwrap();
    assert!((size - 500_000.0).abs() / 500_000.0 <= 0.05, "{done}");
    let enc = &done["encoding"];
    assert_eq!(
        (enc["encoder"].as_str(), enc["audio"].as_str()),
        (Some("libsvtav1"), Some("opus")),
        "{done}"
    );
    let r = server.download(&id).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "video/webm");
    assert!(r.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .ends_with(".webm\""));
    assert_eq!(r.bytes().await.unwrap().len() as f64, size);

    // h265 at a bitrate, in MKV.
    let (code, body) = server
        .compress(
            file_part(&media("video/bikes.mp4")),
            &[
                ("codec", "h265"),
                ("bitrate", "250"),
                ("preset", "veryfast"),
                ("format", "mkv"),
            ],
        )
        .await;
    assert_eq!(code, 202, "{body}");
    let id = body["job_id"].as_str().unwrap().to_string();
    let done = server.wait(&id).await.pop().unwrap();
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        (done["method"].as_str(), done["bitrate"].as_u64()),
        (Some("bitrate"), Some(250))
    );
    assert_eq!(done["encoding"]["encoder"], "libx265");
    let r = server.download(&id).await;
    assert_eq!(r.headers()["content-type"], "video/x-matroska");

    // Refused before any work: an upscale, an impossible target, a codec WebM cannot hold.
    for (fields, want) in [
        (vec![("resolution", "1080p")], 422),
        (vec![("method", "size"), ("target_size_mb", "0.005")], 422),
        (vec![("codec", "h264"), ("format", "webm")], 400),
        (vec![("quality", "10")], 400),
    ] {
        let (code, body) = server.compress(file_part(&bbb), &fields).await;
        assert_eq!(code, want, "{fields:?}: {body}");
        assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    }
    // Allowed when asked for.
    let (code, body) = server
        .compress(
            file_part(&media("video/carphone_pristine.mp4")),
            &[
                ("resolution", "288p"),
                ("allow_upscale", "true"),
                ("preset", "ultrafast"),
            ],
        )
        .await;
    assert_eq!(code, 202, "{body}");
    let done = server
        .wait(body["job_id"].as_str().unwrap())
        .await
        .pop()
        .unwrap();
    assert_eq!(
        (done["output"]["height"].as_u64(), done["status"].as_str()),
        (Some(288), Some("completed"))
    );
    server.stop().await;
}
