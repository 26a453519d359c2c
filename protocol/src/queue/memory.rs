//! The in-process queue of the embedded default: one process, no Redis. It keeps the same
//! contract as the Redis queue and passes the same conformance suite.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::Notify;

use super::{EventStream, JobQueue, Lease, NodeRegistry, QueueError, DEFAULT_MAX_ATTEMPTS};
use crate::{now_ms, JobSpec, NodeCommand, NodeEvent, NodeEventKind, NodeStatus};

struct Leased {
    job: JobSpec,
    consumer: String,
    deadline: Instant,
}

#[derive(Default)]
struct State {
    /// Waiting jobs by class.
    ready: HashMap<String, VecDeque<(u64, JobSpec)>>,
    leased: HashMap<String, Leased>,
    dead: Vec<JobSpec>,
    events: VecDeque<NodeEvent>,
    nodes: HashMap<String, (NodeStatus, Instant)>,
    /// Operators' commands waiting for each node, with when each was left.
    commands: HashMap<String, Vec<(NodeCommand, Instant)>>,
    epoch_seen: bool,
    /// Cancelled jobs, with when (forgotten after a week).
    cancelled: HashMap<String, Instant>,
    /// Enqueue order across classes, so a consumer of several classes takes the oldest job.
    seq: u64,
}

/// A queue held in memory; the embedded default's implementation of [`JobQueue`].
pub struct MemoryQueue {
    state: Mutex<State>,
    jobs_ready: Notify,
    events_ready: Notify,
    max_attempts: u32,
}

impl Default for MemoryQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryQueue {
    /// An empty queue that dead-letters after [`DEFAULT_MAX_ATTEMPTS`].
    pub fn new() -> Self {
        Self::with_max_attempts(DEFAULT_MAX_ATTEMPTS)
    }

    /// An empty queue that dead-letters a job after `max_attempts` attempts.
    pub fn with_max_attempts(max_attempts: u32) -> Self {
        Self {
            state: Mutex::new(State::default()),
            jobs_ready: Notify::new(),
            events_ready: Notify::new(),
            max_attempts: max_attempts.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave State half-updated (every mutation is a
        // few collection operations with no fallible step between), so a poisoned lock is safe.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(st: &mut State, job: JobSpec) {
        st.seq += 1;
        let seq = st.seq;
        st.ready
            .entry(job.class())
            .or_default()
            .push_back((seq, job));
    }

    /// Take a lease back (expired or released): requeue as the next attempt, or dead-letter.
    /// Returns the event the caller publishes (in the same critical section).
    fn take_back(&self, st: &mut State, leased: Leased, reason: &str, count: bool) {
        let mut job = leased.job;
        let kind = if count && job.attempt >= self.max_attempts {
            let reason = format!(
                "{reason}; attempt {} of {} — moved to the dead-letter queue",
                job.attempt, self.max_attempts
            );
            st.dead.push(job.clone());
            NodeEventKind::DeadLettered { reason }
        } else {
            job.attempt += 1;
            Self::push(st, job.clone());
            NodeEventKind::Requeued {
                next_attempt: job.attempt,
                reason: reason.to_string(),
            }
        };
        let attempt = match kind {
            NodeEventKind::Requeued { next_attempt, .. } => next_attempt - 1,
            _ => job.attempt,
        };
        st.events.push_back(NodeEvent {
            job_id: job.id.clone(),
            attempt,
            node_id: leased.consumer,
            at_ms: now_ms(),
            kind,
        });
    }

    /// Jobs in the dead-letter queue.
    pub fn dead_letters(&self) -> Vec<JobSpec> {
        self.lock().dead.clone()
    }
}

#[async_trait]
impl JobQueue for MemoryQueue {
    async fn enqueue(&self, job: &JobSpec) -> Result<(), QueueError> {
        Self::push(&mut self.lock(), job.clone());
        self.jobs_ready.notify_waiters();
        Ok(())
    }

    async fn claim(
        &self,
        consumer: &str,
        classes: &[String],
        wait: Duration,
        lease_for: Duration,
    ) -> Result<Option<Lease>, QueueError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Register interest before checking, so a notify between check and wait is not lost.
            let notified = self.jobs_ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.lock();
                let oldest = classes
                    .iter()
                    .filter_map(|c| st.ready.get(c)?.front().map(|(seq, _)| (*seq, c.clone())))
                    .min();
                if let Some((_, class)) = oldest {
                    let (_, job) = st
                        .ready
                        .get_mut(&class)
                        .and_then(|q| q.pop_front())
                        .expect("front exists");
                    let token = format!("{}:{}:{}", job.id, job.attempt, uuid::Uuid::new_v4());
                    st.leased.insert(
                        token.clone(),
                        Leased {
                            job: job.clone(),
                            consumer: consumer.to_string(),
                            deadline: Instant::now() + lease_for,
                        },
                    );
                    return Ok(Some(Lease {
                        job,
                        consumer: consumer.to_string(),
                        token,
                    }));
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(None);
            }
        }
    }

    async fn heartbeat(&self, lease: &Lease, lease_for: Duration) -> Result<(), QueueError> {
        match self.lock().leased.get_mut(&lease.token) {
            Some(l) => {
                l.deadline = Instant::now() + lease_for;
                Ok(())
            }
            None => Err(QueueError::LeaseLost(lease.job.id.clone())),
        }
    }

    async fn ack(&self, lease: &Lease) -> Result<(), QueueError> {
        match self.lock().leased.remove(&lease.token) {
            Some(_) => Ok(()),
            None => Err(QueueError::LeaseLost(lease.job.id.clone())),
        }
    }

    async fn release(&self, lease: &Lease, reason: &str) -> Result<(), QueueError> {
        {
            let mut st = self.lock();
            let leased = st
                .leased
                .remove(&lease.token)
                .ok_or_else(|| QueueError::LeaseLost(lease.job.id.clone()))?;
            self.take_back(&mut st, leased, reason, false);
        }
        self.jobs_ready.notify_waiters();
        self.events_ready.notify_waiters();
        Ok(())
    }

    async fn reclaim_expired(&self) -> Result<usize, QueueError> {
        let now = Instant::now();
        let n = {
            let mut st = self.lock();
            let expired: Vec<String> = st
                .leased
                .iter()
                .filter(|(_, l)| l.deadline <= now)
                .map(|(token, _)| token.clone())
                .collect();
            for token in &expired {
                if let Some(leased) = st.leased.remove(token) {
                    let reason = format!("node {} stopped heartbeating", leased.consumer);
                    self.take_back(&mut st, leased, &reason, true);
                }
            }
            expired.len()
        };
        if n > 0 {
            self.jobs_ready.notify_waiters();
            self.events_ready.notify_waiters();
        }
        Ok(n)
    }

    async fn depth_by_class(&self) -> Result<Vec<(String, u64)>, QueueError> {
        let mut depths: Vec<(String, u64)> = self
            .lock()
            .ready
            .iter()
            .map(|(class, q)| (class.clone(), q.len() as u64))
            .collect();
        depths.sort();
        Ok(depths)
    }

    async fn cancel(&self, job_id: &str) -> Result<(), QueueError> {
        let mut st = self.lock();
        st.cancelled
            .retain(|_, at| at.elapsed() < super::CANCEL_MEMORY);
        st.cancelled.insert(job_id.to_string(), Instant::now());
        Ok(())
    }

    async fn is_cancelled(&self, job_id: &str) -> Result<bool, QueueError> {
        Ok(self.lock().cancelled.contains_key(job_id))
    }

    async fn epoch_is_new(&self) -> Result<bool, QueueError> {
        let mut st = self.lock();
        Ok(!std::mem::replace(&mut st.epoch_seen, true))
    }
}

#[async_trait]
impl EventStream for MemoryQueue {
    async fn publish(&self, event: &NodeEvent) -> Result<(), QueueError> {
        self.lock().events.push_back(event.clone());
        self.events_ready.notify_waiters();
        Ok(())
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<NodeEvent>, QueueError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.events_ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.lock();
                if !st.events.is_empty() {
                    let n = max.min(st.events.len());
                    return Ok(st.events.drain(..n).collect());
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }
}

#[async_trait]
impl NodeRegistry for MemoryQueue {
    async fn report(&self, node: &NodeStatus) -> Result<(), QueueError> {
        self.lock()
            .nodes
            .insert(node.node_id.clone(), (node.clone(), Instant::now()));
        Ok(())
    }

    async fn remove(&self, node_id: &str) -> Result<(), QueueError> {
        self.lock().nodes.remove(node_id);
        Ok(())
    }

    async fn list(&self) -> Result<Vec<NodeStatus>, QueueError> {
        let mut st = self.lock();
        st.nodes
            .retain(|_, (_, seen)| seen.elapsed() < super::NODE_FORGET);
        let mut out: Vec<NodeStatus> = st
            .nodes
            .values()
            .map(|(n, seen)| NodeStatus {
                age_ms: seen.elapsed().as_millis() as i64,
                ..n.clone()
            })
            .collect();
        out.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        Ok(out)
    }

    async fn command(&self, node_id: &str, command: &NodeCommand) -> Result<(), QueueError> {
        self.lock()
            .commands
            .entry(node_id.to_string())
            .or_default()
            .push((command.clone(), Instant::now()));
        Ok(())
    }

    async fn take_commands(&self, node_id: &str) -> Result<Vec<NodeCommand>, QueueError> {
        let waiting = self.lock().commands.remove(node_id).unwrap_or_default();
        Ok(waiting
            .into_iter()
            .filter(|(_, at)| at.elapsed() < super::NODE_FORGET)
            .map(|(c, _)| c)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::conformance;

    #[tokio::test]
    async fn memory_queue_conforms() {
        conformance::run_all(
            |max_attempts| async move { MemoryQueue::with_max_attempts(max_attempts) },
        )
        .await;
    }
}
