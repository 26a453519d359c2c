//! The node's job loop: claim a job, fetch its source, transcode, store the output, report.
//!
//! The loop survives everything a job can do: an error or a panic fails that job only; the
//! lease is heartbeated while the job runs; queue outages are retried with backoff.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use kiln_protocol::{
    now_ms, JobErrorCode, JobQueue, JobSpec, Lease, NodeEvent, NodeEventKind, Store, Task,
};
use tokio::sync::{mpsc, watch};

use crate::media::{self, MediaError};

/// How a node runs its slots.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// This node's id, as it appears in events and leases.
    pub node_id: String,
    /// Jobs run at once.
    pub slots: usize,
    /// How long a lease lasts without a heartbeat; a node silent this long is presumed dead.
    pub lease: Duration,
    /// Where sources are fetched to and outputs are written before upload.
    pub scratch_dir: PathBuf,
}

/// Run `config.slots` job loops until `shutdown` turns true; running jobs finish first.
pub async fn run(
    queue: Arc<dyn JobQueue>,
    store: Arc<dyn Store>,
    config: WorkerConfig,
    shutdown: watch::Receiver<bool>,
) {
    if let Err(e) = tokio::fs::create_dir_all(&config.scratch_dir).await {
        tracing::error!(error = %e, dir = %config.scratch_dir.display(), "cannot create scratch dir");
    }
    let config = Arc::new(config);
    let mut slots = Vec::new();
    for slot in 0..config.slots {
        slots.push(tokio::spawn(slot_loop(
            slot,
            queue.clone(),
            store.clone(),
            config.clone(),
            shutdown.clone(),
        )));
    }
    for s in slots {
        let _ = s.await;
    }
}

async fn slot_loop(
    slot: usize,
    queue: Arc<dyn JobQueue>,
    store: Arc<dyn Store>,
    config: Arc<WorkerConfig>,
    shutdown: watch::Receiver<bool>,
) {
    let consumer = format!("{}/{}", config.node_id, slot);
    let mut backoff = Duration::from_millis(100);
    while !*shutdown.borrow() {
        match queue
            .claim(&consumer, Duration::from_millis(500), config.lease)
            .await
        {
            Ok(Some(lease)) => {
                backoff = Duration::from_millis(100);
                run_leased(&queue, &store, &config, lease).await;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, ?backoff, "queue unavailable; backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

async fn publish(queue: &Arc<dyn JobQueue>, node: &str, job: &JobSpec, kind: NodeEventKind) {
    let event = NodeEvent {
        job_id: job.id.clone(),
        attempt: job.attempt,
        node_id: node.to_string(),
        at_ms: now_ms(),
        kind,
    };
    if let Err(e) = queue.publish(&event).await {
        // Losing a progress event is harmless; losing a final one is covered by the lease: the
        // job is not acked below unless its final event went out.
        tracing::warn!(job = %job.id, error = %e, "could not publish event");
    }
}

/// Run one leased job to its end and ack it.
async fn run_leased(
    queue: &Arc<dyn JobQueue>,
    store: &Arc<dyn Store>,
    config: &WorkerConfig,
    lease: Lease,
) {
    let job = lease.job.clone();
    tracing::info!(job = %job.id, attempt = job.attempt, "job started");
    publish(queue, &config.node_id, &job, NodeEventKind::Started).await;

    // Heartbeat the lease while the job runs.
    let hb = {
        let queue = queue.clone();
        let lease = lease.clone();
        let every = config.lease / 3;
        let lease_for = config.lease;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = queue.heartbeat(&lease, lease_for).await {
                    tracing::warn!(job = %lease.job.id, error = %e, "heartbeat failed");
                }
            }
        })
    };

    let outcome = execute(queue, store, config, &job).await;
    hb.abort();

    let final_event = match outcome {
        Ok(kind) => kind,
        Err((code, message)) => {
            tracing::warn!(job = %job.id, %code, %message, "job failed");
            NodeEventKind::Failed {
                code,
                message,
                retryable: code.retryable(),
            }
        }
    };
    let event = NodeEvent {
        job_id: job.id.clone(),
        attempt: job.attempt,
        node_id: config.node_id.clone(),
        at_ms: now_ms(),
        kind: final_event,
    };
    match queue.publish(&event).await {
        Ok(()) => {
            if let Err(e) = queue.ack(&lease).await {
                tracing::warn!(job = %job.id, error = %e, "ack failed; the job may run again");
            }
        }
        // Not acked: the lease expires and the job is retried, so the result is not lost.
        Err(e) => tracing::error!(job = %job.id, error = %e, "final event not published"),
    }
}

type JobFailure = (JobErrorCode, String);

/// Fetch, transcode, upload. Returns the `Completed` event or the failure.
async fn execute(
    queue: &Arc<dyn JobQueue>,
    store: &Arc<dyn Store>,
    config: &WorkerConfig,
    job: &JobSpec,
) -> Result<NodeEventKind, JobFailure> {
    let Task::Video(params) = &job.task;
    let storage_err = |e: kiln_protocol::StoreError| (JobErrorCode::StorageFailed, e.to_string());

    let scratch_in = config
        .scratch_dir
        .join(format!("{}-{}.src", job.id, job.attempt));
    let scratch_out = config.scratch_dir.join(format!(
        "{}-{}.{}",
        job.id,
        job.attempt,
        params.container.extension()
    ));
    let _cleanup = Cleanup(vec![scratch_in.clone(), scratch_out.clone()]);

    let input = match store.local_path(&job.source_key) {
        Some(p) if tokio::fs::try_exists(&p).await.unwrap_or(false) => p,
        _ => {
            store
                .fetch_to_path(&job.source_key, &scratch_in)
                .await
                .map_err(storage_err)?;
            scratch_in.clone()
        }
    };

    // Progress flows from the blocking encode thread through a channel to the queue.
    let (tx, mut rx) = mpsc::unbounded_channel::<media::Progress>();
    let forwarder = {
        let queue = queue.clone();
        let node = config.node_id.clone();
        let job = job.clone();
        tokio::spawn(async move {
            while let Some(p) = rx.recv().await {
                let kind = NodeEventKind::Progress {
                    percent: p.percent,
                    fps: p.fps,
                    eta_s: p.eta_s,
                };
                publish(&queue, &node, &job, kind).await;
            }
        })
    };

    let cancel = Arc::new(AtomicBool::new(false));
    let result = {
        let params = params.clone();
        let out = scratch_out.clone();
        let cancel = cancel.clone();
        tokio::task::spawn_blocking(move || {
            media::transcode(&input, &out, &params, &cancel, &mut |p| {
                let _ = tx.send(p);
            })
        })
        .await
    };
    let _ = forwarder.await;

    let outcome = match result {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(e)) => return Err(media_failure(e)),
        Err(join) => {
            let what = if join.is_panic() {
                "the transcode panicked"
            } else {
                "the transcode was aborted"
            };
            return Err((JobErrorCode::Internal, what.to_string()));
        }
    };

    let output_size = store
        .put_file(&job.output_key, &scratch_out)
        .await
        .map_err(storage_err)?;
    tracing::info!(job = %job.id, output_size, frames = outcome.frames, "job completed");
    Ok(NodeEventKind::Completed {
        output_key: job.output_key.clone(),
        output_size,
        width: outcome.width,
        height: outcome.height,
        duration_s: outcome.duration_s,
        report: outcome.report,
    })
}

fn media_failure(e: MediaError) -> JobFailure {
    (e.code(), e.to_string())
}

/// Removes scratch files when a job ends, however it ends.
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}
