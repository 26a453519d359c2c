//! Konvrt's additions on the native paths (flat webhook fields, usage with plan and credits,
//! imported keys, `/convert` answered as JSON) and Convertly's API under `/convertly/api`.

use crate::prelude::*;

/// Poll a Convertly job until it is final.
async fn convertly_done(t: &Target, key: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let r = t.get(&format!("/convertly/api/jobs/{id}"), key).await;
        assert_eq!(r.status, 200, "{}", r.json());
        let doc = r.json();
        if ["completed", "failed"].contains(&doc["status"].as_str().unwrap()) {
            return doc;
        }
        assert!(
            Instant::now() < deadline,
            "convertly job {id} did not finish: {doc}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A job that keeps the node's one slot busy while the test needs a job to stay pending;
/// returns its id (cancel it when done).
pub async fn occupy_the_node(t: &Target, key: &str, dir: &Path) -> String {
    let clip = dir.join("occupy.mp4");
    if !clip.exists() {
        make_clip(&clip, 30, "1280x720");
    }
    let up = t.upload(key, &clip, "occupy.mp4").await;
    let r = t
        .post(
            "/api/v1/jobs",
            key,
            json!({"source": {"upload_id": up}, "outputs": [{"codec": "h265", "preset": "veryslow"}]}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.json());
    let id = r.json()["jobs"][0]["id"].as_str().unwrap().to_string();
    t.wait_status(key, &id, "processing").await;
    id
}

pub async fn run(t: &Target, dir: &Path, s: &super::State) {
    let super::State {
        key, compress_id, ..
    } = s.clone();

    // --- Konvrt: webhook receivers written for Konvrt's flat fields work too.
    let hook = t
        .receiver
        .hooks
        .lock()
        .unwrap()
        .iter()
        .find(|h| h.body["job_id"] == compress_id.as_str() && h.event == "job.completed")
        .cloned()
        .expect("the compress job's completion was delivered");
    let b = &hook.body;
    assert_eq!(
        (b["event"].as_str(), b["status"].as_str()),
        (Some("job.completed"), Some("completed"))
    );
    assert_eq!(
        b["type"], "job.completed",
        "Kiln's own fields are still there"
    );
    assert!(b["output"]["size_bytes"].as_i64().unwrap() > 0);
    assert!(b["output"]["expires_at"].is_string() && b["timestamp"].is_string());
    assert!(b["error"].is_null());
    let link = b["output"]["download_url"].as_str().unwrap();
    assert!(
        link.starts_with("http") && link.contains("signature="),
        "{link}"
    );
    let r = t.http.get(link).send().await.unwrap();
    assert_eq!(
        r.status(),
        200,
        "the webhook's link downloads without a key"
    );

    // --- Konvrt: usage carries the plan and the credits.
    let u = t.get("/api/v1/usage", &key).await.json();
    assert_eq!(u["plan"], "self-hosted");
    assert!(
        u["credits"].is_object() && u["credits"]["total_purchased"].is_i64(),
        "{u}"
    );

    // --- Konvrt: a migrated client keeps its key (only the hash is stored).
    let kvrt = "kvrt_0123456789abcdefghijABCDEFGHIJ";
    let r = t
        .post("/api/v1/keys", ADMIN, json!({"name": "from konvrt", "key": kvrt, "account_name": "migrated", "scopes": ["jobs:create", "jobs:read", "usage:read"]}))
        .await;
    assert_eq!(r.status, 201, "{}", r.json());
    assert_eq!(r.json()["key"], kvrt);
    assert_eq!(t.get("/api/v1/usage", kvrt).await.status, 200);
    let r = t
        .post(
            "/api/v1/keys",
            ADMIN,
            json!({"name": "again", "key": kvrt, "scopes": ["jobs:read"]}),
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (409, "conflict"));
    let r = t
        .post(
            "/api/v1/keys",
            ADMIN,
            json!({"name": "short", "key": "kvrt_x", "scopes": ["jobs:read"]}),
        )
        .await;
    assert_eq!(r.status, 400);

    // --- Konvrt's blog flow: /convert answered as JSON, then downloaded.
    let form = Form::new()
        .part(
            "file",
            Part::bytes(std::fs::read(media("photo/coffee.png")).unwrap()).file_name("coffee.png"),
        )
        .text("format", "webp")
        .text("maxWidth", "300");
    let r = t
        .call_with(
            &t.base,
            Method::POST,
            "/api/v1/convert",
            Some(kvrt),
            Body::Form(form),
            &[("accept", "application/json")],
        )
        .await;
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert_eq!(
        (doc["status"].as_str(), doc["width"].as_i64()),
        (Some("completed"), Some(300))
    );
    assert_eq!(doc["jobId"], doc["job_id"]);
    let id = doc["jobId"].as_str().unwrap();
    let r = t.get(&format!("/api/v1/download/{id}"), kvrt).await;
    assert_eq!(r.status, 200);
    assert_eq!(&r.bytes[8..12], b"WEBP");
    assert_eq!(doc["downloadUrl"], format!("/api/v1/download/{id}"));

    // --- Convertly: its documented job, per-file settings, one Kiln batch.
    let form = Form::new()
        .text("jobType", "convert")
        .text("saveToStorage", "true")
        .part(
            "files",
            Part::bytes(std::fs::read(media("photo/coffee.png")).unwrap()).file_name("coffee.png"),
        )
        .part(
            "files",
            Part::bytes(std::fs::read(media("photo/chelsea.png")).unwrap())
                .file_name("chelsea.png"),
        )
        .text("formats", r#"["avif","webp"]"#)
        .text("compressions", "[60, 82]")
        .text("resizes", r#"["original","square"]"#)
        .text("resizeWidths", "[null, 128]")
        .text("createArchive", "true");
    let r = t
        .call(
            Method::POST,
            "/convertly/api/jobs",
            Some(&key),
            Body::Form(form),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(r.json()["status"], "pending");
    let job = r.json()["jobId"].as_str().unwrap().to_string();
    let doc = convertly_done(t, &key, &job).await;
    assert_eq!(doc["status"], "completed", "{doc}");
    assert_eq!(
        (
            doc["totalFiles"].as_i64(),
            doc["completedFiles"].as_i64(),
            doc["progress"].as_i64()
        ),
        (Some(2), Some(2), Some(100))
    );
    let results = doc["results"].as_array().unwrap();
    assert_eq!(
        (
            results[0]["filename"].as_str(),
            results[0]["mimeType"].as_str()
        ),
        (Some("coffee.avif"), Some("image/avif"))
    );
    assert_eq!(results[1]["filename"], "chelsea.webp");
    let avif = t
        .http
        .get(results[0]["downloadUrl"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&avif[4..12], b"ftypavif");
    let webp = t
        .http
        .get(results[1]["downloadUrl"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let img = image::load_from_memory(&webp).unwrap();
    assert_eq!(
        (img.width(), img.height()),
        (128, 128),
        "square at resizeWidth"
    );
    assert!(doc["archiveUrl"]
        .as_str()
        .unwrap()
        .ends_with(&format!("/api/v1/batches/{job}/archive")));

    // Its errors are {"error": "..."}.
    let form = Form::new()
        .part(
            "files",
            Part::bytes(std::fs::read(media("photo/coffee.png")).unwrap()).file_name("coffee.png"),
        )
        .text("formats", r#"["webp","png"]"#);
    let r = t
        .call(
            Method::POST,
            "/convertly/api/jobs",
            Some(&key),
            Body::Form(form),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"].as_str().unwrap().contains("one per file"),
        "{}",
        r.json()
    );
    let r = t
        .call(
            Method::GET,
            &format!("/convertly/api/jobs/{job}"),
            None,
            Body::None,
        )
        .await;
    assert_eq!(r.status, 401);
    assert!(r.json()["error"].is_string());
    let r = t
        .get(
            &format!("/convertly/api/jobs/{}", uuid::Uuid::now_v7()),
            &key,
        )
        .await;
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].is_string());

    // Cancelling: only a pending job; then 409.
    let busy = occupy_the_node(t, &key, dir).await;
    let form = Form::new()
        .text("jobType", "compress")
        .text("saveToStorage", "true")
        .part(
            "files",
            Part::bytes(std::fs::read(media("photo/rocket.jpg")).unwrap()).file_name("rocket.jpg"),
        );
    let r = t
        .call(
            Method::POST,
            "/convertly/api/jobs",
            Some(&key),
            Body::Form(form),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json());
    let waiting = r.json()["jobId"].as_str().unwrap().to_string();
    let r = t
        .call(
            Method::DELETE,
            &format!("/convertly/api/jobs/{waiting}"),
            Some(&key),
            Body::None,
        )
        .await;
    assert_eq!(
        (r.status, r.json()["status"].as_str()),
        (200, Some("cancelled")),
        "{}",
        r.json()
    );
    let r = t
        .call(
            Method::DELETE,
            &format!("/convertly/api/jobs/{waiting}"),
            Some(&key),
            Body::None,
        )
        .await;
    assert_eq!(r.status, 409);
    let r = t
        .call(
            Method::DELETE,
            &format!("/convertly/api/jobs/{job}"),
            Some(&key),
            Body::None,
        )
        .await;
    assert_eq!(r.status, 409, "a completed job cannot be cancelled");
    assert_eq!(
        t.get(&format!("/convertly/api/jobs/{waiting}"), &key)
            .await
            .json()["status"],
        "failed"
    );
    let r = t
        .call(
            Method::DELETE,
            &format!("/api/v1/jobs/{busy}"),
            Some(&key),
            Body::None,
        )
        .await;
    assert_eq!(r.status, 200);

    // Synchronous convert: its documented example, answered with data URLs.
    let form = Form::new()
        .part(
            "files",
            Part::bytes(std::fs::read(media("photo/astronaut.png")).unwrap()).file_name("hero.png"),
        )
        .text("format", "webp")
        .text("compression", "82")
        .text("resize", "website")
        .text("autoOrient", "true");
    let r = t
        .call(
            Method::POST,
            "/convertly/api/convert",
            Some(&key),
            Body::Form(form),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json());
    let f = &r.json()["files"][0];
    assert_eq!(
        (
            f["filename"].as_str(),
            f["mimeType"].as_str(),
            f["appliedQuality"].as_i64()
        ),
        (Some("hero.webp"), Some("image/webp"), Some(82))
    );
    assert!(f["downloadUrl"]
        .as_str()
        .unwrap()
        .starts_with("data:image/webp;base64,"));
    assert_eq!(r.json()["storage"]["saved"], false);

    // Synchronous compress to a target size: the same format, within the bytes asked.
    let form = Form::new()
        .part(
            "files",
            Part::bytes(std::fs::read(media("photo/rocket.jpg")).unwrap()).file_name("rocket.jpg"),
        )
        .text("mode", "target-size")
        .text("targetBytes", "20000")
        .text("saveToStorage", "true");
    let r = t
        .call(
            Method::POST,
            "/convertly/api/compress",
            Some(&key),
            Body::Form(form),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json());
    let f = &r.json()["files"][0];
    assert_eq!(f["mimeType"], "image/jpeg");
    assert!(f["finalSize"].as_i64().unwrap() <= 20_000, "{f}");
    assert!(f["storedFileId"].is_string());
    let got = t
        .http
        .get(f["downloadUrl"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.len() as i64, f["finalSize"].as_i64().unwrap());
    let form = Form::new()
        .part(
            "files",
            Part::bytes(std::fs::read(media("photo/rocket.jpg")).unwrap()).file_name("rocket.jpg"),
        )
        .text("mode", "target-size")
        .text("targetBytes", "10");
    let r = t
        .call(
            Method::POST,
            "/convertly/api/compress",
            Some(&key),
            Body::Form(form),
        )
        .await;
    assert_eq!(r.status, 422, "an impossible target is refused");
}
