//! The database: SQLite for the embedded default, Postgres for a fleet, through one sqlx `Any`
//! pool and one set of queries (written with `$n` placeholders, which both accept).

use std::sync::Arc;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use crate::sealing::{SealError, Sealer};

pub mod accounts;
pub mod batches;
pub mod credentials;
pub mod endpoints;
pub mod idempotency;
pub mod jobs;
pub mod keys;
pub mod submissions;
pub mod uploads;
pub mod usage;

pub use jobs::{JobRow, JobStatus};

/// Why a database operation failed. Details are logged, never sent to clients.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL {0:?} (use sqlite:// or postgres://)")]
    UnsupportedUrl(String),
    /// A secret kept sealed could not be opened (another `KILN_SECRETS_KEY`, or damage).
    #[error("a sealed secret: {0}")]
    Sealed(#[from] SealError),
}

/// Which SQL dialect the pool speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A connection pool, the backend it talks to, and the key that seals the secrets it keeps
/// (webhook secrets, saved credentials): a copy of the database alone does not hold them.
#[derive(Clone)]
pub struct Db {
    pub pool: AnyPool,
    pub backend: Backend,
    pub sealer: Arc<Sealer>,
}

impl Db {
    /// Connect and bring the schema up to date with migrations/<backend>/; secrets sealed with
    /// the key the database keeps (see [`Db::connect_with`]).
    pub async fn connect(url: &str) -> Result<Self, DbError> {
        Self::connect_with(url, None).await
    }

    /// Connect, migrate, and seal secrets with `secrets_key` (64 hex digits; `KILN_SECRETS_KEY`)
    /// or, without one, a random key the database keeps (every replica then shares it; the
    /// secrets are then sealed only against a reader of the secret columns alone). Secrets
    /// written in the clear by an earlier version are sealed now.
    pub async fn connect_with(url: &str, secrets_key: Option<&str>) -> Result<Self, DbError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(DbError::UnsupportedUrl(url.to_string()));
        };
        let mut opts = AnyPoolOptions::new().max_connections(match backend {
            // SQLite allows one writer; a small pool avoids lock contention between them.
            Backend::Sqlite => 4,
            Backend::Postgres => 16,
        });
        if backend == Backend::Sqlite {
            opts = opts.after_connect(|conn, _| {
                Box::pin(async move {
                    use sqlx::Executor;
                    conn.execute("PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;")
                        .await?;
                    Ok(())
                })
            });
        }
        let pool = opts.connect(url).await?;
        match backend {
            Backend::Sqlite => sqlx::migrate!("../migrations/sqlite").run(&pool).await?,
            Backend::Postgres => sqlx::migrate!("../migrations/postgres").run(&pool).await?,
        }
        let key = match secrets_key {
            Some(k) => k.to_string(),
            None => shared_value(&pool, backend, "secrets_key", Sealer::generate_key()).await?,
        };
        let db = Self {
            pool,
            backend,
            sealer: Arc::new(Sealer::new(&key)?),
        };
        db.seal_clear_secrets().await?;
        Ok(db)
    }

    /// A random secret stored sealed under `name` in `settings`, created on first use; every
    /// replica on this database reads the same one (one an earlier version stored in the clear
    /// is read as it is, and sealed at the next start).
    pub async fn shared_secret(&self, name: &str) -> Result<String, DbError> {
        let context = crate::sealing::context("setting", name);
        let fresh = self
            .sealer
            .seal(&accounts::generate_webhook_secret(), &context);
        let stored = self.shared_value(name, fresh).await?;
        self.open_secret(&stored, &context)
    }

    /// The value stored under `name` in `settings`, `fresh` stored first if there is none;
    /// every replica reads the same one.
    pub async fn shared_value(&self, name: &str, fresh: String) -> Result<String, DbError> {
        shared_value(&self.pool, self.backend, name, fresh).await
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").fetch_one(&self.pool).await.is_ok()
    }
}

/// [`Db::shared_value`] on a bare pool: the secrets key is read with it before the `Db` (which
/// holds the sealer made from that key) exists.
async fn shared_value(
    pool: &AnyPool,
    backend: Backend,
    name: &str,
    fresh: String,
) -> Result<String, DbError> {
    let insert = match backend {
        Backend::Sqlite => "INSERT OR IGNORE INTO settings (name, value) VALUES ($1, $2)",
        Backend::Postgres => {
            "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING"
        }
    };
    sqlx::query(insert)
        .bind(name)
        .bind(&fresh)
        .execute(pool)
        .await?;
    let row = sqlx::query("SELECT value FROM settings WHERE name = $1")
        .bind(name)
        .fetch_one(pool)
        .await?;
    Ok(row.try_get("value")?)
}

pub fn opt_i64(row: &AnyRow, col: &str) -> Result<Option<i64>, sqlx::Error> {
    row.try_get::<Option<i64>, _>(col)
}
