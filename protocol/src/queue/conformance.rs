//! The conformance suite every [`JobQueue`] implementation must pass. Each backend's tests call
//! [`run_all`] with a factory that returns a fresh, empty queue dead-lettering after the given
//! number of attempts.

use std::future::Future;
use std::time::{Duration, Instant};

use super::{EventStream, JobQueue, NodeRegistry};
use crate::{
    HardwarePolicy, JobSpec, NodeEvent, NodeEventKind, NodeStatus, Resolution, Task, VideoCodec,
    VideoParams,
};

/// What the suite tests: one backend that is all three channels.
pub trait Backend: JobQueue + EventStream + NodeRegistry {}
impl<T: JobQueue + EventStream + NodeRegistry> Backend for T {}

fn job_with(id: &str, hardware: HardwarePolicy) -> JobSpec {
    JobSpec {
        id: id.to_string(),
        attempt: 1,
        source_key: format!("sources/{id}"),
        output_key: format!("outputs/{id}.mp4"),
        task: Task::Video(VideoParams {
            resolution: Some(Resolution::Height { height: 360 }),
            hardware,
            ..VideoParams::crf(VideoCodec::H264, 23)
        }),
    }
}

fn job(id: &str) -> JobSpec {
    job_with(id, HardwarePolicy::Auto)
}

fn classes(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

const SHORT: Duration = Duration::from_millis(50);
const LEASE: Duration = Duration::from_secs(30);

/// Run every conformance check, each on a fresh queue from `make`.
pub async fn run_all<Q, F, Fut>(make: F)
where
    Q: Backend,
    F: Fn(u32) -> Fut,
    Fut: Future<Output = Q>,
{
    fifo_and_exactly_once(&make(3).await).await;
    claim_waits_then_times_out(&make(3).await).await;
    claim_wakes_on_enqueue(make(3).await).await;
    classes_route_jobs(&make(3).await).await;
    expired_lease_is_reclaimed_as_next_attempt(&make(3).await).await;
    exhausted_attempts_are_dead_lettered(&make(2).await).await;
    release_hands_back_at_once(&make(3).await).await;
    acked_job_is_gone(&make(3).await).await;
    events_arrive_in_order(&make(3).await).await;
    nodes_register_and_age(&make(3).await).await;
    commands_reach_their_node_once_in_order(&make(3).await).await;
    epoch_is_new_once(&make(3).await).await;
    cancellation_is_seen(&make(3).await).await;
}

async fn cancellation_is_seen(q: &impl Backend) {
    assert!(!q.is_cancelled("x").await.unwrap());
    q.cancel("x").await.unwrap();
    q.cancel("x").await.unwrap();
    assert!(
        q.is_cancelled("x").await.unwrap(),
        "a cancellation is remembered"
    );
    assert!(!q.is_cancelled("y").await.unwrap(), "only for that job");
}

async fn drain_events(q: &impl Backend) -> Vec<NodeEvent> {
    let mut all = Vec::new();
    loop {
        let batch = q.receive(100, SHORT).await.unwrap();
        if batch.is_empty() {
            return all;
        }
        all.extend(batch);
    }
}

async fn fifo_and_exactly_once(q: &impl Backend) {
    let h264 = classes(&["h264"]);
    for id in ["a", "b", "c"] {
        q.enqueue(&job(id)).await.unwrap();
    }
    assert_eq!(q.depth().await.unwrap(), 3);
    let first = q.claim("n1", &h264, SHORT, LEASE).await.unwrap().unwrap();
    assert_eq!(q.depth().await.unwrap(), 2, "a claimed job is not waiting");
    let waiting: Vec<(String, u64)> = q
        .depth_by_class()
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect();
    assert_eq!(waiting, [("h264".to_string(), 2)], "by class");
    let mut seen = vec![first.job.id.clone()];
    q.ack(&first).await.unwrap();
    while let Some(lease) = q.claim("n2", &h264, SHORT, LEASE).await.unwrap() {
        assert_eq!(lease.job.attempt, 1);
        seen.push(lease.job.id.clone());
        q.ack(&lease).await.unwrap();
    }
    assert_eq!(seen, ["a", "b", "c"]);
    assert_eq!(q.depth().await.unwrap(), 0);
}

async fn claim_waits_then_times_out(q: &impl Backend) {
    let started = Instant::now();
    assert!(q
        .claim("n1", &classes(&["h264"]), SHORT, LEASE)
        .await
        .unwrap()
        .is_none());
    assert!(
        started.elapsed() >= SHORT / 2,
        "claim must wait before giving up"
    );
}

async fn claim_wakes_on_enqueue<Q: Backend>(q: Q) {
    let q = std::sync::Arc::new(q);
    let waiter = {
        let q = q.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let lease = q
                .claim("n1", &classes(&["h264"]), Duration::from_secs(5), LEASE)
                .await
                .unwrap();
            (lease, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    q.enqueue(&job("late")).await.unwrap();
    let (lease, waited) = waiter.await.unwrap();
    assert_eq!(lease.expect("woken by the enqueue").job.id, "late");
    assert!(
        waited < Duration::from_secs(2),
        "a waiting claim takes a new job at once, not at the end of its wait ({waited:?})"
    );
}

async fn classes_route_jobs(q: &impl Backend) {
    q.enqueue(&job_with("needs-nvenc", HardwarePolicy::Nvenc))
        .await
        .unwrap();
    q.enqueue(&job("any")).await.unwrap();
    // A CPU-only node never sees the NVENC job.
    let cpu = classes(&["h264", "h264:cpu"]);
    let l = q.claim("cpu", &cpu, SHORT, LEASE).await.unwrap().unwrap();
    assert_eq!(l.job.id, "any");
    q.ack(&l).await.unwrap();
    assert!(q.claim("cpu", &cpu, SHORT, LEASE).await.unwrap().is_none());
    assert_eq!(q.depth().await.unwrap(), 1);
    // A node with NVENC takes it.
    let gpu = classes(&["h264", "h264:nvenc"]);
    let l = q.claim("gpu", &gpu, SHORT, LEASE).await.unwrap().unwrap();
    assert_eq!(l.job.id, "needs-nvenc");
    q.ack(&l).await.unwrap();

    // Over several classes, the oldest job comes first.
    q.enqueue(&job_with("first", HardwarePolicy::Nvenc))
        .await
        .unwrap();
    q.enqueue(&job("second")).await.unwrap();
    let l = q.claim("gpu", &gpu, SHORT, LEASE).await.unwrap().unwrap();
    assert_eq!(l.job.id, "first");
    q.ack(&l).await.unwrap();
    let l = q.claim("gpu", &gpu, SHORT, LEASE).await.unwrap().unwrap();
    assert_eq!(l.job.id, "second");
    q.ack(&l).await.unwrap();
}

async fn expired_lease_is_reclaimed_as_next_attempt(q: &impl Backend) {
    let h264 = classes(&["h264"]);
    q.enqueue(&job("dies")).await.unwrap();
    let lease = q
        .claim("doomed-node/0", &h264, SHORT, Duration::from_millis(200))
        .await
        .unwrap()
        .expect("job");
    // Nothing is reclaimed while the lease is live, and heartbeats keep it live.
    assert_eq!(q.reclaim_expired().await.unwrap(), 0);
    tokio::time::sleep(Duration::from_millis(120)).await;
    q.heartbeat(&lease, Duration::from_millis(200))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(
        q.reclaim_expired().await.unwrap(),
        0,
        "the heartbeat extended it"
    );
    assert!(q.claim("n2", &h264, SHORT, LEASE).await.unwrap().is_none());
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(q.reclaim_expired().await.unwrap(), 1);
    assert_eq!(q.reclaim_expired().await.unwrap(), 0, "taken back once");
    let again = q
        .claim("n2", &h264, SHORT, LEASE)
        .await
        .unwrap()
        .expect("reclaimed job");
    assert_eq!((again.job.id.as_str(), again.job.attempt), ("dies", 2));
    // The dead node's lease is gone: its late ack, heartbeat or release is refused.
    assert!(q.ack(&lease).await.is_err());
    assert!(q.heartbeat(&lease, LEASE).await.is_err());
    assert!(q.release(&lease, "late").await.is_err());
    q.heartbeat(&again, LEASE).await.unwrap();
    q.ack(&again).await.unwrap();
    let events = drain_events(q).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].job_id, "dies");
    assert_eq!(events[0].attempt, 1);
    assert_eq!(events[0].node_id, "doomed-node/0");
    match &events[0].kind {
        NodeEventKind::Requeued {
            next_attempt,
            reason,
        } => {
            assert_eq!(*next_attempt, 2);
            assert!(reason.contains("doomed-node/0"), "{reason}");
        }
        other => panic!("expected Requeued, got {other:?}"),
    }
}

async fn exhausted_attempts_are_dead_lettered(q: &impl Backend) {
    // This queue allows 2 attempts.
    let h264 = classes(&["h264"]);
    q.enqueue(&job("cursed")).await.unwrap();
    for attempt in 1..=2 {
        let l = q
            .claim("n", &h264, SHORT, Duration::from_millis(50))
            .await
            .unwrap()
            .expect("queued");
        assert_eq!(l.job.attempt, attempt);
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(q.reclaim_expired().await.unwrap(), 1);
    }
    assert!(q.claim("n", &h264, SHORT, LEASE).await.unwrap().is_none());
    assert_eq!(q.depth().await.unwrap(), 0);
    let events = drain_events(q).await;
    let kinds: Vec<(u32, &str)> = events
        .iter()
        .map(|e| {
            (
                e.attempt,
                match e.kind {
                    NodeEventKind::Requeued { .. } => "requeued",
                    NodeEventKind::DeadLettered { .. } => "dead",
                    _ => "other",
                },
            )
        })
        .collect();
    assert_eq!(kinds, [(1, "requeued"), (2, "dead")]);
}

async fn release_hands_back_at_once(q: &impl Backend) {
    let h264 = classes(&["h264"]);
    q.enqueue(&job("handed-back")).await.unwrap();
    let l = q
        .claim("draining", &h264, SHORT, LEASE)
        .await
        .unwrap()
        .unwrap();
    q.release(&l, "node draining").await.unwrap();
    assert!(q.ack(&l).await.is_err(), "a released lease is dead");
    let again = q
        .claim("other", &h264, SHORT, LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (again.job.id.as_str(), again.job.attempt),
        ("handed-back", 2)
    );
    q.ack(&again).await.unwrap();
    let events = drain_events(q).await;
    assert!(matches!(
        events.as_slice(),
        [NodeEvent {
            kind: NodeEventKind::Requeued {
                next_attempt: 2,
                ..
            },
            ..
        }]
    ));
}

async fn acked_job_is_gone(q: &impl Backend) {
    let h264 = classes(&["h264"]);
    q.enqueue(&job("x")).await.unwrap();
    let lease = q
        .claim("n1", &h264, SHORT, Duration::from_millis(50))
        .await
        .unwrap()
        .unwrap();
    q.ack(&lease).await.unwrap();
    assert!(q.ack(&lease).await.is_err(), "acked twice");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(q.reclaim_expired().await.unwrap(), 0);
    assert!(q.claim("n1", &h264, SHORT, LEASE).await.unwrap().is_none());
}

async fn events_arrive_in_order(q: &impl Backend) {
    assert!(q.receive(10, SHORT).await.unwrap().is_empty());
    for i in 0..5 {
        q.publish(&NodeEvent {
            job_id: "e".into(),
            attempt: 1,
            node_id: "n1".into(),
            at_ms: i,
            kind: NodeEventKind::Progress {
                percent: i as f32 * 10.0,
                fps: 30.0,
                eta_s: None,
                chunks: None,
            },
        })
        .await
        .unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 5 {
        let batch = q.receive(3, SHORT).await.unwrap();
        assert!(!batch.is_empty() && batch.len() <= 3);
        got.extend(batch);
    }
    let order: Vec<i64> = got.iter().map(|e| e.at_ms).collect();
    assert_eq!(order, [0, 1, 2, 3, 4]);
    assert!(q.receive(10, SHORT).await.unwrap().is_empty());
}

async fn nodes_register_and_age(q: &impl Backend) {
    assert!(q.list().await.unwrap().is_empty());
    let node = NodeStatus {
        node_id: "gpu-1".into(),
        classes: classes(&["h264", "h264:nvenc"]),
        slots: 2,
        busy: 1,
        ..Default::default()
    };
    q.report(&node).await.unwrap();
    q.report(&NodeStatus {
        node_id: "cpu-1".into(),
        ..node.clone()
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let nodes = q.list().await.unwrap();
    let ids: Vec<&str> = nodes.iter().map(|n| n.node_id.as_str()).collect();
    assert_eq!(ids, ["cpu-1", "gpu-1"]);
    assert_eq!(nodes[1].classes, node.classes);
    assert!(
        (50..5_000).contains(&nodes[1].age_ms),
        "age {}",
        nodes[1].age_ms
    );
    q.report(&node).await.unwrap();
    assert!(q.list().await.unwrap()[1].age_ms < nodes[1].age_ms);
    q.remove("cpu-1").await.unwrap();
    assert_eq!(q.list().await.unwrap().len(), 1);
}

async fn commands_reach_their_node_once_in_order(q: &impl Backend) {
    use crate::NodeCommand;
    assert!(q.take_commands("gpu-1").await.unwrap().is_empty());
    let sent = [
        NodeCommand::DisableGpu { gpu: 1 },
        NodeCommand::EnableGpu { gpu: 1 },
    ];
    for c in &sent {
        q.command("gpu-1", c).await.unwrap();
    }
    q.command("gpu-2", &NodeCommand::EnableGpu { gpu: 0 })
        .await
        .unwrap();
    assert_eq!(q.take_commands("gpu-1").await.unwrap(), sent);
    assert!(q.take_commands("gpu-1").await.unwrap().is_empty());
    assert_eq!(
        q.take_commands("gpu-2").await.unwrap(),
        [NodeCommand::EnableGpu { gpu: 0 }]
    );
}

async fn epoch_is_new_once(q: &impl Backend) {
    assert!(q.epoch_is_new().await.unwrap());
    assert!(!q.epoch_is_new().await.unwrap());
}
