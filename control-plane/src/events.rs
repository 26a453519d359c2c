//! Applies node events to the database: the only way job state moves after submission.

use std::sync::Arc;
use std::time::Duration;

use kiln_protocol::{JobQueue, JobSpec, NodeEvent, NodeEventKind};
use tokio::sync::watch;

use crate::db::jobs::Completion;
use crate::AppState;

/// Consume events until shutdown; also returns expired leases to the queue.
pub async fn run(state: AppState, mut shutdown: watch::Receiver<bool>) {
    let mut last_reclaim = tokio::time::Instant::now();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let batch = tokio::select! {
            r = state.queue.next_events(256, Duration::from_millis(500)) => r,
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
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        if last_reclaim.elapsed() >= Duration::from_secs(2) {
            last_reclaim = tokio::time::Instant::now();
            match state.queue.reclaim_expired().await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(
                    jobs = n,
                    "reclaimed jobs from nodes that stopped heartbeating"
                ),
                Err(e) => tracing::warn!(error = %e, "reclaim failed"),
            }
            if let Ok(d) = state.queue.depth().await {
                state.metrics.queue_depth.set(d as i64);
            }
        }
    }
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
            state
                .db
                .record_progress(
                    &e.job_id,
                    attempt,
                    *percent as f64,
                    *fps as f64,
                    eta_s.map(|v| v as f64),
                )
                .await?;
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
            };
            let first = state.db.mark_completed(&e.job_id, attempt, &done).await?;
            if first {
                state
                    .metrics
                    .jobs_finished
                    .with_label_values(&["completed"])
                    .inc();
            }
        }
        NodeEventKind::Failed {
            code,
            message,
            retryable,
        } => {
            if *retryable && e.attempt < state.config.max_attempts {
                if state
                    .db
                    .mark_retry(&e.job_id, attempt, code.as_str(), message)
                    .await?
                {
                    requeue(state, &e.job_id, e.attempt + 1).await?;
                }
            } else if state
                .db
                .mark_failed(&e.job_id, attempt, code.as_str(), message)
                .await?
            {
                state
                    .metrics
                    .jobs_finished
                    .with_label_values(&["failed"])
                    .inc();
            }
        }
    }
    Ok(())
}

async fn requeue(state: &AppState, job_id: &str, attempt: u32) -> anyhow::Result<()> {
    let spec: String = sqlx::query_scalar("SELECT spec FROM jobs WHERE id = $1")
        .bind(job_id)
        .fetch_one(&state.db.pool)
        .await?;
    let mut spec: JobSpec = serde_json::from_str(&spec)?;
    spec.attempt = attempt;
    enqueue(&state.queue, &spec).await
}

/// Put a job on the queue.
pub async fn enqueue(queue: &Arc<dyn JobQueue>, spec: &JobSpec) -> anyhow::Result<()> {
    queue.enqueue(spec).await?;
    Ok(())
}
