//! The in-process queue of the embedded default: one process, no Redis.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::Notify;

use super::{JobQueue, Lease, QueueError};
use crate::{JobSpec, NodeEvent};

#[derive(Default)]
struct State {
    ready: VecDeque<JobSpec>,
    /// Leased jobs by token: (job, consumer, deadline).
    leased: HashMap<String, (JobSpec, String, Instant)>,
    events: VecDeque<NodeEvent>,
    next_token: u64,
}

/// A queue held in memory; the embedded default's implementation of [`JobQueue`].
#[derive(Default)]
pub struct MemoryQueue {
    state: Mutex<State>,
    jobs_ready: Notify,
    events_ready: Notify,
}

impl MemoryQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave State half-updated (every mutation is a
        // single collection operation), so a poisoned lock is safe to keep using.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl JobQueue for MemoryQueue {
    async fn enqueue(&self, job: &JobSpec) -> Result<(), QueueError> {
        self.lock().ready.push_back(job.clone());
        self.jobs_ready.notify_one();
        Ok(())
    }

    async fn claim(
        &self,
        consumer: &str,
        wait: Duration,
        lease_for: Duration,
    ) -> Result<Option<Lease>, QueueError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Register interest before checking, so a notify between check and wait is not lost.
            let notified = self.jobs_ready.notified();
            {
                let mut st = self.lock();
                if let Some(job) = st.ready.pop_front() {
                    st.next_token += 1;
                    let token = format!("{}:{}", job.id, st.next_token);
                    st.leased.insert(
                        token.clone(),
                        (
                            job.clone(),
                            consumer.to_string(),
                            Instant::now() + lease_for,
                        ),
                    );
                    // Another waiter may be able to take the next job.
                    if !st.ready.is_empty() {
                        self.jobs_ready.notify_one();
                    }
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
            Some(entry) => {
                entry.2 = Instant::now() + lease_for;
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

    async fn reclaim_expired(&self) -> Result<usize, QueueError> {
        let now = Instant::now();
        let mut st = self.lock();
        let expired: Vec<String> = st
            .leased
            .iter()
            .filter(|(_, (_, _, deadline))| *deadline <= now)
            .map(|(token, _)| token.clone())
            .collect();
        for token in &expired {
            if let Some((job, _, _)) = st.leased.remove(token) {
                st.ready.push_back(job);
            }
        }
        drop(st);
        for _ in 0..expired.len() {
            self.jobs_ready.notify_one();
        }
        Ok(expired.len())
    }

    async fn depth(&self) -> Result<u64, QueueError> {
        Ok(self.lock().ready.len() as u64)
    }

    async fn publish(&self, event: &NodeEvent) -> Result<(), QueueError> {
        self.lock().events.push_back(event.clone());
        self.events_ready.notify_one();
        Ok(())
    }

    async fn next_events(&self, max: usize, wait: Duration) -> Result<Vec<NodeEvent>, QueueError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.events_ready.notified();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::conformance;

    #[tokio::test]
    async fn memory_queue_conforms() {
        conformance::run_all(|| async { MemoryQueue::new() }).await;
    }
}
