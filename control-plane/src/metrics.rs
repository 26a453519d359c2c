//! Prometheus metrics, declared in one place with the `kiln_` prefix.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// The control plane's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Jobs submitted, by kind.
    pub jobs_submitted: IntCounterVec,
    /// Jobs finished, by final status (`completed`, `failed`, `dead_letter`).
    pub jobs_finished: IntCounterVec,
    /// Jobs taken back from a node and queued again.
    pub jobs_requeued: IntCounter,
    /// Jobs in the database by status and codec.
    pub jobs: IntGaugeVec,
    /// Nodes that reported recently.
    pub nodes_live: IntGauge,
    /// Job slots over live nodes, `busy` and `total`.
    pub node_slots: IntGaugeVec,
    /// Jobs waiting in the queue.
    pub queue_depth: IntGauge,
    /// Synchronous image conversions, by outcome and resize backend.
    pub images_converted: IntCounterVec,
    /// HTTP request latency by route and status class.
    pub http_seconds: HistogramVec,
    /// Requests refused with 429, by class (`write`, `read`).
    pub rate_limited: IntCounterVec,
    /// Webhook delivery attempts by outcome (`delivered`, `retry`, `failed`).
    pub webhooks: IntCounterVec,
    /// Outputs, sources and uploads deleted by the retention sweeper.
    pub swept: IntCounter,
}

impl Metrics {
    /// Register every metric in a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let jobs_submitted = IntCounterVec::new(
            Opts::new("kiln_jobs_submitted_total", "Jobs accepted by the API"),
            &["kind"],
        )
        .expect("valid metric");
        let jobs_finished = IntCounterVec::new(
            Opts::new(
                "kiln_jobs_finished_total",
                "Jobs that reached a final status",
            ),
            &["status"],
        )
        .expect("valid metric");
        let jobs_requeued = IntCounter::new(
            "kiln_jobs_requeued_total",
            "Jobs taken back from a node (lease expired or drained) and queued again",
        )
        .expect("valid metric");
        let jobs = IntGaugeVec::new(
            Opts::new("kiln_jobs", "Jobs in the database by status and codec"),
            &["status", "codec"],
        )
        .expect("valid metric");
        let nodes_live =
            IntGauge::new("kiln_nodes_live", "Nodes that reported recently").expect("valid metric");
        let node_slots = IntGaugeVec::new(
            Opts::new("kiln_node_slots_total", "Job slots over live nodes"),
            &["state"],
        )
        .expect("valid metric");
        let queue_depth =
            IntGauge::new("kiln_queue_depth", "Jobs waiting to be claimed").expect("valid metric");
        let images_converted = IntCounterVec::new(
            Opts::new("kiln_images_converted_total", "POST /convert results"),
            &["outcome", "backend"],
        )
        .expect("valid metric");
        let http_seconds = HistogramVec::new(
            HistogramOpts::new("kiln_http_request_seconds", "HTTP request latency"),
            &["route", "status"],
        )
        .expect("valid metric");
        let rate_limited = IntCounterVec::new(
            Opts::new("kiln_rate_limited_total", "Requests refused with 429"),
            &["class"],
        )
        .expect("valid metric");
        let webhooks = IntCounterVec::new(
            Opts::new("kiln_webhook_attempts_total", "Webhook delivery attempts"),
            &["outcome"],
        )
        .expect("valid metric");
        let swept = IntCounter::new(
            "kiln_swept_objects_total",
            "Expired outputs, sources and uploads deleted by the retention sweeper",
        )
        .expect("valid metric");
        for c in [
            Box::new(jobs_submitted.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(jobs_finished.clone()),
            Box::new(jobs_requeued.clone()),
            Box::new(jobs.clone()),
            Box::new(nodes_live.clone()),
            Box::new(node_slots.clone()),
            Box::new(queue_depth.clone()),
            Box::new(images_converted.clone()),
            Box::new(http_seconds.clone()),
            Box::new(rate_limited.clone()),
            Box::new(webhooks.clone()),
            Box::new(swept.clone()),
        ] {
            registry.register(c).expect("unique metric names");
        }
        Self {
            registry,
            jobs_submitted,
            jobs_finished,
            jobs_requeued,
            jobs,
            nodes_live,
            node_slots,
            queue_depth,
            images_converted,
            http_seconds,
            rate_limited,
            webhooks,
            swept,
        }
    }

    /// The registry, for metrics declared elsewhere (the embedded node's).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
