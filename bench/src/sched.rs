//! `kiln-bench sched`: the cost of Kiln's scheduling, measured against Redis itself.
//!
//! Starts its own `redis-server` on a loopback port and a control plane in fleet mode (Redis
//! queue, SQLite or `--database URL`, a local folder store), then measures:
//! 1. **Submissions/s** through `POST /api/v1/compress` (a 1-frame clip, `--clients`
//!    concurrent clients, no node taking jobs), next to `redis-benchmark`'s `XADD` rate on the
//!    same Redis: the queue operation alone.
//! 2. **Submit → start latency** with an idle node: jobs submitted one at a time, each timed
//!    from the API's `created_at` to the control plane recording the node's `started` event
//!    (enqueue, the node's wake-up and claim, its event, the event applied): p50 / p99.
//! 3. **Control-plane overhead** on a real clip: the job end to end through the API (upload,
//!    queue, node, events, status poll every 10 ms) against the same transcode called directly
//!    in-process, as a percentage of the direct encode time.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use kiln_control_plane::{start, Config, Running};
use kiln_protocol::testing::RedisServer;
use kiln_protocol::{VideoCodec, VideoParams};
use serde_json::Value;

const KEY: &str = "kiln_bench_sched_key_0123456789";

struct Opts {
    submissions: usize,
    clients: usize,
    latency_jobs: usize,
    database: Option<String>,
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let idx = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[idx.min(v.len() - 1)]
}

async fn control_plane(
    redis: &RedisServer,
    dir: &Path,
    slots: usize,
    database: Option<&str>,
) -> Result<(Running, String), String> {
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        bootstrap_key: Some(KEY.into()),
        redis_url: Some(redis.url()),
        database_url: database.map(str::to_string),
        local_slots: Some(slots),
        // It times scheduling, not the per-key limits: 2000 submissions would meet the
        // default 60 writes a minute after the 60th.
        rate_write_per_min: 1_000_000,
        rate_read_per_min: 1_000_000,
        ..Config::default()
    };
    let running = start(config).await.map_err(|e| format!("{e:#}"))?;
    let base = format!("http://{}/api/v1", running.addr);
    Ok((running, base))
}

async fn submit(
    http: &reqwest::Client,
    base: &str,
    clip: &[u8],
    fields: &[(&str, &str)],
) -> Result<String, String> {
    crate::api::submit(http, base, KEY, "clip.mp4", clip, fields).await
}

async fn status(http: &reqwest::Client, base: &str, id: &str) -> Result<Value, String> {
    crate::api::get(http, base, KEY, &format!("/status/{id}")).await
}

/// ms since the epoch of an API timestamp (the seconds-of-the-day parse it replaces broke
/// across midnight).
fn rfc3339_ms(v: &Value) -> Option<f64> {
    kiln_control_plane::time::parse_rfc3339(v.as_str()?).map(|ms| ms as f64)
}

fn tiny_clip(dir: &Path) -> Result<PathBuf, String> {
    let path = dir.join("tiny.mp4");
    let ok = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=64x64:rate=1",
        ])
        .args(["-frames:v", "1", "-pix_fmt", "yuv420p", "-c:v", "libx264"])
        .arg(&path)
        .status()
        .map_err(|e| format!("ffmpeg CLI: {e}"))?;
    if !ok.success() {
        return Err("ffmpeg could not make the tiny clip".into());
    }
    Ok(path)
}

/// `redis-benchmark`'s XADD rate and p50 on the same server.
fn redis_benchmark(port: u16, clients: usize) -> Result<(f64, f64), String> {
    let out = Command::new("redis-benchmark")
        .args([
            "-p",
            &port.to_string(),
            "-q",
            "-n",
            "100000",
            "-c",
            &clients.to_string(),
        ])
        .args(["XADD", "kiln:bench", "*", "job", "x"])
        .output()
        .map_err(|e| format!("redis-benchmark (apt install redis-tools): {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    // "XADD kiln:bench * job x: 61349.69 requests per second, p50=0.407 msec"
    let line = text
        .split(['\r', '\n'])
        .rev()
        .find(|l| l.contains("requests per second"))
        .ok_or_else(|| format!("unexpected redis-benchmark output: {text}"))?;
    let rps: f64 = line
        .split(": ")
        .last()
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no rate in {line}"))?;
    let p50: f64 = line
        .split("p50=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(f64::NAN);
    Ok((rps, p50))
}

async fn run(opts: Opts) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let redis = RedisServer::start();
    let clip_path = tiny_clip(dir.path())?;
    let clip = std::fs::read(&clip_path).map_err(|e| e.to_string())?;
    let http = reqwest::Client::new();
    let db_label = opts
        .database
        .as_deref()
        .map(|u| u.split(':').next().unwrap_or("db").to_string())
        .unwrap_or_else(|| "sqlite".into());

    // 1. Submissions/s with no node taking jobs.
    let (running, base) =
        control_plane(&redis, &dir.path().join("a"), 0, opts.database.as_deref()).await?;
    for _ in 0..20 {
        submit(&http, &base, &clip, &[]).await?; // warm-up
    }
    let started = Instant::now();
    let per_client = opts.submissions / opts.clients;
    let mut tasks = Vec::new();
    for _ in 0..opts.clients {
        let (http, base, clip) = (http.clone(), base.clone(), clip.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_client);
            for _ in 0..per_client {
                let t = Instant::now();
                submit(&http, &base, &clip, &[]).await?;
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            Ok::<_, String>(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.map_err(|e| e.to_string())??);
    }
    let secs = started.elapsed().as_secs_f64();
    let rate = lat.len() as f64 / secs;
    running.shutdown().await;
    let (redis_rps, redis_p50) = redis_benchmark(redis.port, opts.clients)?;

    println!("## Scheduling overhead (kiln-bench sched)\n");
    println!(
        "{} cores, Redis {} on loopback, database {db_label}, local-folder store\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        redis_version()
    );
    println!("| measure | Kiln | redis-benchmark XADD | Kiln / Redis |");
    println!("|---|---|---|---|");
    println!(
        "| submissions/s ({} clients, {} jobs, 1-frame clip upload) | {rate:.0} | {redis_rps:.0} | {:.3} |",
        opts.clients,
        lat.len(),
        rate / redis_rps
    );
    println!(
        "| submit latency p50 / p99 (ms) | {:.2} / {:.2} | {redis_p50:.3} (p50) | |",
        percentile(lat.clone(), 0.5),
        percentile(lat, 0.99)
    );

    // 2. Submit → start with an idle node (the worker loop in this process, same Redis path).
    let (running, base) =
        control_plane(&redis, &dir.path().join("b"), 1, opts.database.as_deref()).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut dispatch = Vec::new();
    for i in 0..opts.latency_jobs + 5 {
        let id = submit(&http, &base, &clip, &[]).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let d = status(&http, &base, &id).await?;
            if d["status"] == "completed" || d["status"] == "failed" {
                if let (Some(c), Some(s)) =
                    (rfc3339_ms(&d["created_at"]), rfc3339_ms(&d["started_at"]))
                {
                    if i >= 5 {
                        dispatch.push(s - c);
                    }
                }
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("job {id} did not finish: {d}"));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    if let Ok(path) = std::env::var("KILN_BENCH_DUMP") {
        let _ = std::fs::write(path, format!("{dispatch:?}"));
    }
    println!(
        "| submit → start with an idle node, p50 / p99 (ms, {} jobs one at a time) | {:.1} / {:.1} | | |",
        dispatch.len(),
        percentile(dispatch.clone(), 0.5),
        percentile(dispatch, 0.99)
    );

    // 3. Overhead on a real clip: through the API vs the same transcode in-process. The API
    // time is the upload request plus created → completed as the control plane recorded them
    // (status is polled every 200 ms, so polling neither steals the encoder's CPU nor rounds
    // the figure).
    let real = crate::media("video/bigbuckbunny.mp4");
    let real_bytes = std::fs::read(&real).map_err(|e| format!("{}: {e}", real.display()))?;
    let params = VideoParams::crf(VideoCodec::H264, 23);
    let (mut direct, mut api, mut queued, mut upload) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..5 {
        let out = dir.path().join(format!("direct-{i}.mp4"));
        let (input, p) = (real.clone(), params.clone());
        let t = Instant::now();
        tokio::task::spawn_blocking(move || {
            kiln_gpu_node::media::transcode(&input, &out, &p, &AtomicBool::new(false), &mut |_| {})
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        direct.push(t.elapsed().as_secs_f64());

        let t = Instant::now();
        let id = submit(
            &http,
            &base,
            &real_bytes,
            &[("codec", "h264"), ("quality", "23")],
        )
        .await?;
        let up = t.elapsed().as_secs_f64();
        let d = loop {
            let d = status(&http, &base, &id).await?;
            if d["status"] == "completed" {
                break d;
            }
            if d["status"] == "failed" {
                return Err(format!("real clip failed: {d}"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let ms = |k: &str| rfc3339_ms(&d[k]).unwrap_or(f64::NAN);
        upload.push(up);
        queued.push((ms("started_at") - ms("created_at")) / 1000.0);
        api.push(up + (ms("completed_at") - ms("created_at")) / 1000.0);
    }
    running.shutdown().await;
    let (d, a) = (crate::video::median(direct), crate::video::median(api));
    let (up, q) = (crate::video::median(upload), crate::video::median(queued));
    println!(
        "| bigbuckbunny.mp4 720p h264 CRF 23 end to end through the API vs the same transcode in-process (s, median of 5) | {a:.3} | {d:.3} (in-process) | {:+.2} % |",
        (a - d) / d * 100.0
    );
    println!(
        "| of which Kiln's fixed costs: upload {:.0} ms + queue to start {:.0} ms | {:.0} ms | | {:.2} % of the encode |",
        up * 1000.0,
        q * 1000.0,
        (up + q) * 1000.0,
        (up + q) / d * 100.0
    );
    Ok(())
}

fn redis_version() -> String {
    Command::new("redis-server")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .find_map(|w| w.strip_prefix("v=").map(str::to_string))
        })
        .unwrap_or_else(|| "?".into())
}

/// `kiln-bench sched`: scheduling overhead through the API against `redis-benchmark`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Submissions of the throughput run.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    pub submissions: u64,
    /// Concurrent clients submitting.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
    pub clients: u64,
    /// Jobs of the dispatch-latency run.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..))]
    pub latency_jobs: u64,
    /// A PostgreSQL URL for the control plane (default: SQLite).
    #[arg(long)]
    pub database: Option<String>,
}

pub fn main(args: Args) -> ExitCode {
    let opts = Opts {
        submissions: args.submissions as usize,
        clients: args.clients as usize,
        latency_jobs: args.latency_jobs as usize,
        database: args.database,
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kiln-bench sched: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiln-bench sched: {e}");
            ExitCode::FAILURE
        }
    }
}
