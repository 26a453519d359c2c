//! Running a sweep: each encode through Kiln's pipeline (a child process of this binary, so its
//! CPU time and peak memory are its own) or as a job on a fleet through the API; each output
//! then scored against its clip. Results are cached by content hash, one file per encode,
//! written when the encode is measured — an interrupted sweep resumes where it stopped.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln_gpu_node::quality::{self, Scores};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::spec::Encode;

/// One measured encode.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub clip: String,
    pub clip_sha256: String,
    pub config: String,
    pub encoder: String,
    pub preset: String,
    pub resolution: String,
    /// `crf 23` or `1200 kbps`.
    pub point: String,
    pub width: u32,
    pub height: u32,
    pub frames: u64,
    pub bytes: u64,
    pub duration_s: f64,
    /// Whole-file bitrate (the sweep's outputs carry video only).
    pub kbps: f64,
    /// Wall time of the encode (fleet: submit to done).
    pub encode_s: f64,
    pub fps: f64,
    /// CPU seconds of the encode (local runs only).
    pub cpu_s: Option<f64>,
    /// Seconds the GPU did the work (NVENC encode or NVDEC decode): the encode's wall time.
    pub gpu_s: Option<f64>,
    /// Peak resident memory of the encoding process, MB (local runs only).
    pub peak_mb: Option<f64>,
    /// The FFmpeg encoder that ran, and `cuda` when frames were decoded on the GPU.
    pub encoder_used: String,
    pub hwaccel: Option<String>,
    pub scores: Scores,
    /// Whether this row came from the cache rather than this run.
    #[serde(default)]
    pub cached: bool,
}

/// Where encodes run.
#[derive(Debug, Clone)]
pub enum Runner {
    /// Kiln's pipeline on this machine.
    Local,
    /// Jobs on a Kiln fleet.
    Fleet { api: String, key: String },
}

impl Runner {
    pub fn describe(&self) -> String {
        match self {
            Self::Local => "this machine (kiln-gpu-node pipeline, in a child process)".into(),
            Self::Fleet { api, .. } => format!("fleet at {api} (jobs API)"),
        }
    }

    fn cache_tag(&self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Fleet { .. } => "fleet",
        }
    }
}

/// SHA-256 of a file, streamed.
pub fn file_sha256(path: &Path) -> Result<String, String> {
    let mut f =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| format!("read {}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// The cache key of an encode: what goes in (clip content, settings, Kiln's version, where it
/// runs) decides what comes out.
pub fn cache_key(clip_sha: &str, e: &Encode, runner: &Runner) -> String {
    let params = serde_json::to_string(&e.params).expect("params serialise");
    let mut h = Sha256::new();
    for part in [
        env!("CARGO_PKG_VERSION"),
        kiln_gpu_node::quality::vmaf::MODEL,
        runner.cache_tag(),
        clip_sha,
        &params,
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())
}

/// Run (or take from `cache`) every encode; `on_done(row)` after each. An encode that fails is
/// left out with its reason (and not cached, so the next run tries it again); the rest go on.
pub fn sweep(
    encodes: &[Encode],
    runner: &Runner,
    cache: &Path,
    on_done: &mut dyn FnMut(&Encode, &Row),
) -> Result<(Vec<Row>, Vec<String>), String> {
    std::fs::create_dir_all(cache).map_err(|e| format!("cache dir: {e}"))?;
    let mut hashes: HashMap<PathBuf, String> = HashMap::new();
    let mut fleet = None;
    let mut rows = Vec::with_capacity(encodes.len());
    let mut failed = Vec::new();
    for e in encodes {
        let sha = match hashes.get(&e.clip) {
            Some(h) => h.clone(),
            None => {
                let h = file_sha256(&e.clip)?;
                hashes.insert(e.clip.clone(), h.clone());
                h
            }
        };
        let key = cache_key(&sha, e, runner);
        let cached = cache.join(format!("{key}.json"));
        let row = match std::fs::read(&cached)
            .ok()
            .and_then(|b| serde_json::from_slice::<Row>(&b).ok())
        {
            Some(mut row) => {
                row.cached = true;
                row
            }
            None => {
                let out = cache.join(format!("{key}.partial.mkv"));
                let measured = match runner {
                    Runner::Local => encode_local(e, &out),
                    Runner::Fleet { api, key } => {
                        let f = match &mut fleet {
                            Some(f) => f,
                            None => fleet.insert(super::fleet::Fleet::new(api, key)?),
                        };
                        f.encode(e, &out)
                    }
                };
                let row = measured.and_then(|m| measure(e, &sha, m, &out));
                let _ = std::fs::remove_file(&out);
                let row = match row {
                    Ok(r) => r,
                    Err(why) => {
                        failed.push(format!(
                            "{} {} on {}: {why}",
                            e.config.label,
                            e.point,
                            e.clip.display()
                        ));
                        continue;
                    }
                };
                // Atomically: a crash leaves either the whole result or none.
                let tmp = cache.join(format!("{key}.json.tmp"));
                std::fs::write(&tmp, serde_json::to_vec_pretty(&row).expect("serialise"))
                    .and_then(|_| std::fs::rename(&tmp, &cached))
                    .map_err(|e| format!("cache write: {e}"))?;
                row
            }
        };
        on_done(e, &row);
        rows.push(row);
    }
    Ok((rows, failed))
}

/// What an encode reports before it is scored.
pub struct Encoded {
    pub encode_s: f64,
    pub cpu_s: Option<f64>,
    pub peak_mb: Option<f64>,
    pub encoder_used: String,
    pub hwaccel: Option<String>,
}

fn encode_local(e: &Encode, out: &Path) -> Result<Encoded, String> {
    let exe = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
    let params = serde_json::to_string(&e.params).expect("params serialise");
    let start = Instant::now();
    let mut child = Command::new(exe)
        .arg(crate::video::CHILD)
        .arg(&e.clip)
        .arg(out)
        .arg(params)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| format!("spawn encode: {err}"))?;
    let mut stderr = child.stderr.take().expect("piped");
    let errs = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut stdout = String::new();
    let _ = child
        .stdout
        .take()
        .expect("piped")
        .read_to_string(&mut stdout);
    let usage = crate::video::wait_usage(child);
    let encode_s = start.elapsed().as_secs_f64();
    let errs = errs.join().unwrap_or_default();
    let usage = usage.map_err(|why| {
        format!(
            "{} {} on {}: {why}: {}",
            e.config.label,
            e.point,
            e.clip.display(),
            errs.trim()
        )
    })?;
    let report: serde_json::Value = serde_json::from_str(stdout.trim())
        .map_err(|err| format!("encode report: {err}: {stdout}"))?;
    Ok(Encoded {
        encode_s,
        cpu_s: Some(usage.cpu_s),
        peak_mb: Some(usage.peak_mb),
        encoder_used: report["encoder"].as_str().unwrap_or("").to_string(),
        hwaccel: report["hwaccel"].as_str().map(str::to_string),
    })
}

fn measure(e: &Encode, sha: &str, m: Encoded, out: &Path) -> Result<Row, String> {
    let threads = quality::target::default_threads();
    let scores = quality::compare(&e.clip, out, threads)
        .map_err(|err| format!("scoring {} {}: {err}", e.config.label, e.point))?;
    let bytes = std::fs::metadata(out).map_err(|e| e.to_string())?.len();
    let probe = kiln_gpu_node::media::probe(out).map_err(|e| e.to_string())?;
    let duration_s = probe.duration_s.max(1e-3);
    let gpu = m.encoder_used.ends_with("_nvenc") || m.hwaccel.is_some();
    Ok(Row {
        clip: e
            .clip
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default(),
        clip_sha256: sha.to_string(),
        config: e.config.label.clone(),
        encoder: e.config.encoder.clone(),
        preset: e.config.preset.clone(),
        resolution: e.config.resolution.clone(),
        point: e.point.clone(),
        width: probe.width,
        height: probe.height,
        frames: scores.frames as u64,
        bytes,
        duration_s,
        kbps: bytes as f64 * 8.0 / duration_s / 1000.0,
        encode_s: m.encode_s,
        fps: scores.frames as f64 / m.encode_s.max(1e-6),
        cpu_s: m.cpu_s,
        gpu_s: Some(if gpu { m.encode_s } else { 0.0 }),
        peak_mb: m.peak_mb,
        encoder_used: m.encoder_used,
        hwaccel: m.hwaccel,
        scores,
        cached: false,
    })
}

/// How long a fleet job may take before the sweep gives up on it.
pub const FLEET_JOB_TIMEOUT: Duration = Duration::from_secs(3600);
