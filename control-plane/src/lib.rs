//! Kiln's control plane: the HTTP API, authentication, the job database, storage, scheduling
//! onto nodes, and the progress coming back from them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kiln_protocol::{Broker, EventStream, JobQueue, MemoryQueue, NodeRegistry, RedisQueue, Store};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod db;
pub mod dialect;
pub mod error;
pub mod events;
pub mod feed;
pub mod metrics;
pub mod netguard;
pub mod ratelimit;
pub mod sealing;
pub mod signing;
pub mod sources;
pub mod submission;
pub mod time;
pub mod views;
pub mod webhooks;

pub use config::Config;
use db::Db;
use metrics::Metrics;

/// What every handler and background task shares.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub store: Arc<dyn Store>,
    /// Jobs waiting for nodes.
    pub queue: Arc<dyn JobQueue>,
    /// Node events coming back.
    pub events: Arc<dyn EventStream>,
    /// The fleet's nodes.
    pub nodes: Arc<dyn NodeRegistry>,
    pub metrics: Metrics,
    pub config: Arc<Config>,
    /// Per-key request counts (in process, or in Redis for a fleet).
    pub limiter: Arc<ratelimit::Limiter>,
    /// Where outbound requests may go.
    pub url_policy: Arc<netguard::UrlPolicy>,
    /// Every change of a job clients can watch (Server-Sent Events).
    pub feed: Arc<dyn feed::Feed>,
    /// Wakes the webhook delivery loop when an event is recorded.
    pub webhook_wake: webhooks::Wake,
    /// Signs pre-signed download links.
    pub signing_key: Arc<String>,
    /// The bounded pool synchronous image conversions run in.
    pub convert_gate: Arc<api::native::convert::gate::Gate>,
    /// Where the API listens, once bound (the last resort for absolute links).
    pub bound: Arc<std::sync::OnceLock<SocketAddr>>,
    /// Turns true when the service stops: long-lived answers (event streams) end, so the
    /// graceful shutdown does not wait on them.
    pub shutdown: watch::Receiver<bool>,
}

impl AppState {
    /// The base URL clients reach Kiln at: `KILN_PUBLIC_URL`, else the request's `Host`
    /// (with `X-Forwarded-Proto`), else the address the API listens on.
    pub fn public_base(&self, headers: Option<&axum::http::HeaderMap>) -> String {
        if let Some(u) = &self.config.public_url {
            return u.clone();
        }
        let header = |h: &axum::http::HeaderMap, name: &str| {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        if let Some(h) = headers {
            if let Some(host) = header(h, "host") {
                let proto = header(h, "x-forwarded-proto").unwrap_or_else(|| "http".into());
                return format!("{proto}://{host}");
            }
        }
        match self.bound.get() {
            Some(a) => format!("http://{a}"),
            None => format!("http://{}", self.config.listen),
        }
    }
}

/// A started control plane.
pub struct Running {
    /// Where the API listens (useful with port 0).
    pub addr: SocketAddr,
    /// The admin key created on this start, when the database had none (shown once).
    pub created_admin_key: Option<String>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// Turns true once the embedded node has probed this machine (at once without one).
    node_probed: watch::Receiver<bool>,
}

impl Running {
    /// Wait until the embedded node has probed this machine and logged what it found (so a
    /// first start can print its admin key after everything else), or `limit` has passed.
    pub async fn node_probed(&mut self, limit: Duration) {
        let _ = tokio::time::timeout(limit, self.node_probed.wait_for(|v| *v)).await;
    }

    /// Stop taking requests, let running jobs finish, and return when everything has stopped.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
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

/// Start the control plane as `config` says: database, store, queue (in-process, or Redis
/// in fleet mode), the embedded node unless it is a fleet, the event consumer, and the HTTP
/// listener.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    tokio::fs::create_dir_all(&config.data_dir)
        .await
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    let db_url = config.database_url.clone().unwrap_or_else(|| {
        format!(
            "sqlite://{}?mode=rwc",
            config.data_dir.join("kiln.db").display()
        )
    });
    let db = Db::connect_with(&db_url, config.secrets_key.as_deref())
        .await
        .with_context(|| format!("opening the database at {db_url}"))?;
    let created_admin_key = bootstrap_admin(&db, &config).await?;
    let store = kiln_protocol::storage::open(
        config.storage_url.as_deref(),
        &config.data_dir.join("storage"),
    )
    .await
    .context("opening the store (KILN_STORAGE_URL)")?;
    let broker = match &config.redis_url {
        None => Broker::new(Arc::new(MemoryQueue::with_max_attempts(
            config.max_attempts,
        ))),
        Some(url) => Broker::new(Arc::new(
            RedisQueue::connect(url, &config.instance_id, config.max_attempts)
                .await
                .context("connecting to Redis (REDIS_URL)")?,
        )),
    };
    let queue = broker.queue.clone();

    let limiter = match &config.redis_url {
        None => ratelimit::Limiter::memory(),
        Some(url) => ratelimit::Limiter::redis(url).context("rate limiter (REDIS_URL)")?,
    };
    let url_policy =
        netguard::UrlPolicy::parse(&config.url_allowlist).map_err(anyhow::Error::msg)?;
    let signing_key = match &config.signing_key {
        Some(k) => k.clone(),
        None => db.shared_secret("download_signing_key").await?,
    };
    let feed: Arc<dyn feed::Feed> = match &config.redis_url {
        None => Arc::new(feed::MemoryFeed::new()),
        Some(url) => Arc::new(
            feed::RedisFeed::connect(url)
                .await
                .context("the job feed (REDIS_URL)")?,
        ),
    };
    let metrics = Metrics::new();
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let state = AppState {
        db,
        store: store.clone(),
        queue: queue.clone(),
        events: broker.events.clone(),
        nodes: broker.nodes.clone(),
        metrics: metrics.clone(),
        config: Arc::new(config.clone()),
        limiter: Arc::new(limiter),
        url_policy: Arc::new(url_policy),
        feed,
        webhook_wake: Arc::new(tokio::sync::Notify::new()),
        signing_key: Arc::new(signing_key),
        convert_gate: Arc::new(api::native::convert::gate::Gate::new(
            config.convert_workers(),
            config.convert_queue(),
        )),
        bound: Arc::new(std::sync::OnceLock::new()),
        shutdown: shutdown_rx.clone(),
    };
    let mut tasks = Vec::new();

    // A new queue (always, in the embedded default) gets the database's unfinished jobs now,
    // before any node can ask for work; the event loop keeps checking for a Redis that lost
    // its data.
    if queue.epoch_is_new().await? {
        events::requeue_unfinished(&state).await?;
    }

    tasks.push(tokio::spawn(events::run(
        state.clone(),
        shutdown_rx.clone(),
    )));
    tasks.push(tokio::spawn(webhooks::run(
        state.clone(),
        shutdown_rx.clone(),
    )));
    let slots = config.embedded_slots();
    let (probed_tx, node_probed) = watch::channel(slots == 0);
    if slots > 0 {
        tasks.push(tokio::spawn(embedded_node(
            &config,
            broker.clone(),
            store,
            &metrics,
            slots,
            probed_tx,
            shutdown_rx.clone(),
        )));
    }

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    let _ = state.bound.set(addr);
    let app = api::router(state).into_make_service_with_connect_info::<SocketAddr>();
    let mut stop = shutdown_rx.clone();
    tasks.push(tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = stop.wait_for(|v| *v).await;
        });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    }));
    match &config.redis_url {
        None => {
            tracing::info!(%addr, "kiln control plane listening (embedded default: in-process queue and local node)")
        }
        Some(_) => {
            tracing::info!(%addr, embedded_slots = slots, "kiln control plane listening (fleet mode: Redis queue)")
        }
    }
    Ok(Running {
        addr,
        created_admin_key,
        shutdown: shutdown_tx,
        tasks,
        node_probed,
    })
}

/// The node inside the control plane's process: the embedded default's worker, registered
/// and reported like any fleet node.
fn embedded_node(
    config: &Config,
    broker: Broker,
    store: Arc<dyn kiln_protocol::Store>,
    metrics: &Metrics,
    slots: usize,
    probed: watch::Sender<bool>,
    shutdown: watch::Receiver<bool>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let node_id = format!("{}-local", config.instance_id);
    let scratch_dir = config.data_dir.join("scratch");
    let lease = Duration::from_secs(config.lease_secs);
    let chunk_auto_secs = config.chunk_auto_secs.max(0.0);
    let limits = config.limits;
    let node_metrics = kiln_gpu_node::metrics::NodeMetrics::register(metrics.registry());
    async move {
        // KILN_GPUS selects the embedded node's GPUs as it does a fleet node's.
        let selection = match std::env::var("KILN_GPUS") {
            Ok(v) => v.parse().unwrap_or_else(|e| {
                tracing::error!(error = %e, "KILN_GPUS: the embedded node drives every GPU");
                kiln_gpu_node::host::GpuSelection::All
            }),
            Err(_) => kiln_gpu_node::host::GpuSelection::All,
        };
        let (caps, classes, gpus) =
            match tokio::task::spawn_blocking(move || kiln_gpu_node::node::probe(&selection, 3))
                .await
            {
                Ok(p) => (p.capabilities, p.classes, p.gpus),
                Err(e) => {
                    tracing::error!(error = %e, "the embedded node's capability probe failed");
                    (
                        Default::default(),
                        vec![],
                        kiln_gpu_node::host::HostGpus::none(),
                    )
                }
            };
        let gpus = gpus.with_metrics(node_metrics.clone());
        if classes.is_empty() {
            tracing::error!("the embedded node can encode nothing (no encoder opened): video jobs will wait, and their status says so");
        }
        let status =
            kiln_gpu_node::node::initial_status(&node_id, caps, classes.clone(), slots, None);
        let _ = probed.send(true);
        kiln_gpu_node::worker::run(
            broker,
            store,
            kiln_gpu_node::worker::WorkerConfig {
                node_id,
                slots,
                lease,
                scratch_dir,
                classes,
                gpus,
                status,
                report_every: Duration::from_secs(2),
                drain_timeout: Duration::from_secs(600),
                metrics: Some(node_metrics),
                chunk_auto_secs,
                limits,
            },
            shutdown,
        )
        .await
    }
}
