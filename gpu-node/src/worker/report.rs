//! The node's registry entry: its load every few seconds (at once when draining starts), and
//! leaving the registry once the slots are done.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use kiln_protocol::{NodeCommand, NodeRegistry, NodeStatus};
use tokio::sync::watch;

use super::{Shared, WorkerConfig};

fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Report the node every `report_every` (and at once when draining starts); leave the
/// registry when the slots are done.
pub(super) async fn report_loop(
    nodes: Arc<dyn NodeRegistry>,
    config: Arc<WorkerConfig>,
    shared: Arc<Shared>,
    mut slots_done: watch::Receiver<bool>,
) {
    let mut was_draining = false;
    loop {
        // Operators' commands (a GPU taken out or put back) arrive with the heartbeat.
        match nodes.take_commands(&config.node_id).await {
            Ok(commands) => {
                for c in &commands {
                    match c {
                        NodeCommand::Drain => {
                            if !shared.paused.swap(true, Ordering::SeqCst) {
                                tracing::info!("an operator drained this node: finishing running jobs, taking no new ones");
                            }
                            // Claims already waiting end within their half-second wait; what
                            // they got counts as busy in the report below.
                            let since = tokio::time::Instant::now();
                            while shared.claiming.load(Ordering::SeqCst) > 0
                                && since.elapsed() < Duration::from_secs(2)
                            {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                        NodeCommand::Resume => {
                            if shared.paused.swap(false, Ordering::SeqCst) {
                                tracing::info!("an operator resumed this node: taking jobs again");
                            }
                        }
                        gpu => {
                            config.gpus.command(gpu);
                        }
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "could not read operators' commands"),
        }
        let gpus = config.gpus.clone();
        if !gpus.gpus().is_empty() {
            // NVML reads are quick but blocking; back-offs that ended put GPUs back.
            let _ = tokio::task::spawn_blocking(move || gpus.refresh()).await;
        }
        let draining =
            shared.draining.load(Ordering::SeqCst) || shared.paused.load(Ordering::SeqCst);
        let status = NodeStatus {
            busy: shared.busy.load(Ordering::SeqCst),
            gpus: config.gpus.states(),
            jobs_done: shared.done.load(Ordering::SeqCst),
            draining,
            load1: load1(),
            ..config.status.clone()
        };
        if let Err(e) = nodes.report(&status).await {
            tracing::warn!(error = %e, "could not report to the node registry");
        }
        if shared.draining.load(Ordering::SeqCst) && !was_draining {
            tracing::info!(busy = status.busy, "draining: taking no new jobs");
        }
        was_draining = shared.draining.load(Ordering::SeqCst);
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
    if let Err(e) = nodes.remove(&config.node_id).await {
        tracing::warn!(error = %e, "could not leave the node registry");
    }
}
