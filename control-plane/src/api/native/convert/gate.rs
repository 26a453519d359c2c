//! The bounded pool synchronous conversions run in: at most `workers` at once (each a blocking
//! thread), at most `queue` more waiting for one; past that a request is refused at once with
//! 503 `overloaded` and `Retry-After`, so a burst cannot pile up blocking threads and memory
//! (each waiting request holds its image) or push every answer past its client's timeout.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Semaphore, SemaphorePermit};

/// Conversions running and waiting.
pub struct Gate {
    workers: usize,
    queue: usize,
    slots: Semaphore,
    /// Requests inside the gate (running or waiting).
    admitted: AtomicUsize,
}

/// A request inside the gate, counted until dropped (also when its client goes away while it
/// waits).
struct Admitted<'a>(&'a Gate);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.admitted.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A worker slot, held while one conversion runs.
pub struct Pass<'a> {
    _admitted: Admitted<'a>,
    _slot: SemaphorePermit<'a>,
}

impl Gate {
    /// `workers` conversions at once (at least 1), `queue` more waiting.
    pub fn new(workers: usize, queue: usize) -> Self {
        let workers = workers.max(1);
        Self {
            workers,
            queue,
            slots: Semaphore::new(workers),
            admitted: AtomicUsize::new(0),
        }
    }

    /// A slot, after waiting behind at most `queue` others; `None` when the queue is full.
    pub async fn enter(&self) -> Option<Pass<'_>> {
        let before = self.admitted.fetch_add(1, Ordering::SeqCst);
        let admitted = Admitted(self);
        if before >= self.workers + self.queue {
            return None;
        }
        let slot = self
            .slots
            .acquire()
            .await
            .expect("the gate is never closed");
        Some(Pass {
            _admitted: admitted,
            _slot: slot,
        })
    }

    /// Requests inside the gate now (running or waiting).
    pub fn admitted(&self) -> usize {
        self.admitted.load(Ordering::SeqCst)
    }

    /// Conversions that may wait for a worker.
    pub fn queue(&self) -> usize {
        self.queue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_workers_queues_the_next_and_refuses_the_rest() {
        let gate = Gate::new(2, 1);
        let a = gate.enter().await.unwrap();
        let b = gate.enter().await.unwrap();
        // The third waits for a slot; a fourth finds the queue full.
        let waiting = gate.enter();
        tokio::pin!(waiting);
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), &mut waiting)
                .await
                .is_err(),
            "no slot free: it waits"
        );
        assert_eq!(gate.admitted(), 3);
        assert!(
            gate.enter().await.is_none(),
            "past workers + queue: refused"
        );
        assert_eq!(gate.admitted(), 3, "a refusal leaves nothing counted");
        drop(a);
        let c = waiting.await.expect("a slot freed: it runs");
        drop((b, c));
        assert_eq!(gate.admitted(), 0);
    }

    #[tokio::test]
    async fn a_client_gone_while_waiting_leaves_nothing_counted() {
        let gate = Gate::new(1, 4);
        let running = gate.enter().await.unwrap();
        let gone = tokio::time::timeout(std::time::Duration::from_millis(20), gate.enter()).await;
        assert!(gone.is_err());
        assert_eq!(gate.admitted(), 1);
        drop(running);
        assert_eq!(gate.admitted(), 0);
        assert!(gate.enter().await.is_some());
    }
}
