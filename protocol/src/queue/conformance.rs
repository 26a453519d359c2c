//! The conformance suite every [`JobQueue`] implementation must pass. Each backend's tests call
//! [`run_all`] with a factory that returns a fresh, empty queue.

use std::future::Future;
use std::time::Duration;

use super::JobQueue;
use crate::{JobSpec, NodeEvent, NodeEventKind, Resolution, Task, VideoCodec, VideoParams};

fn job(id: &str) -> JobSpec {
    JobSpec {
        id: id.to_string(),
        attempt: 1,
        source_key: format!("sources/{id}"),
        output_key: format!("outputs/{id}.mp4"),
        task: Task::Video(VideoParams {
            resolution: Some(Resolution::Height { height: 360 }),
            ..VideoParams::crf(VideoCodec::H264, 23)
        }),
    }
}

const SHORT: Duration = Duration::from_millis(50);
const LEASE: Duration = Duration::from_secs(30);

/// Run every conformance check, each on a fresh queue from `make`.
pub async fn run_all<Q, F, Fut>(make: F)
where
    Q: JobQueue,
    F: Fn() -> Fut,
    Fut: Future<Output = Q>,
{
    fifo_and_exactly_once(&make().await).await;
    claim_waits_then_times_out(&make().await).await;
    expired_lease_is_reclaimed(&make().await).await;
    acked_job_is_gone(&make().await).await;
    events_arrive_in_order(&make().await).await;
}

async fn fifo_and_exactly_once(q: &impl JobQueue) {
    for id in ["a", "b", "c"] {
        q.enqueue(&job(id)).await.unwrap();
    }
    assert_eq!(q.depth().await.unwrap(), 3);
    let mut seen = Vec::new();
    while let Some(lease) = q.claim("n1", SHORT, LEASE).await.unwrap() {
        seen.push(lease.job.id.clone());
        q.ack(&lease).await.unwrap();
    }
    assert_eq!(seen, ["a", "b", "c"]);
    assert_eq!(q.depth().await.unwrap(), 0);
}

async fn claim_waits_then_times_out(q: &impl JobQueue) {
    let started = std::time::Instant::now();
    assert!(q.claim("n1", SHORT, LEASE).await.unwrap().is_none());
    assert!(
        started.elapsed() >= SHORT / 2,
        "claim must wait before giving up"
    );
}

async fn expired_lease_is_reclaimed(q: &impl JobQueue) {
    q.enqueue(&job("dies")).await.unwrap();
    let lease = q
        .claim("doomed-node", SHORT, Duration::from_millis(100))
        .await
        .unwrap()
        .expect("job");
    // Nothing is reclaimed while the lease is live.
    assert_eq!(q.reclaim_expired().await.unwrap(), 0);
    assert!(q.claim("n2", SHORT, LEASE).await.unwrap().is_none());
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(q.reclaim_expired().await.unwrap(), 1);
    let again = q
        .claim("n2", SHORT, LEASE)
        .await
        .unwrap()
        .expect("reclaimed job");
    assert_eq!(again.job.id, "dies");
    // The dead node's lease is gone: its late ack or heartbeat is refused.
    assert!(q.ack(&lease).await.is_err());
    assert!(q.heartbeat(&lease, LEASE).await.is_err());
    q.heartbeat(&again, LEASE).await.unwrap();
    q.ack(&again).await.unwrap();
}

async fn acked_job_is_gone(q: &impl JobQueue) {
    q.enqueue(&job("x")).await.unwrap();
    let lease = q
        .claim("n1", SHORT, Duration::from_millis(50))
        .await
        .unwrap()
        .unwrap();
    q.ack(&lease).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(q.reclaim_expired().await.unwrap(), 0);
    assert!(q.claim("n1", SHORT, LEASE).await.unwrap().is_none());
}

async fn events_arrive_in_order(q: &impl JobQueue) {
    assert!(q.next_events(10, SHORT).await.unwrap().is_empty());
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
            },
        })
        .await
        .unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 5 {
        let batch = q.next_events(3, SHORT).await.unwrap();
        assert!(!batch.is_empty() && batch.len() <= 3);
        got.extend(batch);
    }
    let order: Vec<i64> = got.iter().map(|e| e.at_ms).collect();
    assert_eq!(order, [0, 1, 2, 3, 4]);
}
