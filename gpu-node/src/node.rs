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

use crate::host::{GpuSelection, HostGpus};
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
    /// `KILN_NODE_SLOTS`: jobs at once (default: one per 8 cores, at least 1, and at least
    /// `slots_per_gpu` for each GPU the node drives).
    pub slots: usize,
    /// Whether `KILN_NODE_SLOTS` was given (else the GPUs found may raise `slots`).
    pub slots_given: bool,
    /// `KILN_SLOTS_PER_GPU`: jobs at once on one GPU (default 3).
    pub slots_per_gpu: usize,
    /// `KILN_NVENC_SESSIONS`: NVENC encodes at once on each GPU that has NVENC (default 3,
    /// the limit of consumer GeForce drivers; data-centre GPUs allow more).
    pub nvenc_sessions: usize,
    /// `KILN_LEASE_SECS`: lease length (default 30).
    pub lease: Duration,
    /// `KILN_DRAIN_TIMEOUT_SECS`: how long running jobs may finish after SIGTERM (default 600).
    pub drain_timeout: Duration,
    /// `KILN_SCRATCH_DIR` (default `$TMPDIR/kiln-node-<id>`).
    pub scratch_dir: PathBuf,
    /// `KILN_NODE_METRICS_LISTEN` (default `127.0.0.1:9101`; `off` for none).
    pub metrics_listen: Option<SocketAddr>,
    /// `KILN_CHUNK_AUTO_SECS`: sources longer than this go in chunks (default 600; 0: never
    /// unless asked).
    pub chunk_auto_secs: f64,
    /// `KILN_GPUS`: the host's GPUs this node drives (default all).
    pub gpus: GpuSelection,
    /// `KILN_MAX_SOURCE_*`, `KILN_JOB_BUDGET_FACTOR`: the largest source taken, and how long a
    /// job may run.
    pub limits: kiln_protocol::limits::SourceLimits,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "node".into())
}

/// `kiln-gpu-node`: a fleet node.
#[derive(Debug, clap::Parser)]
#[command(name = "kiln-gpu-node", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<NodeCommand>,
    #[command(flatten)]
    pub settings: NodeSettings,
}

/// What to do (default: run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Subcommand)]
pub enum NodeCommand {
    /// Take jobs from Redis until SIGTERM, then drain.
    Run,
    /// Print what this machine can do (codecs that open, the wgpu adapter and resize path,
    /// the queue classes it would take) as JSON.
    Probe,
}

/// A node's settings as given: flags, or the environment variable beside each.
#[derive(Debug, Clone, clap::Args)]
pub struct NodeSettings {
    /// The fleet's Redis (required to run).
    #[arg(long, env = "REDIS_URL", hide_env_values = true, global = true)]
    pub redis_url: Option<String>,
    /// `file:///shared/path` or `s3://bucket?endpoint=…` (required to run).
    #[arg(long, env = "KILN_STORAGE_URL", global = true)]
    pub storage_url: Option<String>,
    /// The node's name in the registry, events and leases (default `<hostname>-<pid>`).
    #[arg(long, env = "KILN_NODE_ID", value_parser = node_id, global = true)]
    pub node_id: Option<String>,
    /// Jobs at once (default: one per 8 cores, at least 1, and at least --slots-per-gpu for
    /// each GPU the node drives).
    #[arg(long, env = "KILN_NODE_SLOTS", global = true,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub slots: Option<u64>,
    /// Jobs at once on one GPU: a GPU with this many takes no more (they decode and encode on
    /// the CPU, or wait for a slot).
    #[arg(long, env = "KILN_SLOTS_PER_GPU", default_value_t = 3, global = true,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub slots_per_gpu: u64,
    /// NVENC encodes at once on each GPU that has NVENC (3 is the limit of consumer GeForce
    /// drivers; data-centre GPUs allow more; 0 disables NVENC classes).
    #[arg(long, env = "KILN_NVENC_SESSIONS", default_value_t = 3, global = true)]
    pub nvenc_sessions: usize,
    /// Lease length (seconds): a node silent this long loses its jobs.
    #[arg(long, env = "KILN_LEASE_SECS", default_value_t = 30, global = true,
          value_parser = clap::value_parser!(u64).range(2..))]
    pub lease_secs: u64,
    /// How long running jobs may finish after SIGTERM (seconds).
    #[arg(
        long,
        env = "KILN_DRAIN_TIMEOUT_SECS",
        default_value_t = 600,
        global = true
    )]
    pub drain_timeout_secs: u64,
    /// Sources and outputs in flight (default `$TMPDIR/kiln-node-<id>`).
    #[arg(long, env = "KILN_SCRATCH_DIR", global = true)]
    pub scratch_dir: Option<PathBuf>,
    /// The node's `/metrics` address, or `off`.
    #[arg(long, env = "KILN_NODE_METRICS_LISTEN", default_value = "127.0.0.1:9101",
          value_parser = metrics_listen, global = true)]
    pub metrics_listen: MetricsListen,
    /// Video and ladder jobs whose source is longer than this (seconds) are encoded in chunks
    /// across the fleet unless they say otherwise (`chunk_secs`); 0: only when they ask.
    #[arg(long, env = "KILN_CHUNK_AUTO_SECS",
          default_value_t = kiln_protocol::video::DEFAULT_CHUNK_AUTO_SECS, global = true)]
    pub chunk_auto_secs: f64,
    /// The host's GPUs this node drives: `all`, `none`, or CUDA indices and NVML UUIDs
    /// separated by commas (`0,2`, `GPU-8f6e…`).
    #[arg(long, env = "KILN_GPUS", default_value = "all", global = true)]
    pub gpus: GpuSelection,
    #[command(flatten)]
    pub limits: kiln_protocol::limits::SourceLimits,
}

/// Where a node serves its metrics: an address, or nowhere (`off`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsListen(pub Option<SocketAddr>);

fn metrics_listen(v: &str) -> Result<MetricsListen, String> {
    match v.trim() {
        "off" => Ok(MetricsListen(None)),
        a => a
            .parse()
            .map(|a| MetricsListen(Some(a)))
            .map_err(|e| format!("{e}: an address such as 127.0.0.1:9101, or off")),
    }
}

fn node_id(v: &str) -> Result<String, String> {
    if !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        Ok(v.to_string())
    } else {
        Err("it may hold letters, digits, '-', '_' and '.'".into())
    }
}

/// The settings alone, as a command line (for [`NodeConfig::from_env`]).
#[derive(Debug, clap::Parser)]
#[command(name = "kiln-gpu-node")]
struct Settings {
    #[command(flatten)]
    settings: NodeSettings,
}

impl NodeConfig {
    /// Read the environment through `env`.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let s = kiln_protocol::cli::parse_with_env::<Settings, _, _>(env, ["kiln-gpu-node"])?;
        Self::from_settings(s.settings)
    }

    /// What a node runs with, from its settings (the Redis URL and the store are required).
    pub fn from_settings(s: NodeSettings) -> anyhow::Result<Self> {
        let redis_url = s
            .redis_url
            .context("REDIS_URL is required for a fleet node")?;
        let storage_url = s.storage_url.context(
            "KILN_STORAGE_URL is required for a fleet node (file:///shared/path or s3://bucket?endpoint=…)",
        )?;
        let node_id = s
            .node_id
            .unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id()));
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        Ok(Self {
            scratch_dir: s
                .scratch_dir
                .unwrap_or_else(|| std::env::temp_dir().join(format!("kiln-node-{node_id}"))),
            node_id,
            redis_url,
            storage_url,
            slots: s.slots.map_or((cores / 8).max(1), |n| n as usize),
            slots_given: s.slots.is_some(),
            slots_per_gpu: s.slots_per_gpu as usize,
            nvenc_sessions: s.nvenc_sessions,
            lease: Duration::from_secs(s.lease_secs),
            drain_timeout: Duration::from_secs(s.drain_timeout_secs),
            metrics_listen: s.metrics_listen.0,
            chunk_auto_secs: s.chunk_auto_secs.max(0.0),
            gpus: s.gpus,
            limits: s.limits,
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
    // A title's chunks go where its class goes (`chunk:h264`, `chunk:h264:cpu`, …).
    let chunks: Vec<String> = out
        .iter()
        .map(|c| format!("{}{c}", kiln_protocol::job::CHUNK_CLASS_PREFIX))
        .collect();
    out.extend(chunks);
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

/// What a node found it can do, probed once at start.
pub struct Probed {
    pub capabilities: NodeCapabilities,
    /// The queue classes it takes.
    pub classes: Vec<String>,
    /// The GPUs it drives, for placing jobs.
    pub gpus: Arc<HostGpus>,
}

/// What this machine can do: codecs, the image path, and every GPU `selection` names, each
/// allowed `nvenc_sessions` NVENC sessions.
pub fn probe(selection: &GpuSelection, nvenc_sessions: usize) -> Probed {
    // Codecs that are expected not to open say so in one line each subsystem, not FFmpeg's.
    let (media, resize, host) = crate::media::quietly(|| {
        (
            crate::media::capabilities(),
            crate::gpu::choice(),
            crate::host::probe(selection),
        )
    });
    let gpus = HostGpus::new(
        host.gpus,
        nvenc_sessions as u32,
        crate::host::HealthPolicy::default(),
    );
    // NVENC classes only where a driven GPU opened NVENC (a GPU left out by KILN_GPUS, or a
    // card without encode engines such as the H100, gives none).
    let nvenc_sessions = if gpus.has_nvenc() { nvenc_sessions } else { 0 };
    let caps = NodeCapabilities {
        gpu: gpus
            .gpus()
            .first()
            .map(|g| g.name.clone())
            .or_else(gpu_model),
        cuda: gpus.has_decode(),
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
        nvenc_sessions: gpus.nvenc_total(),
        gpus: gpus.gpus().to_vec(),
    };
    Probed {
        classes: classes_for(media, nvenc_sessions),
        capabilities: caps,
        gpus,
    }
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

/// The node's slots: as given, else the cores' default raised to `slots_per_gpu` for each of
/// its `gpus` (an 8-GPU host keeps every GPU busy).
pub fn node_slots(config: &NodeConfig, gpus: usize) -> usize {
    if config.slots_given {
        config.slots
    } else {
        config.slots.max(gpus * config.slots_per_gpu)
    }
}

/// Ports after a taken metrics port tried before any free one.
const METRICS_PORTS_AFTER: u16 = 64;

/// Bind the metrics listener at `addr`, or — its port taken, as by another node on this host —
/// at the next free port after it (then at any), saying so once; the node registers the address
/// it got, where Prometheus's discovery finds it.
async fn bind_metrics(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    use tokio::net::TcpListener;
    let taken = match TcpListener::bind(addr).await {
        Ok(l) => return Ok(l),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && addr.port() != 0 => e,
        Err(e) => return Err(e).with_context(|| format!("binding the metrics listener {addr}")),
    };
    let after = (1..=METRICS_PORTS_AFTER).filter_map(|n| addr.port().checked_add(n));
    for port in after.chain([0]) {
        let mut other = addr;
        other.set_port(port);
        if let Ok(l) = TcpListener::bind(other).await {
            tracing::warn!(
                wanted = %addr,
                serving = %l.local_addr()?,
                error = %taken,
                "the metrics port is taken (another node on this host?): serving on another"
            );
            return Ok(l);
        }
    }
    Err(taken).with_context(|| format!("binding the metrics listener {addr}"))
}

/// Serve `/metrics` for `registry` on `addr` until `shutdown`.
async fn serve_metrics(
    addr: SocketAddr,
    registry: prometheus::Registry,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<SocketAddr> {
    use axum::routing::get;
    let listener = bind_metrics(addr).await?;
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
    let Probed {
        capabilities: caps,
        classes,
        gpus,
    } = tokio::task::spawn_blocking({
        let (selection, n) = (config.gpus.clone(), config.nvenc_sessions);
        move || probe(&selection, n)
    })
    .await?;
    anyhow::ensure!(
        !classes.is_empty(),
        "this node can encode nothing (no encoder opened): check its FFmpeg"
    );
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let registry = prometheus::Registry::new();
    let metrics = NodeMetrics::register(&registry);
    let gpus = gpus
        .with_job_limit(config.slots_per_gpu as u32)
        .with_metrics(metrics.clone());
    let slots = node_slots(&config, gpus.gpus().len());
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
        slots,
        ?classes,
        gpu = ?caps.gpu,
        metrics = ?metrics_addr,
        "kiln node ready"
    );
    let status = initial_status(&config.node_id, caps, classes.clone(), slots, metrics_addr);
    let worker = tokio::spawn(worker::run(
        broker,
        store,
        WorkerConfig {
            node_id: config.node_id.clone(),
            slots,
            lease: config.lease,
            scratch_dir: config.scratch_dir.clone(),
            classes,
            gpus,
            status,
            report_every: Duration::from_secs(2),
            drain_timeout: config.drain_timeout,
            metrics: Some(metrics),
            chunk_auto_secs: config.chunk_auto_secs,
            limits: config.limits,
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

    #[tokio::test]
    async fn a_taken_metrics_port_moves_to_a_free_one() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = held.local_addr().unwrap();
        let first = bind_metrics(taken).await.unwrap();
        let second = bind_metrics(taken).await.unwrap();
        let (a, b) = (first.local_addr().unwrap(), second.local_addr().unwrap());
        assert!(a != taken && b != taken && a != b, "{taken} {a} {b}");
        assert_eq!(a.ip(), taken.ip());
        // A free address is taken as given.
        drop(held);
        assert_eq!(
            bind_metrics(taken).await.unwrap().local_addr().unwrap(),
            taken
        );
    }

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
        for (open, sessions, want) in cases {
            let mut want: Vec<String> = want.iter().map(|c| c.to_string()).collect();
            // Every video class has its chunk class, and every node converts images.
            let chunks: Vec<String> = want.iter().map(|c| format!("chunk:{c}")).collect();
            want.extend(chunks);
            want.push("image".into());
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
        // Given slots stand; the default (one per 8 cores) grows with the GPUs.
        let with = |given: Option<&'static str>, per_gpu: &'static str| {
            move |k: &str| match k {
                "KILN_NODE_SLOTS" => given.map(String::from),
                "KILN_SLOTS_PER_GPU" => Some(per_gpu.to_string()),
                other => env(other),
            }
        };
        let cores = NodeConfig::from_env(with(None, "3")).unwrap().slots;
        // (slots given, slots per GPU, GPUs, slots)
        for (given, per_gpu, gpus, want) in [
            (Some("4"), "3", 8, 4),
            (None, "3", 0, cores),
            (None, "3", 8, cores.max(24)),
            (None, "1", 2, cores.max(2)),
        ] {
            let c = NodeConfig::from_env(with(given, per_gpu)).unwrap();
            assert_eq!(node_slots(&c, gpus), want, "{given:?} {per_gpu} {gpus}");
        }
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

    #[test]
    fn probe_and_run_read_the_same_settings() {
        use kiln_protocol::cli::parse_with_env;
        // A bad KILN_NVENC_SESSIONS used to make `run` fail and `probe` silently use 3.
        let bad = |k: &str| (k == "KILN_NVENC_SESSIONS").then(|| "many".to_string());
        for command in ["run", "probe"] {
            let e = parse_with_env::<Cli, _, _>(bad, ["kiln-gpu-node", command]).unwrap_err();
            assert!(e.to_string().contains("many"), "{command}: {e}");
        }
        let ok = |k: &str| (k == "KILN_NVENC_SESSIONS").then(|| "5".to_string());
        for command in ["run", "probe"] {
            let cli = parse_with_env::<Cli, _, _>(ok, ["kiln-gpu-node", command]).unwrap();
            assert_eq!(cli.settings.nvenc_sessions, 5);
        }
        let cli = parse_with_env::<Cli, _, _>(|_| None, ["kiln-gpu-node"]).unwrap();
        assert_eq!((cli.command, cli.settings.nvenc_sessions), (None, 3));
        assert!(
            parse_with_env::<Cli, _, _>(|_| None, ["kiln-gpu-node", "--lease-secs", "1"]).is_err()
        );
    }
}
