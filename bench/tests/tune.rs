//! `kiln-bench tune` end to end on a short real clip: a tiny sweep through Kiln's pipeline,
//! scored with libvmaf, reported as CSV, JSON, SVG and Markdown, resumed from its cache; and a
//! target-VMAF search counted against bisection.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn media(rel: &str) -> PathBuf {
    std::env::var_os("KILN_MEDIA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/media"))
        .join(rel)
}

/// The first 2 s of the real street clip (stream copy: the source's own frames).
fn short_clip(dir: &Path) -> PathBuf {
    let clip = dir.join("bikes2s.mp4");
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(media("video/bikes.mp4"))
        .args(["-t", "2", "-c", "copy"])
        .arg(&clip)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    clip
}

fn bench(args: &[&str], cwd: &Path) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln-bench"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kiln-bench {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_tiny_sweep_runs_end_to_end_reports_and_resumes_from_its_cache() {
    let dir = tempfile::tempdir().unwrap();
    short_clip(dir.path());
    std::fs::write(
        dir.path().join("sweep.toml"),
        r#"
        name = "tiny sweep"
        clips = ["bikes2s.mp4"]
        [[encoders]]
        encoder = "x264"
        presets = ["ultrafast", "veryfast"]
        crf = [20, 26, 32, 38]
        "#,
    )
    .unwrap();
    let first = bench(&["tune", "sweep.toml", "--out", "report"], dir.path());
    assert!(
        stderr(&first).contains("(0 from the cache)"),
        "{}",
        stderr(&first)
    );
    let report = dir.path().join("report");

    // CSV: one row per encode, metrics that behave as rate control says they must.
    let csv = std::fs::read_to_string(report.join("results.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let rows: Vec<Vec<String>> = lines
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect();
    assert_eq!(rows.len(), 8);
    for config in ["x264 ultrafast", "x264 veryfast"] {
        let r: Vec<&Vec<String>> = rows.iter().filter(|r| r[col("config")] == config).collect();
        assert_eq!(r.len(), 4, "{config}");
        let f = |r: &Vec<String>, c: &str| r[col(c)].parse::<f64>().unwrap();
        for w in r.windows(2) {
            // CRF rises down the list: fewer bits, lower scores.
            assert!(f(w[1], "kbps") < f(w[0], "kbps"), "{config}: {csv}");
            assert!(
                f(w[1], "vmaf_mean") < f(w[0], "vmaf_mean"),
                "{config}: {csv}"
            );
            assert!(f(w[1], "psnr_y") < f(w[0], "psnr_y"), "{config}: {csv}");
        }
        for row in &r {
            // 2 s at 25 fps, cut on packets: every frame of the clip scored.
            assert_eq!(f(row, "frames"), f(r[0], "frames"));
            assert!((50.0..=53.0).contains(&f(row, "frames")));
            assert!((0.0..=100.0).contains(&f(row, "vmaf_mean")));
            assert!(f(row, "vmaf_p5") <= f(row, "vmaf_mean"));
            assert!((20.0..70.0).contains(&f(row, "psnr_y")));
            assert!((0.5..=1.0).contains(&f(row, "ssim")));
            assert!(f(row, "fps") > 0.0 && f(row, "cpu_s") > 0.0 && f(row, "peak_mb") > 10.0);
            assert_eq!(row[col("encoder_used")], "libx264");
        }
    }

    // JSON: provenance and the BD-rate of veryfast against ultrafast (the first configuration).
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.join("results.json")).unwrap()).unwrap();
    let p = &json["provenance"];
    assert_eq!(p["libvmaf"], "2.3.1");
    assert_eq!(p["vmaf_model"], "vmaf_v0.6.1");
    assert!(p["ffmpeg"].as_str().unwrap().starts_with('5'), "{p}");
    assert!(p["encoders"].to_string().contains("libx264.so"), "{p}");
    assert!(!p["cpu"].as_str().unwrap().is_empty());
    assert_eq!(json["baseline"], "x264 ultrafast");
    let bd = &json["bd_rates"][0];
    assert_eq!(bd["config"], "x264 veryfast");
    let rate = bd["bd_rate_vmaf"]["Ok"].as_f64().expect("a BD-rate");
    // veryfast compresses better than ultrafast: it saves bits at equal VMAF.
    assert!(rate < 0.0 && rate > -80.0, "{bd}");
    assert!(bd["bd_rate_psnr"]["Ok"].as_f64().unwrap() < 0.0, "{bd}");

    // Plots and the summary.
    for svg in [
        "rd-vmaf-bikes2s-mp4.svg",
        "rd-psnr-bikes2s-mp4.svg",
        "speed-vmaf-bikes2s-mp4.svg",
    ] {
        let text = std::fs::read_to_string(report.join(svg)).unwrap();
        assert!(
            text.starts_with("<svg") && text.contains("x264 veryfast"),
            "{svg}"
        );
        assert!(
            text.matches("<circle").count() >= 8,
            "{svg}: every encode plotted"
        );
    }
    let md = std::fs::read_to_string(report.join("summary.md")).unwrap();
    assert!(md.contains("BD-rate against x264 ultrafast"), "{md}");
    assert!(md.contains("fewer bits than x264 ultrafast"), "{md}");
    assert!(md.contains("libvmaf | 2.3.1"), "{md}");

    // Again: nothing re-encoded. Then lose one result (an interrupted run): only it re-runs.
    let again = bench(&["tune", "sweep.toml", "--out", "report"], dir.path());
    assert!(
        stderr(&again).contains("(8 from the cache)"),
        "{}",
        stderr(&again)
    );
    let cache = report.join("cache");
    let one = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "json"))
        .unwrap();
    std::fs::remove_file(one).unwrap();
    let resumed = bench(&["tune", "sweep.toml", "--out", "report"], dir.path());
    assert!(
        stderr(&resumed).contains("(7 from the cache)"),
        "{}",
        stderr(&resumed)
    );
    let csv2 = std::fs::read_to_string(report.join("results.csv")).unwrap();
    assert_eq!(csv2.lines().count(), 9);
}

#[test]
fn a_target_vmaf_search_reports_its_choice_and_counts_encodes_against_bisection() {
    let dir = tempfile::tempdir().unwrap();
    short_clip(dir.path());
    let out = bench(
        &[
            "tune",
            "--target-vmaf",
            "90",
            "bikes2s.mp4",
            "--encoder",
            "x264",
            "--preset",
            "veryfast",
            "--compare-bisection",
            "--verify",
            "--out",
            "t",
        ],
        dir.path(),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("encodes: interpolation"), "{text}");
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("t/target.json")).unwrap()).unwrap();
    let r = &doc["results"][0];
    assert_eq!(r["met"], true, "{r}");
    assert!(r["vmaf"].as_f64().unwrap() >= 90.0);
    let (crf, bisect_crf) = (
        r["crf"].as_i64().unwrap(),
        r["bisection_crf"].as_i64().unwrap(),
    );
    // Both searches are exact on a monotone curve: they agree on the answer.
    assert_eq!(crf, bisect_crf, "{r}");
    assert!(r["encodes"].as_i64().unwrap() >= 2);
    assert!(r["bisection_encodes"].as_i64().unwrap() >= 2);
    // A 2 s clip is probed whole: the whole-clip check is the chosen probe itself.
    let v = r["verified"]["vmaf"].as_f64().unwrap();
    assert!((v - r["vmaf"].as_f64().unwrap()).abs() < 0.05, "{r}");
    assert!(r["predicted_size_bytes"].as_i64().unwrap() > 0);
    assert!(!dir.path().join("t/scratch").exists());
}

/// The workspace's `kiln-control-plane` binary, beside this test's (built by
/// `cargo test --workspace --all-targets`, as deploy/test.sh runs it).
fn control_plane() -> PathBuf {
    let bin = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("kiln-control-plane");
    assert!(
        bin.exists(),
        "{} is missing: run cargo test --workspace --all-targets",
        bin.display()
    );
    bin
}

/// Kills the server when the test ends, however it ends.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_sweep_runs_as_jobs_on_a_fleet_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    short_clip(dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env = [
        ("KILN_DATA_DIR", dir.path().join("data")),
        ("KILN_LISTEN", PathBuf::from(format!("127.0.0.1:{port}"))),
    ];
    let key = Command::new(control_plane())
        .args([
            "keys",
            "create",
            "--name",
            "tuner",
            "--scopes",
            "jobs:create,jobs:read",
        ])
        .envs(env.clone())
        .output()
        .unwrap();
    assert!(
        key.status.success(),
        "{}",
        String::from_utf8_lossy(&key.stderr)
    );
    let key: serde_json::Value = serde_json::from_slice(&key.stdout).unwrap();
    let key = key["key"].as_str().unwrap().to_string();
    // The embedded default: SQLite, a local store, an in-process queue and a local node.
    let _server = Server(
        Command::new(control_plane())
            .envs(env)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the control plane never listened"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::fs::write(
        dir.path().join("fleet.toml"),
        "clips = [\"bikes2s.mp4\"]\n[[encoders]]\nencoder = \"x264\"\npresets = [\"ultrafast\"]\ncrf = [24, 34]\n",
    )
    .unwrap();
    let out = bench(
        &[
            "tune",
            "fleet.toml",
            "--out",
            "r",
            "--api",
            &base,
            "--key",
            &key,
        ],
        dir.path(),
    );
    assert!(
        stderr(&out).contains("(0 from the cache)"),
        "{}",
        stderr(&out)
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("r/results.json")).unwrap()).unwrap();
    assert!(json["provenance"]["ran_on"]
        .as_str()
        .unwrap()
        .contains("fleet at"));
    let rows = json["results"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for r in rows {
        // Encoded by the fleet's node, downloaded and scored here.
        assert_eq!(r["encoder_used"], "libx264", "{r}");
        assert!(
            r["cpu_s"].is_null(),
            "the fleet's CPU time is not the harness's to report"
        );
        assert!(r["scores"]["vmaf"]["mean"].as_f64().unwrap() > 40.0, "{r}");
    }
    assert!(rows[0]["kbps"].as_f64().unwrap() > rows[1]["kbps"].as_f64().unwrap());
}
