//! What nodes tell the control plane about a job. Nothing else flows back up the stack.

use serde::{Deserialize, Serialize};

use crate::JobErrorCode;

/// One report from a node about one job attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeEvent {
    /// The job this event is about.
    pub job_id: String,
    /// Which attempt of the job (1-based); stale attempts' events are ignored.
    pub attempt: u32,
    /// The node that sent it.
    pub node_id: String,
    /// When the node sent it (ms since epoch).
    pub at_ms: i64,
    /// What happened.
    pub kind: NodeEventKind,
}

/// What happened to a job on a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NodeEventKind {
    /// The node took the job and started work.
    Started,
    /// Work is `percent` done, encoding at `fps`, with `eta_s` seconds to go.
    Progress {
        percent: f32,
        fps: f32,
        eta_s: Option<f32>,
    },
    /// The output is in storage.
    Completed {
        output_key: String,
        output_size: u64,
        /// Width × height and duration of what was produced, for the status endpoint.
        width: u32,
        height: u32,
        duration_s: f64,
    },
    /// The job failed on this node.
    Failed {
        code: JobErrorCode,
        message: String,
        retryable: bool,
    },
}
