//! The one crate both sides of Kiln share: job specs, node events, the queue trait with its
//! in-process implementation, the storage trait with its local-folder implementation, and the
//! stable error codes that jobs and the API report.

pub mod cli;
pub mod edit;
pub mod error;
pub mod event;
pub mod gpu;
pub mod job;
pub mod ladder;
pub mod limits;
pub mod node;
pub mod queue;
pub mod stills;
pub mod storage;
#[doc(hidden)]
pub mod testing;
pub mod video;

pub use error::JobErrorCode;
pub use event::{
    AudioShrink, ChunkCounts, ChunkEntry, ChunksReport, EncodeReport, NodeEvent, NodeEventKind,
    PerTitleReport, ProbePoint, VmafReport,
};
pub use gpu::{EngineLoad, GpuEngines, GpuHealth, GpuInfo, GpuState, NodeCommand};
pub use job::{ChunkTask, ImageParams, JobSpec, LadderChunk, Resolution, Task};
pub use ladder::{LadderParams, Packaging, PerTitle, Rung, RungRate};
pub use node::{NodeCapabilities, NodeStatus};
pub use queue::{
    Broker, EventStream, JobQueue, Lease, MemoryQueue, NodeRegistry, QueueError, RedisQueue,
};
pub use storage::{LocalStore, S3Store, Store, StoreError};
pub use video::{
    Container, HardwarePolicy, Preset, RateControl, SizePlanError, VideoCodec, VideoParams,
};

/// Milliseconds since the Unix epoch: the one timestamp format Kiln stores and sends.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}
