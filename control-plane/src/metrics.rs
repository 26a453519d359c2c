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
    /// Jobs waiting in the queue, by class.
    pub queue_waiting: IntGaugeVec,
    /// Submission to completion, by kind (what a client waits).
    pub job_latency: HistogramVec,
    /// Synchronous image conversions, by outcome and resize backend.
    pub images_converted: IntCounterVec,
    /// Synchronous image conversions refused with 503 (the pool's queue was full).
    pub convert_refused: IntCounter,
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
        let queue_waiting = IntGaugeVec::new(
            Opts::new("kiln_queue_waiting", "Jobs waiting to be claimed, by class"),
            &["class"],
        )
        .expect("valid metric");
        let job_latency = HistogramVec::new(
            HistogramOpts::new(
                "kiln_job_latency_seconds",
                "Submission to completion of completed jobs",
            )
            .buckets(vec![
                0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
            ]),
            &["kind"],
        )
        .expect("valid metric");
        let images_converted = IntCounterVec::new(
            Opts::new("kiln_images_converted_total", "POST /convert results"),
            &["outcome", "backend"],
        )
        .expect("valid metric");
        let convert_refused = IntCounter::new(
            "kiln_convert_refused_total",
            "Synchronous image conversions refused with 503: every worker busy, the queue full",
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
            Box::new(queue_waiting.clone()),
            Box::new(job_latency.clone()),
            Box::new(images_converted.clone()),
            Box::new(convert_refused.clone()),
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
            queue_waiting,
            job_latency,
            images_converted,
            convert_refused,
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

#[cfg(test)]
mod tests {
    use prometheus::core::Collector;

    use super::Metrics;

    /// Every metric the control plane and a node declare (the embedded default registers both).
    fn declared() -> Vec<(String, Vec<String>)> {
        let m = Metrics::new();
        let n = kiln_gpu_node::metrics::NodeMetrics::register(&prometheus::Registry::new());
        let all: [&dyn Collector; 23] = [
            &m.jobs_submitted,
            &m.jobs_finished,
            &m.jobs_requeued,
            &m.jobs,
            &m.nodes_live,
            &m.node_slots,
            &m.queue_depth,
            &m.queue_waiting,
            &m.job_latency,
            &m.images_converted,
            &m.convert_refused,
            &m.http_seconds,
            &m.rate_limited,
            &m.webhooks,
            &m.swept,
            &n.slots_busy,
            &n.slots_total,
            &n.jobs,
            &n.encode_fps,
            &n.job_seconds,
            &n.gpu_utilisation,
            &n.gpu_healthy,
            &n.gpu_jobs,
        ];
        all.iter()
            .flat_map(|c| {
                c.desc()
                    .into_iter()
                    .map(|d| (d.fq_name.clone(), d.variable_labels.clone()))
            })
            .collect()
    }

    /// The Grafana dashboard (deploy/grafana/kiln.json) queries only metrics Kiln exports, with
    /// the labels they have, and covers what operators watch.
    #[test]
    fn the_dashboard_queries_what_kiln_exports() {
        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../../deploy/grafana/kiln.json")).unwrap();
        let described = declared();
        let declared: Vec<String> = described.iter().map(|(n, _)| n.clone()).collect();
        let labels: Vec<String> = described
            .iter()
            .flat_map(|(_, l)| l.iter().cloned())
            .chain(["le", "instance", "job"].map(String::from))
            .collect();
        let mut used = std::collections::BTreeSet::new();
        let mut ids = std::collections::BTreeSet::new();
        for panel in dashboard["panels"].as_array().unwrap() {
            assert!(
                ids.insert(panel["id"].as_i64().unwrap()),
                "panel ids are unique"
            );
            assert!(panel["gridPos"]["w"].as_i64().unwrap() > 0);
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap();
                for (at, _) in expr.match_indices("by (") {
                    let list = &expr[at + 4..];
                    let list = &list[..list.find(')').unwrap()];
                    for label in list.split(',').map(str::trim) {
                        assert!(
                            labels.iter().any(|l| l == label),
                            "{expr}: no metric has the label {label:?}"
                        );
                    }
                }
                for (at, _) in expr.match_indices("kiln_") {
                    let name: String = expr[at..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    let base = ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|s| name.strip_suffix(s))
                        .filter(|b| declared.iter().any(|d| d == b))
                        .unwrap_or(&name)
                        .to_string();
                    assert!(
                        declared.contains(&base),
                        "panel {:?} queries {name}, which Kiln does not export",
                        panel["title"]
                    );
                    used.insert(base);
                }
            }
        }
        for wanted in [
            "kiln_jobs_finished_total",
            "kiln_queue_waiting",
            "kiln_job_latency_seconds",
            "kiln_node_encode_fps",
            "kiln_node_slots_total",
            "kiln_webhook_attempts_total",
            "kiln_rate_limited_total",
        ] {
            assert!(used.contains(wanted), "the dashboard shows {wanted}");
        }
    }
}
