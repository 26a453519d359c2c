//! The whole API over HTTP, against the embedded default (SQLite, local store, in-process
//! queue and node) and against fleet services (real Redis, PostgreSQL, an S3-compatible
//! server, a `kiln-gpu-node` process, and two control-plane replicas sharing rate limits).
//! Webhooks go to a real receiver on loopback that verifies signatures and answers 500 to
//! the first attempts; S3 sources and destinations use the real S3 server. Every request the
//! suite makes is recorded and checked against the served OpenAPI document, and every
//! documented operation must have been exercised.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use kiln_control_plane::{start, Config};
use kiln_protocol::testing::{RedisServer, S3Server, S3_ACCESS_KEY, S3_SECRET_KEY};
use kiln_protocol::Store;
use reqwest::multipart::{Form, Part};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;

mod common;
use common::{make_clip, media, node_binary, ScratchPg};

const ADMIN: &str = "kiln_api_test_admin_key_0123456789";

/// These tests start servers and encode; one at a time keeps the 2-core CI machine sane.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------- webhook receiver + files

#[derive(Clone, Debug)]
struct Hook {
    event_id: String,
    event: String,
    attempt: u32,
    signature_ok: bool,
    body: Value,
    answered: u16,
}

#[derive(Clone, Default)]
struct Receiver {
    hooks: Arc<Mutex<Vec<Hook>>>,
    secret: Arc<Mutex<String>>,
    /// Answer 500 to this many attempts of each event before 200.
    fail_first: u32,
}

/// A loopback HTTP server: `POST /hook` records webhooks (checking the signature), `GET
/// /files/<name>` serves media for URL sources.
async fn receiver(fail_first: u32) -> (Receiver, String) {
    use axum::body::Bytes;
    use axum::http::HeaderMap;
    let r = Receiver {
        fail_first,
        ..Default::default()
    };
    let state = r.clone();
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let st = state.clone();
                async move {
                    let h = |n: &str| {
                        headers
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string()
                    };
                    let sig = h("kiln-signature");
                    let (t, v1) = sig
                        .split_once(",v1=")
                        .map(|(t, v)| (t.trim_start_matches("t=").to_string(), v.to_string()))
                        .unwrap_or_default();
                    let mut mac =
                        Hmac::<Sha256>::new_from_slice(st.secret.lock().unwrap().as_bytes())
                            .unwrap();
                    mac.update(t.as_bytes());
                    mac.update(b".");
                    mac.update(&body);
                    let signature_ok = hex::decode(&v1)
                        .map(|v| mac.verify_slice(&v).is_ok())
                        .unwrap_or(false);
                    let event_id = h("kiln-event-id");
                    let mut hooks = st.hooks.lock().unwrap();
                    let seen = hooks.iter().filter(|x| x.event_id == event_id).count() as u32;
                    let answered = if seen < st.fail_first { 500 } else { 200 };
                    hooks.push(Hook {
                        event_id,
                        event: h("kiln-event-type"),
                        attempt: h("kiln-delivery-attempt").parse().unwrap_or(0),
                        signature_ok,
                        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                        answered,
                    });
                    axum::http::StatusCode::from_u16(answered).unwrap()
                }
            }),
        )
        .route(
            "/files/{name}",
            axum::routing::get(
                |axum::extract::Path(name): axum::extract::Path<String>| async move {
                    let path = match name.as_str() {
                        "rocket.jpg" => media("photo/rocket.jpg"),
                        "bikes.mp4" => media("video/bikes.mp4"),
                        _ => return Err(axum::http::StatusCode::NOT_FOUND),
                    };
                    Ok(std::fs::read(path).unwrap())
                },
            ),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (r, base)
}

// ---------------------------------------------------------------------------- the target

/// One recorded exchange, for the OpenAPI check.
#[derive(Clone, Debug)]
struct Exchange {
    method: String,
    path: String,
    status: u16,
    json: Option<Value>,
}

struct Target {
    base: String,
    /// A second replica (fleet only), sharing Redis and Postgres.
    replica: Option<String>,
    http: reqwest::Client,
    log: Arc<Mutex<Vec<Exchange>>>,
    s3: S3Server,
    hooks_base: String,
    receiver: Receiver,
}

struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    bytes: Vec<u8>,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or(Value::Null)
    }
    fn header(&self, n: &str) -> Option<String> {
        self.headers.get(n).map(|v| v.to_str().unwrap().to_string())
    }
    fn code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap_or("").into()
    }
}

enum Body {
    None,
    Json(Value),
    Form(Form),
    Raw(&'static str, Vec<u8>),
}

impl Target {
    /// A target at `addr` (and a second replica's), with a fresh webhook receiver that answers
    /// 500 to the first `fail_first` attempts of each event.
    async fn new(
        addr: std::net::SocketAddr,
        replica: Option<std::net::SocketAddr>,
        s3: S3Server,
        fail_first: u32,
    ) -> Self {
        let (receiver, hooks_base) = receiver(fail_first).await;
        Self {
            base: format!("http://{addr}"),
            replica: replica.map(|r| format!("http://{r}")),
            http: reqwest::Client::new(),
            log: Default::default(),
            s3,
            hooks_base,
            receiver,
        }
    }

    async fn call_at(
        &self,
        base: &str,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Body,
    ) -> Resp {
        let mut req = self.http.request(method.clone(), format!("{base}{path}"));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        req = match body {
            Body::None => req,
            Body::Json(v) => req.json(&v),
            Body::Form(f) => req.multipart(f),
            Body::Raw(ct, b) => req.header("content-type", ct).body(b),
        };
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let bytes = r.bytes().await.unwrap().to_vec();
        let is_json = headers
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap().starts_with("application/json"));
        self.log.lock().unwrap().push(Exchange {
            method: method.as_str().to_lowercase(),
            path: path.split('?').next().unwrap().to_string(),
            status,
            json: is_json.then(|| serde_json::from_slice(&bytes).unwrap()),
        });
        Resp {
            status,
            headers,
            bytes,
        }
    }

    async fn call(&self, method: Method, path: &str, key: Option<&str>, body: Body) -> Resp {
        self.call_at(&self.base, method, path, key, body).await
    }

    async fn get(&self, path: &str, key: &str) -> Resp {
        self.call(Method::GET, path, Some(key), Body::None).await
    }

    async fn post(&self, path: &str, key: &str, v: Value) -> Resp {
        self.call(Method::POST, path, Some(key), Body::Json(v))
            .await
    }

    async fn upload(&self, key: &str, file: &Path, name: &str) -> String {
        let form = Form::new().part(
            "file",
            Part::bytes(std::fs::read(file).unwrap()).file_name(name.to_string()),
        );
        let r = self
            .call(Method::POST, "/api/v1/uploads", Some(key), Body::Form(form))
            .await;
        assert_eq!(r.status, 201, "{}", r.json());
        r.json()["upload_id"].as_str().unwrap().to_string()
    }

    /// Poll a job until it is final.
    async fn wait_job(&self, key: &str, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let r = self.get(&format!("/api/v1/jobs/{id}"), key).await;
            assert_eq!(r.status, 200, "{}", r.json());
            let doc = r.json();
            if ["completed", "failed", "cancelled"].contains(&doc["status"].as_str().unwrap()) {
                return doc;
            }
            assert!(Instant::now() < deadline, "job {id} did not finish: {doc}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn wait_status(&self, key: &str, id: &str, status: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let doc = self.get(&format!("/api/v1/jobs/{id}"), key).await.json();
            if doc["status"] == status {
                return doc;
            }
            assert!(Instant::now() < deadline, "job {id} never {status}: {doc}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn s3_location(&self, extra: Value) -> Value {
        let mut v = json!({
            "bucket": self.s3.bucket,
            "endpoint": format!("http://127.0.0.1:{}", self.s3.port),
            "region": "us-east-1",
            "credentials": {"access_key_id": S3_ACCESS_KEY, "secret_access_key": S3_SECRET_KEY},
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    }

    fn bucket(&self) -> kiln_protocol::S3Store {
        S3Server::export_env();
        kiln_protocol::S3Store::from_url(&self.s3.url()).unwrap()
    }
}

fn base_config(dir: &Path) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        bootstrap_key: Some(ADMIN.into()),
        url_allowlist: "127.0.0.1".into(),
        webhook_backoff_ms: 200,
        ..Config::default()
    }
}

// ------------------------------------------------------------------------------ the suite

async fn suite(t: &Target, dir: &Path) {
    // --- Keys, accounts and scopes.
    let r = t
        .post(
            "/api/v1/keys",
            ADMIN,
            json!({"name": "acme backend", "account_name": "acme", "scopes": ["jobs:create", "jobs:read", "jobs:cancel", "usage:read"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json());
    let acme = r.json();
    let key = acme["key"].as_str().unwrap().to_string();
    let acme_account = acme["account_id"].as_str().unwrap().to_string();
    let r = t
        .post(
            "/api/v1/keys",
            ADMIN,
            json!({"name": "acme dashboard", "account_id": acme_account, "scopes": ["jobs:read"]}),
        )
        .await;
    assert_eq!(r.status, 201);
    let reader = r.json()["key"].as_str().unwrap().to_string();
    let r = t
        .post(
            "/api/v1/keys",
            ADMIN,
            json!({"name": "other", "scopes": ["jobs:create", "jobs:read", "jobs:cancel"]}),
        )
        .await;
    let other = r.json()["key"].as_str().unwrap().to_string();
    let r = t.get("/api/v1/keys", ADMIN).await;
    assert_eq!(r.status, 200);
    let listed = r.json();
    assert!(listed["keys"].as_array().unwrap().len() >= 4);
    assert!(
        !r.bytes.windows(key.len()).any(|w| w == key.as_bytes()),
        "keys are never listed"
    );
    for (bad, code) in [
        (json!({"name": "x", "scopes": ["root"]}), 400),
        (json!({"name": "x", "scopes": []}), 400),
        (
            json!({"name": "x", "scopes": ["admin"], "account_id": "nope"}),
            404,
        ),
    ] {
        assert_eq!(t.post("/api/v1/keys", ADMIN, bad).await.status, code);
    }
    assert_eq!(
        t.post(
            "/api/v1/keys",
            &key,
            json!({"name": "x", "scopes": ["admin"]})
        )
        .await
        .code(),
        "forbidden"
    );
    // X-API-Key works as well as Bearer.
    let r = t
        .http
        .get(format!("{}/api/v1/account", t.base))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let account: Value = r.json().await.unwrap();
    let secret = account["webhook_secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    // Rotating it: later webhooks are signed with the new secret (the receiver checks).
    assert_eq!(
        t.call(
            Method::POST,
            "/api/v1/account/webhook-secret",
            Some(&reader),
            Body::None
        )
        .await
        .code(),
        "forbidden"
    );
    let r = t
        .call(
            Method::POST,
            "/api/v1/account/webhook-secret",
            Some(&key),
            Body::None,
        )
        .await;
    assert_eq!(r.status, 200);
    let rotated = r.json()["webhook_secret"].as_str().unwrap().to_string();
    assert!(rotated.starts_with("whsec_") && rotated != secret);
    *t.receiver.secret.lock().unwrap() = rotated;
    assert!(
        t.get("/api/v1/account", &reader).await.json()["webhook_secret"].is_null(),
        "read-only keys do not see the secret"
    );
    // A revoked key stops working at once.
    let r = t
        .post(
            "/api/v1/keys",
            ADMIN,
            json!({"name": "temp", "account_id": acme_account, "scopes": ["jobs:read"]}),
        )
        .await;
    let (temp, temp_id) = (
        r.json()["key"].as_str().unwrap().to_string(),
        r.json()["id"].as_str().unwrap().to_string(),
    );
    assert_eq!(t.get("/api/v1/jobs", &temp).await.status, 200);
    let r = t
        .call(
            Method::DELETE,
            &format!("/api/v1/keys/{temp_id}"),
            Some(ADMIN),
            Body::None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.json()["revoked_at"].is_string());
    assert_eq!(t.get("/api/v1/jobs", &temp).await.code(), "unauthorized");
    assert_eq!(
        t.call(Method::DELETE, "/api/v1/keys/nope", Some(ADMIN), Body::None)
            .await
            .status,
        404
    );

    // --- Errors are JSON with stable codes.
    assert_eq!(
        t.call(Method::GET, "/api/v1/jobs", None, Body::None)
            .await
            .code(),
        "unauthorized"
    );
    assert_eq!(
        t.get("/api/v1/jobs", "kiln_wrong").await.code(),
        "unauthorized"
    );
    assert_eq!(t.get("/api/v1/nope", &key).await.code(), "not_found");
    let r = t
        .call(
            Method::POST,
            "/api/v1/jobs",
            Some(&key),
            Body::Raw("application/json", b"{\"source\":".to_vec()),
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (400, "bad_request"));
    let r = t
        .call(
            Method::POST,
            "/api/v1/jobs",
            Some(&key),
            Body::Raw("text/plain", b"hi".to_vec()),
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (415, "unsupported_media"));
    for (bad, code) in [
        (
            json!({"source": {}, "outputs": [{"codec": "h264"}]}),
            "bad_request",
        ),
        (
            json!({"source": {"upload_id": "x", "url": "https://example.com/a"}, "outputs": [{"codec": "h264"}]}),
            "bad_request",
        ),
        (
            json!({"source": {"upload_id": "0190a0a0-0000-7000-8000-000000000000"}, "outputs": [{"codec": "h264"}]}),
            "not_found",
        ),
        (
            json!({"source": {"url": "https://10.0.0.1/a.mp4"}, "outputs": [{"codec": "h264"}]}),
            "bad_request",
        ),
        (
            json!({"source": {"url": "https://169.254.169.254/latest/meta-data"}, "outputs": [{"codec": "h264"}]}),
            "bad_request",
        ),
        (
            json!({"source": {"url": "http://example.com/a.mp4"}, "outputs": [{"codec": "h264"}]}),
            "bad_request",
        ),
        (
            json!({"source": {"url": "file:///etc/passwd"}, "outputs": [{"codec": "h264"}]}),
            "bad_request",
        ),
        (
            json!({"source": {"url": format!("{}/files/bikes.mp4", t.hooks_base)}, "outputs": [{"codec": "h266"}]}),
            "bad_request",
        ),
        (
            json!({"source": {"url": format!("{}/files/bikes.mp4", t.hooks_base)}, "outputs": [{"codec": "h264"}], "webhook_url": "https://192.168.1.1/hook"}),
            "bad_request",
        ),
        (
            json!({"source": {"url": format!("{}/files/missing.mp4", t.hooks_base)}, "outputs": [{"codec": "h264"}]}),
            "unprocessable",
        ),
        (
            json!({"source": {"url": format!("{}/files/bikes.mp4", t.hooks_base)}, "outputs": []}),
            "bad_request",
        ),
        (
            json!({"source": {"url": format!("{}/files/bikes.mp4", t.hooks_base)}, "outputs": [{"codec": "h264"}], "bogus": 1}),
            "bad_request",
        ),
    ] {
        let r = t.post("/api/v1/jobs", &key, bad.clone()).await;
        assert_eq!(r.code(), code, "{bad} -> {}", r.json());
    }
    assert_eq!(
        t.post(
            "/api/v1/jobs",
            &reader,
            json!({"source": {"upload_id": "x"}, "outputs": [{"codec": "h264"}]})
        )
        .await
        .code(),
        "forbidden"
    );

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

    // --- Downloads: keyed, Range, pre-signed without a key, tampered signatures refused.
    let doc = t.wait_job(&key, &compress_id).await;
    assert_eq!(doc["status"], "completed", "{doc}");
    assert_eq!(doc["input"]["filename"], "bikes.mp4");
    assert!(doc["output"]["expires_at"].is_string());
    assert!(doc["output"]["compression_ratio"].as_i64().unwrap() > 0);
    let keyed = t
        .get(&format!("/api/v1/download/{compress_id}"), &key)
        .await;
    assert_eq!(keyed.status, 200);
    let signed = doc["signed_download_url"].as_str().unwrap();
    let r = t.call(Method::GET, signed, None, Body::None).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.bytes, keyed.bytes,
        "the signed link serves the same output"
    );
    let tampered = signed.replace("signature=", "signature=0");
    assert_eq!(
        t.call(Method::GET, &tampered, None, Body::None)
            .await
            .code(),
        "forbidden"
    );
    let expired_link = signed.replace("expires=", "expires=1");
    assert_eq!(
        t.call(Method::GET, &expired_link, None, Body::None)
            .await
            .code(),
        "forbidden"
    );
    let r = t
        .http
        .get(format!("{}/api/v1/download/{compress_id}", t.base))
        .bearer_auth(&key)
        .header("range", "bytes=0-99")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap().len(), 100);

    // --- Webhooks: signed, retried after 500s with the same event id, attempts visible.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let hooks = t.receiver.hooks.lock().unwrap().clone();
        let done: Vec<&Hook> = hooks
            .iter()
            .filter(|h| h.event == "job.completed")
            .collect();
        if done.iter().any(|h| h.answered == 200) {
            assert!(
                hooks.iter().all(|h| h.signature_ok),
                "every webhook is signed with the account's secret"
            );
            assert_eq!(done.len(), 3, "two 500s, then delivered: {done:?}");
            assert!(
                done.iter().all(|h| h.event_id == done[0].event_id),
                "retries keep the event id"
            );
            assert_eq!(
                done.iter().map(|h| h.attempt).collect::<Vec<_>>(),
                [1, 2, 3]
            );
            assert_eq!(done[2].body["type"], "job.completed");
            assert_eq!(done[2].body["data"]["job_id"], compress_id.as_str());
            assert_eq!(done[2].body["data"]["status"], "completed");
            assert!(
                hooks.iter().any(|h| h.event == "job.progress"),
                "progress events were asked for"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no completed webhook: {hooks:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let doc = t
        .get(&format!("/api/v1/jobs/{compress_id}"), &key)
        .await
        .json();
    let deliveries = doc["webhook"]["deliveries"].as_array().unwrap();
    let completed = deliveries
        .iter()
        .find(|d| d["event"] == "job.completed")
        .unwrap();
    assert_eq!(
        (
            completed["status"].as_str(),
            completed["attempts"].as_i64(),
            completed["last_status_code"].as_i64()
        ),
        (Some("delivered"), Some(3), Some(200))
    );

    // --- Cancellation: a running job and a pending one behind it.
    let clip = dir.join("long.mp4");
    make_clip(&clip, 30, "1280x720");
    let long = t.upload(&key, &clip, "long.mp4").await;
    let r = t
        .post(
            "/api/v1/jobs",
            &key,
            json!({"source": {"upload_id": long}, "outputs": [{"codec": "h265", "preset": "slow"}, {"codec": "h265", "preset": "slow"}],
                   "webhook_url": format!("{}/hook", t.hooks_base)}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.json());
    let ids: Vec<String> = r.json()["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect();
    t.wait_status(&key, &ids[0], "processing").await;
    assert_eq!(
        t.get(&format!("/api/v1/jobs/{}", ids[1]), &key)
            .await
            .json()["status"],
        "pending"
    );
    assert_eq!(
        t.call(
            Method::DELETE,
            &format!("/api/v1/jobs/{}", ids[0]),
            Some(&reader),
            Body::None
        )
        .await
        .code(),
        "forbidden"
    );
    assert_eq!(
        t.call(
            Method::DELETE,
            &format!("/api/v1/jobs/{}", ids[0]),
            Some(&other),
            Body::None
        )
        .await
        .code(),
        "not_found"
    );
    for id in ids.iter().rev() {
        let r = t
            .call(
                Method::DELETE,
                &format!("/api/v1/jobs/{id}"),
                Some(&key),
                Body::None,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.json());
        assert_eq!(r.json()["status"], "cancelled");
    }
    assert_eq!(
        t.call(
            Method::DELETE,
            &format!("/api/v1/jobs/{}", ids[0]),
            Some(&key),
            Body::None
        )
        .await
        .code(),
        "conflict"
    );
    // The node lets go of the cancelled work: a small job submitted now completes promptly.
    let r = t
        .post(
            "/api/v1/jobs",
            &key,
            json!({"source": {"upload_id": photo}, "outputs": [{"format": "png", "width": 50}]}),
        )
        .await;
    let after = r.json()["jobs"][0]["id"].as_str().unwrap().to_string();
    let started = Instant::now();
    assert_eq!(t.wait_job(&key, &after).await["status"], "completed");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the cancelled encodes kept the node busy"
    );
    for id in &ids {
        let doc = t.get(&format!("/api/v1/jobs/{id}"), &key).await.json();
        assert_eq!(
            doc["status"], "cancelled",
            "a cancelled job never comes back: {doc}"
        );
        assert_eq!(
            t.get(&format!("/api/v1/download/{id}"), &key).await.code(),
            "conflict"
        );
    }
    assert!(
        t.get(&format!("/api/v1/jobs/{}", ids[1]), &key)
            .await
            .json()["node_id"]
            .is_null(),
        "the pending job never ran"
    );

    // --- Lists: pages by cursor, filters, isolation between accounts.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/jobs?limit=3&cursor={c}"),
            None => "/api/v1/jobs?limit=3".to_string(),
        };
        let page = t.get(&path, &key).await.json();
        for j in page["jobs"].as_array().unwrap() {
            seen.push(j["id"].as_str().unwrap().to_string());
        }
        if !page["has_more"].as_bool().unwrap() {
            assert!(page["next_cursor"].is_null());
            break;
        }
        cursor = Some(page["next_cursor"].as_str().unwrap().to_string());
    }
    let unique: BTreeSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no job twice across pages");
    assert_eq!(
        seen.len(),
        1 + 2 + 1 + 1 + 8 + 2 + 1,
        "every job of the account, once"
    );
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted, "newest first");
    let cancelled = t.get("/api/v1/jobs?status=cancelled", &key).await.json();
    assert_eq!(cancelled["jobs"].as_array().unwrap().len(), 2);
    assert_eq!(
        t.get("/api/v1/jobs?cursor=zzz", &key).await.code(),
        "bad_request"
    );
    assert_eq!(
        t.get("/api/v1/jobs?limit=0", &key).await.code(),
        "bad_request"
    );
    assert_eq!(
        t.get("/api/v1/jobs?status=done", &key).await.code(),
        "bad_request"
    );
    assert!(t.get("/api/v1/jobs", &other).await.json()["jobs"]
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(
        t.get(&format!("/api/v1/jobs/{compress_id}"), &other)
            .await
            .code(),
        "not_found"
    );
    assert_eq!(
        t.get(&format!("/api/v1/status/{compress_id}"), &reader)
            .await
            .status,
        200
    );

    // --- Usage.
    let u = t.get("/api/v1/usage", &key).await.json();
    assert_eq!(u["jobs"]["total"], seen.len());
    assert_eq!(u["jobs"]["cancelled"], 2);
    assert_eq!(u["jobs"]["completed"], seen.len() - 2);
    assert!(u["input_bytes"].as_i64().unwrap() > 0 && u["output_bytes"].as_i64().unwrap() > 0);
    assert!(u["encoded_minutes"].as_f64().unwrap() >= 0.4, "{u}");
    assert!(
        u["cpu_seconds"].as_f64().unwrap() + u["gpu_seconds"].as_f64().unwrap() > 0.0,
        "{u}"
    );
    assert_eq!(
        u["credits_used"],
        seen.len() - 2,
        "cancelled jobs are refunded"
    );
    assert_eq!(
        t.get("/api/v1/usage?from=2020-01-01&to=2020-02-01", &key)
            .await
            .json()["jobs"]["total"],
        0
    );
    assert_eq!(
        t.get("/api/v1/usage?from=yesterday", &key).await.code(),
        "bad_request"
    );
    assert_eq!(t.get("/api/v1/usage", &reader).await.code(), "forbidden");

    // --- Credits and quotas: charged on submit, refunded on failure.
    let r = t
        .post(
            "/api/v1/accounts",
            ADMIN,
            json!({"name": "metered", "credits": 2}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json());
    let metered = r.json()["id"].as_str().unwrap().to_string();
    let mkey = t.post("/api/v1/keys", ADMIN, json!({"name": "m", "account_id": metered, "scopes": ["jobs:create", "jobs:read", "usage:read"]})).await.json()["key"].as_str().unwrap().to_string();
    let bad_image = {
        let form = Form::new().part(
            "file",
            Part::bytes(b"\x89PNG\r\n\x1a\n but not really".to_vec()).file_name("bad.png"),
        );
        let r = t
            .call(
                Method::POST,
                "/api/v1/uploads",
                Some(&mkey),
                Body::Form(form),
            )
            .await;
        r.json()["upload_id"].as_str().unwrap().to_string()
    };
    // A good job is charged and kept; a batch beyond the balance is refused.
    let mphoto = t
        .upload(&mkey, &media("photo/rocket.jpg"), "rocket.jpg")
        .await;
    let r = t
        .post(
            "/api/v1/jobs",
            &mkey,
            json!({"source": {"upload_id": mphoto}, "outputs": [{"format": "png", "width": 32}]}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.json());
    assert_eq!(r.json()["credits_charged"], 1);
    let good = r.json()["jobs"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(t.wait_job(&mkey, &good).await["status"], "completed");
    assert_eq!(
        t.get("/api/v1/usage", &mkey).await.json()["credits_remaining"],
        1
    );
    let r = t
        .post("/api/v1/jobs", &mkey, json!({"source": {"upload_id": mphoto}, "outputs": [{"format": "png"}, {"format": "jpg"}]}))
        .await;
    assert_eq!((r.status, r.code().as_str()), (402, "payment_required"));
    // A job that fails gives its credit back.
    let r = t
        .post(
            "/api/v1/jobs",
            &mkey,
            json!({"source": {"upload_id": bad_image}, "outputs": [{"format": "png"}]}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.json());
    let failing = r.json()["jobs"][0]["id"].as_str().unwrap().to_string();
    let doc = t.wait_job(&mkey, &failing).await;
    assert_eq!(doc["status"], "failed", "{doc}");
    assert_eq!(doc["error"]["code"], "decode_failed");
    assert_eq!(
        t.get("/api/v1/usage", &mkey).await.json()["credits_remaining"],
        1,
        "refunded"
    );
    let r = t
        .call(
            Method::PATCH,
            &format!("/api/v1/accounts/{metered}"),
            Some(ADMIN),
            Body::Json(json!({"monthly_job_quota": 1, "add_credits": 5})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(r.json()["credits"], 6);
    let r = t
        .post(
            "/api/v1/jobs",
            &mkey,
            json!({"source": {"upload_id": bad_image}, "outputs": [{"format": "png"}]}),
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (429, "rate_limited"));
    assert!(r.header("retry-after").is_some());
    assert_eq!(
        t.call(
            Method::PATCH,
            "/api/v1/accounts/nope",
            Some(ADMIN),
            Body::Json(json!({"credits": 1}))
        )
        .await
        .status,
        404
    );

    // --- Rate limits: per key and class; headers on every response; shared by replicas.
    let r = t.post("/api/v1/keys", ADMIN, json!({"name": "limited", "account_id": acme_account, "scopes": ["jobs:read", "jobs:create"], "rate_limits": {"read": 4, "submit": 1}})).await;
    let limited = r.json()["key"].as_str().unwrap().to_string();
    let mut remaining = Vec::new();
    for i in 0..4 {
        let base = match (&t.replica, i % 2) {
            (Some(rep), 1) => rep.clone(),
            _ => t.base.clone(),
        };
        let r = t
            .call_at(
                &base,
                Method::GET,
                "/api/v1/jobs?limit=1",
                Some(&limited),
                Body::None,
            )
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-ratelimit-limit").as_deref(), Some("4"));
        assert!(
            r.header("x-ratelimit-reset")
                .unwrap()
                .parse::<u64>()
                .unwrap()
                <= 60
        );
        remaining.push(r.header("x-ratelimit-remaining").unwrap());
    }
    // Windows are per minute; a window boundary in the middle restarts the count.
    if remaining != ["3", "2", "1", "0"] {
        eprintln!("rate-limit window rolled over mid-test: {remaining:?}");
    } else {
        let r = t.get("/api/v1/jobs", &limited).await;
        assert_eq!((r.status, r.code().as_str()), (429, "rate_limited"));
        let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry));
        assert_eq!(r.header("x-ratelimit-remaining").as_deref(), Some("0"));
        // Writes have their own window.
        let r = t.post("/api/v1/jobs", &limited, json!({"source": {"upload_id": photo}, "outputs": [{"format": "png", "width": 20}]})).await;
        assert_eq!(r.status, 202, "{}", r.json());
        assert_eq!(
            t.post("/api/v1/jobs", &limited, json!({})).await.status,
            429
        );
    }
    assert!(t
        .get("/api/v1/jobs", &key)
        .await
        .header("x-ratelimit-limit")
        .is_some());

    // --- Target quality: `target_vmaf` picks the CRF and reports the VMAF it measured;
    // `encoder_crf` takes the encoder's own scale.
    let tuner = t
        .post(
            "/api/v1/keys",
            ADMIN,
            json!({"name": "tuner", "account_name": "tuning", "scopes": ["jobs:create", "jobs:read"]}),
        )
        .await
        .json()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let upload = t
        .upload(&tuner, &media("video/bikes.mp4"), "bikes.mp4")
        .await;
    let r = t
        .post(
            "/api/v1/jobs",
            &tuner,
            json!({"source": {"upload_id": upload}, "outputs": [
                {"codec": "h264", "preset": "veryfast", "resolution": "320x136", "target_vmaf": 85},
                {"codec": "h264", "preset": "ultrafast", "resolution": "160x68", "encoder_crf": 30}
            ]}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.json());
    let ids: Vec<String> = r.json()["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect();
    let doc = t.wait_job(&tuner, &ids[0]).await;
    assert_eq!(doc["status"], "completed", "{doc}");
    assert_eq!(
        (doc["method"].as_str(), doc["target_vmaf"].as_f64()),
        (Some("vmaf"), Some(85.0))
    );
    let v = &doc["vmaf"];
    assert_eq!(v["met"], true, "{doc}");
    assert!(v["achieved"].as_f64().unwrap() >= 84.0, "{doc}");
    assert!((10..=51).contains(&v["crf"].as_i64().unwrap()), "{doc}");
    assert!(v["probes"].as_i64().unwrap() >= 2, "{doc}");
    assert_eq!(doc["encoding"]["vmaf"], *v);
    let doc = t.wait_job(&tuner, &ids[1]).await;
    assert_eq!(doc["status"], "completed", "{doc}");
    assert_eq!(
        (doc["method"].as_str(), doc["encoder_crf"].as_i64()),
        (Some("encoder_crf"), Some(30))
    );
    assert!(doc["vmaf"].is_null());
    assert_eq!(
        t.post("/api/v1/jobs", &tuner, json!({"source": {"upload_id": upload}, "outputs": [{"codec": "h264", "target_vmaf": 100}]}))
            .await
            .code(),
        "bad_request"
    );

    // --- Nodes (admin) and the OpenAPI document.
    assert_eq!(t.get("/api/v1/nodes", ADMIN).await.status, 200);
    assert_eq!(t.get("/api/v1/nodes", &key).await.code(), "forbidden");
    let r = t
        .call(Method::GET, "/api/v1/openapi.json", None, Body::None)
        .await;
    assert_eq!(r.status, 200);
    check_openapi(&r.json(), &t.log.lock().unwrap());
}

// ------------------------------------------------------------------------- OpenAPI check

/// Every recorded exchange must be a documented operation answering a documented status
/// with a body that matches its schema; every documented operation must have been called.
fn check_openapi(spec: &Value, log: &[Exchange]) {
    assert!(
        spec["openapi"].as_str().unwrap().starts_with("3.1"),
        "OpenAPI 3.1"
    );
    let paths = spec["paths"].as_object().unwrap();
    let mut exercised: HashMap<(String, String), usize> = HashMap::new();
    for e in log {
        if e.path == "/api/v1/openapi.json" {
            continue;
        }
        let Some((template, ops)) = paths.iter().find(|(tpl, _)| path_matches(tpl, &e.path)) else {
            assert_eq!(e.status, 404, "undocumented path answered: {e:?}");
            continue;
        };
        let op = &ops[&e.method];
        assert!(op.is_object(), "{} {template} is not documented", e.method);
        *exercised
            .entry((e.method.clone(), template.clone()))
            .or_default() += 1;
        let resp = &op["responses"][e.status.to_string()];
        assert!(
            resp.is_object(),
            "{} {template} answered {} which is not documented: {:?}",
            e.method,
            e.status,
            e.json
        );
        if let (Some(body), Some(schema)) = (
            &e.json,
            resp["content"]["application/json"]["schema"].as_object(),
        ) {
            if let Err(why) = validate(spec, &Value::Object(schema.clone()), body, "$") {
                panic!(
                    "{} {template} {}: body does not match its schema: {why}\n{body:#}",
                    e.method, e.status
                );
            }
        }
    }
    for (tpl, ops) in paths {
        for m in ops.as_object().unwrap().keys() {
            assert!(
                exercised.contains_key(&(m.clone(), tpl.clone())),
                "documented {m} {tpl} was never exercised"
            );
        }
    }
}

fn path_matches(template: &str, path: &str) -> bool {
    let (a, b): (Vec<_>, Vec<_>) = (template.split('/').collect(), path.split('/').collect());
    a.len() == b.len() && a.iter().zip(&b).all(|(t, p)| t.starts_with('{') || t == p)
}

fn resolve<'a>(spec: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let name = r.rsplit('/').next().unwrap();
            resolve(spec, &spec["components"]["schemas"][name])
        }
        None => schema,
    }
}

fn validate(spec: &Value, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
    let s = resolve(spec, schema);
    if let Some(all) = s["allOf"].as_array() {
        for sub in all {
            validate(spec, sub, v, at)?;
        }
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(any) = s[key].as_array() {
            if !any.iter().any(|sub| validate(spec, sub, v, at).is_ok()) {
                return Err(format!("{at}: matches none of {key}"));
            }
        }
    }
    let types: Vec<&str> = match &s["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(a) => a.iter().filter_map(|t| t.as_str()).collect(),
        _ => vec![],
    };
    let nullable = s["nullable"].as_bool().unwrap_or(false);
    if v.is_null() {
        return if types.is_empty() || types.contains(&"null") || nullable {
            Ok(())
        } else {
            Err(format!("{at}: null where {types:?} is expected"))
        };
    }
    if !types.is_empty() {
        let ok = types.iter().any(|t| match *t {
            "string" => v.is_string(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            "array" => v.is_array(),
            "object" => v.is_object(),
            _ => false,
        });
        if !ok {
            return Err(format!("{at}: {v} is not {types:?}"));
        }
    }
    if let (Some(obj), Some(props)) = (v.as_object(), s["properties"].as_object()) {
        for req in s["required"].as_array().into_iter().flatten() {
            let req = req.as_str().unwrap();
            if !obj.contains_key(req) {
                return Err(format!("{at}: required property {req:?} is missing"));
            }
        }
        for (k, sub) in props {
            if let Some(x) = obj.get(k) {
                validate(spec, sub, x, &format!("{at}.{k}"))?;
            }
        }
    }
    if let (Some(items), Some(arr)) = (s.get("items"), v.as_array()) {
        for (i, x) in arr.iter().enumerate() {
            validate(spec, items, x, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

// ----------------------------------------------------------------------------- helpers

async fn zip_names(bytes: &[u8]) -> Vec<String> {
    let z = async_zip::base::read::mem::ZipFileReader::new(bytes.to_vec())
        .await
        .expect("a valid zip");
    z.file()
        .entries()
        .iter()
        .map(|e| e.filename().as_str().unwrap().to_string())
        .collect()
}

async fn zip_entry(bytes: &[u8], i: usize) -> Vec<u8> {
    use futures::AsyncReadExt;
    let z = async_zip::base::read::mem::ZipFileReader::new(bytes.to_vec())
        .await
        .unwrap();
    let mut out = Vec::new();
    z.reader_with_entry(i)
        .await
        .unwrap()
        .read_to_end(&mut out)
        .await
        .unwrap();
    out
}

fn ffprobe_codec(path: &Path) -> String {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=codec_name",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "ffprobe rejected {}", path.display());
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

// ------------------------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn whole_api_on_the_embedded_default() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let running = start(base_config(&dir.path().join("cp"))).await.unwrap();
    let t = Target::new(running.addr, None, S3Server::start(), 2).await;
    suite(&t, dir.path()).await;
    running.shutdown().await;
}

struct NodeProcess(Child);

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn whole_api_on_fleet_services() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start();
    let s3 = S3Server::start();
    S3Server::export_env();
    let (pg, db_url) = ScratchPg::create("kiln_api").await;
    let config = |name: &str| Config {
        redis_url: Some(redis.url()),
        database_url: Some(db_url.clone()),
        storage_url: Some(s3.url()),
        instance_id: name.into(),
        ..base_config(&dir.path().join(name))
    };
    let a = start(config("cp-a")).await.unwrap();
    let b = start(config("cp-b")).await.unwrap();
    let log = std::fs::File::create(dir.path().join("node.log")).unwrap();
    let node = NodeProcess(
        Command::new(node_binary())
            .env("REDIS_URL", redis.url())
            .env("KILN_STORAGE_URL", s3.url())
            .envs(S3Server::env())
            .env("KILN_NODE_ID", "api-node")
            .env("KILN_NODE_SLOTS", "1")
            .env("KILN_NODE_METRICS_LISTEN", "127.0.0.1:0")
            .env("KILN_IMAGE_RESIZER", "cpu")
            .env("KILN_SCRATCH_DIR", dir.path().join("scratch"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let t = Target::new(a.addr, Some(b.addr), s3, 2).await;
    suite(&t, dir.path()).await;
    drop(node);
    a.shutdown().await;
    b.shutdown().await;
    drop(redis);
    pg.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outputs_expire_with_410_and_the_sweeper_deletes_them() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let running = start(Config {
        output_ttl_secs: 2,
        upload_ttl_secs: 2,
        max_upload_bytes: 400_000,
        ..base_config(&dir.path().join("cp"))
    })
    .await
    .unwrap();
    let t = Target::new(running.addr, None, S3Server::start(), 0).await;
    // Oversize sources are refused with 413 and leave nothing behind: an upload, a URL.
    let form = Form::new().part(
        "file",
        Part::bytes(std::fs::read(media("video/bikes.mp4")).unwrap()).file_name("bikes.mp4"),
    );
    let r = t
        .call(
            Method::POST,
            "/api/v1/uploads",
            Some(ADMIN),
            Body::Form(form),
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (413, "payload_too_large"));
    let r = t
        .post(
            "/api/v1/jobs",
            ADMIN,
            json!({"source": {"url": format!("{}/files/bikes.mp4", t.hooks_base)}, "outputs": [{"codec": "h264"}]}),
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (413, "payload_too_large"));
    let leftovers: Vec<_> = ["uploads", "sources"]
        .iter()
        .flat_map(|d| {
            std::fs::read_dir(dir.path().join("cp/storage").join(d))
                .into_iter()
                .flatten()
        })
        .collect();
    assert!(
        leftovers.is_empty(),
        "refused sources left files: {leftovers:?}"
    );
    let upload = t
        .upload(ADMIN, &media("photo/rocket.jpg"), "rocket.jpg")
        .await;
    let r = t
        .post(
            "/api/v1/jobs",
            ADMIN,
            json!({"source": {"upload_id": upload}, "outputs": [{"format": "png", "width": 64}]}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.json());
    let id = r.json()["jobs"][0]["id"].as_str().unwrap().to_string();
    let doc = t.wait_job(ADMIN, &id).await;
    assert_eq!(doc["status"], "completed");
    let signed = doc["signed_download_url"].as_str().unwrap().to_string();
    let output = dir
        .path()
        .join("cp/storage/outputs")
        .join(format!("{id}.png"));
    let source = dir.path().join("cp/storage/uploads").join(&upload);
    assert!(output.exists() && source.exists());
    let deadline = Instant::now() + Duration::from_secs(30);
    while output.exists() || source.exists() {
        assert!(
            Instant::now() < deadline,
            "the sweeper never deleted the expired output and upload"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = t.get(&format!("/api/v1/download/{id}"), ADMIN).await;
    assert_eq!((r.status, r.code().as_str()), (410, "gone"));
    assert_eq!(
        t.call(Method::GET, &signed, None, Body::None).await.code(),
        "gone"
    );
    let doc = t.get(&format!("/api/v1/jobs/{id}"), ADMIN).await.json();
    assert_eq!(doc["output"]["expired"], true);
    assert!(doc["download_url"].is_null());
    let r = t
        .post(
            "/api/v1/jobs",
            ADMIN,
            json!({"source": {"upload_id": upload}, "outputs": [{"format": "png"}]}),
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (410, "gone"),
        "an expired upload cannot be used"
    );
    running.shutdown().await;
}

#[tokio::test]
async fn keys_cli_creates_lists_and_revokes() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let bin = node_binary().with_file_name("kiln-control-plane");
    let cli = |args: &[&str]| {
        let out = Command::new(&bin)
            .arg("keys")
            .args(args)
            .args(["--data-dir", dir.path().to_str().unwrap()])
            .env_remove("DATABASE_URL")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, out, err) = cli(&[
        "create",
        "--name",
        "ci",
        "--scopes",
        "jobs:read,usage:read",
        "--rate-read",
        "7",
    ]);
    assert!(ok, "{err}");
    let created: Value = serde_json::from_str(&out).unwrap();
    let key = created["key"].as_str().unwrap().to_string();
    let id = created["id"].as_str().unwrap().to_string();
    assert!(
        !cli(&["create", "--name", "x", "--scopes", "root"]).0,
        "unknown scopes are refused"
    );
    let (ok, out, _) = cli(&["list"]);
    assert!(ok);
    assert!(
        out.contains(&id) && !out.contains(&key),
        "listed by id, never the key"
    );

    // The server on the same data dir accepts the key, with its scopes and limit.
    let running = start(base_config(dir.path())).await.unwrap();
    let base = format!("http://{}", running.addr);
    let http = reqwest::Client::new();
    let r = http
        .get(format!("{base}/api/v1/usage"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-ratelimit-limit"], "7");
    let r = http
        .post(format!("{base}/api/v1/jobs"))
        .bearer_auth(&key)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "no jobs:create scope");
    assert!(cli(&["revoke", &id]).0);
    assert!(!cli(&["revoke", "nope"]).0);
    let r = http
        .get(format!("{base}/api/v1/usage"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    running.shutdown().await;
}

/// Konvrt's published quick start (compress, poll status, `curl -O` the result), run with the
/// real `curl` and nothing changed but the base URL and the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn konvrt_quick_start_runs_with_curl() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let running = start(base_config(&dir.path().join("cp"))).await.unwrap();
    let base = format!("http://{}", running.addr);
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::copy(media("video/bikes.mp4"), work.join("video.mp4")).unwrap();
    let auth = format!("Authorization: Bearer {ADMIN}");
    let curl = |args: Vec<String>| {
        let work = work.clone();
        async move {
            let out = tokio::process::Command::new("curl")
                .arg("-sS")
                .args(&args)
                .current_dir(&work)
                .output()
                .await
                .expect("curl (deploy/setup-debian.sh --test installs it)");
            assert!(
                out.status.success(),
                "curl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        }
    };
    // 1. Compress a video
    let out = curl(vec![
        "-X".into(),
        "POST".into(),
        format!("{base}/api/v1/compress"),
        "-H".into(),
        auth.clone(),
        "-F".into(),
        "file=@video.mp4".into(),
        "-F".into(),
        "codec=h264".into(),
        "-F".into(),
        "quality=23".into(),
    ])
    .await;
    let accepted: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(accepted["status"], "pending");
    let id = accepted["job_id"].as_str().unwrap().to_string();
    assert_eq!(accepted["status_url"], format!("/api/v1/status/{id}"));
    // 2. Check status
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = curl(vec![
            format!("{base}/api/v1/status/{id}"),
            "-H".into(),
            auth.clone(),
        ])
        .await;
        let status: Value = serde_json::from_str(&out).unwrap();
        if status["status"] == "completed" {
            assert_eq!(status["progress"], 100.0);
            assert_eq!(status["input"]["filename"], "video.mp4");
            assert!(status["output"]["size_bytes"].as_i64().unwrap() > 0);
            assert_eq!(
                status["output"]["download_url"],
                format!("/api/v1/download/{id}")
            );
            break;
        }
        assert_ne!(status["status"], "failed", "{status}");
        assert!(Instant::now() < deadline, "never completed: {status}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // 3. Download when complete
    curl(vec![
        "-O".into(),
        format!("{base}/api/v1/download/{id}"),
        "-H".into(),
        auth.clone(),
    ])
    .await;
    let saved = work.join(&id);
    assert_eq!(ffprobe_codec(&saved), "h264");
    running.shutdown().await;
}

/// A job recorded with its charge but never handed to the queue (the control plane died
/// between the commit and the enqueue) is queued by the outbox and runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_recorded_but_never_queued_is_queued_by_the_outbox() {
    use kiln_control_plane::db::jobs::NewJob;
    use kiln_control_plane::db::submissions::NewSubmission;
    use kiln_protocol::{ImageParams, JobSpec, Task};

    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let running = start(base_config(&dir.path().join("cp"))).await.unwrap();
    let t = Target::new(running.addr, None, S3Server::start(), 0).await;
    let upload = t
        .upload(ADMIN, &media("photo/coffee.png"), "coffee.png")
        .await;
    let account = t.get("/api/v1/account", ADMIN).await.json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The submission's transaction, as the service commits it, and nothing after it.
    let db = kiln_control_plane::db::Db::connect(&format!(
        "sqlite://{}",
        dir.path().join("cp/kiln.db").display()
    ))
    .await
    .unwrap();
    let id = uuid::Uuid::now_v7().to_string();
    let mut fields = std::collections::BTreeMap::new();
    fields.insert("format".to_string(), "webp".to_string());
    fields.insert("width".to_string(), "100".to_string());
    let spec = JobSpec {
        id: id.clone(),
        attempt: 1,
        source_key: format!("uploads/{upload}"),
        output_key: format!("outputs/{id}.webp"),
        task: Task::Image(ImageParams { fields }),
    };
    let spec_json = serde_json::to_string(&spec).unwrap();
    let now = kiln_protocol::now_ms();
    db.record_submission(&NewSubmission {
        account_id: &account,
        cost: 0,
        month: (0, i64::MAX),
        batch: None,
        jobs: vec![NewJob {
            id: &id,
            account_id: &account,
            kind: "image",
            spec: &spec_json,
            source_key: &spec.source_key,
            output_key: &spec.output_key,
            input_name: Some("coffee.png"),
            input_size: 1,
            codec: None,
            batch_id: None,
            webhook_url: None,
            webhook_progress: false,
            destination: None,
            credits: 0,
        }],
        enqueue_after: now - 1,
    })
    .await
    .unwrap();
    let doc = t.wait_job(ADMIN, &id).await;
    assert_eq!(doc["status"], "completed", "{doc}");
    assert_eq!(doc["output"]["width"], 100);
    let r = t.get(&format!("/api/v1/jobs/{id}/download"), ADMIN).await;
    assert_eq!(&r.bytes[8..12], b"WEBP");
    running.shutdown().await;
}
