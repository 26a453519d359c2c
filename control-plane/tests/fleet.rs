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

mod common;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_encode_loses_no_job() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut fleet = Fleet::start().await;
    let clip = fleet.dir.path().join("clip.mp4");
    make_clip(&clip, 10, "640x360");
    fleet.spawn_node("node-a");
    fleet.spawn_node("node-b");
    let nodes = fleet.wait_nodes(2).await;
    for n in &nodes {
        let classes: Vec<&str> = n["classes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert!(
            classes.contains(&"h264") && classes.contains(&"h264:cpu"),
            "{n}"
        );
        assert!(!classes.contains(&"h264:nvenc"), "no NVENC here: {n}");
        assert!(n["capabilities"]["encoders"]
            .as_array()
            .unwrap()
            .contains(&Value::from("libx264")));
        assert_eq!(n["slots"], 1);
    }

    // A job that needs NVENC: no node here has it, and its status says so.
    let nvenc = fleet
        .submit(&clip, &[("codec", "h264"), ("hardware", "nvenc")])
        .await;
    let doc = fleet.status(&nvenc).await;
    assert_eq!(doc["status"], "pending");
    let why = doc["waiting_reason"].as_str().unwrap_or_default();
    assert!(why.contains("NVENC for h264"), "{doc}");

    // The slow preset keeps each encode long enough (seconds) for several progress reports
    // to be seen while polling, and for the kill to land mid-encode.
    let fields = [
        ("codec", "h264"),
        ("quality", "28"),
        ("resolution", "360p"),
        ("preset", "slow"),
    ];
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(fleet.submit(&clip, &fields).await);
    }
    assert_eq!(fleet.status(&ids[0]).await["waiting_reason"], Value::Null);

    // Kill node-a (SIGKILL: no drain, no goodbye) while it encodes a job.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut progress_seen = Vec::new();
    let victim = loop {
        let mut found = None;
        for id in &ids {
            let d = fleet.status(id).await;
            if d["status"] == "processing" {
                progress_seen.push(d["progress"].as_f64().unwrap());
            }
            if d["status"] == "processing"
                && d["node_id"].as_str().unwrap_or("").starts_with("node-a")
                && d["progress"].as_f64().unwrap() < 50.0
            {
                found = Some(id.clone());
            }
        }
        if let Some(v) = found {
            break v;
        }
        assert!(Instant::now() < deadline, "node-a never took a job");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    fleet.signal("node-a", "KILL");

    let (docs, progress) = fleet.wait_all(&ids).await;
    progress_seen.extend(progress);
    let victim_doc = docs
        .iter()
        .find(|d| d["job_id"] == victim.as_str())
        .unwrap();
    assert!(
        victim_doc["attempts"].as_i64().unwrap() >= 2,
        "the killed node's job ran again: {victim_doc}"
    );
    assert!(victim_doc["node_id"]
        .as_str()
        .unwrap()
        .starts_with("node-b"));
    assert!(
        progress_seen.iter().any(|p| *p > 0.0 && *p < 100.0),
        "live progress was visible while jobs ran: {progress_seen:?}"
    );
    fleet.check_outputs(&docs, 10.0).await;
    // Completed exactly once each, however many attempts ran.
    assert_eq!(
        fleet
            .metric("kiln_jobs_finished_total{status=\"completed\"}")
            .await,
        5.0
    );
    assert!(fleet.metric("kiln_jobs_requeued_total").await >= 1.0);
    assert_eq!(fleet.status(&nvenc).await["status"], "pending");

    // node-b's own metrics endpoint, as it registered it.
    let (_, body) = fleet.get_json("/api/v1/nodes").await;
    let b = body["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node_id"] == "node-b")
        .unwrap()
        .clone();
    let metrics = reqwest::get(format!(
        "http://{}/metrics",
        b["metrics_addr"].as_str().unwrap()
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    assert!(
        metrics.contains("kiln_node_jobs_total{codec=\"h264\",outcome=\"completed\"}"),
        "{metrics}"
    );

    // SIGTERM: an idle node drains at once, leaves the registry and exits cleanly.
    fleet.signal("node-b", "TERM");
    let status = fleet.wait_exit("node-b", "on SIGTERM").await;
    assert!(status.success(), "{}", fleet.node_log("node-b"));
    let (_, body) = fleet.get_json("/api/v1/nodes").await;
    assert!(
        !body.to_string().contains("\"node-b\""),
        "a drained node leaves the registry: {body}"
    );
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_mid_batch_loses_no_job() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut fleet = Fleet::start().await;
    let clip = fleet.dir.path().join("clip.mp4");
    make_clip(&clip, 4, "640x360");
    fleet.spawn_node("node-a");
    fleet.wait_nodes(1).await;
    let fields = [("codec", "h264"), ("quality", "28"), ("resolution", "360p")];
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(fleet.submit(&clip, &fields).await);
    }
    // Wait until the batch is under way, then restart Redis empty (no persistence: the worst
    // case — the queue, leases, events and registry are all gone).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let d = fleet.status(&ids[1]).await;
        if d["status"] != "pending" {
            break;
        }
        assert!(Instant::now() < deadline, "the batch never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fleet.redis.kill();
    let health = fleet.http.get(fleet.url("/healthz")).send().await.unwrap();
    assert_eq!(
        health.status().as_u16(),
        503,
        "healthz reports the lost queue"
    );
    fleet.redis.restart();

    let (docs, _) = fleet.wait_all(&ids).await;
    assert!(
        docs.iter().any(|d| d["attempts"].as_i64().unwrap() >= 2),
        "the jobs Redis forgot were queued again from the database: {docs:#?}"
    );
    fleet.check_outputs(&docs, 4.0).await;
    assert_eq!(
        fleet
            .metric("kiln_jobs_finished_total{status=\"completed\"}")
            .await,
        4.0,
        "each job completed exactly once"
    );
    // The node re-registered with the new Redis.
    fleet.wait_nodes(1).await;
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_hands_back_what_it_cannot_finish() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut fleet = Fleet::start().await;
    let clip = fleet.dir.path().join("clip.mp4");
    make_clip(&clip, 20, "640x360");
    // node-a may keep running jobs for 1 s after SIGTERM, then must hand them back.
    fleet.spawn_node_with("node-a", &[("KILN_DRAIN_TIMEOUT_SECS", "1")]);
    fleet.wait_nodes(1).await;
    let id = fleet
        .submit(&clip, &[("codec", "h264"), ("preset", "slow")])
        .await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while fleet.status(&id).await["status"] != "processing" {
        assert!(Instant::now() < deadline, "node-a never started the job");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fleet.signal("node-a", "TERM");
    let exit = fleet.wait_exit("node-a", "after draining").await;
    assert!(exit.success(), "{}", fleet.node_log("node-a"));
    // Handed back, not abandoned: queued again as attempt 2.
    let deadline = Instant::now() + Duration::from_secs(5);
    let doc = loop {
        let doc = fleet.status(&id).await;
        if doc["status"] == "pending" && doc["attempts"] == 2 {
            break doc;
        }
        assert!(Instant::now() < deadline, "not handed back: {doc}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        doc["waiting_reason"]
            .as_str()
            .unwrap_or("")
            .starts_with("no live node"),
        "{doc}"
    );
    fleet.spawn_node("node-b");
    let (docs, _) = fleet.wait_all(std::slice::from_ref(&id)).await;
    assert!(docs[0]["node_id"].as_str().unwrap().starts_with("node-b"));
    fleet.check_outputs(&docs, 20.0).await;
    fleet.stop().await;
}
