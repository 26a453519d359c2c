//! The job feed: every change of a job a client can see (accepted, started, progress, retried,
//! completed, failed, cancelled), in one order, for the Server-Sent Event streams
//! (`api/native/events.rs`). In the embedded default it is a ring in this process; in a fleet
//! it is a Redis stream every control-plane replica appends to and tails, so a client connected
//! to one replica sees the events another replica applied, and resumes on any replica with the
//! id of the last event it saw (`Last-Event-ID`).
//!
//! Events are kept for a bounded window ([`RETAINED`] events); a client that comes back with an
//! id older than the window gets what is left, and the job streams start with a snapshot anyway.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::broadcast;

mod redis;

pub use self::redis::RedisFeed;

/// How many events the feed keeps for clients that resume.
pub const RETAINED: usize = 20_000;
/// How many events a replica holds for its slow SSE clients before they must re-read.
const FANOUT: usize = 4096;

/// An event's place in the feed: milliseconds and a sequence within them (a Redis stream id's
/// shape, so one parser serves both backends). Ids only grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EventId {
    pub ms: u64,
    pub seq: u64,
}

impl EventId {
    /// The first id after `self` at `now_ms` (the clock may stand still or step back).
    pub fn next(self, now_ms: u64) -> Self {
        if now_ms > self.ms {
            Self { ms: now_ms, seq: 0 }
        } else {
            Self {
                ms: self.ms,
                seq: self.seq + 1,
            }
        }
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl FromStr for EventId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not an event id this API sent");
        let (ms, seq) = s.trim().split_once('-').ok_or_else(bad)?;
        Ok(Self {
            ms: ms.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

/// One event as the feed holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedEvent {
    pub id: EventId,
    pub account_id: String,
    pub job_id: String,
    /// The SSE event name: `job.created`, `job.started`, `job.progress`, `job.retrying`,
    /// `job.completed`, `job.failed` or `job.cancelled`.
    pub kind: String,
    /// The job's document (JSON) as it stood after the change.
    pub data: String,
}

impl FeedEvent {
    /// Whether this event ends its job's stream.
    pub fn is_final(&self) -> bool {
        matches!(
            self.kind.as_str(),
            "job.completed" | "job.failed" | "job.cancelled"
        )
    }
}

/// Where job events are appended and read back. Both implementations pass `conformance`.
#[async_trait]
pub trait Feed: Send + Sync {
    /// Append an event; its id.
    async fn publish(
        &self,
        account_id: &str,
        job_id: &str,
        kind: &str,
        data: &str,
    ) -> anyhow::Result<EventId>;
    /// Up to `limit` retained events after `after`, oldest first.
    async fn after(&self, after: EventId, limit: usize) -> anyhow::Result<Vec<Arc<FeedEvent>>>;
    /// The newest event's id (the zero id when there is none).
    async fn head(&self) -> anyhow::Result<EventId>;
    /// Events from now on, as this replica learns of them, in id order. A receiver that lags
    /// is told so (`RecvError::Lagged`) and re-reads with [`Feed::after`].
    fn subscribe(&self) -> broadcast::Receiver<Arc<FeedEvent>>;
}

/// The embedded default's feed: a ring in this process.
pub struct MemoryFeed {
    ring: Mutex<(VecDeque<Arc<FeedEvent>>, EventId)>,
    tx: broadcast::Sender<Arc<FeedEvent>>,
    retained: usize,
}

impl MemoryFeed {
    pub fn new() -> Self {
        Self::with_retained(RETAINED)
    }

    /// A feed that keeps `retained` events (tests of the window).
    pub fn with_retained(retained: usize) -> Self {
        Self {
            ring: Mutex::new((VecDeque::new(), EventId::default())),
            tx: broadcast::channel(FANOUT).0,
            retained: retained.max(1),
        }
    }
}

impl Default for MemoryFeed {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Feed for MemoryFeed {
    async fn publish(
        &self,
        account_id: &str,
        job_id: &str,
        kind: &str,
        data: &str,
    ) -> anyhow::Result<EventId> {
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let id = ring.1.next(kiln_protocol::now_ms() as u64);
        ring.1 = id;
        let event = Arc::new(FeedEvent {
            id,
            account_id: account_id.into(),
            job_id: job_id.into(),
            kind: kind.into(),
            data: data.into(),
        });
        ring.0.push_back(event.clone());
        while ring.0.len() > self.retained {
            ring.0.pop_front();
        }
        // Sent under the lock, so subscribers see ids in order.
        let _ = self.tx.send(event);
        Ok(id)
    }

    async fn after(&self, after: EventId, limit: usize) -> anyhow::Result<Vec<Arc<FeedEvent>>> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let start = ring.0.partition_point(|e| e.id <= after);
        Ok(ring.0.iter().skip(start).take(limit).cloned().collect())
    }

    async fn head(&self) -> anyhow::Result<EventId> {
        Ok(self.ring.lock().unwrap_or_else(|e| e.into_inner()).1)
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<FeedEvent>> {
        self.tx.subscribe()
    }
}

/// Tell the feed that `job_id` changed (`kind`): its document as it stands now. A feed that
/// is down loses the event for live watchers only (logged): the job's state is in the database,
/// and a job's stream starts with a snapshot of it.
pub async fn job_changed(state: &crate::AppState, job_id: &str, kind: &str) {
    match state.db.get_job_any(job_id).await {
        Ok(Some(job)) => publish_job(state, &job, kind).await,
        Ok(None) => {}
        Err(e) => tracing::warn!(job = job_id, error = %e, "job feed: could not read the job"),
    }
}

/// Publish `job` as it is (see [`job_changed`]).
pub async fn publish_job(state: &crate::AppState, job: &crate::db::JobRow, kind: &str) {
    let view = crate::views::JobView::new(job, &state.signing_key, kiln_protocol::now_ms());
    let data = match serde_json::to_string(&view) {
        Ok(d) => d,
        Err(e) => return tracing::error!(job = %job.id, error = %e, "job feed: unserialisable job"),
    };
    if let Err(e) = state
        .feed
        .publish(&job.account_id, &job.id, kind, &data)
        .await
    {
        tracing::warn!(job = %job.id, kind, error = %e, "job feed: could not publish");
    }
}

/// The suite every feed passes: ids grow, `after` resumes exactly after an id, subscribers
/// get each event once and in order. `other` is a second handle on the same feed (another
/// replica's, for Redis; the same one in process).
#[cfg(test)]
mod conformance {
    use std::time::Duration;

    use super::*;

    async fn next(rx: &mut broadcast::Receiver<Arc<FeedEvent>>) -> Arc<FeedEvent> {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("an event within 5 s")
            .expect("a live feed")
    }

    pub async fn run(feed: &dyn Feed, other: &dyn Feed) {
        let mut mine = feed.subscribe();
        let mut theirs = other.subscribe();
        let start = feed.head().await.unwrap();
        let mut ids = Vec::new();
        for i in 0..50 {
            let account = if i % 2 == 0 { "acct-a" } else { "acct-b" };
            let publisher = if i % 3 == 0 { other } else { feed };
            let id = publisher
                .publish(
                    account,
                    &format!("job-{i}"),
                    "job.progress",
                    &format!("{{\"n\":{i}}}"),
                )
                .await
                .unwrap();
            ids.push(id);
        }
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, ids, "ids grow with every event, across replicas");
        assert!(ids[0] > start);
        assert_eq!(feed.head().await.unwrap(), *ids.last().unwrap());

        // Every subscriber, on either replica, sees all fifty once, in order.
        for rx in [&mut mine, &mut theirs] {
            for (i, id) in ids.iter().enumerate() {
                let e = next(rx).await;
                assert_eq!(e.id, *id);
                assert_eq!(e.job_id, format!("job-{i}"));
                assert_eq!(e.data, format!("{{\"n\":{i}}}"));
            }
        }

        // Resuming after the 20th gives the 21st onwards, on either replica.
        for f in [feed, other] {
            let rest = f.after(ids[19], 1000).await.unwrap();
            let got: Vec<EventId> = rest.iter().map(|e| e.id).collect();
            assert_eq!(got, ids[20..].to_vec());
            assert_eq!(rest[0].account_id, "acct-a");
            assert_eq!(rest[1].kind, "job.progress");
            let page = f.after(ids[19], 5).await.unwrap();
            assert_eq!(page.len(), 5);
            assert!(f.after(*ids.last().unwrap(), 10).await.unwrap().is_empty());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_order_parse_and_print() {
        let a: EventId = "1733600000000-3".parse().unwrap();
        assert_eq!(
            a,
            EventId {
                ms: 1733600000000,
                seq: 3
            }
        );
        assert_eq!(a.to_string(), "1733600000000-3");
        assert!(a < "1733600000000-10".parse().unwrap());
        assert!(a < "1733600000001-0".parse().unwrap());
        for bad in ["", "12", "a-1", "1-b", "1-2-3", "-1"] {
            assert!(bad.parse::<EventId>().is_err(), "{bad:?}");
        }
        assert_eq!(
            a.next(1733600000000),
            EventId {
                ms: 1733600000000,
                seq: 4
            }
        );
        assert_eq!(
            a.next(5),
            EventId {
                ms: 1733600000000,
                seq: 4
            },
            "a clock stepping back"
        );
        assert_eq!(
            a.next(1733600000009),
            EventId {
                ms: 1733600000009,
                seq: 0
            }
        );
    }

    #[tokio::test]
    async fn the_memory_feed_conforms() {
        let feed = MemoryFeed::new();
        conformance::run(&feed, &feed).await;
    }

    #[tokio::test]
    async fn the_memory_feed_keeps_its_window() {
        let feed = MemoryFeed::with_retained(10);
        for i in 0..25 {
            feed.publish("a", &format!("j{i}"), "job.progress", "{}")
                .await
                .unwrap();
        }
        let all = feed.after(EventId::default(), 100).await.unwrap();
        assert_eq!(all.len(), 10);
        assert_eq!(all[0].job_id, "j15");
    }

    #[tokio::test]
    async fn the_redis_feed_conforms_across_two_replicas() {
        let redis = kiln_protocol::testing::RedisServer::start();
        let a = RedisFeed::connect(&redis.url()).await.unwrap();
        let b = RedisFeed::connect(&redis.url()).await.unwrap();
        conformance::run(&a, &b).await;
    }

    #[tokio::test]
    async fn the_redis_feed_keeps_tailing_after_redis_restarts() {
        let mut redis = kiln_protocol::testing::RedisServer::start();
        let feed = RedisFeed::connect(&redis.url()).await.unwrap();
        let mut rx = feed.subscribe();
        feed.publish("a", "before", "job.progress", "{}")
            .await
            .unwrap();
        assert_eq!(rx.recv().await.unwrap().job_id, "before");
        redis.restart();
        // Publishing may fail while Redis comes back; the tail reconnects on its own.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if feed
                .publish("a", "after", "job.progress", "{}")
                .await
                .is_ok()
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "Redis did not come back"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let e = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
            .await
            .expect("the tail reconnected")
            .unwrap();
        assert_eq!(e.job_id, "after");
    }
}
