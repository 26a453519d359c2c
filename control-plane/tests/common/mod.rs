//! Helpers shared by the control plane's integration tests.

#![allow(dead_code)] // each test binary uses a part

use std::path::{Path, PathBuf};
use std::process::Command;

/// A real media sample: `$KILN_MEDIA_DIR`, else `../shared/media` beside the checkout.
pub fn media(rel: &str) -> PathBuf {
    let root = std::env::var_os("KILN_MEDIA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/media"));
    root.join(rel)
}

/// The workspace's `kiln-gpu-node` binary, beside the test binaries' folder (built by
/// `cargo test --workspace --all-targets`).
pub fn node_binary() -> PathBuf {
    // Integration tests run from target/<profile>/deps; the workspace's binaries sit one up.
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("kiln-gpu-node");
    assert!(
        bin.exists(),
        "{} is missing: run the tests with `cargo test --workspace --all-targets` (deploy/test.sh)",
        bin.display()
    );
    bin
}

/// A generated H.264 test clip of `seconds` at `size` (`WxH`), 30 fps, by the ffmpeg CLI.
pub fn make_clip(path: &Path, seconds: u32, size: &str) {
    let ok = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size={size}:rate=30"))
        .args(["-t", &seconds.to_string(), "-pix_fmt", "yuv420p"])
        .args(["-c:v", "libx264", "-preset", "ultrafast"])
        .arg(path)
        .status()
        .expect("ffmpeg CLI");
    assert!(ok.success());
}

/// A fresh PostgreSQL database for one test (`KILN_TEST_POSTGRES_URL` is the admin URL,
/// default `postgres://postgres@127.0.0.1:5432/postgres`), dropped by [`ScratchPg::drop_db`].
pub struct ScratchPg {
    admin_url: String,
    name: String,
}

impl ScratchPg {
    /// Create it; returns it and its URL.
    pub async fn create(prefix: &str) -> (Self, String) {
        use sqlx::Executor;
        sqlx::any::install_default_drivers();
        let admin_url = std::env::var("KILN_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let admin = sqlx::AnyPool::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("Postgres at {admin_url} is required for this test: {e}"));
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap();
        admin.close().await;
        let url = match admin_url.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => panic!("bad URL {admin_url}"),
        };
        (Self { admin_url, name }, url)
    }

    /// Drop it, closing whatever connections are left.
    pub async fn drop_db(self) {
        use sqlx::Executor;
        let admin = sqlx::AnyPool::connect(&self.admin_url).await.unwrap();
        admin
            .execute(format!("DROP DATABASE {} WITH (FORCE)", self.name).as_str())
            .await
            .unwrap();
    }
}
