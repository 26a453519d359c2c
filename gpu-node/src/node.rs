//! A fleet node as its own process: configuration from the environment, the capability probe
//! and the queue classes it implies, the metrics endpoint, and the drain on SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kiln_protocol::job::video_class;
use kiln_protocol::{Broker, HardwarePolicy, NodeCapabilities, NodeStatus, RedisQueue, VideoCodec};
use tokio::sync::watch;

use crate::media::MediaCapabilities;
use crate::metrics::NodeMetrics;
use crate::worker::{self, WorkerConfig};

/// A node's settings, from the environment.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// `REDIS_URL` (required).
    pub redis_url: String,
    /// `KILN_STORAGE_URL` (required): `file:///shared/path` or `s3://bucket?endpoint=…`.
    pub storage_url: String,
    /// `KILN_NODE_ID`, default `<hostname>-<pid>`.
    pub node_id: String,
    /// `KILN_NODE_SLOTS`: jobs at once (default: one per 8 cores, at least 1).
    pub slots: usize,
    /// `KILN_NVENC_SESSIONS`: NVENC encodes at once, when the node has NVENC (default 3, the
    /// limit of consumer GeForce drivers; data-centre GPUs allow more).
    pub nvenc_sessions: usize,
    /// `KILN_LEASE_SECS`: lease length (default 30).
    pub lease: Duration,
    /// `KILN_DRAIN_TIMEOUT_SECS`: how long running jobs may finish after SIGTERM (default 600).
    pub drain_timeout: Duration,
    /// `KILN_SCRATCH_DIR` (default `$TMPDIR/kiln-node-<id>`).
    pub scratch_dir: PathBuf,
    /// `KILN_NODE_METRICS_LISTEN` (default `127.0.0.1:9101`; `off` for none).
    pub metrics_listen: Option<SocketAddr>,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "node".into())
}

impl NodeConfig {
    /// Read the environment through `env`.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let env = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        fn num<T: std::str::FromStr>(
            name: &str,
            v: Option<String>,
            default: T,
        ) -> anyhow::Result<T> {
            match v {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse()
                    .map_err(|_| anyhow::anyhow!("invalid {name}: {v:?}")),
            }
        }
        let redis_url = env("REDIS_URL").context("REDIS_URL is required for a fleet node")?;
        let storage_url = env("KILN_STORAGE_URL").context(
            "KILN_STORAGE_URL is required for a fleet node (file:///shared/path or s3://bucket?endpoint=…)",
        )?;
        let node_id =
            env("KILN_NODE_ID").unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id()));
        anyhow::ensure!(
            !node_id.is_empty()
                && node_id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "KILN_NODE_ID may hold letters, digits, '-', '_' and '.': got {node_id:?}"
        );
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let metrics_listen = match env("KILN_NODE_METRICS_LISTEN").as_deref() {
            Some("off") => None,
            Some(v) => Some(
                v.parse()
                    .with_context(|| format!("invalid KILN_NODE_METRICS_LISTEN {v:?}"))?,
            ),
            None => Some("127.0.0.1:9101".parse().expect("literal")),
        };
        Ok(Self {
            scratch_dir: env("KILN_SCRATCH_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| std::env::temp_dir().join(format!("kiln-node-{node_id}"))),
            node_id,
            redis_url,
            storage_url,
            slots: num(
                "KILN_NODE_SLOTS",
                env("KILN_NODE_SLOTS"),
                (cores / 8).max(1),
            )?
            .max(1),
            nvenc_sessions: num("KILN_NVENC_SESSIONS", env("KILN_NVENC_SESSIONS"), 3)?,
            lease: Duration::from_secs(
                num("KILN_LEASE_SECS", env("KILN_LEASE_SECS"), 30u64)?.max(2),
            ),
            drain_timeout: Duration::from_secs(num(
                "KILN_DRAIN_TIMEOUT_SECS",
                env("KILN_DRAIN_TIMEOUT_SECS"),
                600u64,
            )?),
            metrics_listen,
        })
    }
}

/// The queue classes a node with these capabilities serves: for each codec, the plain class
/// when it can encode it at all, `:cpu` when its CPU encoder opened, `:nvenc` when NVENC did.
pub fn classes_for(caps: &MediaCapabilities, nvenc_sessions: usize) -> Vec<String> {
    let mut out = Vec::new();
    for codec in VideoCodec::ALL {
        let cpu = caps.encoder(codec.cpu_encoder());
        let nvenc = nvenc_sessions > 0 && codec.nvenc_encoder().is_some_and(|n| caps.encoder(n));
        if cpu || nvenc {
            out.push(video_class(codec, HardwarePolicy::Auto));
        }
        if cpu {
            out.push(video_class(codec, HardwarePolicy::Cpu));
        }
        if nvenc {
            out.push(video_class(codec, HardwarePolicy::Nvenc));
        }
    }
    // Every node converts images, on its GPU adapter or its CPU.
    out.push(kiln_protocol::job::IMAGE_CLASS.to_string());
    out
}

/// The NVIDIA GPU's model from the driver's proc files, when there is one.
pub fn gpu_model() -> Option<String> {
    let dir = std::fs::read_dir("/proc/driver/nvidia/gpus").ok()?;
    for entry in dir.flatten() {
        if let Ok(info) = std::fs::read_to_string(entry.path().join("information")) {
            for line in info.lines() {
                if let Some(model) = line.strip_prefix("Model:") {
                    return Some(model.trim().to_string());
                }
            }
        }
    }
    None
}

/// What this machine can do, probed once.
pub fn capabilities(nvenc_sessions: usize) -> (NodeCapabilities, Vec<String>) {
    let media = crate::media::capabilities();
    let resize = crate::gpu::choice();
    let caps = NodeCapabilities {
        gpu: gpu_model(),
        cuda: media.cuda.available,
        encoders: media
            .encoders
            .iter()
            .filter(|c| c.available)
            .map(|c| c.name.to_string())
            .collect(),
        decoders: media
            .decoders
            .iter()
            .filter(|c| c.available)
            .map(|c| c.name.to_string())
            .collect(),
        image_resize: Some(match &resize.adapter {
            Some(a) => format!(
                "{} ({}, {})",
                resize.backend.as_str(),
                a.name,
                a.device_type
            ),
            None => resize.backend.as_str().to_string(),
        }),
        cpu_cores: std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
        nvenc_sessions: if media.encoder("h264_nvenc") || media.encoder("hevc_nvenc") {
            nvenc_sessions as u32
        } else {
            0
        },
    };
    (caps, classes_for(media, nvenc_sessions))
}

/// The status a node starts reporting with.
pub fn initial_status(
    node_id: &str,
    caps: NodeCapabilities,
    classes: Vec<String>,
    slots: usize,
    metrics_addr: Option<String>,
) -> NodeStatus {
    NodeStatus {
        node_id: node_id.to_string(),
        hostname: hostname(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        classes,
        capabilities: caps,
        slots: slots as u32,
        metrics_addr,
        started_at_ms: kiln_protocol::now_ms(),
        ..Default::default()
    }
}

/// Serve `/metrics` for `registry` on `addr` until `shutdown`.
async fn serve_metrics(
    addr: SocketAddr,
    registry: prometheus::Registry,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<SocketAddr> {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics listener {addr}"))?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    crate::metrics::render(&registry),
                )
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = shutdown.wait_for(|v| *v).await;
            })
            .await;
    });
    Ok(bound)
}

/// Run a fleet node until SIGTERM or Ctrl-C, then drain and leave.
pub async fn run(config: NodeConfig) -> anyhow::Result<()> {
    let broker = Broker::new(Arc::new(
        RedisQueue::connect_default(&config.redis_url, &config.node_id)
            .await
            .context("connecting to Redis")?,
    ));
    let store = kiln_protocol::storage::open(Some(&config.storage_url), &config.scratch_dir)
        .await
        .context("opening KILN_STORAGE_URL")?;
    let (caps, classes) = tokio::task::spawn_blocking({
        let n = config.nvenc_sessions;
        move || capabilities(n)
    })
    .await?;
    anyhow::ensure!(
        !classes.is_empty(),
        "this node can encode nothing (no encoder opened): check its FFmpeg"
    );
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let registry = prometheus::Registry::new();
    let metrics = NodeMetrics::register(&registry);
    let metrics_addr = match config.metrics_listen {
        Some(addr) => Some(
            serve_metrics(addr, registry, shutdown_rx.clone())
                .await?
                .to_string(),
        ),
        None => None,
    };
    tracing::info!(
        node = %config.node_id,
        slots = config.slots,
        ?classes,
        gpu = ?caps.gpu,
        metrics = ?metrics_addr,
        "kiln node ready"
    );
    let status = initial_status(
        &config.node_id,
        caps,
        classes.clone(),
        config.slots,
        metrics_addr,
    );
    let worker = tokio::spawn(worker::run(
        broker,
        store,
        WorkerConfig {
            node_id: config.node_id.clone(),
            slots: config.slots,
            lease: config.lease,
            scratch_dir: config.scratch_dir.clone(),
            classes,
            nvenc_sessions: config.nvenc_sessions,
            status,
            report_every: Duration::from_secs(2),
            drain_timeout: config.drain_timeout,
            metrics: Some(metrics),
        },
        shutdown_rx,
    ));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!(
        timeout_s = config.drain_timeout.as_secs(),
        "SIGTERM: draining (running jobs finish or are handed back)"
    );
    let _ = shutdown_tx.send(true);
    worker.await?;
    tracing::info!("drained; node stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::capabilities::CodecProbe;

    fn caps(open: &[&'static str]) -> MediaCapabilities {
        MediaCapabilities {
            encoders: crate::media::capabilities::ENCODERS
                .iter()
                .map(|n| CodecProbe {
                    name: n,
                    available: open.contains(n),
                    reason: None,
                })
                .collect(),
            decoders: vec![],
            cuda: CodecProbe {
                name: "cuda",
                available: false,
                reason: None,
            },
        }
    }

    #[test]
    fn classes_follow_what_opened() {
        // (encoders that opened, NVENC sessions, classes)
        let cases: Vec<(Vec<&'static str>, usize, Vec<&str>)> = vec![
            (
                vec!["libx264", "libsvtav1"],
                3,
                vec!["h264", "h264:cpu", "av1", "av1:cpu"],
            ),
            (
                vec!["libx264", "h264_nvenc"],
                3,
                vec!["h264", "h264:cpu", "h264:nvenc"],
            ),
            // An H100: NVDEC but no NVENC, so no :nvenc class.
            (
                vec!["libx264", "libx265"],
                3,
                vec!["h264", "h264:cpu", "h265", "h265:cpu"],
            ),
            // NVENC without a CPU encoder: only jobs that may use NVENC.
            (vec!["hevc_nvenc"], 3, vec!["h265", "h265:nvenc"]),
            // NVENC switched off by configuration.
            (vec!["hevc_nvenc", "libx265"], 0, vec!["h265", "h265:cpu"]),
        ];
        for (open, sessions, mut want) in cases {
            // Every node also converts images.
            want.push("image");
            assert_eq!(classes_for(&caps(&open), sessions), want, "{open:?}");
        }
    }

    #[test]
    fn config_from_env() {
        let env = |k: &str| match k {
            "REDIS_URL" => Some("redis://r:6379".to_string()),
            "KILN_STORAGE_URL" => Some("s3://b?endpoint=http://s:9000".to_string()),
            "KILN_NODE_ID" => Some("gpu-01".to_string()),
            "KILN_NODE_SLOTS" => Some("4".to_string()),
            "KILN_NODE_METRICS_LISTEN" => Some("off".to_string()),
            _ => None,
        };
        let c = NodeConfig::from_env(env).unwrap();
        assert_eq!(
            (c.node_id.as_str(), c.slots, c.metrics_listen),
            ("gpu-01", 4, None)
        );
        assert_eq!(c.lease, Duration::from_secs(30));
        assert!(
            NodeConfig::from_env(|_| None).is_err(),
            "REDIS_URL is required"
        );
        let bad_id = |k: &str| match k {
            "KILN_NODE_ID" => Some("a b".to_string()),
            other => env(other),
        };
        assert!(NodeConfig::from_env(bad_id).is_err());
    }
}
