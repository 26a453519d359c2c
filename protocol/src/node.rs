//! What a node tells the fleet about itself: capabilities, load and liveness. Nodes report it
//! every few seconds through the queue backend; the control plane lists it and uses it to say
//! why a job is waiting.

use serde::{Deserialize, Serialize};

/// One node's capabilities, as probed once at start.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeCapabilities {
    /// The GPU model (`NVIDIA H100 80GB HBM3`), when the node has an NVIDIA GPU.
    #[serde(default)]
    pub gpu: Option<String>,
    /// Whether FFmpeg's CUDA hwaccel (NVDEC decode) opened.
    #[serde(default)]
    pub cuda: bool,
    /// Encoders that opened, by FFmpeg name (`libx264`, `h264_nvenc`, …).
    #[serde(default)]
    pub encoders: Vec<String>,
    /// Decoders that opened, by FFmpeg name (`h264`, `h264_cuvid`, …).
    #[serde(default)]
    pub decoders: Vec<String>,
    /// The image resize path and the wgpu adapter behind it.
    #[serde(default)]
    pub image_resize: Option<String>,
    /// CPU cores the node may use.
    #[serde(default)]
    pub cpu_cores: u32,
    /// NVENC sessions the node runs at once (0 without NVENC), over all its GPUs.
    #[serde(default)]
    pub nvenc_sessions: u32,
    /// Every GPU the node drives (`KILN_GPUS`), with its engines and the codecs that opened on
    /// it; empty on a CPU-only node.
    #[serde(default)]
    pub gpus: Vec<crate::GpuInfo>,
}

/// A node's registration and heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Unique per node process (`KILN_NODE_ID`, default `<hostname>-<pid>`).
    pub node_id: String,
    /// Host name, for operators.
    #[serde(default)]
    pub hostname: String,
    /// Kiln version the node runs.
    #[serde(default)]
    pub version: String,
    /// The queue classes it consumes (see [`crate::job::video_class`]).
    pub classes: Vec<String>,
    /// What it can do.
    pub capabilities: NodeCapabilities,
    /// Jobs it runs at once.
    pub slots: u32,
    /// Jobs running now.
    pub busy: u32,
    /// The 1-minute load average.
    #[serde(default)]
    pub load1: f64,
    /// Jobs this process finished (completed or failed).
    #[serde(default)]
    pub jobs_done: u64,
    /// Whether it is draining (finishing its jobs, taking no new ones).
    #[serde(default)]
    pub draining: bool,
    /// Where its Prometheus metrics are served, if anywhere.
    #[serde(default)]
    pub metrics_addr: Option<String>,
    /// Each GPU's health, load and Kiln's jobs on it (see `capabilities.gpus`).
    #[serde(default)]
    pub gpus: Vec<crate::GpuState>,
    /// When the node process started (ms since epoch, node clock).
    #[serde(default)]
    pub started_at_ms: i64,
    /// Filled in by the queue backend on read: milliseconds since the last report, measured
    /// on the backend's clock (Redis `TIME`), so node clocks need not agree.
    #[serde(default)]
    pub age_ms: i64,
}

impl NodeStatus {
    /// Whether the node reported within `max_age_ms` and is taking jobs.
    pub fn live(&self, max_age_ms: i64) -> bool {
        self.age_ms <= max_age_ms
    }
}

/// Why no live node takes `class`, or `None` when one does. `nodes` is the registry as
/// [`crate::NodeRegistry::list`] returns it.
pub fn unschedulable_reason(class: &str, nodes: &[NodeStatus], max_age_ms: i64) -> Option<String> {
    let live: Vec<&NodeStatus> = nodes.iter().filter(|n| n.live(max_age_ms)).collect();
    if live
        .iter()
        .any(|n| !n.draining && n.classes.iter().any(|c| c == class))
    {
        return None;
    }
    let need = match class.split_once(':') {
        Some((codec, "nvenc")) => format!("NVENC for {codec}"),
        Some((codec, "cpu")) => format!("a CPU encoder for {codec}"),
        _ => format!("an encoder for {class}"),
    };
    Some(if live.is_empty() {
        format!("no live node: the job waits until a node with {need} registers")
    } else {
        format!(
            "none of the {} live node(s) has {need} (or those that have are draining): the job waits until one registers",
            live.len()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, classes: &[&str], age_ms: i64, draining: bool) -> NodeStatus {
        NodeStatus {
            node_id: id.into(),
            classes: classes.iter().map(|c| c.to_string()).collect(),
            age_ms,
            draining,
            ..Default::default()
        }
    }

    #[test]
    fn placement_reasons() {
        let cpu = node("cpu", &["h264", "h264:cpu", "av1", "av1:cpu"], 1000, false);
        let gpu = node("gpu", &["h264", "h264:nvenc"], 1000, false);
        let dead_gpu = node("old", &["h264:nvenc"], 60_000, false);
        let draining_gpu = node("dr", &["h264:nvenc"], 10, true);
        // (class, nodes, schedulable)
        let cases: Vec<(&str, Vec<NodeStatus>, bool)> = vec![
            ("h264", vec![cpu.clone()], true),
            ("h264:nvenc", vec![cpu.clone()], false),
            ("h264:nvenc", vec![cpu.clone(), gpu.clone()], true),
            ("h264:nvenc", vec![cpu.clone(), dead_gpu], false),
            ("h264:nvenc", vec![draining_gpu], false),
            ("av1", vec![gpu.clone()], false),
            ("av1", vec![], false),
        ];
        for (class, nodes, ok) in cases {
            let r = unschedulable_reason(class, &nodes, 15_000);
            assert_eq!(r.is_none(), ok, "{class} on {nodes:?}: {r:?}");
        }
        let r = unschedulable_reason("h264:nvenc", &[cpu], 15_000).unwrap();
        assert!(r.contains("NVENC for h264"), "{r}");
        assert!(unschedulable_reason("av1", &[], 15_000)
            .unwrap()
            .starts_with("no live node"));
    }
}
