//! The console in Debian's headless Chromium (playwright-core, `tests/browser/console.mjs`)
//! against the embedded default: what the page shows, checked here.

use kiln_control_plane::start;

use crate::prelude::*;
use crate::ONE_AT_A_TIME;

/// The console in a real browser against the embedded default: sign in, submit a real clip
/// through the page and watch it complete over SSE, play it, drain the node and cancel a job
/// that waits, resume, usage, keys. Screenshots of each page: `target/console-screenshots`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_console_runs_a_job_end_to_end_in_chromium() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let running = start(base_config(&dir.path().join("cp"))).await.unwrap();
    let base = format!("http://{}", running.addr);
    let shots = std::env::var_os("KILN_SCREENSHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots")
        });
    let _ = std::fs::remove_dir_all(&shots);
    let seen = crate::browser::walk_console(&base, ADMIN, &media("video/bikes.mp4"), &shots).await;
    eprintln!("the console walk saw: {seen}");

    assert!(
        seen["bad_key"].as_str().unwrap().contains("not valid"),
        "{seen}"
    );
    // Live over SSE: one job stream, the document read once at the start and once at the
    // end, and the page moved on its own from the snapshot to completed.
    let events: Vec<&str> = seen["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(events.first(), Some(&"job.snapshot"), "{seen}");
    assert_eq!(events.last(), Some(&"job.completed"), "{seen}");
    assert_eq!(seen["job_streams"], 1, "{seen}");
    assert!(
        seen["job_reads"].as_u64().unwrap() <= 2,
        "no polling: {seen}"
    );
    // The job waited on a drained node while its page opened, so the page saw it start (and
    // progress, and complete) over the stream.
    assert!(events.contains(&"job.started"), "{seen}");
    // The output plays in the page.
    let played = &seen["played"];
    assert!(played["time"].as_f64().unwrap() >= 1.0, "{seen}");
    assert!(
        played["width"].as_u64().unwrap() > 0 && played["error"].is_null(),
        "{seen}"
    );
    assert!(
        seen["encoder"].as_str().unwrap().contains("libx264"),
        "{seen}"
    );
    // Nodes, queue and cancel.
    let slots = seen["slots"].as_str().unwrap();
    let (busy, total) = slots.split_once(" / ").unwrap();
    assert!(
        busy.parse::<u32>().is_ok() && total.parse::<u32>().unwrap() >= 1,
        "{seen}"
    );
    assert_eq!(seen["node_state"], "ready");
    assert!(seen["waiting"].as_u64().unwrap() >= 1, "{seen}");
    assert!(seen["listed"].as_u64().unwrap() >= 2, "{seen}");
    assert!(seen["usage_jobs"].as_u64().unwrap() >= 2, "{seen}");
    assert!(seen["usage_bars"].as_u64().unwrap() >= 1, "{seen}");
    // A key made in the page works until it is revoked there.
    assert_eq!(seen["new_key"]["before"], 200, "{seen}");
    assert_eq!(seen["new_key"]["after"], 401, "{seen}");
    assert!(!seen["new_key"]["scopes"]
        .as_str()
        .unwrap()
        .contains("jobs:cancel"));
    assert_eq!(seen["page_errors"], json!([]), "{seen}");
    for n in 1..=12 {
        let any = std::fs::read_dir(&shots).unwrap().flatten().any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{n:02}-"))
        });
        assert!(any, "screenshot {n:02} in {}", shots.display());
    }
    // The second job was cancelled from the page and its row says so.
    let t = reqwest::Client::new();
    let doc: Value = t
        .get(format!(
            "{base}/api/v1/jobs/{}",
            seen["cancelled"].as_str().unwrap()
        ))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["status"], "cancelled");
    running.shutdown().await;
}
