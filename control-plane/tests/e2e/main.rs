//! End to end through a real server on a loopback port: the embedded default (SQLite, local
//! store, in-process queue, local node), real media, outputs checked with ffprobe.

use std::path::Path;
use std::time::{Duration, Instant};

use kiln_control_plane::{start, Config, Running};
use reqwest::multipart::{Form, Part};
use serde_json::Value;

#[path = "../common/mod.rs"]
mod common;
mod edges;
use common::media;

const KEY: &str = "kiln_e2e_test_key_0123456789";

struct Server {
    running: Option<Running>,
    base: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().to_path_buf(),
            bootstrap_key: Some(KEY.into()),
            ..Config::default()
        };
        adjust(&mut config);
        let running = start(config).await.expect("server starts");
        assert_eq!(running.created_admin_key.as_deref(), Some(KEY));
        Self {
            base: format!("http://{}", running.addr),
            running: Some(running),
            http: reqwest::Client::new(),
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn post_form(&self, path: &str, form: Form) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .bearer_auth(KEY)
            .multipart(form)
            .send()
            .await
            .unwrap()
    }

    async fn get_json(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    async fn download(&self, id: &str) -> reqwest::Response {
        self.http
            .get(self.url(&format!("/api/v1/download/{id}")))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap()
    }

    /// Submit a video; returns (HTTP status, body).
    async fn compress(&self, file: Part, fields: &[(&str, &str)]) -> (u16, Value) {
        let mut form = Form::new().part("file", file);
        for (k, v) in fields {
            form = form.text(k.to_string(), v.to_string());
        }
        let r = self.post_form("/api/v1/compress", form).await;
        (r.status().as_u16(), r.json().await.unwrap())
    }

    /// Poll a job until it is completed or failed; returns every status document seen.
    async fn wait(&self, id: &str) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(240);
        let mut seen = Vec::new();
        loop {
            let (code, body) = self.get_json(&format!("/api/v1/status/{id}")).await;
            assert_eq!(code, 200, "{body}");
            let status = body["status"].as_str().unwrap().to_string();
            seen.push(body);
            if status == "completed" || status == "failed" {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} did not finish: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    }

    async fn stop(mut self) {
        self.running.take().unwrap().shutdown().await;
    }
}

fn file_part(path: &Path) -> Part {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    Part::bytes(std::fs::read(path).unwrap()).file_name(name)
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"))
}

/// ffprobe's view of a file: (codec_type, codec, width, height, duration) per stream.
fn ffprobe(path: &Path) -> Vec<(String, String, u32, u32, f64)> {
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type,codec_name,width,height,duration",
        ])
        .args(["-of", "json"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["codec_type"].as_str().unwrap_or("").to_string(),
                s["codec_name"].as_str().unwrap_or("").to_string(),
                s["width"].as_u64().unwrap_or(0) as u32,
                s["height"].as_u64().unwrap_or(0) as u32,
                s["duration"]
                    .as_str()
                    .and_then(|d| d.parse().ok())
                    .unwrap_or(0.0),
            )
        })
        .collect()
}

/// Statuses must move forward only, and progress never goes back.
fn assert_forward_only(seen: &[Value]) {
    let rank = |s: &str| match s {
        "pending" => 0,
        "processing" => 1,
        _ => 2,
    };
    for w in seen.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        assert!(
            rank(a["status"].as_str().unwrap()) <= rank(b["status"].as_str().unwrap()),
            "{a} then {b}"
        );
        assert!(
            a["progress"].as_f64().unwrap() <= b["progress"].as_f64().unwrap(),
            "{a} then {b}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_and_image_paths_end_to_end() {
    let s = Server::start().await;

    let r = s.http.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // Auth: missing and wrong keys get 401 with the JSON error body.
    let r = s.http.get(s.url("/api/v1/status/x")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(error_code(&r.json().await.unwrap()), "unauthorized");
    let r = s
        .http
        .get(s.url("/api/v1/status/x"))
        .bearer_auth("kiln_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(error_code(&r.json().await.unwrap()), "unauthorized");

    // Video: bikes (640x272, 10 s, no audio) to 320x136 at CRF 28.
    let (code, body) = s
        .compress(
            file_part(&media("video/bikes.mp4")),
            &[
                ("codec", "h264"),
                ("quality", "28"),
                ("resolution", "320x136"),
            ],
        )
        .await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(body["status"], "pending");
    let id = body["job_id"].as_str().unwrap().to_string();
    assert_eq!(body["status_url"], format!("/api/v1/status/{id}"));

    let seen = s.wait(&id).await;
    assert_forward_only(&seen);
    let last = seen.last().unwrap();
    assert_eq!(last["status"], "completed", "{last}");
    assert_eq!(last["progress"], 100.0);
    let input_size = std::fs::metadata(media("video/bikes.mp4")).unwrap().len();
    assert_eq!(last["input_size"], input_size);
    let output_size = last["output_size"].as_u64().unwrap();
    let ratio = last["compression_ratio"].as_f64().unwrap();
    assert!(
        (ratio - input_size as f64 / output_size as f64).abs() < 0.01,
        "{last}"
    );
    assert!(
        seen.iter().any(|v| v["status"] == "processing"),
        "never saw the job processing: {seen:?}"
    );

    let r = s.download(&id).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "video/mp4");
    let bytes = r.bytes().await.unwrap();
    assert_eq!(bytes.len() as u64, output_size);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bikes.mp4");
    std::fs::write(&out, &bytes).unwrap();
    let streams = ffprobe(&out);
    assert_eq!(streams.len(), 1, "{streams:?}");
    let (kind, codec, w, h, dur) = &streams[0];
    assert_eq!(
        (kind.as_str(), codec.as_str(), *w, *h),
        ("video", "h264", 320, 136)
    );
    assert!((dur - 10.0).abs() <= 0.08, "duration {dur}");

    // Video with audio, 360p shorthand: audio is kept.
    let (code, body) = s
        .compress(
            file_part(&media("video/bigbuckbunny.mp4")),
            &[("resolution", "360p")],
        )
        .await;
    assert_eq!(code, 202, "{body}");
    let id2 = body["job_id"].as_str().unwrap().to_string();
    let last = s.wait(&id2).await.pop().unwrap();
    assert_eq!(last["status"], "completed", "{last}");
    assert_eq!(last["output"]["width"], 640);
    assert_eq!(last["output"]["height"], 360);
    let bytes = s
        .http
        .get(s.url(&format!("/api/v1/download/{id2}")))
        .header("X-API-Key", KEY)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let out2 = dir.path().join("bbb.mp4");
    std::fs::write(&out2, &bytes).unwrap();
    let streams = ffprobe(&out2);
    assert!(
        streams
            .iter()
            .any(|s| s.0 == "video" && s.1 == "h264" && s.2 == 640 && s.3 == 360),
        "{streams:?}"
    );
    assert!(
        streams.iter().any(|s| s.0 == "audio"),
        "audio lost: {streams:?}"
    );

    // Images: PNG -> WebP at width 300, JPEG -> PNG inside 100x100.
    let r = s
        .post_form(
            "/api/v1/convert",
            Form::new()
                .part("file", file_part(&media("photo/coffee.png")))
                .text("format", "webp")
                .text("width", "300"),
        )
        .await;
    assert_eq!(r.status(), 200);
    let original = std::fs::metadata(media("photo/coffee.png"))
        .unwrap()
        .len()
        .to_string();
    assert_eq!(r.headers()["x-original-size"], original.as_str());
    assert_eq!(r.headers()["x-output-format"], "webp");
    assert_eq!(r.headers()["content-type"], "image/webp");
    // The node's one-time choice: lavapipe here means the CPU path measured faster.
    assert_eq!(
        r.headers()["x-resize-backend"],
        kiln_gpu_node::gpu::choice().backend.as_str()
    );
    let out_size: usize = r.headers()["x-output-size"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = r.bytes().await.unwrap();
    assert_eq!(body.len(), out_size);
    let img = image::load_from_memory_with_format(&body, image::ImageFormat::WebP).unwrap();
    assert_eq!((img.width(), img.height()), (300, 200));

    let r = s
        .post_form(
            "/api/v1/convert",
            Form::new()
                .part("file", file_part(&media("photo/rocket.jpg")))
                .text("format", "png")
                .text("width", "100")
                .text("height", "100"),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-output-format"], "png");
    let img =
        image::load_from_memory_with_format(&r.bytes().await.unwrap(), image::ImageFormat::Png)
            .unwrap();
    assert_eq!((img.width(), img.height()), (100, 67));

    // The blog's patterns as written there: `maxWidth`, and a 200x200 centre-cropped avatar;
    // HEIC in, AVIF out.
    let r = s
        .post_form(
            "/api/v1/convert",
            Form::new()
                .part(
                    "file",
                    file_part(&media("photo/seeding_by_Clements_Engelhardt.jpg")),
                )
                .text("maxWidth", "1200"),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-output-format"], "jpg");
    assert_eq!(r.headers()["x-shrink-on-load"], "4");
    let img = image::load_from_memory(&r.bytes().await.unwrap()).unwrap();
    assert_eq!((img.width(), img.height()), (1200, 675));
    let r = s
        .post_form(
            "/api/v1/convert",
            Form::new()
                .part("file", file_part(&media("photo/coffee.png")))
                .text("width", "200")
                .text("height", "200")
                .text("fit", "cover")
                .text("position", "centre")
                .text("format", "jpg"),
        )
        .await;
    assert_eq!(r.status(), 200);
    let img = image::load_from_memory(&r.bytes().await.unwrap()).unwrap();
    assert_eq!((img.width(), img.height()), (200, 200));
    let r = s
        .post_form(
            "/api/v1/convert",
            Form::new()
                .part("file", file_part(&media("photo/pug.heic")))
                .text("format", "avif")
                .text("width", "400")
                .text("quality", "40"),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/avif");
    assert_eq!(r.headers()["x-output-width"], "400");
    assert_eq!(r.headers()["x-output-height"], "300");
    let body = r.bytes().await.unwrap();
    assert_eq!(&body[4..12], b"ftypavif");

    s.stop().await;
}
