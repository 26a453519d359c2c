//! [`EventStream`] on the `kiln:events` stream, read by the consumer group `control-plane`:
//! at-least-once delivery, with a dead control plane's unacknowledged events adopted by
//! another (`XAUTOCLAIM`, from the reclaim in `JobQueue::reclaim_expired`).

use std::time::Duration;

use async_trait::async_trait;
use redis::AsyncCommands;

use super::{is_nogroup, unavailable, RedisQueue, EVENTS, EVENT_ADOPT_MS, EVENT_GROUP};
use crate::queue::{EventStream, QueueError};
use crate::NodeEvent;

impl RedisQueue {
    pub(super) async fn ensure_event_group(&self, c: &mut deadpool_redis::Connection) {
        let _: Result<(), _> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(EVENTS)
            .arg(EVENT_GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(c)
            .await;
    }

    async fn read_events(
        &self,
        c: &mut deadpool_redis::Connection,
        max: usize,
        from: &str,
        block: Option<Duration>,
    ) -> Result<Vec<(String, Option<NodeEvent>)>, redis::RedisError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(EVENT_GROUP)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(max);
        if let Some(b) = block {
            cmd.arg("BLOCK").arg(b.as_millis().max(1) as u64);
        }
        cmd.arg("STREAMS").arg(EVENTS).arg(from);
        let reply: Option<redis::streams::StreamReadReply> = cmd.query_async(c).await?;
        let mut out = Vec::new();
        for key in reply.map(|r| r.keys).unwrap_or_default() {
            for entry in key.ids {
                let parsed = entry
                    .get::<String>("event")
                    .and_then(|s| serde_json::from_str::<NodeEvent>(&s).ok());
                if parsed.is_none() {
                    tracing::error!(entry = %entry.id, "skipping an unreadable event");
                }
                // Unreadable entries are still acknowledged with the batch.
                out.push((entry.id, parsed));
            }
        }
        Ok(out)
    }

    /// Events another control plane read and never acknowledged (it died): adopt them; the
    /// next `receive` hands them out from this consumer's pending list.
    pub(super) async fn adopt_events(&self, c: &mut deadpool_redis::Connection) {
        let _: Result<redis::Value, _> = redis::cmd("XAUTOCLAIM")
            .arg(EVENTS)
            .arg(EVENT_GROUP)
            .arg(&self.consumer)
            .arg(EVENT_ADOPT_MS)
            .arg("0-0")
            .arg("COUNT")
            .arg(256)
            .query_async(c)
            .await;
    }
}

#[async_trait]
impl EventStream for RedisQueue {
    async fn publish(&self, event: &NodeEvent) -> Result<(), QueueError> {
        let json =
            serde_json::to_string(event).map_err(|e| QueueError::Malformed(e.to_string()))?;
        let mut c = self.conn().await?;
        let _: String = c
            .xadd(EVENTS, "*", &[("event", json)])
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<NodeEvent>, QueueError> {
        let mut c = self.conn().await?;
        let done = std::mem::take(&mut *self.unacked.lock().unwrap_or_else(|e| e.into_inner()));
        if !done.is_empty() {
            let acked: Result<(), _> = redis::pipe()
                .atomic()
                .cmd("XACK")
                .arg(EVENTS)
                .arg(EVENT_GROUP)
                .arg(&done)
                .ignore()
                .cmd("XDEL")
                .arg(EVENTS)
                .arg(&done)
                .ignore()
                .query_async(&mut c)
                .await;
            if let Err(e) = acked {
                // Keep them: they will be acknowledged next time (or seen again: harmless).
                self.unacked
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(done);
                return Err(unavailable(e));
            }
        }
        // This consumer's own pending entries first (after a restart, or adopted ones), then
        // new ones, blocking.
        let mut batch = match self.read_events(&mut c, max, "0", None).await {
            Ok(b) => b,
            Err(e) if is_nogroup(&e) => {
                self.ensure_event_group(&mut c).await;
                Vec::new()
            }
            Err(e) => return Err(unavailable(e)),
        };
        if batch.is_empty() {
            batch = match self.read_events(&mut c, max, ">", Some(wait)).await {
                Ok(b) => b,
                Err(e) if is_nogroup(&e) => {
                    self.ensure_event_group(&mut c).await;
                    Vec::new()
                }
                Err(e) => return Err(unavailable(e)),
            };
        }
        let (ids, events): (Vec<String>, Vec<Option<NodeEvent>>) = batch.into_iter().unzip();
        self.unacked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(ids);
        Ok(events.into_iter().flatten().collect())
    }
}
