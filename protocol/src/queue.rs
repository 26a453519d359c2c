//! The job queue between the control plane and nodes, and the event channel back.
//!
//! Contract, for every implementation (the conformance tests in `queue::conformance` hold each
//! one to it):
//! - `enqueue` makes a job visible to exactly one `claim`.
//! - A claimed job is *leased* to a consumer until `ack`; a lease not renewed by `heartbeat`
//!   within its time is returned to the queue by `reclaim_expired`, so a dead node loses nothing.
//! - `publish` / `next_events` carry node events to the control plane in the order published.

use std::time::Duration;

use async_trait::async_trait;

use crate::{JobSpec, NodeEvent};

pub mod memory;

#[doc(hidden)]
pub mod conformance;

pub use memory::MemoryQueue;

/// Why a queue operation failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The backing service could not be reached; worth retrying after a pause.
    #[error("queue backend unavailable: {0}")]
    Unavailable(String),
    /// A message on the queue could not be read (a bug or a version mismatch).
    #[error("malformed queue message: {0}")]
    Malformed(String),
    /// The lease is no longer held (it expired and was reclaimed).
    #[error("lease on job {0} is no longer held")]
    LeaseLost(String),
}

/// A job claimed by one consumer.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    /// The job.
    pub job: JobSpec,
    /// Who holds it.
    pub consumer: String,
    /// Opaque token identifying this lease to the backend.
    pub token: String,
}

/// The queue both sides talk to.
#[async_trait]
pub trait JobQueue: Send + Sync + 'static {
    /// Add a job at the back of the queue.
    async fn enqueue(&self, job: &JobSpec) -> Result<(), QueueError>;
    /// Take the next job for `consumer`, waiting up to `wait` for one; the lease lasts `lease_for`.
    async fn claim(
        &self,
        consumer: &str,
        wait: Duration,
        lease_for: Duration,
    ) -> Result<Option<Lease>, QueueError>;
    /// Extend a lease by `lease_for` from now.
    async fn heartbeat(&self, lease: &Lease, lease_for: Duration) -> Result<(), QueueError>;
    /// The job is finished (completed or failed for good): forget it.
    async fn ack(&self, lease: &Lease) -> Result<(), QueueError>;
    /// Return every job whose lease has expired to the queue; returns how many.
    async fn reclaim_expired(&self) -> Result<usize, QueueError>;
    /// Jobs waiting to be claimed.
    async fn depth(&self) -> Result<u64, QueueError>;
    /// Send an event to the control plane.
    async fn publish(&self, event: &NodeEvent) -> Result<(), QueueError>;
    /// Receive up to `max` events, waiting up to `wait` for the first.
    async fn next_events(&self, max: usize, wait: Duration) -> Result<Vec<NodeEvent>, QueueError>;
}
