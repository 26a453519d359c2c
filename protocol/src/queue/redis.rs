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

use super::{JobQueue, Lease, QueueError, DEFAULT_MAX_ATTEMPTS, NODE_FORGET};
use crate::{JobSpec, NodeEvent, NodeStatus};

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
const NOW_LUA: &str = r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"#;

/// Add a job to its class. KEYS: stream, classes set, wake list, seq. ARGV: class, id,
/// attempt, job. The group is created with the stream (from id 0, so nothing added before it
/// is missed).
const ENQUEUE: &str = r#"
redis.pcall('XGROUP', 'CREATE', KEYS[1], 'nodes', '0', 'MKSTREAM')
redis.call('SADD', KEYS[2], ARGV[1])
local seq = redis.call('INCR', KEYS[4])
local id = redis.call('XADD', KEYS[1], '*', 'id', ARGV[2], 'attempt', ARGV[3], 'job', ARGV[4], 'seq', seq)
redis.call('LPUSH', KEYS[3], '1')
redis.call('LTRIM', KEYS[3], 0, 63)
return id
"#;

/// Claim the oldest waiting entry over several class streams and record its lease.
/// KEYS: leases hash, then the streams. ARGV: consumer, lease ms, then the classes (parallel to
/// the streams). Returns {class, entry id, fields} or nil.
const CLAIM: &str = r#"
local function seq_of(entry)
  local f = entry[2]
  for j = 1, #f, 2 do
    if f[j] == 'seq' then return tonumber(f[j + 1]) end
  end
  return 0
end
local best, best_seq = nil, nil
for i = 2, #KEYS do
  local groups = redis.pcall('XINFO', 'GROUPS', KEYS[i])
  if type(groups) == 'table' and not groups.err then
    for _, g in ipairs(groups) do
      local name, last
      for j = 1, #g, 2 do
        if g[j] == 'name' then name = g[j + 1] elseif g[j] == 'last-delivered-id' then last = g[j + 1] end
      end
      if name == 'nodes' and last then
        local e = redis.call('XRANGE', KEYS[i], '(' .. last, '+', 'COUNT', 1)
        if #e > 0 and (best_seq == nil or seq_of(e[1]) < best_seq) then
          best, best_seq = i, seq_of(e[1])
        end
      end
    end
  end
end
if best == nil then return nil end
local r = redis.call('XREADGROUP', 'GROUP', 'nodes', ARGV[1], 'COUNT', 1, 'STREAMS', KEYS[best], '>')
local entry = r[1][2][1]
local class = ARGV[best + 1]
redis.call('HSET', KEYS[1], class .. '|' .. entry[1], ARGV[1] .. ' ' .. (now_ms() + tonumber(ARGV[2])))
return {class, entry[1], entry[2]}
"#;

/// Extend a lease if `consumer` still holds it. KEYS: leases. ARGV: token, consumer, lease ms.
const HEARTBEAT: &str = r#"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v or string.match(v, '^(%S+)') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ' ' .. (now_ms() + tonumber(ARGV[3])))
return 1
"#;

/// Finish a held entry. KEYS: leases, stream. ARGV: token, consumer, entry id.
const ACK: &str = r#"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v or string.match(v, '^(%S+)') ~= ARGV[2] then return 0 end
redis.call('XACK', KEYS[2], 'nodes', ARGV[3])
redis.call('XDEL', KEYS[2], ARGV[3])
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
"#;

/// Take entries back: requeue as the next attempt or dead-letter, with the event, atomically.
/// KEYS: leases, stream, events, dead, wake, seq. ARGV: mode, max attempts, class, then for
/// `release`: consumer, entry id, reason; for `reclaim`: grace ms. Returns how many.
const TAKE_BACK: &str = r#"
local now = now_ms()
local max_attempts = tonumber(ARGV[2])
local class = ARGV[3]
local function take(id, consumer, reason, count)
  local token = class .. '|' .. id
  local e = redis.call('XRANGE', KEYS[2], id, id)
  redis.call('XACK', KEYS[2], 'nodes', id)
  redis.call('XDEL', KEYS[2], id)
  redis.call('HDEL', KEYS[1], token)
  if #e == 0 then return end
  local f = {}
  local fields = e[1][2]
  for j = 1, #fields, 2 do f[fields[j]] = fields[j + 1] end
  local attempt = tonumber(f['attempt'])
  local kind
  if count and attempt >= max_attempts then
    reason = reason .. '; attempt ' .. attempt .. ' of ' .. max_attempts .. ' - moved to the dead-letter queue'
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', 100000, '*', 'id', f['id'], 'attempt', attempt, 'job', f['job'], 'reason', reason)
    kind = {type = 'dead_lettered', reason = reason}
  else
    redis.call('XADD', KEYS[2], '*', 'id', f['id'], 'attempt', attempt + 1, 'job', f['job'],
      'seq', redis.call('INCR', KEYS[6]))
    redis.call('LPUSH', KEYS[5], '1')
    redis.call('LTRIM', KEYS[5], 0, 63)
    kind = {type = 'requeued', next_attempt = attempt + 1, reason = reason}
  end
  local ev = {job_id = f['id'], attempt = attempt, node_id = consumer, at_ms = now, kind = kind}
  redis.call('XADD', KEYS[3], '*', 'event', cjson.encode(ev))
end
if ARGV[1] == 'release' then
  local token = class .. '|' .. ARGV[5]
  local v = redis.call('HGET', KEYS[1], token)
  if not v or string.match(v, '^(%S+)') ~= ARGV[4] then return -1 end
  take(ARGV[5], ARGV[4], ARGV[6], false)
  return 1
end
local grace = tonumber(ARGV[4])
local pending = redis.pcall('XPENDING', KEYS[2], 'nodes', '-', '+', 1000)
if type(pending) ~= 'table' or pending.err then return 0 end
local n = 0
for _, p in ipairs(pending) do
  local id, consumer, idle = p[1], p[2], tonumber(p[3])
  local v = redis.call('HGET', KEYS[1], class .. '|' .. id)
  local expired
  if v then
    expired = tonumber(string.match(v, ' (%d+)$')) <= now
  else
    expired = idle > grace
  end
  if expired then
    take(id, consumer, 'node ' .. consumer .. ' stopped heartbeating', true)
    n = n + 1
  end
end
return n
"#;

/// Register a node. KEYS: nodes, seen. ARGV: node id, JSON.
const REPORT_NODE: &str = r#"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], now_ms())
return 1
"#;

/// Read the registry with each node's age, dropping nodes silent past ARGV[1] ms.
/// KEYS: nodes, seen. Returns a flat list {id, json, age, ...}.
const NODES_READ: &str = r#"
local now = now_ms()
local out = {}
local seen = redis.call('HGETALL', KEYS[2])
for i = 1, #seen, 2 do
  local id, at = seen[i], tonumber(seen[i + 1])
  local age = now - at
  if age > tonumber(ARGV[1]) then
    redis.call('HDEL', KEYS[1], id)
    redis.call('HDEL', KEYS[2], id)
  else
    local json = redis.call('HGET', KEYS[1], id)
    if json then
      table.insert(out, id); table.insert(out, json); table.insert(out, tostring(age))
    end
  end
end
return out
"#;

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

    async fn ensure_event_group(&self, c: &mut deadpool_redis::Connection) {
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
        // Events another control plane read and never acknowledged (it died): adopt them; the
        // next `next_events` hands them out from this consumer's pending list.
        let _: Result<Value, _> = redis::cmd("XAUTOCLAIM")
            .arg(EVENTS)
            .arg(EVENT_GROUP)
            .arg(&self.consumer)
            .arg(EVENT_ADOPT_MS)
            .arg("0-0")
            .arg("COUNT")
            .arg(256)
            .query_async(&mut c)
            .await;
        Ok(total)
    }

    async fn depth(&self) -> Result<u64, QueueError> {
        let mut c = self.conn().await?;
        let classes: Vec<String> = c.smembers(CLASSES).await.map_err(unavailable)?;
        let mut total = 0u64;
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
            total += len.saturating_sub(claimed);
        }
        Ok(total)
    }

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

    async fn next_events(&self, max: usize, wait: Duration) -> Result<Vec<NodeEvent>, QueueError> {
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

    async fn report_node(&self, node: &NodeStatus) -> Result<(), QueueError> {
        let json = serde_json::to_string(node).map_err(|e| QueueError::Malformed(e.to_string()))?;
        let mut c = self.conn().await?;
        let _: i64 = self
            .scripts
            .report_node
            .key(NODES)
            .key(NODES_SEEN)
            .arg(&node.node_id)
            .arg(json)
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn remove_node(&self, node_id: &str) -> Result<(), QueueError> {
        let mut c = self.conn().await?;
        let _: () = redis::pipe()
            .atomic()
            .hdel(NODES, node_id)
            .ignore()
            .hdel(NODES_SEEN, node_id)
            .ignore()
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn nodes(&self) -> Result<Vec<NodeStatus>, QueueError> {
        let mut c = self.conn().await?;
        let flat: Vec<String> = self
            .scripts
            .nodes_read
            .key(NODES)
            .key(NODES_SEEN)
            .arg(NODE_FORGET.as_millis() as u64)
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        let mut out = Vec::new();
        for chunk in flat.chunks(3) {
            if let [id, json, age] = chunk {
                match serde_json::from_str::<NodeStatus>(json) {
                    Ok(mut n) => {
                        n.age_ms = age.parse().unwrap_or(i64::MAX);
                        out.push(n);
                    }
                    Err(e) => tracing::warn!(node = %id, error = %e, "unreadable node record"),
                }
            }
        }
        out.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        Ok(out)
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
