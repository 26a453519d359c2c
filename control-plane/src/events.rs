//! Applies node events to the database: the only way job state moves after submission. The
//! same loop takes back expired leases, notices a queue that lost its state (a Redis restart
//! without persistence) and enqueues the database's unfinished jobs again, and refreshes the
//! queue and job gauges.

use std::sync::Arc;
use std::time::Duration;

use kiln_protocol::{JobErrorCode, JobQueue, JobSpec, NodeEvent, NodeEventKind};
use sqlx::Row;
use tokio::sync::watch;

use crate::db::jobs::Completion;
use crate::AppState;

pub mod destinations;
mod sweep;

pub use destinations::deliver_due;
pub use sweep::sweep;

/// How often the housekeeping (reclaim, epoch check, queue and node gauges) runs.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// How often the jobs-by-status gauge is recounted: a GROUP BY over the whole jobs table,
/// too heavy for every second on a large database, and Prometheus scrapes every 15 s or so.
const JOB_COUNTS: Duration = Duration::from_secs(15);
/// How often expired outputs and uploads are deleted.
const SWEEP: Duration = Duration::from_secs(5);

/// Consume events until shutdown, with the housekeeping above between batches.
pub async fn run(state: AppState, mut shutdown: watch::Receiver<bool>) {
    let mut last_housekeeping = tokio::time::Instant::now() - HOUSEKEEPING;
    let mut last_counts = tokio::time::Instant::now() - JOB_COUNTS;
    let mut last_sweep = tokio::time::Instant::now() - SWEEP;
    loop {
        if *shutdown.borrow() {
            return;
        }
        if last_housekeeping.elapsed() >= HOUSEKEEPING {
            last_housekeeping = tokio::time::Instant::now();
            housekeeping(&state).await;
            if last_counts.elapsed() >= JOB_COUNTS {
                last_counts = tokio::time::Instant::now();
                count_jobs(&state).await;
            }
            if last_sweep.elapsed() >= SWEEP {
                last_sweep = tokio::time::Instant::now();
                tokio::spawn(deliver_due(state.clone()));
                if let Err(e) = sweep(&state).await {
                    tracing::warn!(error = %e, "retention sweep failed");
                }
            }
        }
        let batch = tokio::select! {
            r = state.events.receive(256, Duration::from_millis(250)) => r,
            _ = shutdown.changed() => return,
        };
        match batch {
            Ok(events) => {
                for e in events {
                    if let Err(err) = apply(&state, &e).await {
                        tracing::error!(job = %e.job_id, error = %err, "could not apply node event");
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "event stream unavailable");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

async fn housekeeping(state: &AppState) {
    match state.queue.epoch_is_new().await {
        Ok(true) => {
            if let Err(e) = requeue_unfinished(state).await {
                tracing::error!(error = %e, "could not re-enqueue unfinished jobs");
            }
        }
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "queue unreachable"),
    }
    if let Err(e) = enqueue_outbox(state).await {
        tracing::warn!(error = %e, "could not enqueue recorded jobs from the outbox");
    }
    match state.queue.reclaim_expired().await {
        Ok(0) | Err(_) => {}
        Ok(n) => tracing::warn!(
            jobs = n,
            "took jobs back from nodes that stopped heartbeating"
        ),
    }
    if let Ok(classes) = state.queue.depth_by_class().await {
        state
            .metrics
            .queue_depth
            .set(classes.iter().map(|(_, n)| *n as i64).sum());
        for (class, n) in classes {
            state
                .metrics
                .queue_waiting
                .with_label_values(&[class.as_str()])
                .set(n as i64);
        }
    }
    if let Ok(nodes) = state.nodes.list().await {
        let live: Vec<_> = nodes
            .iter()
            .filter(|n| n.live(state.config.node_live_ms()))
            .collect();
        state.metrics.nodes_live.set(live.len() as i64);
        state
            .metrics
            .node_slots
            .with_label_values(&["busy"])
            .set(live.iter().map(|n| n.busy as i64).sum());
        state
            .metrics
            .node_slots
            .with_label_values(&["total"])
            .set(live.iter().map(|n| n.slots as i64).sum());
    }
}

/// Refresh `kiln_jobs{status,codec}` from the database.
async fn count_jobs(state: &AppState) {
    if let Ok(counts) = state.db.count_by_status().await {
        state.metrics.jobs.reset();
        for (status, codec, n) in counts {
            state
                .metrics
                .jobs
                .with_label_values(&[status.as_str(), codec.as_str()])
                .set(n);
        }
    }
}

/// The queue is new (the embedded default's first start, a fresh Redis, or a Redis that lost
/// its data): every job the database holds as `pending` or `processing` is enqueued again as
/// its next attempt, so an accepted job is never lost with the queue.
pub async fn requeue_unfinished(state: &AppState) -> anyhow::Result<()> {
    let rows = sqlx::query(
        "SELECT id, spec, attempts FROM jobs WHERE status IN ('pending', 'processing') ORDER BY created_at",
    )
    .fetch_all(&state.db.pool)
    .await?;
    if !rows.is_empty() {
        tracing::warn!(
            jobs = rows.len(),
            "the queue is new: re-enqueueing the unfinished jobs the database holds"
        );
    }
    for row in rows {
        let id: String = row.try_get("id")?;
        let attempts: i64 = row.try_get("attempts")?;
        let mut spec: JobSpec = serde_json::from_str(&row.try_get::<String, _>("spec")?)?;
        let next = attempts + 1;
        spec.attempt = next as u32;
        // Queue first: if the database update then fails, the new attempt's events advance
        // the row anyway; the other order could leave a job recorded but never queued.
        state.queue.enqueue(&spec).await?;
        state
            .db
            .mark_requeued(&id, next, "the queue lost its state; queued again")
            .await?;
    }
    Ok(())
}

/// Recorded jobs the queue never got (the submitter crashed after the commit, or the queue
/// refused and the take-back failed): enqueue each, claimed so one replica does it.
pub async fn enqueue_outbox(state: &AppState) -> anyhow::Result<usize> {
    let now = kiln_protocol::now_ms();
    let due = state
        .db
        .claim_unqueued(now, crate::submission::OUTBOX_GRACE_MS, 100)
        .await?;
    for job in &due {
        let mut spec: JobSpec = serde_json::from_str(&job.spec)?;
        spec.attempt = job.attempts as u32;
        state.queue.enqueue(&spec).await?;
        state
            .db
            .mark_enqueued(std::slice::from_ref(&job.id))
            .await?;
        tracing::warn!(job = %job.id, "queued a recorded job the queue did not have (outbox)");
    }
    Ok(due.len())
}

/// Apply one event. Stale attempts and duplicates change nothing (the DB updates are guarded).
pub async fn apply(state: &AppState, e: &NodeEvent) -> anyhow::Result<()> {
    let attempt = e.attempt as i64;
    match &e.kind {
        NodeEventKind::Started => {
            if state
                .db
                .mark_started(&e.job_id, attempt, &e.node_id)
                .await?
            {
                crate::feed::job_changed(state, &e.job_id, "job.started").await;
            }
        }
        NodeEventKind::Progress {
            percent,
            fps,
            eta_s,
            chunks,
        } => {
            let chunks = chunks.and_then(|c| serde_json::to_string(&c).ok());
            let moved = state
                .db
                .record_progress(
                    &e.job_id,
                    attempt,
                    *percent as f64,
                    *fps as f64,
                    eta_s.map(|v| v as f64),
                    chunks.as_deref(),
                )
                .await?;
            if moved {
                crate::feed::job_changed(state, &e.job_id, "job.progress").await;
                progress_webhook(state, &e.job_id, *percent).await?;
            }
        }
        NodeEventKind::Completed {
            output_size,
            width,
            height,
            duration_s,
            report,
            ..
        } => {
            let done = Completion {
                output_size: *output_size as i64,
                width: *width as i64,
                height: *height as i64,
                duration_s: *duration_s,
                report: serde_json::to_string(report).ok(),
                gpu: report.hwaccel.is_some() || report.encoder.contains("nvenc"),
                ttl_ms: state.config.output_ttl_secs as i64 * 1000,
            };
            if state.db.mark_completed(&e.job_id, attempt, &done).await? {
                finished(state, "completed");
                completed(state, &e.job_id).await?;
            }
        }
        NodeEventKind::Failed {
            code,
            message,
            retryable,
        } => {
            if *retryable && e.attempt < state.config.max_attempts {
                retry(state, &e.job_id, attempt, *code, message).await?;
            } else if state
                .db
                .mark_failed(&e.job_id, attempt, *code, message)
                .await?
            {
                finished(state, "failed");
                failed(state, &e.job_id).await?;
            }
        }
        NodeEventKind::Requeued {
            next_attempt,
            reason,
        } => {
            if state
                .db
                .mark_requeued(&e.job_id, *next_attempt as i64, reason)
                .await?
            {
                state.metrics.jobs_requeued.inc();
                crate::feed::job_changed(state, &e.job_id, "job.retrying").await;
                tracing::warn!(job = %e.job_id, attempt = next_attempt, %reason, "job queued again");
            }
        }
        NodeEventKind::DeadLettered { reason } => {
            if state
                .db
                .mark_failed(&e.job_id, attempt, JobErrorCode::DeadLetter, reason)
                .await?
            {
                tracing::error!(job = %e.job_id, %reason, "job dead-lettered");
                finished(state, JobErrorCode::DeadLetter.as_str());
                failed(state, &e.job_id).await?;
            }
        }
    }
    Ok(())
}

/// A job failed for good: refund its credits, tell the feed and its webhook.
async fn failed(state: &AppState, job_id: &str) -> anyhow::Result<()> {
    state.db.refund(job_id).await?;
    if let Some(job) = state.db.get_job_any(job_id).await? {
        crate::feed::publish_job(state, &job, "job.failed").await;
        crate::webhooks::record(state, &job, "job.failed").await?;
    }
    Ok(())
}

/// A job completed: tell the feed, and its webhook unless its output must first be copied to the caller's
/// bucket — then the copy (in the background: a large copy must not hold up the event loop)
/// records the webhook when done.
async fn completed(state: &AppState, job_id: &str) -> anyhow::Result<()> {
    let Some(job) = state.db.get_job_any(job_id).await? else {
        return Ok(());
    };
    crate::feed::publish_job(state, &job, "job.completed").await;
    if let Some(done) = job.completed_at {
        state
            .metrics
            .job_latency
            .with_label_values(&[job.kind.as_str()])
            .observe((done - job.created_at).max(0) as f64 / 1000.0);
    }
    let has_destination = sqlx::query("SELECT destination FROM jobs WHERE id = $1")
        .bind(job_id)
        .fetch_one(&state.db.pool)
        .await?
        .try_get::<Option<String>, _>("destination")?
        .is_some();
    if !has_destination {
        return crate::webhooks::record(state, &job, "job.completed").await;
    }
    tokio::spawn(deliver_due(state.clone()));
    Ok(())
}

/// `job.progress` webhooks (opt-in): at most one per 10 % step.
async fn progress_webhook(state: &AppState, job_id: &str, percent: f32) -> anyhow::Result<()> {
    let step = (percent / 10.0).floor() as i64 * 10;
    if step <= 0 || step >= 100 {
        return Ok(());
    }
    let claimed = sqlx::query(
        "UPDATE jobs SET progress_notified = $1
         WHERE id = $2 AND webhook_progress = 1 AND progress_notified < $1 AND webhook_url IS NOT NULL",
    )
    .bind(step)
    .bind(job_id)
    .execute(&state.db.pool)
    .await?;
    if claimed.rows_affected() == 1 {
        if let Some(job) = state.db.get_job_any(job_id).await? {
            crate::webhooks::record(state, &job, "job.progress").await?;
        }
    }
    Ok(())
}

fn finished(state: &AppState, status: &str) {
    state
        .metrics
        .jobs_finished
        .with_label_values(&[status])
        .inc();
}

/// A retryable failure: queue the next attempt, then record it. A replayed event (after a
/// crash between the two) finds the row already moved and queues it again: a duplicate run is
/// harmless (the output is overwritten, completion is counted once); a lost job would not be.
async fn retry(
    state: &AppState,
    job_id: &str,
    attempt: i64,
    code: JobErrorCode,
    message: &str,
) -> anyhow::Result<()> {
    let row = sqlx::query("SELECT spec, attempts, status FROM jobs WHERE id = $1")
        .bind(job_id)
        .fetch_optional(&state.db.pool)
        .await?;
    let Some(row) = row else { return Ok(()) };
    let attempts: i64 = row.try_get("attempts")?;
    let status: String = row.try_get("status")?;
    let live = status == "pending" || status == "processing";
    if !live || attempts > attempt + 1 || (attempts == attempt + 1 && status != "pending") {
        return Ok(());
    }
    let mut spec: JobSpec = serde_json::from_str(&row.try_get::<String, _>("spec")?)?;
    spec.attempt = (attempt + 1) as u32;
    enqueue(&state.queue, &spec).await?;
    state.db.mark_retry(job_id, attempt, code, message).await?;
    crate::feed::job_changed(state, job_id, "job.retrying").await;
    Ok(())
}

/// Put a job on the queue.
pub async fn enqueue(queue: &Arc<dyn JobQueue>, spec: &JobSpec) -> anyhow::Result<()> {
    queue.enqueue(spec).await?;
    Ok(())
}
