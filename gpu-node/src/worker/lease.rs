//! One claimed job under its lease: the heartbeat (which also notices a cancellation or a
//! lease taken back), the final event (retried through a queue outage), then ack, hand-back
//! or a quiet drop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_protocol::{
    now_ms, Broker, EventStream, JobQueue, JobSpec, Lease, NodeEvent, NodeEventKind, QueueError,
    Store, Task,
};

use super::{codec_label, execute, Shared, Stop, StopReason, WorkerConfig};

/// How often a running job checks whether it was cancelled.
const CANCEL_POLL: Duration = Duration::from_millis(500);

fn event(node: &str, job: &JobSpec, kind: NodeEventKind) -> NodeEvent {
    NodeEvent {
        job_id: job.id.clone(),
        attempt: job.attempt,
        node_id: node.to_string(),
        at_ms: now_ms(),
        kind,
    }
}

pub(super) async fn publish(
    events: &Arc<dyn EventStream>,
    node: &str,
    job: &JobSpec,
    kind: NodeEventKind,
) {
    if let Err(e) = events.publish(&event(node, job, kind)).await {
        // Losing a progress event is harmless; final events are retried (`publish_final`).
        tracing::warn!(job = %job.id, error = %e, "could not publish event");
    }
}

/// Publish a job's final event, retrying through a queue outage for a few minutes. Returns
/// whether it went out; if not, the lease expires and the job runs again, so nothing is lost.
async fn publish_final(events: &Arc<dyn EventStream>, e: &NodeEvent, stop: &Stop) -> bool {
    let mut backoff = Duration::from_millis(200);
    let give_up = Instant::now() + Duration::from_secs(240);
    loop {
        match events.publish(e).await {
            Ok(()) => return true,
            Err(err) if Instant::now() < give_up && stop.reason() != StopReason::LeaseLost => {
                tracing::warn!(job = %e.job_id, error = %err, "final event not published yet; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(err) => {
                tracing::error!(job = %e.job_id, error = %err, "final event not published; the job will run again");
                return false;
            }
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn ack_quietly(queue: &Arc<dyn JobQueue>, lease: &Lease) {
    if let Err(e) = queue.ack(lease).await {
        tracing::warn!(job = %lease.job.id, error = %e, "ack failed");
    }
}

/// Run one leased job to its end, then ack it (or hand it back, or drop it if the lease was
/// taken away).
pub(super) async fn run_leased(
    broker: &Broker,
    store: &Arc<dyn Store>,
    config: &WorkerConfig,
    shared: &Shared,
    lease: Lease,
) {
    let job = lease.job.clone();
    run_with_lease(broker, config, shared, lease, |stop| async move {
        execute::execute(broker, store, config, shared, &job, &stop).await
    })
    .await
}

/// A chunk claimed by a node waiting on its own title: run like any job, without the title
/// path (a chunk never queues chunks).
pub(super) async fn run_chunk_leased(
    broker: &Broker,
    store: &Arc<dyn Store>,
    config: &WorkerConfig,
    shared: &Shared,
    lease: Lease,
) {
    let job = lease.job.clone();
    run_with_lease(broker, config, shared, lease, |stop| async move {
        match &job.task {
            Task::Chunk(c) => super::chunk::execute(store, config, &job, c, &stop.flag).await,
            _ => Err((
                kiln_protocol::JobErrorCode::Internal,
                "a chunk slot claimed a job that is not a chunk".into(),
            )),
        }
    })
    .await
}

/// The job whose cancel stops `job`: a chunk stops with its title.
fn cancel_id(job: &JobSpec) -> &str {
    match &job.task {
        Task::Chunk(c) => &c.parent_id,
        _ => &job.id,
    }
}

/// Run `work` under `lease`: heartbeat, cancellation, the final event, then ack, hand-back or
/// a quiet drop. A chunk publishes no events (the control plane knows only its title; the
/// chunk's result goes to storage for the title's node).
async fn run_with_lease<F, Fut>(
    broker: &Broker,
    config: &WorkerConfig,
    shared: &Shared,
    lease: Lease,
    work: F,
) where
    F: FnOnce(Arc<Stop>) -> Fut,
    Fut: std::future::Future<Output = Result<NodeEventKind, execute::JobFailure>>,
{
    let queue = &broker.queue;
    let job = lease.job.clone();
    let quiet = matches!(job.task, Task::Chunk(_));
    let started = Instant::now();
    if queue.is_cancelled(cancel_id(&job)).await.unwrap_or(false) {
        tracing::info!(job = %job.id, "claimed a cancelled job; dropping it");
        ack_quietly(queue, &lease).await;
        return;
    }
    tracing::info!(job = %job.id, attempt = job.attempt, "job started");
    let stop = Arc::new(Stop::default());
    shared
        .running
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(lease.token.clone(), stop.clone());
    if !quiet {
        publish(
            &broker.events,
            &config.node_id,
            &job,
            NodeEventKind::Started,
        )
        .await;
    }

    // Heartbeat the lease while the job runs; a lease taken back, or a cancellation through
    // the API, stops the work.
    let hb = {
        let queue = queue.clone();
        let lease = lease.clone();
        let every = config.lease / 3;
        let lease_for = config.lease;
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut last_beat = Instant::now();
            loop {
                tokio::time::sleep(CANCEL_POLL.min(every)).await;
                if let Some(budget) = stop.overrun() {
                    tracing::warn!(job = %lease.job.id, budget_s = budget.as_secs(), "ran past its time budget; stopping");
                    stop.raise(StopReason::OverBudget);
                    return;
                }
                if queue
                    .is_cancelled(cancel_id(&lease.job))
                    .await
                    .unwrap_or(false)
                {
                    tracing::info!(job = %lease.job.id, "cancelled; stopping");
                    stop.raise(StopReason::Cancelled);
                    return;
                }
                if last_beat.elapsed() < every {
                    continue;
                }
                last_beat = Instant::now();
                match queue.heartbeat(&lease, lease_for).await {
                    Ok(()) => {}
                    Err(QueueError::LeaseLost(_)) => {
                        tracing::warn!(job = %lease.job.id, "lease taken back by the queue; stopping this attempt");
                        stop.raise(StopReason::LeaseLost);
                        return;
                    }
                    Err(e) => tracing::warn!(job = %lease.job.id, error = %e, "heartbeat failed"),
                }
            }
        })
    };

    // Dropped with this future too: a lease nobody works on must not be kept alive.
    let hb = AbortOnDrop(hb);
    let outcome = work(stop.clone()).await;
    drop(hb);
    shared
        .running
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&lease.token);

    let stopped = stop.reason();
    let label = |outcome: &str| {
        if let Some(m) = &config.metrics {
            m.jobs
                .with_label_values(&[outcome, codec_label(&job)])
                .inc();
            m.job_seconds.observe(started.elapsed().as_secs_f64());
        }
    };
    let final_kind = match outcome {
        Ok(kind) => kind,
        Err(_) if stopped == StopReason::HandBack => {
            label("released");
            match queue
                .release(&lease, "node drained before the job finished")
                .await
            {
                Ok(()) => tracing::info!(job = %job.id, "handed back to the queue (draining)"),
                Err(e) => {
                    tracing::warn!(job = %job.id, error = %e, "hand-back failed; the lease will expire and the job run again")
                }
            }
            return;
        }
        Err(_) if stopped == StopReason::LeaseLost => {
            label("lost");
            return;
        }
        Err(_) if stopped == StopReason::Cancelled => {
            label("cancelled");
            ack_quietly(queue, &lease).await;
            return;
        }
        Err(_) if stopped == StopReason::OverBudget => {
            let budget = stop.overrun().unwrap_or_default();
            let code = kiln_protocol::JobErrorCode::TimeBudgetExceeded;
            let message = format!(
                "the job ran past its time budget of {} s (derived from the source's duration and picture size)",
                budget.as_secs()
            );
            tracing::warn!(job = %job.id, %code, %message, "job failed");
            NodeEventKind::Failed {
                code,
                message,
                retryable: code.retryable(),
            }
        }
        Err((code, message)) => {
            tracing::warn!(job = %job.id, %code, %message, "job failed");
            NodeEventKind::Failed {
                code,
                message,
                retryable: code.retryable(),
            }
        }
    };
    label(if matches!(final_kind, NodeEventKind::Completed { .. }) {
        "completed"
    } else {
        "failed"
    });
    // A completed output is reported even if the lease was lost meanwhile: the output is
    // valid, and the control plane counts a job's completion once whichever attempt sends it.
    if quiet
        || publish_final(
            &broker.events,
            &event(&config.node_id, &job, final_kind),
            &stop,
        )
        .await
    {
        match queue.ack(&lease).await {
            Ok(()) => {}
            Err(QueueError::LeaseLost(_)) => {
                tracing::info!(job = %job.id, "lease was taken back before the ack; the result is recorded anyway")
            }
            Err(e) => {
                tracing::warn!(job = %job.id, error = %e, "ack failed; the job may run again")
            }
        }
    }
}
