//! The node's job loop: claim a job, fetch its source, transcode, store the output, report.
//! Its parts: [`lease`] runs one claimed job under its lease (heartbeat, cancellation, the
//! final event, ack or hand-back), [`execute`] does the work, [`report`] keeps the node's
//! registry entry current.
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
use std::time::Duration;

use kiln_protocol::{Broker, HardwarePolicy, JobSpec, NodeStatus, Store, Task, VideoCodec};
use tokio::sync::watch;

use crate::gpu::ResizeBackend;
use crate::host::{Engine, HostGpus};
use crate::metrics::NodeMetrics;

mod chunk;
mod execute;
mod lease;
mod report;
mod title;

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
    /// The host's GPUs: jobs of `:nvenc` classes are claimed only while one of them has an
    /// NVENC session free (so slots beyond the encode sessions take CPU work instead), and
    /// each job's GPU work is placed on the least loaded one.
    pub gpus: Arc<HostGpus>,
    /// What the node reports about itself; `busy`, `jobs_done` and `draining` are kept current.
    pub status: NodeStatus,
    /// How often the node reports to the registry.
    pub report_every: Duration,
    /// How long running jobs may go on after shutdown begins before they are handed back.
    pub drain_timeout: Duration,
    /// Where job outcomes and load are counted.
    pub metrics: Option<NodeMetrics>,
    /// Video jobs whose source is longer than this (s) go in chunks unless they say otherwise
    /// (0: only when they ask).
    pub chunk_auto_secs: f64,
    /// The largest source this node takes, and how long a job may run.
    pub limits: kiln_protocol::limits::SourceLimits,
}

/// Why a running job was stopped from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum StopReason {
    /// Not stopped: the job runs.
    Run = 0,
    /// The node is draining and its time is up: hand the job back to the queue.
    HandBack = 1,
    /// The lease was taken back (this node was presumed dead): drop the work quietly.
    LeaseLost = 2,
    /// The job was cancelled through the API: stop, remove what was written, ack.
    Cancelled = 3,
    /// The job ran past its wall-clock budget (`kiln_protocol::limits`): fail it for good.
    OverBudget = 4,
}

/// A running job's stop flag (read by the encode loop), why it was raised, and the job's
/// deadline once its source is known.
#[derive(Default)]
struct Stop {
    flag: Arc<AtomicBool>,
    why: AtomicU8,
    deadline: Mutex<Option<(std::time::Instant, Duration)>>,
}

impl Stop {
    /// Stop the job for `why`.
    fn raise(&self, why: StopReason) {
        self.why.store(why as u8, Ordering::SeqCst);
        self.flag.store(true, Ordering::SeqCst);
    }

    fn reason(&self) -> StopReason {
        match self.why.load(Ordering::SeqCst) {
            1 => StopReason::HandBack,
            2 => StopReason::LeaseLost,
            3 => StopReason::Cancelled,
            4 => StopReason::OverBudget,
            _ => StopReason::Run,
        }
    }

    /// Give the job `budget` from `started` (replacing an earlier one).
    fn set_budget(&self, started: std::time::Instant, budget: Duration) {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner()) = Some((started, budget));
    }

    /// The budget the job has run past, if it has.
    fn overrun(&self) -> Option<Duration> {
        let d = *self.deadline.lock().unwrap_or_else(|e| e.into_inner());
        d.filter(|(started, budget)| started.elapsed() > *budget)
            .map(|(_, budget)| budget)
    }
}

struct Shared {
    busy: AtomicU32,
    done: AtomicU64,
    draining: AtomicBool,
    /// An operator drained the node over the API: no new jobs until resumed (the process
    /// stays up, unlike `draining`).
    paused: AtomicBool,
    /// Slots inside a claim now (a claim waits up to half a second for a job): a drain is
    /// reported only once none is, so `drained` means no job can still arrive.
    claiming: AtomicU32,
    /// The stop of every running job, by lease token.
    running: Mutex<HashMap<String, Arc<Stop>>>,
}

impl Shared {
    fn stop_all(&self, why: StopReason) {
        for stop in self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            stop.raise(why);
        }
    }
}

/// Run `config.slots` job loops until `shutdown` turns true, then drain; returns when every
/// slot has stopped and the node has left the registry.
pub async fn run(
    broker: Broker,
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
    crate::media::bound_decoders(
        kiln_protocol::limits::decoder_threads(config.slots),
        config.limits.max_pixels(),
    );
    let config = Arc::new(config);
    let shared = Arc::new(Shared {
        busy: AtomicU32::new(0),
        done: AtomicU64::new(0),
        draining: AtomicBool::new(false),
        paused: AtomicBool::new(false),
        claiming: AtomicU32::new(0),
        running: Mutex::new(HashMap::new()),
    });
    let (slots_done_tx, slots_done_rx) = watch::channel(false);
    let reporter = tokio::spawn(report::report_loop(
        broker.nodes.clone(),
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
            shared.stop_all(StopReason::HandBack);
        })
    };
    let mut slots = Vec::new();
    for slot in 0..config.slots {
        slots.push(tokio::spawn(slot_loop(
            slot,
            broker.clone(),
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

async fn slot_loop(
    slot: usize,
    broker: Broker,
    store: Arc<dyn Store>,
    config: Arc<WorkerConfig>,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) {
    let consumer = format!("{}/{}", config.node_id, slot);
    let mut backoff = Duration::from_millis(100);
    while !*shutdown.borrow() {
        if shared.paused.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        }
        // Ask for NVENC work only while a healthy GPU has an NVENC session free (the job takes
        // one when it is placed, see `on_gpu`).
        let classes = claimable(&config.classes, config.gpus.nvenc_free());
        shared.claiming.fetch_add(1, Ordering::SeqCst);
        // Checked again now that the claim is counted: a drain either sees this claim or
        // this slot sees the drain (both orderings are SeqCst).
        if shared.paused.load(Ordering::SeqCst) {
            shared.claiming.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        let claimed = broker
            .queue
            .claim(
                &consumer,
                &classes,
                Duration::from_millis(500),
                config.lease,
            )
            .await;
        if let Ok(Some(_)) = &claimed {
            // Busy before it stops claiming, so a drain never sees a slot as neither.
            shared.busy.fetch_add(1, Ordering::SeqCst);
        }
        shared.claiming.fetch_sub(1, Ordering::SeqCst);
        match claimed {
            Ok(Some(lease)) => {
                backoff = Duration::from_millis(100);
                if let Some(m) = &config.metrics {
                    m.slots_busy.inc();
                }
                lease::run_leased(&broker, &store, &config, &shared, lease).await;
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

/// What `job` needs of the node's GPUs: NVDEC for a video job that may use the GPU (where a
/// GPU decodes), an NVENC session where its codec has one, the shader for an image.
fn needs(job: &JobSpec, gpus: &HostGpus) -> Vec<Engine> {
    let video = |hardware: HardwarePolicy, codec: VideoCodec| {
        let mut needs = vec![];
        if hardware != HardwarePolicy::Cpu {
            if gpus.has_decode() {
                needs.push(Engine::Decode);
            }
            if gpus.has_nvenc() && codec.nvenc_encoder().is_some() {
                needs.push(Engine::Encode);
            }
        }
        needs
    };
    match &job.task {
        Task::Video(p) => video(p.hardware, p.codec),
        Task::Ladder(p) => video(p.hardware, p.codec),
        Task::Chunk(c) => video(c.params.hardware, c.params.codec),
        Task::Image(_)
            if gpus.has_image() && crate::gpu::choice().backend == ResizeBackend::Wgpu =>
        {
            vec![Engine::Image]
        }
        Task::Image(_) | Task::Thumbnails(_) | Task::Storyboard(_) => vec![],
    }
}

/// Run `work` on a blocking thread with `job` placed on the node's GPUs; its GPU, NVENC session
/// and job count are held until `work` ends.
async fn on_gpu<R: Send + 'static>(
    config: &WorkerConfig,
    job: &JobSpec,
    work: impl FnOnce() -> R + Send + 'static,
) -> Result<R, tokio::task::JoinError> {
    let placed = config.gpus.place_job(&needs(job, &config.gpus));
    let placement = placed.placement();
    if let Some(gpu) = placement.gpu {
        tracing::info!(job = %job.id, gpu, nvenc = placement.nvenc, "placed on a GPU");
    }
    drop(placed);
    tokio::task::spawn_blocking(move || crate::host::scope::with(Some(placement), work)).await
}

fn codec_label(job: &JobSpec) -> &'static str {
    match &job.task {
        Task::Video(p) => p.codec.as_str(),
        Task::Image(_) => "image",
        Task::Ladder(p) => p.codec.as_str(),
        Task::Thumbnails(_) | Task::Storyboard(_) => "stills",
        Task::Chunk(c) => c.params.codec.as_str(),
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
