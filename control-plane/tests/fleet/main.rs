//! Fleet mode against real services on loopback: a Redis server, the local PostgreSQL and an
//! S3-compatible server (s3s-fs), a control plane, and `kiln-gpu-node` *processes*. One node is
//! SIGKILLed mid-encode; Redis is restarted (empty) mid-batch. Every job must complete exactly
//! once with a valid output.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiln_control_plane::{start, Config, Running};
use kiln_protocol::testing::{RedisServer, S3Server};
use reqwest::multipart::{Form, Part};
use serde_json::Value;

mod chunks;
#[path = "../common/mod.rs"]
mod common;
mod faults;
use common::{make_clip, node_binary, ScratchPg};

const KEY: &str = "kiln_fleet_test_key_0123456789";

/// The fleet tests start several processes each; running them one at a time keeps the
/// 2-core CI machine from timing out leases by starvation.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Duration and codec of a media file, by the ffprobe CLI (an independent check).
fn ffprobe(path: &Path) -> (f64, String) {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0"])
        .args([
            "-show_entries",
            "stream=codec_name:format=duration",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .expect("ffprobe CLI");
    assert!(out.status.success(), "ffprobe rejected {}", path.display());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        v["format"]["duration"].as_str().unwrap().parse().unwrap(),
        v["streams"][0]["codec_name"].as_str().unwrap().to_string(),
    )
}

struct Fleet {
    running: Option<Running>,
    base: String,
    http: reqwest::Client,
    redis: RedisServer,
    s3: S3Server,
    pg: Option<ScratchPg>,
    nodes: HashMap<String, Child>,
    dir: tempfile::TempDir,
}

impl Fleet {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let redis = RedisServer::start();
        let s3 = S3Server::start();
        S3Server::export_env();
        let (pg, db_url) = ScratchPg::create("kiln_fleet").await;
        let config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().join("cp"),
            bootstrap_key: Some(KEY.into()),
            redis_url: Some(redis.url()),
            database_url: Some(db_url),
            storage_url: Some(s3.url()),
            ..Config::default()
        };
        assert_eq!(config.embedded_slots(), 0, "fleet mode runs no local node");
        let running = start(config).await.expect("control plane starts");
        Self {
            base: format!("http://{}", running.addr),
            running: Some(running),
            http: reqwest::Client::new(),
            redis,
            s3,
            pg: Some(pg),
            nodes: HashMap::new(),
            dir,
        }
    }

    fn spawn_node(&mut self, id: &str) {
        self.spawn_node_with(id, &[]);
    }

    fn spawn_node_with(&mut self, id: &str, extra: &[(&str, &str)]) {
        let log = std::fs::File::create(self.dir.path().join(format!("{id}.log"))).unwrap();
        let child = Command::new(node_binary())
            .env("REDIS_URL", self.redis.url())
            .env("KILN_STORAGE_URL", self.s3.url())
            .envs(S3Server::env())
            .env("KILN_NODE_ID", id)
            .env("KILN_NODE_SLOTS", "1")
            .env("KILN_LEASE_SECS", "3")
            .env("KILN_DRAIN_TIMEOUT_SECS", "30")
            .env("KILN_NODE_METRICS_LISTEN", "127.0.0.1:0")
            .env("KILN_IMAGE_RESIZER", "cpu")
            .env(
                "KILN_SCRATCH_DIR",
                self.dir.path().join(format!("scratch-{id}")),
            )
            .env("RUST_LOG", "info")
            .envs(extra.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("node starts");
        self.nodes.insert(id.to_string(), child);
    }

    fn node_log(&self, id: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{id}.log"))).unwrap_or_default()
    }

    fn signal(&mut self, id: &str, signal: &str) {
        let pid = self.nodes[id].id().to_string();
        assert!(Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap()
            .success());
    }

    /// Take node `id` out of the fleet and wait (up to 30 s) for it to exit; `what` names the
    /// wait in the failure message.
    async fn wait_exit(&mut self, id: &str, what: &str) -> std::process::ExitStatus {
        let mut child = self.nodes.remove(id).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "{id} did not stop {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
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

    async fn submit(&self, clip: &Path, fields: &[(&str, &str)]) -> String {
        let bytes = std::fs::read(clip).unwrap();
        let mut form = Form::new().part("file", Part::bytes(bytes).file_name("clip.mp4"));
        for (k, v) in fields {
            form = form.text(k.to_string(), v.to_string());
        }
        let r = self
            .http
            .post(self.url("/api/v1/compress"))
            .bearer_auth(KEY)
            .multipart(form)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, 202, "{body}");
        body["job_id"].as_str().unwrap().to_string()
    }

    async fn status(&self, id: &str) -> Value {
        let (code, body) = self.get_json(&format!("/api/v1/status/{id}")).await;
        assert_eq!(code, 200, "{body}");
        body
    }

    /// Wait until `n` nodes are registered and ready; returns the node list.
    async fn wait_nodes(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (code, body) = self.get_json("/api/v1/nodes").await;
            assert_eq!(code, 200, "{body}");
            let ready: Vec<Value> = body["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|n| n["state"] == "ready")
                .cloned()
                .collect();
            if ready.len() == n {
                return ready;
            }
            assert!(
                Instant::now() < deadline,
                "{n} nodes never became ready: {body}\n{}",
                self.node_log("node-a")
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Poll every job until all are completed or failed; returns the final documents and
    /// every progress value seen while processing.
    async fn wait_all(&self, ids: &[String]) -> (Vec<Value>, Vec<f64>) {
        let deadline = Instant::now() + Duration::from_secs(400);
        let mut progress = Vec::new();
        loop {
            let mut docs = Vec::new();
            for id in ids {
                let doc = self.status(id).await;
                if doc["status"] == "processing" {
                    progress.push(doc["progress"].as_f64().unwrap());
                }
                docs.push(doc);
            }
            if docs
                .iter()
                .all(|d| d["status"] == "completed" || d["status"] == "failed")
            {
                return (docs, progress);
            }
            assert!(
                Instant::now() < deadline,
                "jobs did not finish: {docs:#?}\n--- node-a ---\n{}\n--- node-b ---\n{}",
                self.node_log("node-a"),
                self.node_log("node-b")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn metric(&self, name_and_labels: &str) -> f64 {
        let text = self
            .http
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Download every output, check it with ffprobe, and check a Range request on one.
    async fn check_outputs(&self, docs: &[Value], clip_seconds: f64) {
        for d in docs {
            assert_eq!(d["status"], "completed", "{d}");
            let id = d["job_id"].as_str().unwrap();
            let r = self
                .http
                .get(self.url(&format!("/api/v1/download/{id}")))
                .bearer_auth(KEY)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
            let bytes = r.bytes().await.unwrap();
            assert_eq!(bytes.len() as i64, d["output_size"].as_i64().unwrap());
            let path = self.dir.path().join(format!("{id}.mp4"));
            std::fs::write(&path, &bytes).unwrap();
            let (duration, codec) = ffprobe(&path);
            assert_eq!(codec, "h264");
            assert!((duration - clip_seconds).abs() < 0.5, "duration {duration}");

            let r = self
                .http
                .get(self.url(&format!("/api/v1/download/{id}")))
                .bearer_auth(KEY)
                .header("Range", "bytes=100-1099")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 206);
            assert_eq!(
                r.headers()["content-range"].to_str().unwrap(),
                format!("bytes 100-1099/{}", bytes.len())
            );
            assert_eq!(r.bytes().await.unwrap(), bytes[100..1100]);

            let r = self
                .http
                .get(self.url(&format!("/api/v1/download/{id}")))
                .bearer_auth(KEY)
                .header("Range", format!("bytes={}-", bytes.len()))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 416);
            assert_eq!(
                r.headers()["content-range"].to_str().unwrap(),
                format!("bytes */{}", bytes.len())
            );
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["error"]["code"], "range_not_satisfiable");
        }
    }

    async fn stop(mut self) {
        for (_, mut c) in self.nodes.drain() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.running.take().unwrap().shutdown().await;
        if let Some(pg) = self.pg.take() {
            pg.drop_db().await;
        }
    }
}
