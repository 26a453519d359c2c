//! Helpers shared by the control plane's integration tests.

#![allow(dead_code)] // each test binary uses a part

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
