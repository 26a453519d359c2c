//! The node's Prometheus metrics, declared in one place with the `kiln_node_` prefix. A fleet
//! node serves them on its own `/metrics`; the embedded node registers them with the control
//! plane's registry.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// Handles to the node's metrics (cheap to clone).
#[derive(Clone)]
pub struct NodeMetrics {
    /// Job slots running a job now.
    pub slots_busy: IntGauge,
    /// Job slots this node has.
    pub slots_total: IntGauge,
    /// Jobs that ended on this node, by outcome (`completed`, `failed`, `released`, `lost`) and codec.
    pub jobs: IntCounterVec,
    /// Encode speed reported by running jobs, frames per second, by codec.
    pub encode_fps: HistogramVec,
    /// Wall time of a job on this node, seconds.
    pub job_seconds: Histogram,
    /// NVML utilisation of each GPU, percent, by engine (`gpu`, `memory`, `encoder`, `decoder`).
    pub gpu_utilisation: IntGaugeVec,
    /// 1 while a GPU takes work, 0 while it backs off or is out of service.
    pub gpu_healthy: IntGaugeVec,
    /// Kiln jobs placed on each GPU now.
    pub gpu_jobs: IntGaugeVec,
}

impl NodeMetrics {
    /// Create the metrics and register them with `registry`.
    pub fn register(registry: &Registry) -> Self {
        let m = Self {
            slots_busy: IntGauge::new("kiln_node_slots_busy", "Job slots running a job")
                .expect("valid metric"),
            slots_total: IntGauge::new("kiln_node_slots", "Job slots on this node")
                .expect("valid metric"),
            jobs: IntCounterVec::new(
                Opts::new("kiln_node_jobs_total", "Jobs that ended on this node"),
                &["outcome", "codec"],
            )
            .expect("valid metric"),
            encode_fps: HistogramVec::new(
                HistogramOpts::new("kiln_node_encode_fps", "Encode speed of running jobs")
                    .buckets(vec![1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 240.0, 480.0, 960.0]),
                &["codec"],
            )
            .expect("valid metric"),
            job_seconds: Histogram::with_opts(
                HistogramOpts::new("kiln_node_job_seconds", "Wall time of a job on this node")
                    .buckets(prometheus::exponential_buckets(0.25, 2.0, 14).expect("valid")),
            )
            .expect("valid metric"),
            gpu_utilisation: IntGaugeVec::new(
                Opts::new(
                    "kiln_node_gpu_utilisation",
                    "GPU utilisation from NVML, percent",
                ),
                &["gpu", "engine"],
            )
            .expect("valid metric"),
            gpu_healthy: IntGaugeVec::new(
                Opts::new("kiln_node_gpu_healthy", "1 while the GPU takes work"),
                &["gpu"],
            )
            .expect("valid metric"),
            gpu_jobs: IntGaugeVec::new(
                Opts::new("kiln_node_gpu_jobs", "Kiln jobs placed on the GPU"),
                &["gpu"],
            )
            .expect("valid metric"),
        };
        for c in [
            Box::new(m.slots_busy.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.slots_total.clone()),
            Box::new(m.jobs.clone()),
            Box::new(m.encode_fps.clone()),
            Box::new(m.job_seconds.clone()),
            Box::new(m.gpu_utilisation.clone()),
            Box::new(m.gpu_healthy.clone()),
            Box::new(m.gpu_jobs.clone()),
        ] {
            registry.register(c).expect("unique metric names");
        }
        m
    }
}

/// The text exposition of `registry`.
pub fn render(registry: &Registry) -> String {
    use prometheus::Encoder;
    let mut buf = Vec::new();
    let _ = prometheus::TextEncoder::new().encode(&registry.gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}
