//! The channels between the control plane and nodes, as three traits that one backend (Redis
//! for a fleet, memory for the embedded default) implements together:
//! - [`JobQueue`]: jobs waiting by class, leases, cancellations, and the queue's epoch;
//! - [`EventStream`]: node events flowing back to the control plane;
//! - [`NodeRegistry`]: which nodes are alive and what they can do, and operators' commands to
//!   them.
//!
//! [`Broker`] holds one backend as all three.
//!
//! Contract, for every implementation (the conformance tests in `queue::conformance` hold each
//! one to it):
//! - `enqueue` puts a job in its class (`JobSpec::class`) and makes it visible to exactly one
//!   `claim` by a consumer that asks for that class. Within a class, jobs come out in order.
//! - A claimed job is *leased* to a consumer until `ack`; a lease not renewed by `heartbeat`
//!   within its time is taken back by `reclaim_expired`, so a dead node loses nothing. Taking
//!   back bumps the job's attempt number (the dead node's late events then no longer match)
//!   and, in the same atomic step, publishes a `Requeued` event — or, once the job has used
//!   `max_attempts`, moves it to the dead-letter queue and publishes `DeadLettered`.
//! - A lease that was taken back is dead: its heartbeat, ack or release is refused.
//! - `publish` / `receive` carry node events to the control plane in the order published,
//!   at least once (an event can be seen again after a control-plane crash; applying one is
//!   idempotent).
//! - `cancel` marks a job so that whoever claims or runs it stops (`is_cancelled`).
//! - `command` / `take_commands` carry an operator's commands to one node, in order, each
//!   taken once.
//! - `epoch_is_new` tells the control plane that the queue's state was created (or lost) since
//!   it last asked, so jobs the database holds as unfinished must be enqueued again.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::{JobSpec, NodeCommand, NodeEvent, NodeStatus};

pub mod memory;
pub mod redis;

#[doc(hidden)]
pub mod conformance;

pub use self::redis::RedisQueue;
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
    /// The job (its `attempt` is the one this lease runs).
    pub job: JobSpec,
    /// Who holds it.
    pub consumer: String,
    /// Opaque token identifying this lease to the backend.
    pub token: String,
}

/// Nodes silent this long are dropped from the registry.
pub const NODE_FORGET: Duration = Duration::from_secs(3600);

/// How long a cancellation is remembered.
pub const CANCEL_MEMORY: Duration = Duration::from_secs(7 * 86_400);

/// Tries per job before the queue dead-letters it, unless configured otherwise.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// Jobs waiting by class, their leases and cancellations: what nodes claim work from.
#[async_trait]
pub trait JobQueue: Send + Sync + 'static {
    /// Add a job at the back of its class.
    async fn enqueue(&self, job: &JobSpec) -> Result<(), QueueError>;
    /// Take the oldest job of any of `classes` for `consumer`, waiting up to `wait` for one;
    /// the lease lasts `lease_for`.
    async fn claim(
        &self,
        consumer: &str,
        classes: &[String],
        wait: Duration,
        lease_for: Duration,
    ) -> Result<Option<Lease>, QueueError>;
    /// Extend a lease by `lease_for` from now.
    async fn heartbeat(&self, lease: &Lease, lease_for: Duration) -> Result<(), QueueError>;
    /// The job is finished (completed or failed for good): forget it.
    async fn ack(&self, lease: &Lease) -> Result<(), QueueError>;
    /// Hand a job back unfinished (a draining node): it is queued again at once as the next
    /// attempt, with a `Requeued` event.
    async fn release(&self, lease: &Lease, reason: &str) -> Result<(), QueueError>;
    /// Take back every job whose lease has expired (see the contract above); returns how many.
    async fn reclaim_expired(&self) -> Result<usize, QueueError>;
    /// Jobs waiting to be claimed, over all classes.
    async fn depth(&self) -> Result<u64, QueueError> {
        Ok(self.depth_by_class().await?.iter().map(|(_, n)| n).sum())
    }
    /// Jobs waiting to be claimed in each class that has had any, sorted by class.
    async fn depth_by_class(&self) -> Result<Vec<(String, u64)>, QueueError>;
    /// Cancel a job: a node that claims it acknowledges it without running it, and a node
    /// running it stops within a second or so. Remembered for a week.
    async fn cancel(&self, job_id: &str) -> Result<(), QueueError>;
    /// Whether `job_id` was cancelled.
    async fn is_cancelled(&self, job_id: &str) -> Result<bool, QueueError>;
    /// Whether the queue's state is new since the last call (true on the first call of a fresh
    /// backend, and again after a backend lost its data).
    async fn epoch_is_new(&self) -> Result<bool, QueueError>;
}

/// Node events on their way to the control plane.
#[async_trait]
pub trait EventStream: Send + Sync + 'static {
    /// Send an event to the control plane.
    async fn publish(&self, event: &NodeEvent) -> Result<(), QueueError>;
    /// Receive up to `max` events, waiting up to `wait` for the first. Asking again
    /// acknowledges the previous batch.
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<NodeEvent>, QueueError>;
}

/// The nodes of the fleet, as they last reported themselves.
#[async_trait]
pub trait NodeRegistry: Send + Sync + 'static {
    /// Register or refresh a node (its heartbeat).
    async fn report(&self, node: &NodeStatus) -> Result<(), QueueError>;
    /// Remove a node from the registry (it stopped cleanly).
    async fn remove(&self, node_id: &str) -> Result<(), QueueError>;
    /// Every registered node, with `age_ms` filled in; nodes silent for an hour are dropped.
    async fn list(&self) -> Result<Vec<NodeStatus>, QueueError>;
    /// Leave an operator's `command` for `node_id`, which takes it at its next report
    /// ([`Self::take_commands`]); forgotten after an hour untaken.
    async fn command(&self, node_id: &str, command: &NodeCommand) -> Result<(), QueueError>;
    /// The commands left for `node_id` since it last asked, oldest first, each returned once.
    async fn take_commands(&self, node_id: &str) -> Result<Vec<NodeCommand>, QueueError>;
}

/// One backend seen as its three channels (every backend implements all of them).
#[derive(Clone)]
pub struct Broker {
    pub queue: Arc<dyn JobQueue>,
    pub events: Arc<dyn EventStream>,
    pub nodes: Arc<dyn NodeRegistry>,
}

impl Broker {
    /// The three channels of `backend`.
    pub fn new<B: JobQueue + EventStream + NodeRegistry>(backend: Arc<B>) -> Self {
        Self {
            queue: backend.clone(),
            events: backend.clone(),
            nodes: backend,
        }
    }
}
