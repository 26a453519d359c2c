//! The suite's harness: a webhook receiver and file server on loopback, the target under test
//! (one or two replicas), and helpers for what comes back.

use std::sync::{Arc, Mutex};

use kiln_control_plane::Config;
use kiln_protocol::testing::{S3Server, S3_ACCESS_KEY, S3_SECRET_KEY};

use crate::prelude::*;

// ---------------------------------------------------------------- webhook receiver + files

#[derive(Clone, Debug)]
pub struct Hook {
    pub event_id: String,
    pub event: String,
    pub attempt: u32,
    pub signature_ok: bool,
    pub body: Value,
    pub answered: u16,
}

#[derive(Clone, Default)]
pub struct Receiver {
    pub hooks: Arc<Mutex<Vec<Hook>>>,
    pub secret: Arc<Mutex<String>>,
    /// Convertrilo's managed webhooks, checked the way its docs do (hex HMAC-SHA256 of the raw
    /// body in `X-Webhook-Signature`, with the secret `POST /webhooks` returned).
    pub convertrilo: Arc<Mutex<Vec<Hook>>>,
    pub convertrilo_secret: Arc<Mutex<String>>,
    /// Answer 500 to this many attempts of each event before 200.
    pub fail_first: u32,
}

/// A loopback HTTP server: `POST /hook` records webhooks (checking the signature), `GET
/// /files/<name>` serves media for URL sources.
pub async fn receiver(fail_first: u32) -> (Receiver, String) {
    use axum::body::Bytes;
    use axum::http::HeaderMap;
    let r = Receiver {
        fail_first,
        ..Default::default()
    };
    let state = r.clone();
    let convertrilo = r.clone();
    let app = axum::Router::new()
        .route(
            "/convertrilo-hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let st = convertrilo.clone();
                async move {
                    let h = |n: &str| {
                        headers
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string()
                    };
                    let mut mac = Hmac::<Sha256>::new_from_slice(
                        st.convertrilo_secret.lock().unwrap().as_bytes(),
                    )
                    .unwrap();
                    mac.update(&body);
                    let signature_ok = hex::decode(h("x-webhook-signature"))
                        .map(|v| mac.verify_slice(&v).is_ok())
                        .unwrap_or(false);
                    st.convertrilo.lock().unwrap().push(Hook {
                        event_id: h("x-webhook-id"),
                        event: h("x-webhook-event"),
                        attempt: 1,
                        signature_ok,
                        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                        answered: if signature_ok { 204 } else { 401 },
                    });
                    // As Convertrilo's own receiver example: 401 for a bad signature.
                    if signature_ok {
                        axum::http::StatusCode::NO_CONTENT
                    } else {
                        axum::http::StatusCode::UNAUTHORIZED
                    }
                }
            }),
        )
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
pub struct Exchange {
    pub method: String,
    pub path: String,
    pub status: u16,
    pub json: Option<Value>,
}

pub struct Target {
    pub base: String,
    /// A second replica (fleet only), sharing Redis and Postgres.
    pub replica: Option<String>,
    pub http: reqwest::Client,
    pub log: Arc<Mutex<Vec<Exchange>>>,
    /// Every secret the run presented or was given (`crate::secrets`).
    pub secrets: Arc<Mutex<crate::secrets::Used>>,
    s3: S3Server,
    pub hooks_base: String,
    pub receiver: Receiver,
}

pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub bytes: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or(Value::Null)
    }
    pub fn header(&self, n: &str) -> Option<String> {
        self.headers.get(n).map(|v| v.to_str().unwrap().to_string())
    }
    pub fn code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap_or("").into()
    }
}

pub enum Body {
    None,
    Json(Value),
    Form(Form),
    Raw(&'static str, Vec<u8>),
}

impl Target {
    /// A target at `addr` (and a second replica's), with a fresh webhook receiver that answers
    /// 500 to the first `fail_first` attempts of each event.
    pub async fn new(
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
            secrets: Arc::new(Mutex::new(crate::secrets::Used {
                secrets: [crate::ADMIN.to_string(), S3_SECRET_KEY.to_string()].into(),
                signatures: Default::default(),
            })),
            s3,
            hooks_base,
            receiver,
        }
    }

    pub async fn call_at(
        &self,
        base: &str,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Body,
    ) -> Resp {
        self.call_with(base, method, path, key, body, &[]).await
    }

    /// A request with extra headers, recorded for the OpenAPI check.
    pub async fn call_with(
        &self,
        base: &str,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Body,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut req = self.http.request(method.clone(), format!("{base}{path}"));
        let mut secrets = crate::secrets::Used::default();
        crate::secrets::signatures_in(path, &mut secrets.signatures);
        for (k, v) in headers {
            req = req.header(*k, *v);
            let k = k.to_ascii_lowercase();
            if k.contains("key") && k != "idempotency-key" || k.contains("authorization") {
                crate::secrets::add(v.trim_start_matches("Bearer "), &mut secrets.secrets);
            }
        }
        if let Some(k) = key {
            req = req.bearer_auth(k);
            crate::secrets::add(k, &mut secrets.secrets);
        }
        req = match body {
            Body::None => req,
            Body::Json(v) => {
                crate::secrets::collect(&v, &mut secrets);
                req.json(&v)
            }
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
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(v) => crate::secrets::collect(&v, &mut secrets),
            Err(_) if bytes.len() < 1 << 20 => crate::secrets::signatures_in(
                &String::from_utf8_lossy(&bytes),
                &mut secrets.signatures,
            ),
            Err(_) => {}
        }
        let mut used = self.secrets.lock().unwrap();
        used.secrets.extend(secrets.secrets);
        used.signatures.extend(secrets.signatures);
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

    pub async fn call(&self, method: Method, path: &str, key: Option<&str>, body: Body) -> Resp {
        self.call_at(&self.base, method, path, key, body).await
    }

    pub async fn get(&self, path: &str, key: &str) -> Resp {
        self.call(Method::GET, path, Some(key), Body::None).await
    }

    pub async fn post(&self, path: &str, key: &str, v: Value) -> Resp {
        self.call(Method::POST, path, Some(key), Body::Json(v))
            .await
    }

    /// A key (`jobs:create`, `jobs:read`) on a new account of its own, made by the admin, so
    /// a part's requests leave the other accounts' per-minute budgets alone.
    pub async fn own_account_key(&self, name: &str, account: &str) -> String {
        let r = self
            .post(
                "/api/v1/keys",
                crate::ADMIN,
                json!({"name": name, "account_name": account, "scopes": ["jobs:create", "jobs:read"]}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.json());
        r.json()["key"].as_str().unwrap().to_string()
    }

    pub async fn upload(&self, key: &str, file: &Path, name: &str) -> String {
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
    pub async fn wait_job(&self, key: &str, id: &str) -> Value {
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

    pub async fn wait_status(&self, key: &str, id: &str, status: &str) -> Value {
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

    pub fn s3_location(&self, extra: Value) -> Value {
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

    /// The test bucket as Convertrilo names a bucket (`outputS3`/`sourceS3`).
    pub fn convertrilo_s3(&self, extra: Value) -> Value {
        let mut v = json!({
            "bucket": self.s3.bucket,
            "endpoint": format!("http://127.0.0.1:{}", self.s3.port),
            "region": "us-east-1",
            "accessKeyId": S3_ACCESS_KEY,
            "secretAccessKey": S3_SECRET_KEY,
            "forcePathStyle": true,
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    }

    pub fn bucket(&self) -> kiln_protocol::S3Store {
        S3Server::export_env();
        kiln_protocol::S3Store::from_url(&self.s3.url()).unwrap()
    }
}

pub fn base_config(dir: &Path) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        bootstrap_key: Some(ADMIN.into()),
        url_allowlist: "127.0.0.1".into(),
        webhook_backoff_ms: 200,
        ..Config::default()
    }
}

// ----------------------------------------------------------------------------- helpers

pub async fn zip_names(bytes: &[u8]) -> Vec<String> {
    let z = async_zip::base::read::mem::ZipFileReader::new(bytes.to_vec())
        .await
        .expect("a valid zip");
    z.file()
        .entries()
        .iter()
        .map(|e| e.filename().as_str().unwrap().to_string())
        .collect()
}

pub async fn zip_entry(bytes: &[u8], i: usize) -> Vec<u8> {
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

pub fn ffprobe_codec(path: &Path) -> String {
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

/// Every stream of `target` (a file or a URL, a playlist included) as `ffprobe` decodes it:
/// one CSV line per stream with the `stream=` `entries` asked for (`nb_read_frames` counts
/// the frames decoded).
pub fn ffprobe_streams(target: &str, entries: &str) -> String {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-show_entries"])
        .arg(format!("stream={entries}"))
        .args(["-of", "csv=p=0", target])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffprobe {target}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
