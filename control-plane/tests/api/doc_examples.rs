//! Each seed service's own documented curl commands, copied from its docs and run with the
//! real `curl` against the embedded default — changed only in the base URL and the key (and
//! where an example points at a placeholder video, that URL, since this machine reaches no
//! outside host).

use kiln_control_plane::start;
use kiln_protocol::testing::S3Server;

use crate::prelude::*;
use crate::ONE_AT_A_TIME;

/// Run a documented shell snippet with `from` (the service's host) replaced by `to`, in `dir`,
/// with `env` set (the docs read the key from an environment variable); returns stdout.
async fn doc(script: &str, from: &str, to: &str, env: &[(&str, &str)], dir: &Path) -> String {
    let script = script.replace(from, to);
    let out = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(format!("set -e\n{script}"))
        .envs(env.iter().copied())
        .current_dir(dir)
        .output()
        .await
        .expect("bash and curl (deploy/setup-debian.sh --test installs curl)");
    assert!(
        out.status.success(),
        "{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json_of(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

async fn server(dir: &Path) -> (kiln_control_plane::Running, Target) {
    let running = start(base_config(&dir.join("cp"))).await.unwrap();
    let t = Target::new(running.addr, None, S3Server::start(), 0).await;
    (running, t)
}

async fn poll(t: &Target, key: &str, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let doc = t.get(path, key).await.json();
        if done(&doc) {
            return doc;
        }
        assert!(Instant::now() < deadline, "{path} never finished: {doc}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn convertly_documented_examples_run_with_curl() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (running, t) = server(dir.path()).await;
    let base = format!("{}/convertly", t.base);
    std::fs::copy(media("photo/coffee.png"), dir.path().join("input.png")).unwrap();
    std::fs::copy(media("photo/astronaut.png"), dir.path().join("hero.png")).unwrap();
    let env = [("CONVERTLY_API_KEY", ADMIN)];
    let host = "https://convertly.sh";

    // guides/async-jobs: create a job…
    let out = doc(
        r#"curl -X POST "https://convertly.sh/api/jobs" \
  -H "Authorization: Bearer $CONVERTLY_API_KEY" \
  -F "jobType=convert" \
  -F "saveToStorage=true" \
  -F "files=@./input.png" \
  -F 'formats=["webp"]' \
  -F 'compressions=[82]' \
  -F 'resizes=["original"]' \
  -F "createArchive=false""#,
        host,
        &base,
        &env,
        dir.path(),
    )
    .await;
    let created = json_of(&out);
    assert_eq!(created["status"], "pending");
    let id = created["jobId"].as_str().unwrap().to_string();
    // …poll it…
    let status = format!(
        r#"curl "https://convertly.sh/api/jobs/{id}" \
  -H "Authorization: Bearer $CONVERTLY_API_KEY""#
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let job = loop {
        let j = json_of(&doc(&status, host, &base, &env, dir.path()).await);
        if j["status"] == "completed" || j["status"] == "failed" {
            break j;
        }
        assert!(Instant::now() < deadline, "{j}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["results"][0]["filename"], "input.webp");
    // …and a finished job cannot be cancelled.
    let out = doc(
        &format!(
            r#"curl -X DELETE "https://convertly.sh/api/jobs/{id}" \
  -H "Authorization: Bearer $CONVERTLY_API_KEY""#
        ),
        host,
        &base,
        &env,
        dir.path(),
    )
    .await;
    assert!(json_of(&out)["error"].is_string(), "{out}");

    // guides/media-conversion and the quickstart: synchronous conversions.
    for script in [
        r#"curl -X POST "https://convertly.sh/api/convert" \
  -H "Authorization: Bearer $CONVERTLY_API_KEY" \
  -F "files=@./hero.png" \
  -F "format=webp" \
  -F "compression=82" \
  -F "resize=website" \
  -F "autoOrient=true""#,
        r#"curl -X POST "https://convertly.sh/api/convert" \
  -H "Authorization: Bearer $CONVERTLY_API_KEY" \
  -F "files=@./input.png" \
  -F "format=webp" \
  -F "compression=82" \
  -F "resize=original" \
  -F "autoOrient=true""#,
    ] {
        let out = json_of(&doc(script, host, &base, &env, dir.path()).await);
        let f = &out["files"][0];
        assert_eq!(f["mimeType"], "image/webp", "{out}");
        assert!(f["downloadUrl"]
            .as_str()
            .unwrap()
            .starts_with("data:image/webp;base64,"));
    }
    // The x-api-key header works as the docs say.
    let out = doc(
        r#"curl -s "https://convertly.sh/api/jobs/00000000-0000-0000-0000-000000000000" -H "x-api-key: $CONVERTLY_API_KEY""#,
        host,
        &base,
        &env,
        dir.path(),
    )
    .await;
    assert!(json_of(&out)["error"].as_str().unwrap().contains("no job"));
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn convertrilo_documented_examples_run_with_curl() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (running, t) = server(dir.path()).await;
    let base = format!("{}/convertrilo", t.base);
    let video = format!("{}/files/bikes.mp4", t.hooks_base);
    let env = [("CONVERTRILO_API_KEY", ADMIN)];
    let host = "https://api.convertrilo.com";

    let out = doc(
        r#"curl https://api.convertrilo.com/tokens/balance \
  -H "X-API-Key: $CONVERTRILO_API_KEY""#,
        host,
        &base,
        &env,
        dir.path(),
    )
    .await;
    assert!(json_of(&out)["reserved"].is_i64(), "{out}");

    let encode = r#"curl https://api.convertrilo.com/ondemand/encode \
  -H "Content-Type: application/json" \
  -H "X-API-Key: $CONVERTRILO_API_KEY" \
  -H "Idempotency-Key: encode-customer-video-123" \
  -d '{
    "sourceUrl": "https://example.com/input.mp4",
    "externalId": "customer-video-123",
    "metadata": {
      "customerId": "cus_123",
      "workflow": "daily-compression"
    },
    "codec": "h264",
    "resolution": "1080p",
    "quality": "better"
  }'"#
    .replace("https://example.com/input.mp4", &video);
    let first = json_of(&doc(&encode, host, &base, &env, dir.path()).await);
    assert_eq!(first["status"], "queued", "{first}");
    assert_eq!(first["metadata"]["workflow"], "daily-compression");
    // The same Idempotency-Key and body: the first answer again, no second job.
    let again = json_of(&doc(&encode, host, &base, &env, dir.path()).await);
    assert_eq!(again["jobId"], first["jobId"]);
    // The same key with another body: refused.
    let other = json_of(
        &doc(
            &encode.replace("\"better\"", "\"best\""),
            host,
            &base,
            &env,
            dir.path(),
        )
        .await,
    );
    assert_eq!(other["code"], "idempotency_conflict", "{other}");
    let id = first["jobId"].as_str().unwrap();
    let done = poll(
        &t,
        ADMIN,
        &format!("/convertrilo/ondemand/status/{id}"),
        |d| ["success", "failed"].contains(&d["status"].as_str().unwrap_or("")),
    )
    .await;
    assert_eq!(done["status"], "success", "{done}");
    assert_eq!(done["externalId"], "customer-video-123");
    let listed = t.get("/api/v1/jobs?limit=10", ADMIN).await.json();
    assert_eq!(
        listed["jobs"].as_array().unwrap().len(),
        1,
        "one job for two identical requests"
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn klipfast_documented_examples_run_with_curl() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (running, t) = server(dir.path()).await;
    let base = format!("{}/klipfast", t.base);
    let video = format!("{}/files/bikes.mp4", t.hooks_base);
    let host = "https://api.klipfast.com";
    let with_key = |s: &str| s.replace("YOUR_API_KEY", ADMIN);

    let out = doc(
        &with_key(
            r#"curl -X POST https://api.klipfast.com/api/v1/process \
  -H "Authorization: Bearer YOUR_API_KEY" \
  -H "Content-Type: application/json" \
  -d '{"video_url":"https://example.com/video.mp4","quality":"balanced"}'"#,
        )
        .replace("https://example.com/video.mp4", &video),
        host,
        &base,
        &[],
        dir.path(),
    )
    .await;
    let queued = json_of(&out);
    assert_eq!(queued["status"], "queued", "{queued}");
    let id = queued["job_id"].as_str().unwrap().to_string();
    let script = with_key(&format!(
        r#"curl https://api.klipfast.com/api/v1/jobs/{id} \
  -H "Authorization: Bearer YOUR_API_KEY""#
    ));
    let deadline = Instant::now() + Duration::from_secs(120);
    let job = loop {
        let j = json_of(&doc(&script, host, &base, &[], dir.path()).await);
        if j["status"] == "completed" || j["status"] == "failed" {
            break j;
        }
        assert!(Instant::now() < deadline, "{j}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(job["status"], "completed", "{job}");
    let out = doc(
        &with_key(
            r#"curl "https://api.klipfast.com/api/v1/jobs?limit=20" \
  -H "Authorization: Bearer YOUR_API_KEY""#,
        ),
        host,
        &base,
        &[],
        dir.path(),
    )
    .await;
    let list = json_of(&out);
    assert_eq!(list["jobs"][0]["job_id"], id.as_str());
    assert_eq!(list["has_more"], false);
    running.shutdown().await;
}
