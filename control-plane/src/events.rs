//! Applies node events to the database: the only way job state moves after submission. The
//! same loop takes back expired leases, notices a queue that lost its state (a Redis restart
//! without persistence) and enqueues the database's unfinished jobs again, and refreshes the
//! queue and job gauges.

use std::sync::Arc;
use std::time::Duration;

use kiln_protocol::{JobQueue, JobSpec, NodeEvent, NodeEventKind};
use sqlx::Row;
use tokio::sync::watch;

use crate::db::jobs::Completion;
use crate::AppState;

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
            r = state.queue.next_events(256, Duration::from_millis(250)) => r,
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
    match state.queue.reclaim_expired().await {
        Ok(0) | Err(_) => {}
        Ok(n) => tracing::warn!(
            jobs = n,
            "took jobs back from nodes that stopped heartbeating"
        ),
    }
    if let Ok(d) = state.queue.depth().await {
        state.metrics.queue_depth.set(d as i64);
    }
    if let Ok(nodes) = state.queue.nodes().await {
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

/// Apply one event. Stale attempts and duplicates change nothing (the DB updates are guarded).
pub async fn apply(state: &AppState, e: &NodeEvent) -> anyhow::Result<()> {
    let attempt = e.attempt as i64;
    match &e.kind {
        NodeEventKind::Started => {
            state
                .db
                .mark_started(&e.job_id, attempt, &e.node_id)
                .await?;
        }
        NodeEventKind::Progress {
            percent,
            fps,
            eta_s,
        } => {
            let moved = state
                .db
                .record_progress(
                    &e.job_id,
                    attempt,
                    *percent as f64,
                    *fps as f64,
                    eta_s.map(|v| v as f64),
                )
                .await?;
            if moved {
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
                retry(state, &e.job_id, attempt, code.as_str(), message).await?;
            } else if state
                .db
                .mark_failed(&e.job_id, attempt, code.as_str(), message)
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
                tracing::warn!(job = %e.job_id, attempt = next_attempt, %reason, "job queued again");
            }
        }
        NodeEventKind::DeadLettered { reason } => {
            if state
                .db
                .mark_failed(&e.job_id, attempt, "dead_letter", reason)
                .await?
            {
                tracing::error!(job = %e.job_id, %reason, "job dead-lettered");
                finished(state, "dead_letter");
                failed(state, &e.job_id).await?;
            }
        }
    }
    Ok(())
}

/// A job failed for good: refund its credits, tell its webhook.
async fn failed(state: &AppState, job_id: &str) -> anyhow::Result<()> {
    state.db.refund(job_id).await?;
    if let Some(job) = state.db.get_job_any(job_id).await? {
        crate::webhooks::record(state, &job, "job.failed").await?;
    }
    Ok(())
}

/// A job completed: tell its webhook, unless its output must first be copied to the caller's
/// bucket — then the copy (in the background: a large copy must not hold up the event loop)
/// records the webhook when done.
async fn completed(state: &AppState, job_id: &str) -> anyhow::Result<()> {
    let Some(job) = state.db.get_job_any(job_id).await? else {
        return Ok(());
    };
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

/// How long a copy to a caller's bucket may run before another replica takes it up again.
const DESTINATION_LOCK_MS: i64 = 30 * 60 * 1000;

/// Copy every completed output still owed to a caller's bucket (each claimed with a lock, so
/// one replica copies it, and a copy cut off by a crash is done again once the lock lapses),
/// then record its `job.completed` webhook.
pub async fn deliver_due(state: AppState) {
    let now = kiln_protocol::now_ms();
    let rows = match sqlx::query(
        "SELECT id, destination FROM jobs
         WHERE status = 'completed' AND destination IS NOT NULL AND destination_status IS NULL
           AND (destination_locked_until IS NULL OR destination_locked_until < $1)
         LIMIT 16",
    )
    .bind(now)
    .fetch_all(&state.db.pool)
    .await
    {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(error = %e, "could not read owed deliveries");
            return;
        }
    };
    for r in rows {
        let (Ok(id), Ok(dest)) = (
            r.try_get::<String, _>("id"),
            r.try_get::<String, _>("destination"),
        ) else {
            continue;
        };
        let claimed = sqlx::query(
            "UPDATE jobs SET destination_locked_until = $1
             WHERE id = $2 AND destination_status IS NULL
               AND (destination_locked_until IS NULL OR destination_locked_until < $3)",
        )
        .bind(now + DESTINATION_LOCK_MS)
        .bind(&id)
        .bind(now)
        .execute(&state.db.pool)
        .await;
        if !matches!(claimed, Ok(r) if r.rows_affected() == 1) {
            continue;
        }
        let state = state.clone();
        tokio::spawn(async move {
            let Ok(Some(job)) = state.db.get_job_any(&id).await else {
                return;
            };
            let outcome = match serde_json::from_str::<crate::sources::S3Location>(&dest) {
                Ok(loc) => {
                    let (ext, _) = crate::api::jobs::output_format(&job);
                    let key = crate::sources::destination_key(&loc, &job.id, &ext);
                    crate::sources::deliver(&state, &loc, &job.output_key, &key).await
                }
                Err(e) => Err(format!("unreadable destination: {e}")),
            };
            let (status, error) = match &outcome {
                Ok(_) => ("delivered", None),
                Err(e) => {
                    tracing::warn!(job = %job.id, error = %e, "could not copy the output to the destination bucket");
                    ("failed", Some(e.clone()))
                }
            };
            // The caller's credentials are kept only until the copy is done.
            let _ = sqlx::query(
                "UPDATE jobs SET destination_status = $1, destination_error = $2, destination = NULL
                 WHERE id = $3",
            )
            .bind(status)
            .bind(error)
            .bind(&job.id)
            .execute(&state.db.pool)
            .await;
            if let Ok(Some(job)) = state.db.get_job_any(&job.id).await {
                if let Err(e) = crate::webhooks::record(&state, &job, "job.completed").await {
                    tracing::warn!(job = %job.id, error = %e, "could not record the webhook");
                }
            }
        });
    }
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

/// Delete what has expired: outputs past `expires_at` (then 410), sources no live job still
/// needs, and unused uploads past their time.
pub async fn sweep(state: &AppState) -> anyhow::Result<usize> {
    let now = kiln_protocol::now_ms();
    let mut n = 0;
    let rows = sqlx::query(
        "SELECT id, output_key, source_key FROM jobs
         WHERE expires_at IS NOT NULL AND expires_at <= $1 AND swept_at IS NULL
           AND status IN ('completed', 'failed', 'cancelled')
         ORDER BY expires_at LIMIT 200",
    )
    .bind(now)
    .fetch_all(&state.db.pool)
    .await?;
    for r in rows {
        let id: String = r.try_get("id")?;
        let output: String = r.try_get("output_key")?;
        let source: String = r.try_get("source_key")?;
        match state.store.delete(&output).await {
            Ok(()) | Err(kiln_protocol::StoreError::NotFound(_)) => {}
            Err(e) => {
                tracing::warn!(job = %id, error = %e, "could not delete an expired output");
                continue;
            }
        }
        // A source shared by a batch stays while any job still needs it; uploads are swept
        // on their own schedule.
        if !source.starts_with("uploads/") && !source_in_use(state, &source, &id).await? {
            let _ = state.store.delete(&source).await;
        }
        sqlx::query("UPDATE jobs SET swept_at = $1, destination = NULL WHERE id = $2")
            .bind(now)
            .bind(&id)
            .execute(&state.db.pool)
            .await?;
        n += 1;
    }
    let uploads = sqlx::query(
        "SELECT id, object_key FROM uploads WHERE expires_at <= $1 AND swept_at IS NULL LIMIT 200",
    )
    .bind(now)
    .fetch_all(&state.db.pool)
    .await?;
    for r in uploads {
        let id: String = r.try_get("id")?;
        let key: String = r.try_get("object_key")?;
        if source_in_use(state, &key, "").await? {
            continue;
        }
        let _ = state.store.delete(&key).await;
        sqlx::query("UPDATE uploads SET swept_at = $1 WHERE id = $2")
            .bind(now)
            .bind(&id)
            .execute(&state.db.pool)
            .await?;
        n += 1;
    }
    if n > 0 {
        state.metrics.swept.inc_by(n as u64);
        tracing::info!(objects = n, "retention sweep deleted expired data");
    }
    Ok(n)
}

/// Whether a job other than `except` that is still running or waiting reads `source`.
async fn source_in_use(state: &AppState, source: &str, except: &str) -> anyhow::Result<bool> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS n FROM jobs WHERE source_key = $1 AND id <> $2
           AND status IN ('pending', 'processing')",
    )
    .bind(source)
    .bind(except)
    .fetch_one(&state.db.pool)
    .await?;
    Ok(row.try_get::<i64, _>("n")? > 0)
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
    code: &str,
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
    Ok(())
}

/// Put a job on the queue.
pub async fn enqueue(queue: &Arc<dyn JobQueue>, spec: &JobSpec) -> anyhow::Result<()> {
    queue.enqueue(spec).await?;
    Ok(())
}
