//! Prometheus metrics, declared in one place with the `kiln_` prefix.

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

/// The control plane's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Jobs submitted, by kind.
    pub jobs_submitted: IntCounterVec,
    /// Jobs finished, by final status (`completed`, `failed`).
    pub jobs_finished: IntCounterVec,
    /// Jobs waiting in the queue.
    pub queue_depth: IntGauge,
    /// Synchronous image conversions, by outcome and resize backend.
    pub images_converted: IntCounterVec,
    /// HTTP request latency by route and status class.
    pub http_seconds: HistogramVec,
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
        for c in [
            Box::new(jobs_submitted.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(jobs_finished.clone()),
            Box::new(queue_depth.clone()),
            Box::new(images_converted.clone()),
            Box::new(http_seconds.clone()),
        ] {
            registry.register(c).expect("unique metric names");
        }
        Self {
            registry,
            jobs_submitted,
            jobs_finished,
            queue_depth,
            images_converted,
            http_seconds,
        }
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
