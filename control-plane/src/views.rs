//! The documents the API answers with, as typed structs (`Serialize + ToSchema`): the OpenAPI
//! schema of each is derived from the very struct the handler serialises, so the two cannot
//! drift apart. Dialects translate these documents into their own shapes.

use kiln_protocol::{NodeCapabilities, NodeStatus};
use serde::Serialize;
use utoipa::ToSchema;

use crate::db::{JobRow, JobStatus};
use crate::time::rfc3339;

pub mod job;
pub mod usage;

pub use job::{JobOutput, JobView};
pub use usage::UsageView;

/// A page of jobs.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<JobView>,
    /// Pass as `cursor` for the next page.
    pub next_cursor: Option<String>,
    pub has_more: bool,
}

/// `POST /jobs` and `POST /batches`' answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SubmittedView {
    pub batch_id: String,
    pub status_url: String,
    pub credits_charged: i64,
    pub jobs: Vec<JobView>,
}

/// `POST /compress`'s answer (Konvrt's shape).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AcceptedView {
    pub success: bool,
    pub job_id: String,
    pub credits_charged: i64,
    pub status: String,
    pub status_url: String,
    pub message: String,
}

/// Jobs of a batch by status.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct StatusCounts {
    pub pending: usize,
    pub processing: usize,
    pub completed: usize,
    pub failed: usize,
    pub cancelled: usize,
}

impl StatusCounts {
    /// Count `jobs` by status.
    pub fn of(jobs: &[JobRow]) -> Self {
        let n = |s: JobStatus| jobs.iter().filter(|j| j.status == s).count();
        Self {
            pending: n(JobStatus::Pending),
            processing: n(JobStatus::Processing),
            completed: n(JobStatus::Completed),
            failed: n(JobStatus::Failed),
            cancelled: n(JobStatus::Cancelled),
        }
    }
}

/// The overall state of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BatchStatus {
    Pending,
    Processing,
    Completed,
    Partial,
    Failed,
    Cancelled,
}

impl BatchStatus {
    /// From its jobs' states: live while any job is; then completed, partial (some
    /// completed), cancelled (all cancelled) or failed.
    pub fn of(jobs: &[JobRow]) -> Self {
        let c = StatusCounts::of(jobs);
        let n = jobs.len();
        if c.pending + c.processing > 0 {
            if c.pending == n {
                Self::Pending
            } else {
                Self::Processing
            }
        } else if c.completed == n {
            Self::Completed
        } else if c.completed > 0 {
            Self::Partial
        } else if c.cancelled == n {
            Self::Cancelled
        } else {
            Self::Failed
        }
    }
}

/// A batch and its jobs.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BatchView {
    pub batch_id: String,
    pub status: BatchStatus,
    pub counts: StatusCounts,
    pub jobs: Vec<JobView>,
    /// Once every job finished and one completed, for batches submitted with `archive`.
    pub archive_url: Option<String>,
}

/// `POST /uploads`' answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UploadView {
    pub upload_id: String,
    pub size: i64,
    pub filename: Option<String>,
    pub expires_at: String,
}

/// A node of the fleet as `GET /nodes` shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NodeView {
    pub node_id: String,
    pub hostname: String,
    pub version: String,
    /// ready; draining (finishing its jobs, taking no new ones: stopping, or drained by an
    /// operator); drained (draining with no job left); or lost (silent past the live window).
    pub state: String,
    pub slots: u32,
    pub busy: u32,
    pub load1: f64,
    pub jobs_done: u64,
    pub classes: Vec<String>,
    pub capabilities: NodeCapabilities,
    /// Each GPU's health, NVML utilisation, NVENC sessions and Kiln jobs now (what each one is
    /// is in `capabilities.gpus`).
    pub gpus: Vec<kiln_protocol::GpuState>,
    pub metrics_addr: Option<String>,
    pub started_at: String,
    pub last_heartbeat: String,
    pub last_heartbeat_age_ms: i64,
}

impl NodeView {
    /// `n` as seen at `now_ms`, live if it reported within `live_ms`.
    pub fn new(n: &NodeStatus, live_ms: i64, now_ms: i64) -> Self {
        let state = if !n.live(live_ms) {
            "lost"
        } else if n.draining && n.busy == 0 {
            "drained"
        } else if n.draining {
            "draining"
        } else {
            "ready"
        };
        Self {
            node_id: n.node_id.clone(),
            hostname: n.hostname.clone(),
            version: n.version.clone(),
            state: state.into(),
            slots: n.slots,
            busy: n.busy,
            load1: n.load1,
            jobs_done: n.jobs_done,
            classes: n.classes.clone(),
            capabilities: n.capabilities.clone(),
            gpus: n.gpus.clone(),
            metrics_addr: n.metrics_addr.clone(),
            started_at: rfc3339(n.started_at_ms),
            last_heartbeat: rfc3339(now_ms - n.age_ms),
            last_heartbeat_age_ms: n.age_ms,
        }
    }
}

/// A GPU command accepted for delivery to its node.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GpuCommandView {
    pub node_id: String,
    pub gpu: u32,
    /// `enable` or `disable`.
    pub command: String,
}

/// A drain or resume accepted for delivery to its node.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NodeCommandView {
    pub node_id: String,
    /// `drain` or `resume`.
    pub command: String,
}

/// `GET /nodes`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NodeList {
    pub nodes: Vec<NodeView>,
}

/// A new key (the key itself is shown only here).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NewKeyView {
    pub key: String,
    #[serde(flatten)]
    pub info: crate::db::keys::KeyInfo,
}

/// Keys.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<crate::db::keys::KeyInfo>,
}
