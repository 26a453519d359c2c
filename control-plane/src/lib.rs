//! Kiln's control plane: the HTTP API, authentication, the job database, storage, scheduling
//! onto nodes, and the progress coming back from them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kiln_protocol::{JobQueue, LocalStore, MemoryQueue, Store};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub mod api;
pub mod auth;
pub mod config;
pub mod db;
pub mod error;
pub mod events;
pub mod metrics;

pub use config::Config;
use db::Db;
use metrics::Metrics;

/// What every handler and background task shares.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub store: Arc<dyn Store>,
    pub queue: Arc<dyn JobQueue>,
    pub metrics: Metrics,
    pub config: Arc<Config>,
}

/// A started control plane.
pub struct Running {
    /// Where the API listens (useful with port 0).
    pub addr: SocketAddr,
    /// The admin key created on this start, when the database had none (shown once).
    pub created_admin_key: Option<String>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stop taking requests, let running jobs finish, and return when everything has stopped.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let root = match config.storage_url.as_deref() {
        None => config.data_dir.join("storage"),
        Some(url) => match url.strip_prefix("file://") {
            Some(path) if !path.is_empty() => std::path::PathBuf::from(path),
            _ => anyhow::bail!(
                "KILN_STORAGE_URL {url:?} is not supported yet: use file:///path (s3:// arrives with fleet mode)"
            ),
        },
    };
    Ok(Arc::new(LocalStore::open_root(&root).await.with_context(
        || format!("opening the local store at {}", root.display()),
    )?))
}

/// Create the first admin key if the database has none.
async fn bootstrap_admin(db: &Db, config: &Config) -> anyhow::Result<Option<String>> {
    if db.count_keys().await? > 0 {
        return Ok(None);
    }
    let key = config
        .bootstrap_key
        .clone()
        .unwrap_or_else(db::keys::generate_key);
    if key.len() < 16 {
        anyhow::bail!("KILN_BOOTSTRAP_KEY must be at least 16 characters");
    }
    db.create_account_with_key("admin", "bootstrap admin key", &key, db::keys::ALL_SCOPES)
        .await?;
    Ok(Some(key))
}

/// Start the control plane as `config` says: database, store, queue, the embedded node when
/// there is no Redis, the event consumer, and the HTTP listener.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    if config.redis_url.is_some() {
        anyhow::bail!(
            "REDIS_URL is set, but fleet mode (Redis queue, remote nodes) is not built yet; \
             unset it to run the embedded default"
        );
    }
    tokio::fs::create_dir_all(&config.data_dir)
        .await
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    let db_url = config.database_url.clone().unwrap_or_else(|| {
        format!(
            "sqlite://{}?mode=rwc",
            config.data_dir.join("kiln.db").display()
        )
    });
    let db = Db::connect(&db_url)
        .await
        .with_context(|| format!("opening the database at {db_url}"))?;
    let created_admin_key = bootstrap_admin(&db, &config).await?;
    let store = open_store(&config).await?;
    let queue: Arc<dyn JobQueue> = Arc::new(MemoryQueue::new());

    let state = AppState {
        db,
        store: store.clone(),
        queue: queue.clone(),
        metrics: Metrics::new(),
        config: Arc::new(config.clone()),
    };
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();

    // Jobs accepted before a restart were lost with the in-process queue: put them back.
    requeue_unfinished(&state).await?;

    tasks.push(tokio::spawn(events::run(
        state.clone(),
        shutdown_rx.clone(),
    )));
    tasks.push(tokio::spawn(kiln_gpu_node::worker::run(
        queue,
        store,
        kiln_gpu_node::worker::WorkerConfig {
            node_id: "local".into(),
            slots: config.local_slots,
            lease: Duration::from_secs(30),
            scratch_dir: config.data_dir.join("scratch"),
        },
        shutdown_rx.clone(),
    )));

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    let app = api::router(state);
    let mut stop = shutdown_rx.clone();
    tasks.push(tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = stop.wait_for(|v| *v).await;
        });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    }));
    tracing::info!(%addr, "kiln control plane listening (embedded default: in-process queue and local node)");
    Ok(Running {
        addr,
        created_admin_key,
        shutdown: shutdown_tx,
        tasks,
    })
}

/// In the embedded default the queue lives in memory, so on start every job still `pending`
/// or `processing` in the database is enqueued again (as a new attempt).
async fn requeue_unfinished(state: &AppState) -> anyhow::Result<()> {
    use sqlx::Row;
    let rows = sqlx::query(
        "SELECT id, spec, attempts FROM jobs WHERE status IN ('pending', 'processing') ORDER BY created_at",
    )
    .fetch_all(&state.db.pool)
    .await?;
    for row in rows {
        let id: String = row.try_get("id")?;
        let attempts: i64 = row.try_get("attempts")?;
        let mut spec: kiln_protocol::JobSpec =
            serde_json::from_str(&row.try_get::<String, _>("spec")?)?;
        let next = attempts + 1;
        sqlx::query(
            "UPDATE jobs SET status = 'pending', progress = 0, attempts = $1 WHERE id = $2 AND attempts = $3",
        )
        .bind(next)
        .bind(&id)
        .bind(attempts)
        .execute(&state.db.pool)
        .await?;
        spec.attempt = next as u32;
        state.queue.enqueue(&spec).await?;
        tracing::info!(job = %id, attempt = next, "re-enqueued unfinished job after restart");
    }
    Ok(())
}
