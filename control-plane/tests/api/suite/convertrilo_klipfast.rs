//! Convertrilo's API under `/convertrilo` (encodes from a URL to the caller's bucket, folder
//! ingest from it, saved credentials, managed webhooks checked the way its docs check them,
//! its rate limits) and Klipfast's under `/klipfast/api/v1`.

use crate::prelude::*;

async fn convertrilo_done(t: &Target, key: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let r = t
            .get(&format!("/convertrilo/ondemand/status/{id}"), key)
            .await;
        assert_eq!(r.status, 200, "{}", r.json());
        let doc = r.json();
        if ["success", "failed", "canceled"].contains(&doc["status"].as_str().unwrap()) {
            return doc;
        }
        assert!(
            Instant::now() < deadline,
            "encode {id} did not finish: {doc}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub async fn run(t: &Target, dir: &Path, s: &super::State) {
    let super::State {
        key, acme_account, ..
    } = s.clone();
    let r = t
        .post("/api/v1/keys", ADMIN, json!({"name": "convertrilo", "account_id": acme_account,
            "scopes": ["jobs:create", "jobs:read", "jobs:cancel", "credentials:manage", "webhooks:manage"]}))
        .await;
    let cvr = r.json()["key"].as_str().unwrap().to_string();

    // --- Tokens, scopes, errors as {code, message}.
    let r = t.get("/convertrilo/tokens/balance", &cvr).await;
    assert_eq!(r.status, 200);
    assert!(r.json()["reserved"].is_i64());
    let r = t.get("/convertrilo/ondemand/credentials/s3", &key).await;
    assert_eq!(
        (
            r.status,
            r.json()["code"].as_str(),
            r.json()["requiredScope"].as_str()
        ),
        (
            403,
            Some("missing_required_scope"),
            Some("credentials:manage")
        )
    );
    let r = t
        .call(
            Method::GET,
            "/convertrilo/tokens/balance",
            Some("cvr_wrong_key_0123456789"),
            Body::None,
        )
        .await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (401, Some("invalid_api_key"))
    );
    let r = t
        .post(
            "/convertrilo/ondemand/encode",
            &cvr,
            json!({"sourceUrl": "https://example.com/a.mp4", "codec": "h266"}),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (400, Some("invalid_request"))
    );
    let r = t.post("/convertrilo/ondemand/encode", &cvr, json!({"sourceUrl": "https://example.com/a.mp4", "outputGoogleDrive": {"folderId": "x"}})).await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (422, Some("google_drive_not_supported"))
    );
    let r = t
        .call(
            Method::POST,
            "/convertrilo/ondemand/credentials/google-drive",
            Some(&cvr),
            Body::None,
        )
        .await;
    assert_eq!(r.status, 422);

    // --- A saved credential, by name; its secret is never shown.
    let cred = t.convertrilo_s3(json!({}));
    let r = t.post("/convertrilo/ondemand/credentials/s3", &cvr, json!({"name": "media", "accessKeyId": cred["accessKeyId"], "secretAccessKey": cred["secretAccessKey"], "region": "us-east-1", "endpoint": cred["endpoint"]})).await;
    assert_eq!(r.status, 201, "{}", r.json());
    assert!(!r
        .bytes
        .windows(8)
        .any(|w| w == &cred["secretAccessKey"].as_str().unwrap().as_bytes()[..8]));
    let r = t
        .post(
            "/convertrilo/ondemand/credentials/s3",
            &cvr,
            json!({"name": "media", "accessKeyId": "a", "secretAccessKey": "b"}),
        )
        .await;
    assert_eq!(r.status, 409);
    let r = t.get("/convertrilo/ondemand/credentials/s3", &cvr).await;
    assert_eq!(r.json()["credentials"].as_array().unwrap().len(), 1);
    assert!(r.json()["credentials"][0].get("secretAccessKey").is_none());

    // --- A managed webhook; its secret shown once.
    let r = t.post("/convertrilo/webhooks", &cvr, json!({"url": format!("{}/convertrilo-hook", t.hooks_base), "events": ["job.completed", "job.failed", "job.canceled"]})).await;
    assert_eq!(r.status, 200, "{}", r.json());
    let hook_id = r.json()["id"].as_str().unwrap().to_string();
    *t.receiver.convertrilo_secret.lock().unwrap() =
        r.json()["secret"].as_str().unwrap().to_string();
    let r = t.get("/convertrilo/webhooks", &cvr).await;
    assert!(r.json()["webhooks"][0].get("secret").is_none());

    // --- An encode from a URL to the caller's bucket (a saved credential by name).
    let r = t
        .post("/convertrilo/ondemand/encode", &cvr, json!({
            "sourceUrl": format!("{}/files/bikes.mp4", t.hooks_base),
            "externalId": "customer-video-123",
            "metadata": {"customerId": "cus_123"},
            "codec": "h264", "resolution": "1080p", "quality": "good", "fps": 30,
            "outputS3": {"bucket": cred["bucket"], "key": "encoded/bikes.mp4", "credential": "media"},
        }))
        .await;
    assert_eq!(r.status, 200, "{}", r.json());
    let enc = r.json();
    assert_eq!(
        (enc["status"].as_str(), enc["externalId"].as_str()),
        (Some("queued"), Some("customer-video-123"))
    );
    assert!(enc["statusUrl"].as_str().unwrap().starts_with("http"));
    assert_eq!(
        enc["warnings"][0]["code"], "ignored_field",
        "fps is accepted, not acted on"
    );
    let id = enc["jobId"].as_str().unwrap().to_string();
    let doc = convertrilo_done(t, &cvr, &id).await;
    assert_eq!(doc["status"], "success", "{doc}");
    assert_eq!(
        (
            doc["outputProbe"]["width"].as_i64(),
            doc["outputProbe"]["height"].as_i64()
        ),
        (Some(640), Some(272)),
        "1080p is a ceiling, not an upscale"
    );
    let got = t
        .http
        .get(doc["downloadUrl"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    let bucket = t.bucket();
    let deadline = Instant::now() + Duration::from_secs(60);
    while bucket.size("encoded/bikes.mp4").await.is_err() {
        assert!(Instant::now() < deadline, "no copy in the caller's bucket");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The managed webhook, signed the way Convertrilo's docs verify it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let hook = loop {
        let found = t
            .receiver
            .convertrilo
            .lock()
            .unwrap()
            .iter()
            .find(|h| h.body["data"]["jobId"] == id.as_str())
            .cloned();
        if let Some(h) = found {
            break h;
        }
        assert!(Instant::now() < deadline, "no Convertrilo webhook");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(hook.signature_ok, "X-Webhook-Signature verifies");
    assert_eq!(
        (hook.event.as_str(), hook.event_id.as_str()),
        ("job.completed", hook_id.as_str())
    );
    assert_eq!(
        (
            hook.body["event"].as_str(),
            hook.body["data"]["status"].as_str()
        ),
        (Some("job.completed"), Some("success"))
    );
    assert_eq!(hook.body["data"]["externalId"], "customer-video-123");
    assert!(hook.body["timestamp"].is_string());

    // --- Folder ingest from the caller's bucket: videos only, maxFiles honoured.
    for name in ["a.mp4", "b.mp4", "c.mp4"] {
        bucket
            .put_file(&format!("incoming/{name}"), &media("video/bikes.mp4"))
            .await
            .unwrap();
    }
    bucket
        .put_file("incoming/notes.txt", &media("photo/coffee.png"))
        .await
        .unwrap();
    let r = t
        .post("/convertrilo/ondemand/ingest/folder", &cvr, json!({
            "sourceS3": {"bucket": cred["bucket"], "prefix": "incoming/", "credential": "media"},
            "outputDestination": "s3",
            "outputS3": t.convertrilo_s3(json!({"prefix": "ingested/"})),
            "maxFiles": 2, "codec": "h264", "resolution": "480p", "externalIdPrefix": "batch-1",
        }))
        .await;
    assert_eq!(r.status, 200, "{}", r.json());
    let jobs = r.json()["jobs"].as_array().unwrap().clone();
    assert_eq!(
        jobs.iter()
            .map(|j| j["fileName"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["a.mp4", "b.mp4"]
    );
    assert_eq!(jobs[0]["externalId"], "batch-1:a.mp4");
    for j in &jobs {
        let doc = convertrilo_done(t, &cvr, j["jobId"].as_str().unwrap()).await;
        assert_eq!(doc["status"], "success", "{doc}");
    }
    for name in ["a.mp4", "b.mp4"] {
        let deadline = Instant::now() + Duration::from_secs(60);
        while bucket.size(&format!("ingested/{name}")).await.is_err() {
            assert!(Instant::now() < deadline, "no ingested/{name}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let r = t
        .post(
            "/convertrilo/ondemand/ingest/folder",
            &cvr,
            json!({"sourceS3": t.convertrilo_s3(json!({"prefix": "nothing-here/"}))}),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (404, Some("no_video_files_found"))
    );

    // --- Cancel: a queued encode gives its credits back; a finished one is a no-op.
    let busy = super::konvrt_convertly::occupy_the_node(t, &key, dir).await;
    let r = t
        .post(
            "/convertrilo/ondemand/encode",
            &cvr,
            json!({"sourceUrl": format!("{}/files/bikes.mp4", t.hooks_base)}),
        )
        .await;
    let queued = r.json()["jobId"].as_str().unwrap().to_string();
    let r = t
        .call(
            Method::DELETE,
            &format!("/convertrilo/ondemand/{queued}"),
            Some(&cvr),
            Body::None,
        )
        .await;
    assert_eq!(
        (r.status, r.json()["ok"].as_bool()),
        (200, Some(true)),
        "{}",
        r.json()
    );
    assert_eq!(
        t.get(&format!("/convertrilo/ondemand/status/{queued}"), &cvr)
            .await
            .json()["status"],
        "canceled"
    );
    let r = t
        .call(
            Method::DELETE,
            &format!("/convertrilo/ondemand/{id}"),
            Some(&cvr),
            Body::None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.json()["note"].is_string());
    assert_eq!(
        t.call(
            Method::DELETE,
            &format!("/api/v1/jobs/{busy}"),
            Some(&key),
            Body::None
        )
        .await
        .status,
        200
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !t
        .receiver
        .convertrilo
        .lock()
        .unwrap()
        .iter()
        .any(|h| h.event == "job.canceled" && h.body["data"]["jobId"] == queued.as_str())
    {
        assert!(Instant::now() < deadline, "no job.canceled webhook");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // --- Clean-ups, and the encode limit: 10 a minute.
    let r = t
        .call(
            Method::DELETE,
            &format!("/convertrilo/webhooks/{hook_id}"),
            Some(&cvr),
            Body::None,
        )
        .await;
    assert_eq!(r.status, 204);
    let r = t
        .call(
            Method::DELETE,
            "/convertrilo/ondemand/credentials/s3/media",
            Some(&cvr),
            Body::None,
        )
        .await;
    assert_eq!(r.status, 200);
    let r = t
        .post(
            "/api/v1/keys",
            ADMIN,
            json!({"name": "cvr limits", "account_id": acme_account, "scopes": ["jobs:create"]}),
        )
        .await;
    let limited = r.json()["key"].as_str().unwrap().to_string();
    let mut codes = Vec::new();
    for _ in 0..11 {
        let r = t
            .post(
                "/convertrilo/ondemand/encode",
                &limited,
                json!({"sourceUrl": "https://example.com/a.mp4", "quality": "perfect"}),
            )
            .await;
        codes.push((
            r.status,
            r.json()["code"].as_str().unwrap_or("").to_string(),
        ));
    }
    assert_eq!(codes[9], (400, "invalid_request".to_string()));
    assert_eq!(
        codes[10],
        (429, "rate_limit_exceeded".to_string()),
        "{codes:?}"
    );

    // --- Klipfast: a video URL in, a transcode out; rate-limit headers on every answer.
    let r = t.post("/klipfast/api/v1/process", &key, json!({"video_url": format!("{}/files/bikes.mp4", t.hooks_base), "quality": "balanced", "caption_style": "white_bold", "language": "en"})).await;
    assert_eq!(r.status, 202, "{}", r.json());
    let p = r.json();
    assert_eq!(p["status"], "queued");
    assert!(p["estimated_seconds"].as_i64().unwrap() >= 1);
    assert_eq!(
        p["warnings"].as_array().unwrap().len(),
        2,
        "caption_style and language ignored"
    );
    let kid = p["job_id"].as_str().unwrap().to_string();
    assert!(kid.starts_with("job_"));
    let deadline = Instant::now() + Duration::from_secs(300);
    let job = loop {
        let j = t
            .get(&format!("/klipfast/api/v1/jobs/{kid}"), &key)
            .await
            .json();
        if ["completed", "failed"].contains(&j["status"].as_str().unwrap()) {
            break j;
        }
        assert!(
            Instant::now() < deadline,
            "klipfast job did not finish: {j}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["clips"], json!([]));
    assert_eq!(
        t.http
            .get(job["download_url"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Behind a proxy (and without KILN_PUBLIC_URL), links follow the
    // address the caller used, not the listen address.
    let proxied = t
        .call_with(
            &t.base,
            Method::GET,
            &format!("/klipfast/api/v1/jobs/{kid}"),
            Some(&key),
            Body::None,
            &[
                ("host", "media.example.test"),
                ("x-forwarded-proto", "https"),
            ],
        )
        .await
        .json();
    assert!(
        proxied["download_url"]
            .as_str()
            .unwrap()
            .starts_with("https://media.example.test/"),
        "{proxied}"
    );
    let r = t
        .post(
            "/klipfast/api/v1/process",
            &key,
            json!({"video_url": format!("{}/files/bikes.mp4", t.hooks_base), "quality": "fast"}),
        )
        .await;
    assert_eq!(r.status, 202);
    let list = t.get("/klipfast/api/v1/jobs?limit=1", &key).await.json();
    assert_eq!(
        (
            list["has_more"].as_bool(),
            list["jobs"].as_array().unwrap().len()
        ),
        (Some(true), 1)
    );
    let next = list["next_cursor"].as_str().unwrap();
    let page = t
        .get(
            &format!("/klipfast/api/v1/jobs?limit=1&cursor={next}"),
            &key,
        )
        .await
        .json();
    assert_eq!(
        page["jobs"][0]["job_id"],
        kid.as_str(),
        "only Klipfast's jobs, newest first"
    );
    let u = t.get("/klipfast/api/v1/usage", &key).await;
    assert_eq!(u.status, 200);
    assert!(
        u.json()["minutes_used"].as_f64().unwrap() > 0.0 && u.json()["period_start"].is_string()
    );
    let r = t
        .call(
            Method::GET,
            "/klipfast/api/v1/usage",
            Some("kf_live_sk_wrong_0123456789"),
            Body::None,
        )
        .await;
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    assert!(
        r.header("x-ratelimit-limit").is_some(),
        "headers on a 401 too"
    );
    let r = t
        .get(
            "/klipfast/api/v1/jobs/job_0190a0a0-0000-7000-8000-000000000000",
            &key,
        )
        .await;
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    assert!(
        r.header("x-ratelimit-remaining").is_some(),
        "headers on a 404 too"
    );
    let r = t
        .post(
            "/klipfast/api/v1/process",
            &key,
            json!({"video_url": "https://example.com/x.mp4", "quality": "ultra"}),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );
}
