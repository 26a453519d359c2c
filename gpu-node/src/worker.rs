//! The node's job loop: claim a job, fetch its source, transcode, store the output, report.
//!
//! The loop survives everything a job can do: an error or a panic fails that job only; the
//! lease is heartbeated while the job runs; queue outages are retried with backoff. The same
//! loop is the embedded default's local node and a fleet node's: it registers the node, reports
//! its load every few seconds, and on shutdown drains — takes no new jobs, lets running ones
//! finish for up to `drain_timeout`, then hands the rest back to the queue.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_protocol::{
    now_ms, JobErrorCode, JobQueue, JobSpec, Lease, NodeEvent, NodeEventKind, NodeStatus,
    QueueError, Store, Task,
};
use tokio::sync::{mpsc, watch};

use crate::media::{self, MediaError};
use crate::metrics::NodeMetrics;

/// How a node runs its slots.
#[derive(Clone)]
pub struct WorkerConfig {
    /// This node's id, as it appears in events, leases and the registry.
    pub node_id: String,
    /// Jobs run at once.
    pub slots: usize,
    /// How long a lease lasts without a heartbeat; a node silent this long is presumed dead.
    pub lease: Duration,
    /// Where sources are fetched to and outputs are written before upload.
    pub scratch_dir: PathBuf,
    /// The queue classes this node takes (from its probed capabilities).
    pub classes: Vec<String>,
    /// NVENC encodes at once: jobs of `:nvenc` classes are claimed only while one of these is
    /// free, so slots beyond the GPU's encode sessions take CPU work instead.
    pub nvenc_sessions: usize,
    /// What the node reports about itself; `busy`, `jobs_done` and `draining` are kept current.
    pub status: NodeStatus,
    /// How often the node reports to the registry.
    pub report_every: Duration,
    /// How long running jobs may go on after shutdown begins before they are handed back.
    pub drain_timeout: Duration,
    /// Where job outcomes and load are counted.
    pub metrics: Option<NodeMetrics>,
}

/// Why a running job was stopped from outside.
const RUN: u8 = 0;
/// The node is draining and its time is up: hand the job back to the queue.
const HAND_BACK: u8 = 1;
/// The lease was taken back (this node was presumed dead): drop the work quietly.
const LEASE_LOST: u8 = 2;
/// The job was cancelled through the API: stop, remove what was written, ack.
const CANCELLED: u8 = 3;

/// How often a running job checks whether it was cancelled.
const CANCEL_POLL: Duration = Duration::from_millis(500);

struct Running {
    cancel: Arc<AtomicBool>,
    why: Arc<AtomicU8>,
}

struct Shared {
    busy: AtomicU32,
    nvenc: Arc<tokio::sync::Semaphore>,
    done: AtomicU64,
    draining: AtomicBool,
    running: Mutex<HashMap<String, Running>>,
}

impl Shared {
    fn stop_all(&self, why: u8) {
        for r in self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            r.why.store(why, Ordering::SeqCst);
            r.cancel.store(true, Ordering::SeqCst);
        }
    }
}

/// Run `config.slots` job loops until `shutdown` turns true, then drain; returns when every
/// slot has stopped and the node has left the registry.
pub async fn run(
    queue: Arc<dyn JobQueue>,
    store: Arc<dyn Store>,
    config: WorkerConfig,
    shutdown: watch::Receiver<bool>,
) {
    if let Err(e) = tokio::fs::create_dir_all(&config.scratch_dir).await {
        tracing::error!(error = %e, dir = %config.scratch_dir.display(), "cannot create scratch dir");
    }
    if let Some(m) = &config.metrics {
        m.slots_total.set(config.slots as i64);
    }
    let config = Arc::new(config);
    let shared = Arc::new(Shared {
        busy: AtomicU32::new(0),
        nvenc: Arc::new(tokio::sync::Semaphore::new(config.nvenc_sessions)),
        done: AtomicU64::new(0),
        draining: AtomicBool::new(false),
        running: Mutex::new(HashMap::new()),
    });
    let (slots_done_tx, slots_done_rx) = watch::channel(false);
    let reporter = tokio::spawn(report_loop(
        queue.clone(),
        config.clone(),
        shared.clone(),
        slots_done_rx,
    ));
    let drain_timer = {
        let shared = shared.clone();
        let mut shutdown = shutdown.clone();
        let timeout = config.drain_timeout;
        tokio::spawn(async move {
            let _ = shutdown.wait_for(|v| *v).await;
            shared.draining.store(true, Ordering::SeqCst);
            tokio::time::sleep(timeout).await;
            shared.stop_all(HAND_BACK);
        })
    };
    let mut slots = Vec::new();
    for slot in 0..config.slots {
        slots.push(tokio::spawn(slot_loop(
            slot,
            queue.clone(),
            store.clone(),
            config.clone(),
            shared.clone(),
            shutdown.clone(),
        )));
    }
    for s in slots {
        let _ = s.await;
    }
    drain_timer.abort();
    let _ = slots_done_tx.send(true);
    let _ = reporter.await;
}

fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Report the node every `report_every` (and at once when draining starts); leave the
/// registry when the slots are done.
async fn report_loop(
    queue: Arc<dyn JobQueue>,
    config: Arc<WorkerConfig>,
    shared: Arc<Shared>,
    mut slots_done: watch::Receiver<bool>,
) {
    let mut was_draining = false;
    loop {
        let draining = shared.draining.load(Ordering::SeqCst);
        let status = NodeStatus {
            busy: shared.busy.load(Ordering::SeqCst),
            jobs_done: shared.done.load(Ordering::SeqCst),
            draining,
            load1: load1(),
            ..config.status.clone()
        };
        if let Err(e) = queue.report_node(&status).await {
            tracing::warn!(error = %e, "could not report to the node registry");
        }
        if draining && !was_draining {
            tracing::info!(busy = status.busy, "draining: taking no new jobs");
        }
        was_draining = draining;
        let tick = if draining {
            Duration::from_millis(500)
        } else {
            config.report_every
        };
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = slots_done.wait_for(|v| *v) => break,
        }
    }
    if let Err(e) = queue.remove_node(&config.node_id).await {
        tracing::warn!(error = %e, "could not leave the node registry");
    }
}

async fn slot_loop(
    slot: usize,
    queue: Arc<dyn JobQueue>,
    store: Arc<dyn Store>,
    config: Arc<WorkerConfig>,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) {
    let consumer = format!("{}/{}", config.node_id, slot);
    let mut backoff = Duration::from_millis(100);
    while !*shutdown.borrow() {
        // Ask for NVENC work only while an NVENC session is free; the permit is held for the
        // job's run if the job is one.
        let permit = shared.nvenc.clone().try_acquire_owned().ok();
        let classes = claimable(&config.classes, permit.is_some());
        match queue
            .claim(
                &consumer,
                &classes,
                Duration::from_millis(500),
                config.lease,
            )
            .await
        {
            Ok(Some(lease)) => {
                let _permit = permit.filter(|_| is_nvenc_class(&lease.job.class()));
                backoff = Duration::from_millis(100);
                shared.busy.fetch_add(1, Ordering::SeqCst);
                if let Some(m) = &config.metrics {
                    m.slots_busy.inc();
                }
                run_leased(&queue, &store, &config, &shared, lease).await;
                shared.busy.fetch_sub(1, Ordering::SeqCst);
                shared.done.fetch_add(1, Ordering::SeqCst);
                if let Some(m) = &config.metrics {
                    m.slots_busy.dec();
                }
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

fn is_nvenc_class(class: &str) -> bool {
    class.ends_with(":nvenc")
}

/// The classes a slot asks for: all of the node's, or all but the NVENC-only ones when every
/// NVENC session is taken.
fn claimable(classes: &[String], nvenc_free: bool) -> Vec<String> {
    classes
        .iter()
        .filter(|c| nvenc_free || !is_nvenc_class(c))
        .cloned()
        .collect()
}

fn event(node: &str, job: &JobSpec, kind: NodeEventKind) -> NodeEvent {
    NodeEvent {
        job_id: job.id.clone(),
        attempt: job.attempt,
        node_id: node.to_string(),
        at_ms: now_ms(),
        kind,
    }
}

async fn publish(queue: &Arc<dyn JobQueue>, node: &str, job: &JobSpec, kind: NodeEventKind) {
    if let Err(e) = queue.publish(&event(node, job, kind)).await {
        // Losing a progress event is harmless; final events are retried (`publish_final`).
        tracing::warn!(job = %job.id, error = %e, "could not publish event");
    }
}

/// Publish a job's final event, retrying through a queue outage for a few minutes. Returns
/// whether it went out; if not, the lease expires and the job runs again, so nothing is lost.
async fn publish_final(queue: &Arc<dyn JobQueue>, e: &NodeEvent, why: &AtomicU8) -> bool {
    let mut backoff = Duration::from_millis(200);
    let give_up = Instant::now() + Duration::from_secs(240);
    loop {
        match queue.publish(e).await {
            Ok(()) => return true,
            Err(err) if Instant::now() < give_up && why.load(Ordering::SeqCst) != LEASE_LOST => {
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

fn codec_label(job: &JobSpec) -> &'static str {
    match &job.task {
        Task::Video(p) => p.codec.as_str(),
        Task::Image(_) => "image",
    }
}

async fn ack_quietly(queue: &Arc<dyn JobQueue>, lease: &Lease) {
    if let Err(e) = queue.ack(lease).await {
        tracing::warn!(job = %lease.job.id, error = %e, "ack failed");
    }
}

/// Run one leased job to its end, then ack it (or hand it back, or drop it if the lease was
/// taken away).
async fn run_leased(
    queue: &Arc<dyn JobQueue>,
    store: &Arc<dyn Store>,
    config: &WorkerConfig,
    shared: &Shared,
    lease: Lease,
) {
    let job = lease.job.clone();
    let started = Instant::now();
    if queue.is_cancelled(&job.id).await.unwrap_or(false) {
        tracing::info!(job = %job.id, "claimed a cancelled job; dropping it");
        ack_quietly(queue, &lease).await;
        return;
    }
    tracing::info!(job = %job.id, attempt = job.attempt, "job started");
    let cancel = Arc::new(AtomicBool::new(false));
    let why = Arc::new(AtomicU8::new(RUN));
    shared
        .running
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(
            lease.token.clone(),
            Running {
                cancel: cancel.clone(),
                why: why.clone(),
            },
        );
    publish(queue, &config.node_id, &job, NodeEventKind::Started).await;

    // Heartbeat the lease while the job runs; a lease taken back, or a cancellation through
    // the API, stops the work.
    let hb = {
        let queue = queue.clone();
        let lease = lease.clone();
        let every = config.lease / 3;
        let lease_for = config.lease;
        let (cancel, why) = (cancel.clone(), why.clone());
        tokio::spawn(async move {
            let mut last_beat = Instant::now();
            loop {
                tokio::time::sleep(CANCEL_POLL.min(every)).await;
                if queue.is_cancelled(&lease.job.id).await.unwrap_or(false) {
                    tracing::info!(job = %lease.job.id, "cancelled; stopping");
                    why.store(CANCELLED, Ordering::SeqCst);
                    cancel.store(true, Ordering::SeqCst);
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
                        why.store(LEASE_LOST, Ordering::SeqCst);
                        cancel.store(true, Ordering::SeqCst);
                        return;
                    }
                    Err(e) => tracing::warn!(job = %lease.job.id, error = %e, "heartbeat failed"),
                }
            }
        })
    };

    let outcome = execute(queue, store, config, &job, &cancel).await;
    hb.abort();
    shared
        .running
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&lease.token);

    let stopped = why.load(Ordering::SeqCst);
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
        Err(_) if stopped == HAND_BACK => {
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
        Err(_) if stopped == LEASE_LOST => {
            label("lost");
            return;
        }
        Err(_) if stopped == CANCELLED => {
            label("cancelled");
            ack_quietly(queue, &lease).await;
            return;
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
    if publish_final(queue, &event(&config.node_id, &job, final_kind), &why).await {
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

type JobFailure = (JobErrorCode, String);

/// Fetch, transcode, upload. Returns the `Completed` event or the failure.
async fn execute(
    queue: &Arc<dyn JobQueue>,
    store: &Arc<dyn Store>,
    config: &WorkerConfig,
    job: &JobSpec,
    cancel: &Arc<AtomicBool>,
) -> Result<NodeEventKind, JobFailure> {
    let params = match &job.task {
        Task::Video(p) => p,
        Task::Image(p) => return execute_image(store, job, p).await,
    };
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
        let metrics = config.metrics.clone();
        tokio::spawn(async move {
            while let Some(p) = rx.recv().await {
                if let Some(m) = &metrics {
                    if p.fps > 0.0 {
                        m.encode_fps
                            .with_label_values(&[codec_label(&job)])
                            .observe(p.fps as f64);
                    }
                }
                let kind = NodeEventKind::Progress {
                    percent: p.percent,
                    fps: p.fps,
                    eta_s: p.eta_s,
                };
                publish(&queue, &node, &job, kind).await;
            }
        })
    };

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

/// Largest image source a node reads into memory.
const MAX_IMAGE_SOURCE: u64 = 256 << 20;

/// Convert an image: read the source, convert on the GPU or CPU, store the result.
async fn execute_image(
    store: &Arc<dyn Store>,
    job: &JobSpec,
    p: &kiln_protocol::ImageParams,
) -> Result<NodeEventKind, JobFailure> {
    use crate::imaging::{self, ImagingError};
    use tokio::io::AsyncReadExt;
    let storage_err = |e: kiln_protocol::StoreError| (JobErrorCode::StorageFailed, e.to_string());
    let params = imaging::params::from_fields(&p.fields, imaging::ConvertParams::default())
        .map_err(|e| (JobErrorCode::InvalidSettings, e))?;
    let (mut reader, size) = store.open(&job.source_key).await.map_err(storage_err)?;
    if size > MAX_IMAGE_SOURCE {
        return Err((
            JobErrorCode::InvalidSettings,
            format!("images are limited to {MAX_IMAGE_SOURCE} bytes"),
        ));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    reader
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| storage_err(e.into()))?;
    let out = tokio::task::spawn_blocking(move || imaging::convert(&bytes, &params))
        .await
        .map_err(|_| {
            (
                JobErrorCode::Internal,
                "the conversion panicked".to_string(),
            )
        })?
        .map_err(|e| {
            let code = match e {
                ImagingError::UnsupportedFormat | ImagingError::Corrupt(_) => {
                    JobErrorCode::DecodeFailed
                }
                ImagingError::TooManyPixels { .. } | ImagingError::TooManyFrames { .. } => {
                    JobErrorCode::InvalidSettings
                }
                ImagingError::Encode(_) | ImagingError::Resize(_) => JobErrorCode::EncodeFailed,
            };
            (code, e.to_string())
        })?;
    let output_size = store
        .put_stream(
            &job.output_key,
            &mut std::io::Cursor::new(&out.bytes),
            u64::MAX,
        )
        .await
        .map_err(storage_err)?;
    Ok(NodeEventKind::Completed {
        output_key: job.output_key.clone(),
        output_size,
        width: out.width,
        height: out.height,
        duration_s: 0.0,
        report: kiln_protocol::EncodeReport {
            encoder: out.format.as_str().to_string(),
            decoder: "image".into(),
            // `wgpu` only when the shader ran on a real GPU (not lavapipe, the CPU driver):
            // usage counts GPU seconds by it.
            hwaccel: out
                .resized_on
                .filter(|b| *b == crate::gpu::ResizeBackend::Wgpu)
                .filter(|_| {
                    crate::gpu::choice()
                        .adapter
                        .as_ref()
                        .is_some_and(|a| a.device_type != "cpu")
                })
                .map(|b| b.as_str().to_string()),
            passes: 1,
            audio: "none".into(),
            ..Default::default()
        },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvenc_classes_only_with_a_free_session() {
        let classes: Vec<String> = ["h264", "h264:cpu", "h264:nvenc", "h265:nvenc"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(claimable(&classes, true), classes);
        assert_eq!(claimable(&classes, false), ["h264", "h264:cpu"]);
    }
}
