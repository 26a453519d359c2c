//! Beside the suite: outputs expiring, the `keys` CLI, Konvrt's published curl quick start,
//! the outbox queueing a job recorded but never enqueued, and a quiet first start.

use kiln_control_plane::{start, Config};
use kiln_protocol::testing::S3Server;

use crate::common::node_binary;
use crate::prelude::*;
use crate::ONE_AT_A_TIME;

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
    // A key brought from another service is imported as it is (only its hash stored).
    let kvrt = "kvrt_ABCDEFGHIJabcdefghij0123456789";
    let (ok, out, err) = cli(&[
        "create",
        "--name",
        "migrated",
        "--scopes",
        "usage:read",
        "--key",
        kvrt,
    ]);
    assert!(ok, "{err}");
    assert!(out.contains(kvrt));
    let r = http
        .get(format!("{base}/api/v1/usage"))
        .bearer_auth(kvrt)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the imported key works");
    assert!(
        !cli(&[
            "create",
            "--name",
            "bad",
            "--scopes",
            "usage:read",
            "--key",
            "short"
        ])
        .0
    );
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
            dialect: None,
            dialect_data: None,
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

/// Each dialect's prefix can be turned off: its routes are gone from the server and from the
/// OpenAPI document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialects_can_be_turned_off() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let running = start(Config {
        dialects: "klipfast".parse().unwrap(),
        ..base_config(&dir.path().join("cp"))
    })
    .await
    .unwrap();
    let base = format!("http://{}", running.addr);
    let http = reqwest::Client::new();
    let get = |p: &str| http.get(format!("{base}{p}")).bearer_auth(ADMIN).send();
    assert_eq!(get("/convertly/api/jobs/x").await.unwrap().status(), 404);
    assert_eq!(
        get("/convertrilo/tokens/balance").await.unwrap().status(),
        404
    );
    assert_eq!(get("/klipfast/api/v1/usage").await.unwrap().status(), 200);
    let spec: Value = get("/api/v1/openapi.json")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths: Vec<&String> = spec["paths"].as_object().unwrap().keys().collect();
    assert!(paths.iter().any(|p| p.starts_with("/klipfast/")));
    assert!(!paths
        .iter()
        .any(|p| p.starts_with("/convertly/") || p.starts_with("/convertrilo/")));
    running.shutdown().await;
}

/// The text of a terminal line without its colour codes.
fn plain(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ … letter
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A new user's first start of the embedded default, as `deploy/run.sh` runs it (no
/// configuration, no display, no GPU here): one line per subsystem, nothing at error level, no
/// library's own banner, and the admin key block last.
#[tokio::test]
async fn a_first_start_is_quiet_and_ends_with_the_key_block() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::Stdio;
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_kiln-control-plane"));
    cmd.args(["--data-dir", dir.path().to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for var in [
        "XDG_RUNTIME_DIR",
        "RUST_LOG",
        "DATABASE_URL",
        "REDIS_URL",
        "KILN_STORAGE_URL",
        "KILN_GPUS",
        "SVT_LOG",
        "NODEVICE_SELECT",
    ] {
        cmd.env_remove(var);
    }
    let mut child = cmd.spawn().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let errors = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(plain(&line)).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let (mut out, mut rules) = (Vec::new(), 0);
    while rules < 2 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = rx.recv_timeout(left).unwrap_or_else(|_| {
            panic!(
                "no key block within 2 minutes; stdout so far:\n{}",
                out.join("\n")
            )
        });
        rules += line.starts_with("====") as usize;
        out.push(line);
    }
    // Nothing else follows the block while the service idles.
    std::thread::sleep(Duration::from_millis(1500));
    out.extend(rx.try_iter());
    let _ = child.kill();
    let _ = child.wait();
    let err = errors.join().unwrap();
    let all: Vec<String> = out
        .iter()
        .cloned()
        .chain(err.lines().map(plain))
        .filter(|l| !l.trim().is_empty())
        .collect();
    let text = all.join("\n");
    for line in &all {
        let noisy = line.contains(" ERROR ")
            || line.contains(" WARN ")
            || line.starts_with("error:")
            || line.contains(" @ 0x")
            || line.starts_with("Svt[")
            || line.starts_with("x265 [")
            || line.starts_with("encoded ");
        assert!(!noisy, "a healthy start printed {line:?}:\n{text}");
    }
    let once = |what: &str| {
        let n = all.iter().filter(|l| l.contains(what)).count();
        assert_eq!(n, 1, "{what:?} {n} times:\n{text}");
    };
    once("video codecs probed");
    once("image resize path chosen");
    once("kiln control plane listening");
    let gpus = all
        .iter()
        .filter(|l| l.contains("no GPU:") || l.contains("GPUs driven by this node"))
        .count();
    assert_eq!(gpus, 1, "{text}");
    // The key block is last: the listening line, then the key between two rules.
    let tail: Vec<&String> = out.iter().filter(|l| !l.trim().is_empty()).collect();
    let n = tail.len();
    assert!(n >= 6, "{text}");
    assert!(
        tail[n - 6].starts_with("Kiln is listening on http://127.0.0.1:"),
        "{text}"
    );
    assert!(
        tail[n - 5].starts_with("====") && tail[n - 1].starts_with("===="),
        "{text}"
    );
    assert!(tail[n - 4].contains("Kiln admin API key"), "{text}");
    let key_line = tail[n - 3].trim();
    assert!(
        key_line.starts_with("kiln_") && !key_line.contains(' '),
        "the key alone on its line: {text}"
    );
    assert!(
        tail[n - 2].contains(key_line),
        "the example uses the key: {text}"
    );
}
