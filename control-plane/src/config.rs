//! Configuration from flags and the environment. With nothing set, Kiln runs the embedded
//! default: SQLite and a local store under `./kiln-data`, an in-process queue and a local node.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::dialect::Dialects;

/// Everything the control plane needs to start: flags, or the environment variable beside
/// each (flags win).
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Where the API listens.
    #[arg(
        long,
        env = "KILN_LISTEN",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub listen: SocketAddr,
    /// The SQLite file, the local store and scratch space.
    #[arg(
        long,
        env = "KILN_DATA_DIR",
        default_value = "./kiln-data",
        global = true
    )]
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; default `sqlite://<data dir>/kiln.db`.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<String>,
    /// Schedule onto fleet nodes through this Redis (fleet mode).
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// `file:///path` or `s3://bucket?endpoint=…&region=…`; default `<data dir>/storage`.
    #[arg(long, env = "KILN_STORAGE_URL")]
    pub storage_url: Option<String>,
    /// The admin key to create on first start instead of a random one.
    #[arg(long, env = "KILN_BOOTSTRAP_KEY", hide_env_values = true)]
    pub bootstrap_key: Option<String>,
    /// Largest video upload, in bytes.
    #[arg(long, env = "KILN_MAX_UPLOAD_BYTES", default_value_t = 2 << 30)]
    pub max_upload_bytes: u64,
    /// Largest image for `/convert`, in bytes.
    #[arg(long, env = "KILN_MAX_IMAGE_BYTES", default_value_t = 50 << 20)]
    pub max_image_bytes: u64,
    /// Largest decoded image, and largest pixel total of an animation.
    #[arg(long, env = "KILN_MAX_IMAGE_PIXELS", default_value_t = 100_000_000)]
    pub max_image_pixels: u64,
    /// Most frames in an animated GIF/WebP.
    #[arg(long, env = "KILN_MAX_IMAGE_FRAMES", default_value_t = 500,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_image_frames: u32,
    /// Synchronous image conversions (`/convert`, Convertly's sync convert) run at once
    /// (default: the cores).
    #[arg(long, env = "KILN_CONVERT_WORKERS",
          value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub convert_workers: Option<u64>,
    /// Conversions that may wait for a worker; past them a request gets 503 `overloaded`
    /// with `Retry-After` (default: 4 × workers).
    #[arg(long, env = "KILN_CONVERT_QUEUE")]
    pub convert_queue: Option<u64>,
    /// Jobs the embedded node runs at once (default 1, or 0 — no local node — in fleet mode).
    #[arg(long, env = "KILN_LOCAL_SLOTS")]
    pub local_slots: Option<usize>,
    /// The embedded node encodes video and ladders whose source is longer than this (seconds)
    /// in chunks unless the job says otherwise (`chunk_secs`); 0: only when asked.
    #[arg(long, env = "KILN_CHUNK_AUTO_SECS",
          default_value_t = kiln_protocol::video::DEFAULT_CHUNK_AUTO_SECS)]
    pub chunk_auto_secs: f64,
    /// The largest source accepted (picture, duration, streams) and how long a job may run.
    #[command(flatten)]
    pub limits: kiln_protocol::limits::SourceLimits,
    /// How long the embedded node's lease lasts without a heartbeat (seconds).
    #[arg(long, env = "KILN_LEASE_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(2..))]
    pub lease_secs: u64,
    /// This control plane's name among replicas (default `cp-<host>-<pid>`).
    #[arg(long, env = "KILN_INSTANCE_ID", default_value_t = default_instance_id())]
    pub instance_id: String,
    /// Tries per job before it fails for good.
    #[arg(long, env = "KILN_MAX_ATTEMPTS", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: u32,
    /// Writes (submissions, cancels, admin changes) per key per minute, unless the key has its
    /// own limit (Konvrt's published limit).
    #[arg(long, env = "KILN_RATE_WRITE_PER_MIN", default_value_t = 60,
          value_parser = clap::value_parser!(i64).range(0..))]
    pub rate_write_per_min: i64,
    /// Reads per key per minute.
    #[arg(long, env = "KILN_RATE_READ_PER_MIN", default_value_t = 600,
          value_parser = clap::value_parser!(i64).range(0..))]
    pub rate_read_per_min: i64,
    /// CIDRs, addresses and host names that source URLs, webhooks and S3 endpoints may reach
    /// although not public (and over plain http).
    #[arg(long, env = "KILN_URL_ALLOWLIST", default_value = "", value_parser = allowlist)]
    pub url_allowlist: String,
    /// Longest fetch of a source URL or bucket object (seconds).
    #[arg(long, env = "KILN_FETCH_TIMEOUT_SECS", default_value_t = 600,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub fetch_timeout_secs: u64,
    /// How long outputs stay downloadable (seconds); then 410 and the sweeper deletes them.
    #[arg(long, env = "KILN_OUTPUT_TTL_SECS", default_value_t = 86_400,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub output_ttl_secs: u64,
    /// How long an upload can be used by jobs (seconds).
    #[arg(long, env = "KILN_UPLOAD_TTL_SECS", default_value_t = 86_400,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub upload_ttl_secs: u64,
    /// First retry delay of a failed webhook (ms), doubling each time up to an hour.
    #[arg(long, env = "KILN_WEBHOOK_BACKOFF_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub webhook_backoff_ms: u64,
    /// Deliveries tried before giving up (15: about 9 h with the default backoff).
    #[arg(long, env = "KILN_WEBHOOK_MAX_ATTEMPTS", default_value_t = 15,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub webhook_max_attempts: u32,
    /// Secret for pre-signed download URLs; default a random one kept in the database, so
    /// every replica shares it.
    #[arg(long, env = "KILN_SIGNING_KEY", hide_env_values = true)]
    pub signing_key: Option<String>,
    /// Key that seals saved S3 credentials at rest (64 hex digits); default a random one kept
    /// in the database. Set it outside the database in production, so a copy of the database
    /// alone does not hold the secrets.
    #[arg(long, env = "KILN_SECRETS_KEY", hide_env_values = true, value_parser = secrets_key)]
    pub secrets_key: Option<String>,
    /// Which seed services' APIs are served beside the native one, each under its prefix:
    /// `convertly,convertrilo,klipfast`, `all` or `none`.
    #[arg(long, env = "KILN_DIALECTS", default_value = "all")]
    pub dialects: Dialects,
    /// The base URL clients reach Kiln at (`https://kiln.example`), for the absolute links of
    /// webhooks and dialects; default: the request's `Host`, else the listen address.
    #[arg(long, env = "KILN_PUBLIC_URL", value_parser = public_url)]
    pub public_url: Option<String>,
}

fn secrets_key(v: &str) -> Result<String, String> {
    match hex::decode(v.trim()) {
        Ok(k) if k.len() == 32 => Ok(v.trim().to_string()),
        _ => Err("64 hex digits (32 bytes)".into()),
    }
}

fn public_url(v: &str) -> Result<String, String> {
    let u = reqwest::Url::parse(v).map_err(|e| e.to_string())?;
    if !matches!(u.scheme(), "http" | "https") || u.host().is_none() {
        return Err("an http(s) URL such as https://kiln.example".into());
    }
    Ok(v.trim_end_matches('/').to_string())
}

fn default_instance_id() -> String {
    format!(
        "cp-{}-{}",
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default(),
        std::process::id()
    )
}

fn allowlist(v: &str) -> Result<String, String> {
    crate::netguard::UrlPolicy::parse(v)?;
    Ok(v.to_string())
}

/// The settings alone, as a command line (for [`Config::from_env_and_args`]).
#[derive(Debug, clap::Parser)]
#[command(name = "kiln-control-plane")]
struct Settings {
    #[command(flatten)]
    config: Config,
}

impl Default for Config {
    /// Every default (no flags, no environment).
    fn default() -> Self {
        Self::from_env_and_args(|_| None, &[]).expect("the defaults parse")
    }
}

/// A configuration value that could not be parsed (clap's message names it).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(#[from] clap::Error);

impl Config {
    /// Jobs the embedded node runs at once (0: no embedded node).
    pub fn embedded_slots(&self) -> usize {
        self.local_slots
            .unwrap_or(if self.redis_url.is_some() { 0 } else { 1 })
    }

    /// Synchronous image conversions at once.
    pub fn convert_workers(&self) -> usize {
        self.convert_workers.map_or_else(
            || {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            },
            |n| n as usize,
        )
    }

    /// Synchronous image conversions that may wait for a worker.
    pub fn convert_queue(&self) -> usize {
        self.convert_queue
            .map_or(4 * self.convert_workers(), |n| n as usize)
    }

    /// A node that has not reported for this long is not live (nodes report every 2 s).
    pub fn node_live_ms(&self) -> i64 {
        15_000
    }

    /// Read the environment through `env`, then let `args` (`--listen ADDR`, `--data-dir
    /// DIR`, or any setting's flag) override it.
    pub fn from_env_and_args(
        env: impl Fn(&str) -> Option<String>,
        args: &[String],
    ) -> Result<Self, ConfigError> {
        let argv = std::iter::once("kiln-control-plane".to_string()).chain(args.iter().cloned());
        Ok(kiln_protocol::cli::parse_with_env::<Settings, _, _>(env, argv)?.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_env_and_flags() {
        let none = |_: &str| None;
        let c = Config::from_env_and_args(none, &[]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.data_dir, PathBuf::from("./kiln-data"));

        let env = |k: &str| match k {
            "KILN_LISTEN" => Some("0.0.0.0:9000".to_string()),
            "KILN_MAX_UPLOAD_BYTES" => Some("1000".to_string()),
            "REDIS_URL" => Some("  ".to_string()),
            _ => None,
        };
        let args = vec!["--data-dir".to_string(), "/tmp/k".to_string()];
        let c = Config::from_env_and_args(env, &args).unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(c.max_upload_bytes, 1000);
        assert_eq!(c.redis_url, None, "blank variables count as unset");
        assert_eq!(c.data_dir, PathBuf::from("/tmp/k"));

        assert!(Config::from_env_and_args(none, &["--bogus".into()]).is_err());
        assert!(Config::from_env_and_args(none, &["--listen".into()]).is_err());
        let bad = |k: &str| (k == "KILN_LISTEN").then(|| "nonsense".to_string());
        assert!(Config::from_env_and_args(bad, &[]).is_err());
    }
}
