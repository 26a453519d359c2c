//! The fleet's feed: one Redis stream, [`FEED`], that every replica appends to (`XADD`, capped
//! near [`RETAINED`] entries) and tails (`XREAD BLOCK` on a connection of its own), handing each
//! entry to its local subscribers. The stream's own ids are the event ids.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::streams::{StreamId, StreamRangeReply, StreamReadReply};
use tokio::sync::broadcast;

use super::{EventId, Feed, FeedEvent, FANOUT, RETAINED};

/// The stream: fields `a` (account), `j` (job), `k` (kind), `d` (the job document).
const FEED: &str = "kiln:feed";

/// A feed shared through Redis.
pub struct RedisFeed {
    pool: deadpool_redis::Pool,
    tx: broadcast::Sender<Arc<FeedEvent>>,
    tail: tokio::task::JoinHandle<()>,
}

impl Drop for RedisFeed {
    fn drop(&mut self) {
        self.tail.abort();
    }
}

fn parse(entry: &StreamId) -> Option<FeedEvent> {
    Some(FeedEvent {
        id: entry.id.parse().ok()?,
        account_id: entry.get("a")?,
        job_id: entry.get("j")?,
        kind: entry.get("k")?,
        data: entry.get("d")?,
    })
}

impl RedisFeed {
    /// Connect to `url` and start tailing the stream from its current end.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let mut cfg = deadpool_redis::Config::from_url(url);
        cfg.pool = Some(deadpool_redis::PoolConfig::new(16));
        let pool = cfg.create_pool(Some(deadpool_redis::Runtime::Tokio1))?;
        let tx = broadcast::channel(FANOUT).0;
        let start = head(&pool).await?;
        let tail = tokio::spawn(tail(pool.clone(), tx.clone(), start));
        Ok(Self { pool, tx, tail })
    }
}

async fn head(pool: &deadpool_redis::Pool) -> anyhow::Result<EventId> {
    let mut c = pool.get().await?;
    let newest: StreamRangeReply = redis::cmd("XREVRANGE")
        .arg(FEED)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut c)
        .await?;
    Ok(newest
        .ids
        .first()
        .and_then(|e| e.id.parse().ok())
        .unwrap_or_default())
}

/// Hand every entry after `last` to this replica's subscribers, for as long as the feed lives;
/// a lost connection (Redis restarting) is retried every half second.
async fn tail(
    pool: deadpool_redis::Pool,
    tx: broadcast::Sender<Arc<FeedEvent>>,
    mut last: EventId,
) {
    loop {
        let mut c = match pool.get().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "job feed: Redis unavailable");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        loop {
            let read: redis::RedisResult<Option<StreamReadReply>> = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(512)
                .arg("BLOCK")
                .arg(1000)
                .arg("STREAMS")
                .arg(FEED)
                .arg(last.to_string())
                .query_async(&mut c)
                .await;
            match read {
                Ok(reply) => {
                    for key in reply.map(|r| r.keys).unwrap_or_default() {
                        for entry in &key.ids {
                            match parse(entry) {
                                Some(e) if e.id > last => {
                                    last = e.id;
                                    let _ = tx.send(Arc::new(e));
                                }
                                Some(_) => {}
                                None => {
                                    tracing::warn!(id = %entry.id, "job feed: an entry Kiln did not write")
                                }
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "job feed: reading the stream failed");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    break;
                }
            }
        }
    }
}

#[async_trait]
impl Feed for RedisFeed {
    async fn publish(
        &self,
        account_id: &str,
        job_id: &str,
        kind: &str,
        data: &str,
    ) -> anyhow::Result<EventId> {
        let mut c = self.pool.get().await?;
        let id: String = redis::cmd("XADD")
            .arg(FEED)
            .arg("MAXLEN")
            .arg("~")
            .arg(RETAINED)
            .arg("*")
            .arg("a")
            .arg(account_id)
            .arg("j")
            .arg(job_id)
            .arg("k")
            .arg(kind)
            .arg("d")
            .arg(data)
            .query_async(&mut c)
            .await?;
        id.parse().map_err(anyhow::Error::msg)
    }

    async fn after(&self, after: EventId, limit: usize) -> anyhow::Result<Vec<Arc<FeedEvent>>> {
        let mut c = self.pool.get().await?;
        let range: StreamRangeReply = redis::cmd("XRANGE")
            .arg(FEED)
            .arg(format!("({after}"))
            .arg("+")
            .arg("COUNT")
            .arg(limit)
            .query_async(&mut c)
            .await?;
        Ok(range.ids.iter().filter_map(parse).map(Arc::new).collect())
    }

    async fn head(&self) -> anyhow::Result<EventId> {
        head(&self.pool).await
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<FeedEvent>> {
        self.tx.subscribe()
    }
}
