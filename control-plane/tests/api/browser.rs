//! A real player: Debian's Chromium, headless, plays a ladder's signed master playlist with
//! hls.js (`tests/browser`, installed from npm by `deploy/setup-debian.sh --test`). The page
//! is served from its own origin, so the playlist, the media playlists and every segment are
//! fetched cross-origin through the signed URLs, as a browser player on a customer's site
//! would. The page reports what the video element showed back to this server.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::response::{Html, IntoResponse};
use serde_json::Value;
use tokio::sync::oneshot;

const PAGE: &str = include_str!("../browser/play.html");

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

fn chromium() -> PathBuf {
    std::env::var_os("KILN_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// Play `master_url` (an absolute, signed HLS master playlist) from its lowest rendition,
/// switch to its highest, and return the page's report: `levels`, and `played` (per video
/// height the furthest time the element reached while showing it). Panics with the page's
/// error, or Chromium's log on a timeout.
pub async fn play_hls(master_url: &str) -> Value {
    let hls_js = browser_dir().join("node_modules/hls.js/dist/hls.min.js");
    let hls_js = std::fs::read(&hls_js).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; deploy/setup-debian.sh --test installs hls.js (npm ci in tests/browser)",
            hls_js.display()
        )
    });
    assert!(
        chromium().exists(),
        "{} is missing; deploy/setup-debian.sh --test installs Debian's chromium",
        chromium().display()
    );

    let (tx, rx) = oneshot::channel::<Value>();
    let tx = Arc::new(Mutex::new(Some(tx)));
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { Html(PAGE) }))
        .route(
            "/hls.js",
            axum::routing::get(move || {
                let js = hls_js.clone();
                async move { ([("content-type", "text/javascript")], js).into_response() }
            }),
        )
        .route(
            "/result",
            axum::routing::post(move |body: Bytes| {
                let tx = tx.clone();
                async move {
                    let v: Value = serde_json::from_slice(&body).unwrap_or_else(
                        |e| serde_json::json!({"error": format!("unreadable report: {e}")}),
                    );
                    if let Some(tx) = tx.lock().unwrap().take() {
                        let _ = tx.send(v);
                    }
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let page_addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let profile = tempfile::tempdir().unwrap();
    let log_path = profile.path().join("chromium.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let page =
        reqwest::Url::parse_with_params(&format!("http://{page_addr}/"), [("src", master_url)])
            .unwrap()
            .to_string();
    // The flags a headless Chromium needs as root on a machine with no network beyond
    // loopback (background services otherwise dial out at every start).
    let mut browser = tokio::process::Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--mute-audio",
            "--autoplay-policy=no-user-gesture-required",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(&page)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", chromium().display()));

    // The page reports within a minute (its own timeout); Chromium exiting first is a failure.
    let report = tokio::select! {
        r = rx => r.ok(),
        _ = browser.wait() => None,
        _ = tokio::time::sleep(Duration::from_secs(120)) => None,
    };
    let _ = browser.kill().await;
    server.abort();
    let report = match report {
        Some(v) => v,
        None => {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: String = log.lines().rev().take(40).collect::<Vec<_>>().join("\n");
            panic!("the page never reported on {page}; Chromium's log, last lines first:\n{tail}");
        }
    };
    assert!(
        report.get("error").is_none(),
        "hls.js in Chromium could not play {master_url}: {report}"
    );
    report
}

/// Walk the console (`tests/browser/console.mjs`, playwright-core driving Debian's Chromium)
/// against the control plane at `base` signed in with the admin `key`, submitting `clip`.
/// Screenshots of every page go to `shots`. Returns what the walk saw; panics with the
/// script's error (and its failure screenshot) otherwise.
pub async fn walk_console(base: &str, key: &str, clip: &Path, shots: &Path) -> Value {
    let script = browser_dir().join("console.mjs");
    assert!(
        browser_dir().join("node_modules/playwright-core").exists(),
        "playwright-core is missing; deploy/setup-debian.sh --test installs it (npm ci in tests/browser)"
    );
    assert!(
        chromium().exists(),
        "{} is missing; deploy/setup-debian.sh --test installs Debian's chromium",
        chromium().display()
    );
    std::fs::create_dir_all(shots).unwrap();
    let run = tokio::process::Command::new("node")
        .arg(&script)
        .env("KILN_URL", base)
        .env("KILN_KEY", key)
        .env("KILN_CLIP", clip)
        .env("KILN_SHOTS", shots)
        .env("KILN_CHROMIUM", chromium())
        .current_dir(browser_dir())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(420), run)
        .await
        .expect("the console walk finished within 7 minutes")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the console walk failed (screenshots in {}):\n{}\n{stdout}",
        shots.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("the walk's report is not JSON ({e}): {stdout}"))
}
