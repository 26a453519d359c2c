//! The fleet's queue on Redis Streams.
//!
//! Layout (every key is named once, here):
//! - `kiln:q:<class>` — one stream per queue class, read by the consumer group `nodes`. A node
//!   consumes the classes its capabilities serve. Entries carry `id`, `attempt` and `job`.
//! - `kiln:classes` — the set of classes that have ever had a job (reclaim walks them).
//! - `kiln:seq` — a counter stamped on every entry (`seq`), so a consumer of several classes
//!   takes the oldest job across them (stream ids only order entries within one stream).
//! - `kiln:wake:<class>` — a short list pushed on every enqueue: idle consumers block on it
//!   with `BLPOP` (scripts cannot block), then claim with a script.
//! - `kiln:leases` — hash `<class>|<entry id>` → `<consumer> <deadline ms>`: who holds each
//!   claimed entry and until when. Deadlines are on Redis' clock (`TIME`), so node clocks need
//!   not agree.
//! - `kiln:events` — node events for the control plane, consumer group `control-plane`.
//! - `kiln:dead` — jobs that used every attempt (the dead-letter queue), capped at about
//!   100 000 entries (the database keeps every job's final state regardless).
//! - `kiln:nodes`, `kiln:nodes:seen` — node registrations and when each last reported.
//! - `kiln:epoch` — set once per Redis data set; its absence means Redis lost its data.
//!
//! Why Streams and not lists: a stream's pending-entries list records who holds every claimed
//! job even if the claimer dies between taking it and recording its lease (a list `LMOVE`
//! leaves that to the client), and consumer groups give the event stream at-least-once
//! delivery with adoption of a dead control plane's unacknowledged events (`XAUTOCLAIM`).
//! Every state change that touches more than one key is one Lua script.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::{Config as PoolConfig, Pool, Runtime};
use redis::{AsyncCommands, Script, Value};

mod events;
mod nodes;

use super::{JobQueue, Lease, QueueError, DEFAULT_MAX_ATTEMPTS};
use crate::JobSpec;

const STREAM_PREFIX: &str = "kiln:q:";
const WAKE_PREFIX: &str = "kiln:wake:";
const CLASSES: &str = "kiln:classes";
const SEQ: &str = "kiln:seq";
const LEASES: &str = "kiln:leases";
const EVENTS: &str = "kiln:events";
const DEAD: &str = "kiln:dead";
const NODES: &str = "kiln:nodes";
const NODES_SEEN: &str = "kiln:nodes:seen";
const EPOCH: &str = "kiln:epoch";
const NODE_GROUP: &str = "nodes";
const EVENT_GROUP: &str = "control-plane";

/// A claimed entry whose claimer died before recording its lease is taken back after this.
const UNLEASED_GRACE_MS: u64 = 30_000;
/// Events a control plane read but never acknowledged are adopted by another after this.
const EVENT_ADOPT_MS: u64 = 60_000;

/// Shared Lua helpers: Redis' clock in ms.
const NOW_LUA: &str = include_str!("redis/now.lua");

/// Add a job to its class. KEYS: stream, classes set, wake list, seq. ARGV: class, id,
/// attempt, job. The group is created with the stream (from id 0, so nothing added before it
/// is missed).
const ENQUEUE: &str = include_str!("redis/enqueue.lua");

/// Claim the oldest waiting entry over several class streams and record its lease.
/// KEYS: leases hash, then the streams. ARGV: consumer, lease ms, then the classes (parallel to
/// the streams). Returns {class, entry id, fields} or nil.
const CLAIM: &str = include_str!("redis/claim.lua");

/// Extend a lease if `consumer` still holds it. KEYS: leases. ARGV: token, consumer, lease ms.
const HEARTBEAT: &str = include_str!("redis/heartbeat.lua");

/// Finish a held entry. KEYS: leases, stream. ARGV: token, consumer, entry id.
const ACK: &str = include_str!("redis/ack.lua");

/// Take entries back: requeue as the next attempt or dead-letter, with the event, atomically.
/// KEYS: leases, stream, events, dead, wake, seq. ARGV: mode, max attempts, class, then for
/// `release`: consumer, entry id, reason; for `reclaim`: grace ms. Returns how many.
const TAKE_BACK: &str = include_str!("redis/take_back.lua");

/// Register a node. KEYS: nodes, seen. ARGV: node id, JSON.
const REPORT_NODE: &str = include_str!("redis/report_node.lua");

/// Read the registry with each node's age, dropping nodes silent past ARGV[1] ms.
/// KEYS: nodes, seen. Returns a flat list {id, json, age, ...}.
const NODES_READ: &str = include_str!("redis/nodes_read.lua");

fn script(body: &str) -> Script {
    Script::new(&format!("{NOW_LUA}\n{body}"))
}

struct Scripts {
    enqueue: Script,
    claim: Script,
    heartbeat: Script,
    ack: Script,
    take_back: Script,
    report_node: Script,
    nodes_read: Script,
}

/// [`JobQueue`] on Redis Streams; see the module documentation for the layout.
pub struct RedisQueue {
    pool: Pool,
    scripts: Scripts,
    max_attempts: u32,
    /// This process' name in the event consumer group.
    consumer: String,
    /// Event entries handed out by the last `next_events`, acknowledged by the next call.
    unacked: Mutex<Vec<String>>,
}

fn unavailable(e: impl std::fmt::Display) -> QueueError {
    QueueError::Unavailable(e.to_string())
}

fn stream_key(class: &str) -> String {
    format!("{STREAM_PREFIX}{class}")
}

fn wake_key(class: &str) -> String {
    format!("{WAKE_PREFIX}{class}")
}

fn token(class: &str, entry: &str) -> String {
    format!("{class}|{entry}")
}

fn split_token(token: &str) -> Result<(&str, &str), QueueError> {
    token
        .split_once('|')
        .ok_or_else(|| QueueError::Malformed(format!("lease token {token:?}")))
}

/// A script's "did this consumer still hold the lease" answer (1) as a result.
fn lease_held(answer: i64, lease: &Lease) -> Result<(), QueueError> {
    if answer == 1 {
        Ok(())
    } else {
        Err(QueueError::LeaseLost(lease.job.id.clone()))
    }
}

fn is_nogroup(e: &redis::RedisError) -> bool {
    e.code() == Some("NOGROUP") || e.to_string().contains("NOGROUP")
}

impl RedisQueue {
    /// Connect to `url` (`redis://host:port/db`). `consumer` names this process in the event
    /// consumer group (the control plane's id); nodes may pass their node id.
    pub async fn connect(url: &str, consumer: &str, max_attempts: u32) -> Result<Self, QueueError> {
        let mut cfg = PoolConfig::from_url(url);
        cfg.pool = Some(deadpool_redis::PoolConfig::new(64));
        let pool = cfg
            .create_pool(Some(Runtime::Tokio1))
            .map_err(unavailable)?;
        let q = Self {
            pool,
            scripts: Scripts {
                enqueue: script(ENQUEUE),
                claim: script(CLAIM),
                heartbeat: script(HEARTBEAT),
                ack: script(ACK),
                take_back: script(TAKE_BACK),
                report_node: script(REPORT_NODE),
                nodes_read: script(NODES_READ),
            },
            max_attempts: max_attempts.max(1),
            consumer: consumer.to_string(),
            unacked: Mutex::new(Vec::new()),
        };
        // Fail fast on a wrong URL, and report it as such.
        let mut c = q.conn().await?;
        let _: String = redis::cmd("PING")
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(q)
    }

    /// The default max attempts, for callers that do not configure one.
    pub async fn connect_default(url: &str, consumer: &str) -> Result<Self, QueueError> {
        Self::connect(url, consumer, DEFAULT_MAX_ATTEMPTS).await
    }

    async fn conn(&self) -> Result<deadpool_redis::Connection, QueueError> {
        self.pool.get().await.map_err(unavailable)
    }

    /// Delete every key this queue uses (tests; an operator's reset).
    pub async fn purge(&self) -> Result<(), QueueError> {
        let mut c = self.conn().await?;
        let mut keys: Vec<String> = Vec::new();
        for pattern in ["kiln:*"] {
            let found: Vec<String> = c.keys(pattern).await.map_err(unavailable)?;
            keys.extend(found);
        }
        if !keys.is_empty() {
            let _: () = c.del(keys).await.map_err(unavailable)?;
        }
        Ok(())
    }

    /// The `TAKE_BACK` script for `class` with its keys and leading arguments; the caller
    /// adds the arguments of `mode` (`release` or `reclaim`).
    fn take_back(&self, class: &str, mode: &str) -> redis::ScriptInvocation<'_> {
        let mut inv = self.scripts.take_back.prepare_invoke();
        inv.key(LEASES)
            .key(stream_key(class))
            .key(EVENTS)
            .key(DEAD)
            .key(wake_key(class))
            .key(SEQ)
            .arg(mode)
            .arg(self.max_attempts)
            .arg(class);
        inv
    }

    async fn try_claim(
        &self,
        c: &mut deadpool_redis::Connection,
        consumer: &str,
        classes: &[String],
        lease_for: Duration,
    ) -> Result<Option<Lease>, QueueError> {
        let mut inv = self.scripts.claim.prepare_invoke();
        inv.key(LEASES);
        for class in classes {
            inv.key(stream_key(class));
        }
        inv.arg(consumer).arg(lease_for.as_millis() as u64);
        for class in classes {
            inv.arg(class);
        }
        let v: Value = inv.invoke_async(c).await.map_err(unavailable)?;
        let Value::Array(parts) = v else {
            return Ok(None);
        };
        let [class, entry, fields] = <[Value; 3]>::try_from(parts)
            .map_err(|_| QueueError::Malformed("claim reply".into()))?;
        let class: String = redis::from_redis_value(&class).map_err(unavailable)?;
        let entry: String = redis::from_redis_value(&entry).map_err(unavailable)?;
        let fields: Vec<String> = redis::from_redis_value(&fields).map_err(unavailable)?;
        let get = |name: &str| {
            fields
                .chunks(2)
                .find(|kv| kv[0] == name)
                .and_then(|kv| kv.get(1))
                .cloned()
                .ok_or_else(|| QueueError::Malformed(format!("entry {entry} lacks {name}")))
        };
        let mut job: JobSpec = serde_json::from_str(&get("job")?)
            .map_err(|e| QueueError::Malformed(format!("job in entry {entry}: {e}")))?;
        job.attempt = get("attempt")?
            .parse()
            .map_err(|_| QueueError::Malformed(format!("attempt in entry {entry}")))?;
        Ok(Some(Lease {
            job,
            consumer: consumer.to_string(),
            token: token(&class, &entry),
        }))
    }
}

#[async_trait]
impl JobQueue for RedisQueue {
    async fn enqueue(&self, job: &JobSpec) -> Result<(), QueueError> {
        let class = job.class();
        let json = serde_json::to_string(job).map_err(|e| QueueError::Malformed(e.to_string()))?;
        let mut c = self.conn().await?;
        let _: String = self
            .scripts
            .enqueue
            .key(stream_key(&class))
            .key(CLASSES)
            .key(wake_key(&class))
            .key(SEQ)
            .arg(&class)
            .arg(&job.id)
            .arg(job.attempt)
            .arg(json)
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn claim(
        &self,
        consumer: &str,
        classes: &[String],
        wait: Duration,
        lease_for: Duration,
    ) -> Result<Option<Lease>, QueueError> {
        if classes.is_empty() {
            tokio::time::sleep(wait).await;
            return Ok(None);
        }
        let deadline = tokio::time::Instant::now() + wait;
        // A dedicated connection: BLPOP blocks it.
        let mut c = self.conn().await?;
        loop {
            if let Some(lease) = self.try_claim(&mut c, consumer, classes, lease_for).await? {
                return Ok(Some(lease));
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let wakes: Vec<String> = classes.iter().map(|c| wake_key(c)).collect();
            let _: Option<(String, String)> = redis::cmd("BLPOP")
                .arg(&wakes)
                .arg(left.as_secs_f64().max(0.01))
                .query_async(&mut c)
                .await
                .map_err(unavailable)?;
        }
    }

    async fn heartbeat(&self, lease: &Lease, lease_for: Duration) -> Result<(), QueueError> {
        let mut c = self.conn().await?;
        let held: i64 = self
            .scripts
            .heartbeat
            .key(LEASES)
            .arg(&lease.token)
            .arg(&lease.consumer)
            .arg(lease_for.as_millis() as u64)
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        lease_held(held, lease)
    }

    async fn ack(&self, lease: &Lease) -> Result<(), QueueError> {
        let (class, entry) = split_token(&lease.token)?;
        let mut c = self.conn().await?;
        let held: i64 = self
            .scripts
            .ack
            .key(LEASES)
            .key(stream_key(class))
            .arg(&lease.token)
            .arg(&lease.consumer)
            .arg(entry)
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        lease_held(held, lease)
    }

    async fn release(&self, lease: &Lease, reason: &str) -> Result<(), QueueError> {
        let (class, entry) = split_token(&lease.token)?;
        let mut c = self.conn().await?;
        let n: i64 = self
            .take_back(class, "release")
            .arg(&lease.consumer)
            .arg(entry)
            .arg(reason)
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        lease_held(n, lease)
    }

    async fn reclaim_expired(&self) -> Result<usize, QueueError> {
        let mut c = self.conn().await?;
        let classes: Vec<String> = c.smembers(CLASSES).await.map_err(unavailable)?;
        let mut total = 0usize;
        for class in classes {
            let n: i64 = self
                .take_back(&class, "reclaim")
                .arg(UNLEASED_GRACE_MS)
                .invoke_async(&mut c)
                .await
                .map_err(unavailable)?;
            total += n.max(0) as usize;
        }
        self.adopt_events(&mut c).await;
        Ok(total)
    }

    async fn depth_by_class(&self) -> Result<Vec<(String, u64)>, QueueError> {
        let mut c = self.conn().await?;
        let mut classes: Vec<String> = c.smembers(CLASSES).await.map_err(unavailable)?;
        classes.sort();
        let mut depths = Vec::with_capacity(classes.len());
        for class in classes {
            // Acknowledged entries are deleted, so a stream holds exactly its waiting and its
            // claimed entries: waiting = length - pending.
            let key = stream_key(&class);
            let (len, pending): (u64, Value) = redis::pipe()
                .xlen(&key)
                .cmd("XPENDING")
                .arg(&key)
                .arg(NODE_GROUP)
                .query_async(&mut c)
                .await
                .unwrap_or((0, Value::Nil));
            let claimed = match pending {
                Value::Array(v) => v
                    .first()
                    .and_then(|n| redis::from_redis_value::<u64>(n).ok())
                    .unwrap_or(0),
                _ => 0,
            };
            depths.push((class, len.saturating_sub(claimed)));
        }
        Ok(depths)
    }

    async fn cancel(&self, job_id: &str) -> Result<(), QueueError> {
        let mut c = self.conn().await?;
        redis::cmd("SET")
            .arg(format!("kiln:cancel:{job_id}"))
            .arg(1)
            .arg("EX")
            .arg(super::CANCEL_MEMORY.as_secs())
            .query_async::<()>(&mut c)
            .await
            .map_err(unavailable)
    }

    async fn is_cancelled(&self, job_id: &str) -> Result<bool, QueueError> {
        let mut c = self.conn().await?;
        redis::cmd("EXISTS")
            .arg(format!("kiln:cancel:{job_id}"))
            .query_async::<bool>(&mut c)
            .await
            .map_err(unavailable)
    }

    async fn epoch_is_new(&self) -> Result<bool, QueueError> {
        let mut c = self.conn().await?;
        let set: Option<String> = redis::cmd("SET")
            .arg(EPOCH)
            .arg(uuid::Uuid::new_v4().to_string())
            .arg("NX")
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        if set.is_some() {
            self.ensure_event_group(&mut c).await;
        }
        Ok(set.is_some())
    }
}
