//! Configuration from flags and the environment. With nothing set, Kiln runs the embedded
//! default: SQLite and a local store under `./kiln-data`, an in-process queue and a local node.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything the control plane needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// `KILN_LISTEN` / `--listen`: where the API listens.
    pub listen: SocketAddr,
    /// `KILN_DATA_DIR` / `--data-dir`: the SQLite file and the local store.
    pub data_dir: PathBuf,
    /// `DATABASE_URL`: `sqlite://…` or `postgres://…`; default `sqlite://<data_dir>/kiln.db`.
    pub database_url: Option<String>,
    /// `REDIS_URL`: set to schedule onto fleet nodes through Redis (fleet mode).
    pub redis_url: Option<String>,
    /// `KILN_STORAGE_URL`: `file:///path` or `s3://bucket?endpoint=…&region=…`; default
    /// `<data_dir>/storage`.
    pub storage_url: Option<String>,
    /// `KILN_BOOTSTRAP_KEY`: the admin key to create on first start instead of a random one.
    pub bootstrap_key: Option<String>,
    /// `KILN_MAX_UPLOAD_BYTES`: largest video upload (default 2 GiB).
    pub max_upload_bytes: u64,
    /// `KILN_MAX_IMAGE_BYTES`: largest image for `/convert` (default 50 MiB).
    pub max_image_bytes: u64,
    /// `KILN_MAX_IMAGE_PIXELS`: largest decoded image (default 100 MP).
    pub max_image_pixels: u64,
    /// `KILN_MAX_IMAGE_FRAMES`: most frames in an animated GIF/WebP (default 500).
    pub max_image_frames: u32,
    /// `KILN_LOCAL_SLOTS`: concurrent jobs on the embedded node (default 1 in the embedded
    /// default, 0 — no local node — in fleet mode).
    pub local_slots: Option<usize>,
    /// `KILN_LEASE_SECS`: how long the embedded node's lease lasts without a heartbeat.
    pub lease_secs: u64,
    /// `KILN_INSTANCE_ID`: this control plane's name among replicas (default `<host>-<pid>`).
    pub instance_id: String,
    /// `KILN_MAX_ATTEMPTS`: tries per job before it fails for good (default 3).
    pub max_attempts: u32,
    /// `KILN_RATE_WRITE_PER_MIN`: writes (submissions, cancels, admin changes) per key per
    /// minute, unless the key has its own limit (default 60, Konvrt's published limit).
    pub rate_write_per_min: i64,
    /// `KILN_RATE_READ_PER_MIN`: reads per key per minute (default 600).
    pub rate_read_per_min: i64,
    /// `KILN_URL_ALLOWLIST`: CIDRs, addresses and host names that source URLs, webhooks and
    /// S3 endpoints may reach although not public (and over plain http).
    pub url_allowlist: String,
    /// `KILN_FETCH_TIMEOUT_SECS`: longest fetch of a source URL or bucket object (default 600).
    pub fetch_timeout_secs: u64,
    /// `KILN_OUTPUT_TTL_SECS`: how long outputs stay downloadable (default 24 h); then 410 and
    /// the sweeper deletes them.
    pub output_ttl_secs: u64,
    /// `KILN_UPLOAD_TTL_SECS`: how long an upload can be used by jobs (default 24 h).
    pub upload_ttl_secs: u64,
    /// `KILN_WEBHOOK_BACKOFF_MS`: first retry delay of a failed webhook, doubling each time up
    /// to an hour (default 30 s).
    pub webhook_backoff_ms: u64,
    /// `KILN_WEBHOOK_MAX_ATTEMPTS`: deliveries tried before giving up (default 15: about 9 h
    /// with the default backoff).
    pub webhook_max_attempts: u32,
    /// `KILN_SIGNING_KEY`: secret for pre-signed download URLs; default a random one kept in
    /// the database, so every replica shares it.
    pub signing_key: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("literal"),
            data_dir: PathBuf::from("./kiln-data"),
            database_url: None,
            redis_url: None,
            storage_url: None,
            bootstrap_key: None,
            max_upload_bytes: 2 << 30,
            max_image_bytes: 50 << 20,
            max_image_pixels: 100_000_000,
            max_image_frames: 500,
            local_slots: None,
            lease_secs: 30,
            instance_id: format!(
                "cp-{}-{}",
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_string())
                    .unwrap_or_default(),
                std::process::id()
            ),
            max_attempts: 3,
            rate_write_per_min: 60,
            rate_read_per_min: 600,
            url_allowlist: String::new(),
            fetch_timeout_secs: 600,
            output_ttl_secs: 86_400,
            upload_ttl_secs: 86_400,
            webhook_backoff_ms: 30_000,
            webhook_max_attempts: 15,
            signing_key: None,
        }
    }
}

/// A configuration value that could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error("invalid {name}: {value:?} ({why})")]
pub struct ConfigError {
    name: String,
    value: String,
    why: String,
}

impl Config {
    /// Jobs the embedded node runs at once (0: no embedded node).
    pub fn embedded_slots(&self) -> usize {
        self.local_slots
            .unwrap_or(if self.redis_url.is_some() { 0 } else { 1 })
    }

    /// A node that has not reported for this long is not live (nodes report every 2 s).
    pub fn node_live_ms(&self) -> i64 {
        15_000
    }

    /// Read the environment, then let `args` (`--listen ADDR`, `--data-dir DIR`) override it.
    pub fn from_env_and_args(
        env: impl Fn(&str) -> Option<String>,
        args: &[String],
    ) -> Result<Self, ConfigError> {
        fn parse<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            value.trim().parse().map_err(|e: T::Err| ConfigError {
                name: name.to_string(),
                value: value.to_string(),
                why: e.to_string(),
            })
        }
        let env = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        let mut c = Config::default();
        if let Some(v) = env("KILN_LISTEN") {
            c.listen = parse("KILN_LISTEN", &v)?;
        }
        if let Some(v) = env("KILN_DATA_DIR") {
            c.data_dir = PathBuf::from(v);
        }
        c.database_url = env("DATABASE_URL");
        c.redis_url = env("REDIS_URL");
        c.storage_url = env("KILN_STORAGE_URL");
        c.bootstrap_key = env("KILN_BOOTSTRAP_KEY");
        if let Some(v) = env("KILN_MAX_UPLOAD_BYTES") {
            c.max_upload_bytes = parse("KILN_MAX_UPLOAD_BYTES", &v)?;
        }
        if let Some(v) = env("KILN_MAX_IMAGE_BYTES") {
            c.max_image_bytes = parse("KILN_MAX_IMAGE_BYTES", &v)?;
        }
        if let Some(v) = env("KILN_MAX_IMAGE_PIXELS") {
            c.max_image_pixels = parse("KILN_MAX_IMAGE_PIXELS", &v)?;
        }
        if let Some(v) = env("KILN_MAX_IMAGE_FRAMES") {
            c.max_image_frames = parse::<u32>("KILN_MAX_IMAGE_FRAMES", &v)?.max(1);
        }
        if let Some(v) = env("KILN_LOCAL_SLOTS") {
            c.local_slots = Some(parse::<usize>("KILN_LOCAL_SLOTS", &v)?);
        }
        if let Some(v) = env("KILN_LEASE_SECS") {
            c.lease_secs = parse::<u64>("KILN_LEASE_SECS", &v)?.max(2);
        }
        if let Some(v) = env("KILN_INSTANCE_ID") {
            c.instance_id = v;
        }
        if let Some(v) = env("KILN_MAX_ATTEMPTS") {
            c.max_attempts = parse::<u32>("KILN_MAX_ATTEMPTS", &v)?.max(1);
        }
        if let Some(v) = env("KILN_RATE_WRITE_PER_MIN") {
            c.rate_write_per_min = parse("KILN_RATE_WRITE_PER_MIN", &v)?;
        }
        if let Some(v) = env("KILN_RATE_READ_PER_MIN") {
            c.rate_read_per_min = parse("KILN_RATE_READ_PER_MIN", &v)?;
        }
        if let Some(v) = env("KILN_URL_ALLOWLIST") {
            crate::netguard::UrlPolicy::parse(&v).map_err(|why| ConfigError {
                name: "KILN_URL_ALLOWLIST".into(),
                value: v.clone(),
                why,
            })?;
            c.url_allowlist = v;
        }
        if let Some(v) = env("KILN_FETCH_TIMEOUT_SECS") {
            c.fetch_timeout_secs = parse::<u64>("KILN_FETCH_TIMEOUT_SECS", &v)?.max(1);
        }
        if let Some(v) = env("KILN_OUTPUT_TTL_SECS") {
            c.output_ttl_secs = parse::<u64>("KILN_OUTPUT_TTL_SECS", &v)?.max(1);
        }
        if let Some(v) = env("KILN_UPLOAD_TTL_SECS") {
            c.upload_ttl_secs = parse::<u64>("KILN_UPLOAD_TTL_SECS", &v)?.max(1);
        }
        if let Some(v) = env("KILN_WEBHOOK_BACKOFF_MS") {
            c.webhook_backoff_ms = parse::<u64>("KILN_WEBHOOK_BACKOFF_MS", &v)?.max(1);
        }
        if let Some(v) = env("KILN_WEBHOOK_MAX_ATTEMPTS") {
            c.webhook_max_attempts = parse::<u32>("KILN_WEBHOOK_MAX_ATTEMPTS", &v)?.max(1);
        }
        c.signing_key = env("KILN_SIGNING_KEY");
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = |name: &str| {
                it.next().cloned().ok_or_else(|| ConfigError {
                    name: name.to_string(),
                    value: String::new(),
                    why: "needs a value".into(),
                })
            };
            match a.as_str() {
                "--listen" => c.listen = parse("--listen", &value("--listen")?)?,
                "--data-dir" => c.data_dir = PathBuf::from(value("--data-dir")?),
                other => {
                    return Err(ConfigError {
                        name: "argument".into(),
                        value: other.to_string(),
                        why: "known flags: --listen ADDR, --data-dir DIR".into(),
                    })
                }
            }
        }
        Ok(c)
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
