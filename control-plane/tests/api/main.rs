//! The whole API over HTTP, against the embedded default (SQLite, local store, in-process
//! queue and node) and against fleet services (real Redis, PostgreSQL, an S3-compatible
//! server, a `kiln-gpu-node` process, and two control-plane replicas sharing rate limits).
//! Webhooks go to a real receiver on loopback that verifies signatures and answers 500 to
//! the first attempts; S3 sources and destinations use the real S3 server. Every request the
//! suite makes is recorded and checked against the served OpenAPI document, and every
//! documented operation must have been exercised.
//!
//! Parts: `harness` (receiver, target, helpers), `suite/*` (the whole API, part by part),
//! `browser` (hls.js in headless Chromium plays a ladder; the console walk's driver),
//! `console` (the console in Chromium), `fuzz` (schemathesis against the published schema),
//! `openapi` (the document check), `more` (expiry, the keys CLI, Konvrt's curl quick start,
//! the outbox), `secrets` (no secret in the logs or in the clear at rest).

use std::process::Child;

use kiln_control_plane::{start, Config};
use kiln_protocol::testing::{RedisServer, S3Server};

mod browser;
#[path = "../common/mod.rs"]
mod common;
mod console;
mod doc_examples;
mod fuzz;
mod guard;
mod harness;
mod more;
mod openapi;
mod secrets;
mod suite;

use common::{node_binary, ScratchPg};
use prelude::*;

pub const ADMIN: &str = "kiln_api_test_admin_key_0123456789";

/// These tests start servers and encode; one at a time keeps the 2-core CI machine sane.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What every part of the suite uses.
mod prelude {
    pub use std::collections::{BTreeSet, HashMap};
    pub use std::path::Path;
    pub use std::process::{Command, Stdio};
    pub use std::time::{Duration, Instant};

    pub use hmac::{Hmac, Mac};
    pub use kiln_protocol::Store;
    pub use reqwest::multipart::{Form, Part};
    pub use reqwest::Method;
    pub use serde_json::{json, Value};
    pub use sha2::Sha256;

    pub use crate::common::{make_clip, media};
    pub use crate::harness::*;
    pub use crate::openapi::check_openapi;
    pub use crate::ADMIN;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn whole_api_on_the_embedded_default() {
    let _one = ONE_AT_A_TIME.lock().await;
    secrets::capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let running = start(base_config(&dir.path().join("cp"))).await.unwrap();
    let t = Target::new(running.addr, None, S3Server::start(), 2).await;
    suite::run(&t, dir.path()).await;
    // No secret the suite used is in the logs, nor in the clear in the database's files.
    let cp = dir.path().join("cp");
    secrets::assert_no_secret_leaked(
        &t.secrets.lock().unwrap(),
        &[],
        &[cp.join("kiln.db"), cp.join("kiln.db-wal")],
        20,
    );
    // An event stream still open does not hold the shutdown up: it ends.
    let (_, stream) = suite::events::open(&t, &t.base, "/api/v1/events", Some(ADMIN), None).await;
    tokio::time::timeout(Duration::from_secs(20), running.shutdown())
        .await
        .expect("the service stops with an event stream open");
    let ended = stream.unwrap().next(Duration::from_secs(5)).await;
    assert!(ended.is_none(), "the stream ended: {ended:?}");
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
    secrets::capture_logs();
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
            .env("RUST_LOG", "info,kiln_gpu_node=trace,kiln_protocol=trace")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let t = Target::new(a.addr, Some(b.addr), s3, 2).await;
    suite::run(&t, dir.path()).await;
    // No secret in the logs (the replicas' and the node's), nor in the clear in PostgreSQL.
    let dump = dir.path().join("kiln_api.sql");
    let dumped = Command::new("pg_dump")
        .args(["--data-only", "--file"])
        .arg(&dump)
        .arg(&db_url)
        .status()
        .unwrap();
    assert!(dumped.success(), "pg_dump {db_url}");
    secrets::assert_no_secret_leaked(
        &t.secrets.lock().unwrap(),
        &[dir.path().join("node.log")],
        &[dump],
        20,
    );
    drop(node);
    a.shutdown().await;
    b.shutdown().await;
    drop(redis);
    pg.drop_db().await;
}
