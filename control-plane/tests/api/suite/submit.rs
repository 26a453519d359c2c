//! Submitting: Konvrt compress and convert, the jobs API with upload, URL and S3 sources and
//! an S3 destination, results, a Convertly-style batch zipped.

use crate::prelude::*;

/// Returns the Konvrt job and the uploaded photo later parts use.
pub async fn run(t: &Target, dir: &Path, k: &super::Keys) -> (String, String) {
    let (key, other) = (k.key.clone(), k.other.clone());
    // --- Konvrt: compress with a webhook (progress opted in); the receiver fails the first
    // two attempts of every event.
    let form = Form::new()
        .part(
            "file",
            Part::bytes(std::fs::read(media("video/bikes.mp4")).unwrap()).file_name("bikes.mp4"),
        )
        .text("codec", "h264")
        .text("quality", "28")
        .text("resolution", "320x136")
        // Slow enough that progress is reported between 10 % and 100 % (progress webhooks).
        .text("preset", "veryslow")
        .text("webhook_url", format!("{}/hook", t.hooks_base))
        .text("webhook_events", "job.progress");
    let r = t
        .call(
            Method::POST,
            "/api/v1/compress",
            Some(&key),
            Body::Form(form),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.json());
    let c = r.json();
    assert_eq!(
        (c["success"].as_bool(), c["status"].as_str()),
        (Some(true), Some("pending"))
    );
    assert_eq!(c["credits_charged"], 1);
    let compress_id = c["job_id"].as_str().unwrap().to_string();

    // --- Konvrt: synchronous image conversion.
    let form = Form::new()
        .part(
            "file",
            Part::bytes(std::fs::read(media("photo/coffee.png")).unwrap()).file_name("coffee.png"),
        )
        .text("format", "webp")
        .text("width", "300");
    let r = t
        .call(
            Method::POST,
            "/api/v1/convert",
            Some(&key),
            Body::Form(form),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type").as_deref(), Some("image/webp"));

    // --- Jobs API: an upload fanned out to two video outputs and an image source by URL.
    let upload = t.upload(&key, &media("video/bikes.mp4"), "bikes.mp4").await;
    let r = t
        .post(
            "/api/v1/jobs",
            &key,
            json!({"source": {"upload_id": upload}, "outputs": [
                {"codec": "h264", "resolution": "320x136", "quality": 30, "preset": "veryfast"},
                {"codec": "vp9", "resolution": "160x68", "quality": 40}
            ], "archive": true}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.json());
    let sub = r.json();
    let video_ids: Vec<String> = sub["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(video_ids.len(), 2);
    let video_batch = sub["batch_id"].as_str().unwrap().to_string();
    let r = t
        .post(
            "/api/v1/jobs",
            &key,
            json!({"source": {"url": format!("{}/files/rocket.jpg", t.hooks_base)}, "outputs": [{"format": "png", "width": 100}]}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.json());
    let url_job = r.json()["jobs"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(r.json()["jobs"][0]["input"]["filename"], "rocket.jpg");

    // --- S3 source and S3 destination, on the real S3 server.
    let bucket = t.bucket();
    bucket
        .put_file("inbox/coffee.png", &media("photo/coffee.png"))
        .await
        .unwrap();
    let r = t
        .post(
            "/api/v1/jobs",
            &key,
            json!({"source": {"s3": t.s3_location(json!({"key": "inbox/coffee.png"}))},
                   "outputs": [{"format": "webp", "width": 300, "height": 200}],
                   "output": {"s3": t.s3_location(json!({"prefix": "delivered/"}))}}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.json());
    let s3_job = r.json()["jobs"][0]["id"].as_str().unwrap().to_string();
    let r = t
        .post("/api/v1/jobs", &key, json!({"source": {"s3": t.s3_location(json!({"key": "inbox/none.png"}))}, "outputs": [{"format": "png"}]}))
        .await;
    assert_eq!(r.code(), "unprocessable", "{}", r.json());
    let mut wrong = t.s3_location(json!({"key": "inbox/coffee.png"}));
    wrong["credentials"]["secret_access_key"] = json!("wrong");
    assert_eq!(
        t.post(
            "/api/v1/jobs",
            &key,
            json!({"source": {"s3": wrong}, "outputs": [{"format": "png"}]})
        )
        .await
        .code(),
        "unprocessable"
    );
    let mut private = t.s3_location(json!({"key": "inbox/coffee.png"}));
    private["endpoint"] = json!("http://10.1.2.3:9000");
    assert_eq!(
        t.post(
            "/api/v1/jobs",
            &key,
            json!({"source": {"s3": private}, "outputs": [{"format": "png"}]})
        )
        .await
        .code(),
        "bad_request"
    );

    // --- Results.
    let doc = t.wait_job(&key, &url_job).await;
    assert_eq!(doc["status"], "completed", "{doc}");
    assert_eq!(
        (
            doc["output"]["width"].as_i64(),
            doc["output"]["height"].as_i64()
        ),
        (Some(100), Some(67))
    );
    let png = t
        .get(&format!("/api/v1/jobs/{url_job}/download"), &key)
        .await;
    assert_eq!(png.status, 200);
    assert_eq!(png.header("content-type").as_deref(), Some("image/png"));
    assert_eq!(image::load_from_memory(&png.bytes).unwrap().width(), 100);

    let doc = t.wait_job(&key, &s3_job).await;
    assert_eq!(doc["status"], "completed", "{doc}");
    let delivered_key = format!("delivered/{s3_job}.webp");
    let deadline = Instant::now() + Duration::from_secs(30);
    let doc = loop {
        let doc = t.get(&format!("/api/v1/jobs/{s3_job}"), &key).await.json();
        if !doc["destination"].is_null() {
            break doc;
        }
        assert!(Instant::now() < deadline, "never delivered: {doc}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(doc["destination"]["status"], "delivered", "{doc}");
    assert_eq!(
        bucket.size(&delivered_key).await.unwrap() as i64,
        doc["output_size"].as_i64().unwrap()
    );

    for id in &video_ids {
        let doc = t.wait_job(&key, id).await;
        assert_eq!(doc["status"], "completed", "{doc}");
        assert_eq!(doc["batch_id"], video_batch.as_str());
    }
    let batch = t
        .get(&format!("/api/v1/batches/{video_batch}"), &key)
        .await
        .json();
    assert_eq!(batch["status"], "completed");
    let zip = t
        .get(&format!("/api/v1/batches/{video_batch}/archive"), &key)
        .await;
    assert_eq!(zip.status, 200);
    assert_eq!(
        zip.header("content-type").as_deref(),
        Some("application/zip")
    );
    let names = zip_names(&zip.bytes).await;
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        names[0].ends_with(".mp4") && names[1].ends_with(".webm"),
        "{names:?}"
    );
    let path = dir.join("from-zip.webm");
    std::fs::write(&path, zip_entry(&zip.bytes, 1).await).unwrap();
    assert_eq!(ffprobe_codec(&path), "vp9");

    // --- Convertly-style batch: sources × formats × sizes, zipped.
    let photo = t
        .upload(&key, &media("photo/chelsea.png"), "chelsea.png")
        .await;
    let r = t
        .post(
            "/api/v1/batches",
            &key,
            json!({"sources": [{"upload_id": photo}, {"url": format!("{}/files/rocket.jpg", t.hooks_base)}],
                   "formats": ["webp", "jpg"], "qualities": [70], "sizes": ["120", "64x64"], "archive": true}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.json());
    let b = r.json();
    assert_eq!(b["jobs"].as_array().unwrap().len(), 8);
    let batch_id = b["batch_id"].as_str().unwrap().to_string();
    for j in b["jobs"].as_array().unwrap() {
        t.wait_job(&key, j["id"].as_str().unwrap()).await;
    }
    let batch = t
        .get(&format!("/api/v1/batches/{batch_id}"), &key)
        .await
        .json();
    assert_eq!(batch["status"], "completed", "{batch}");
    assert_eq!(batch["counts"]["completed"], 8);
    assert_eq!(
        batch["archive_url"],
        format!("/api/v1/batches/{batch_id}/archive")
    );
    let zip = t
        .get(&format!("/api/v1/batches/{batch_id}/archive"), &key)
        .await;
    assert_eq!(zip_names(&zip.bytes).await.len(), 8);
    assert_eq!(
        t.post(
            "/api/v1/batches",
            &key,
            json!({"sources": [{"upload_id": photo}], "formats": ["bmp"]})
        )
        .await
        .code(),
        "bad_request"
    );
    assert_eq!(
        t.get(&format!("/api/v1/batches/{batch_id}"), &other)
            .await
            .code(),
        "not_found"
    );
    (compress_id, photo)
}
