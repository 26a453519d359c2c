//! Real services for tests, started on loopback ports: a Redis server and an S3-compatible
//! server (`s3s-fs`, installed by `deploy/setup-debian.sh --test`). Not for production use.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port free at the time of asking.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn wait_for_port(port: u16, what: &str) {
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{what} did not start listening on port {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-{name}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A `redis-server` of its own (no persistence: a restart loses everything, the worst case).
pub struct RedisServer {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
    dir: PathBuf,
}

impl RedisServer {
    /// Start one on a free port.
    pub fn start() -> Self {
        let mut s = Self {
            child: None,
            port: free_port(),
            dir: scratch("redis"),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (deploy/setup-debian.sh --test installs it)");
        self.child = Some(child);
        wait_for_port(self.port, "redis-server");
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kill it (SIGKILL: its data is gone).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Credentials the test S3 server enforces (SigV4).
pub const S3_ACCESS_KEY: &str = "AKIDKILNTEST";
/// Its secret.
pub const S3_SECRET_KEY: &str = "kiln-test-secret-key";

/// An `s3s-fs` S3 server over a temporary folder, with one bucket.
pub struct S3Server {
    child: Child,
    /// Its port.
    pub port: u16,
    /// The bucket it holds.
    pub bucket: String,
    dir: PathBuf,
}

/// Where `deploy/setup-debian.sh --test` installs `s3s-fs`.
pub fn s3s_fs_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("KILN_S3S_FS") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let cached = home.join(".cache/kiln/tools/bin/s3s-fs");
    if cached.exists() {
        cached
    } else {
        PathBuf::from("s3s-fs")
    }
}

impl S3Server {
    /// Start one on a free port with the bucket `kiln-test`.
    pub fn start() -> Self {
        let dir = scratch("s3");
        let bucket = "kiln-test".to_string();
        std::fs::create_dir_all(dir.join(&bucket)).expect("bucket dir");
        let port = free_port();
        let bin = s3s_fs_binary();
        let child = Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}): deploy/setup-debian.sh --test installs s3s-fs",
                    bin.display()
                )
            });
        wait_for_port(port, "s3s-fs");
        Self {
            child,
            port,
            bucket,
            dir,
        }
    }

    /// The `KILN_STORAGE_URL` for its bucket.
    pub fn url(&self) -> String {
        format!(
            "s3://{}?endpoint=http://127.0.0.1:{}&region=us-east-1",
            self.bucket, self.port
        )
    }

    /// The environment a process needs to reach it (credentials).
    pub fn env() -> [(&'static str, &'static str); 2] {
        [
            ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY),
        ]
    }

    /// Set the credentials in this process' environment (for in-process clients).
    pub fn export_env() {
        for (k, v) in Self::env() {
            std::env::set_var(k, v);
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
