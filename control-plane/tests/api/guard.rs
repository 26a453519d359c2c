//! Limits that protect the node: a source past the server's picture size, duration or stream
//! count is refused at submission from the probe (422 `source_limit_exceeded`, nothing
//! queued); a job that runs past the wall-clock budget its source allows is stopped and failed
//! for good (`time_budget_exceeded`, not retried), and the slot is free for the next job.

use kiln_control_plane::start;
use kiln_protocol::limits::SourceLimits;

use crate::prelude::*;

/// An embedded default started with `config`, its target, and a key on an account `name`.
async fn serve(
    config: kiln_control_plane::Config,
    name: &str,
) -> (kiln_control_plane::Running, Target, String) {
    let running = start(config).await.unwrap();
    let t = Target::new(
        running.addr,
        None,
        kiln_protocol::testing::S3Server::start(),
        0,
    )
    .await;
    let key = t.own_account_key(name, name).await;
    (running, t, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sources_past_the_limits_are_refused_and_budgets_stop_jobs() {
    let _one = crate::ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let config = kiln_control_plane::Config {
        limits: SourceLimits {
            max_width: 1000,
            max_height: 1000,
            max_duration_secs: 8.0,
            max_streams: 1,
            // 300 s × 0.0005: a budget of a fraction of a second.
            budget_factor: 0.0005,
        },
        ..base_config(&dir.path().join("cp"))
    };
    let (running, t, key) = serve(config, "guard").await;

    // --- Refused at submission, each limit by name; no job is recorded.
    for (file, words) in [
        ("video/bigbuckbunny.mp4", "1280×720"),
        ("video/bikes.mp4", "10 s"),
    ] {
        let upload = t.upload(&key, &media(file), "source.mp4").await;
        let r = t
            .post(
                "/api/v1/jobs",
                &key,
                json!({"source": {"upload_id": upload}, "outputs": [{"codec": "h264", "quality": 30}]}),
            )
            .await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (422, "source_limit_exceeded"),
            "{file}: {}",
            r.json()
        );
        let message = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(message.contains(words), "{file}: {message}");
    }
    let two_streams = dir.path().join("two-streams.mp4");
    let ok = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=160x120:rate=30",
        ])
        .args(["-f", "lavfi", "-i", "sine=frequency=440"])
        .args([
            "-t", "2", "-pix_fmt", "yuv420p", "-c:v", "libx264", "-c:a", "aac",
        ])
        .arg(&two_streams)
        .status()
        .unwrap();
    assert!(ok.success());
    let upload = t.upload(&key, &two_streams, "two.mp4").await;
    let r = t
        .post(
            "/api/v1/jobs",
            &key,
            json!({"source": {"upload_id": upload}, "outputs": [{"codec": "h264", "quality": 30}]}),
        )
        .await;
    assert_eq!(r.code(), "source_limit_exceeded", "{}", r.json());
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("2 streams"));
    let jobs = t.get("/api/v1/jobs", &key).await.json();
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 0, "{jobs}");

    // --- Within the limits, but the encode outlasts its budget: stopped, failed for good.
    let clip = dir.path().join("slow.mp4");
    make_clip(&clip, 7, "640x360");
    let upload = t.upload(&key, &clip, "slow.mp4").await;
    let r = t
        .post(
            "/api/v1/jobs",
            &key,
            json!({"source": {"upload_id": upload}, "outputs": [{"codec": "h265", "quality": 20, "preset": "slower"}]}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.json());
    let id = r.json()["jobs"][0]["id"].as_str().unwrap().to_string();
    let doc = t.wait_job(&key, &id).await;
    assert_eq!(doc["status"], "failed", "{doc}");
    assert_eq!(doc["error"]["code"], "time_budget_exceeded", "{doc}");
    assert!(
        doc["error"]["message"]
            .as_str()
            .unwrap()
            .contains("time budget"),
        "{doc}"
    );
    assert_eq!(doc["attempts"], 1, "not retried: {doc}");

    // The slot is free: the next job runs.
    let photo = t
        .upload(&key, &media("photo/chelsea.png"), "chelsea.png")
        .await;
    let r = t
        .post(
            "/api/v1/jobs",
            &key,
            json!({"source": {"upload_id": photo}, "outputs": [{"format": "png", "width": 20}]}),
        )
        .await;
    let next = r.json()["jobs"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(t.wait_job(&key, &next).await["status"], "completed");
    running.shutdown().await;
}

/// A burst of synchronous conversions past the pool (1 worker, 1 waiting): the excess is
/// refused at once with 503 `overloaded` and `Retry-After`, everything admitted converts, and
/// the service converts again once the burst is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conversions_past_the_pool_get_503_with_retry_after() {
    let _one = crate::ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let config = kiln_control_plane::Config {
        convert_workers: Some(1),
        convert_queue: Some(1),
        ..base_config(&dir.path().join("cp"))
    };
    let (running, t, key) = serve(config, "burst").await;
    let photo = std::fs::read(media("photo/seeding_by_Clements_Engelhardt.jpg")).unwrap();
    let convert = |http: reqwest::Client, base: String, key: String, photo: Vec<u8>| async move {
        let form = Form::new()
            .part("file", Part::bytes(photo).file_name("seeding.jpg"))
            .text("format", "webp")
            .text("width", "1600");
        let r = http
            .post(format!("{base}/api/v1/convert"))
            .bearer_auth(&key)
            .multipart(form)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let retry = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        let body = r.bytes().await.unwrap();
        (status, retry, body)
    };
    let burst: Vec<_> = (0..12)
        .map(|_| {
            tokio::spawn(convert(
                t.http.clone(),
                t.base.clone(),
                key.clone(),
                photo.clone(),
            ))
        })
        .collect();
    let (mut ok, mut refused) = (0, 0);
    for b in burst {
        let (status, retry, body) = b.await.unwrap();
        match status {
            200 => {
                assert_eq!(&body[8..12], b"WEBP", "a converted image");
                ok += 1;
            }
            503 => {
                let v: Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(v["error"]["code"], "overloaded", "{v}");
                assert_eq!(retry.as_deref(), Some("1"));
                refused += 1;
            }
            s => panic!("answered {s}: {}", String::from_utf8_lossy(&body)),
        }
    }
    assert!(ok >= 2, "{ok} converted, {refused} refused");
    assert!(refused >= 1, "{ok} converted, {refused} refused");
    // The burst is over: it converts again.
    let (status, _, _) = convert(t.http.clone(), t.base.clone(), key, photo).await;
    assert_eq!(status, 200);
    let metrics = t
        .http
        .get(format!("{}/metrics", t.base))
        .send()
        .await
        .unwrap();
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains(&format!("kiln_convert_refused_total {refused}")),
        "the refusals are counted"
    );
    running.shutdown().await;
}
