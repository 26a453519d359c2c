//! Per-key request limits in fixed one-minute windows: in process for the embedded default,
//! in Redis for a fleet so every control-plane replica counts against the same window.

use std::collections::HashMap;
use std::sync::Mutex;

/// Window length in seconds.
pub const WINDOW_S: u64 = 60;

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the window resets.
    pub reset_s: u64,
}

/// Where the counts live.
pub enum Limiter {
    Memory(Mutex<HashMap<String, (u64, u64)>>),
    Redis(deadpool_redis::Pool),
}

/// INCR the window's counter; the first request of a window sets its expiry.
const INCR: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
";

impl Limiter {
    /// The in-process limiter.
    pub fn memory() -> Self {
        Self::Memory(Mutex::new(HashMap::new()))
    }

    /// A limiter shared through the Redis at `url`.
    pub fn redis(url: &str) -> anyhow::Result<Self> {
        let pool = deadpool_redis::Config::from_url(url)
            .create_pool(Some(deadpool_redis::Runtime::Tokio1))?;
        Ok(Self::Redis(pool))
    }

    /// Count one request against `bucket` (a key and an endpoint class), allowing `limit` per
    /// window. A Redis outage lets requests through (logged) rather than refusing all traffic.
    pub async fn check(&self, bucket: &str, limit: u64) -> Decision {
        let now = kiln_protocol::now_ms() as u64 / 1000;
        let window = now / WINDOW_S;
        let reset_s = (window + 1) * WINDOW_S - now;
        let count = match self {
            Self::Memory(m) => {
                let mut map = m.lock().unwrap_or_else(|e| e.into_inner());
                if map.len() > 100_000 {
                    map.retain(|_, (w, _)| *w == window);
                }
                let entry = map.entry(bucket.to_string()).or_insert((window, 0));
                if entry.0 != window {
                    *entry = (window, 0);
                }
                entry.1 += 1;
                entry.1
            }
            Self::Redis(pool) => {
                let key = format!("kiln:rl:{bucket}:{window}");
                let result: Result<u64, String> = async {
                    let mut c = pool.get().await.map_err(|e| e.to_string())?;
                    redis::Script::new(INCR)
                        .key(&key)
                        .arg(WINDOW_S * 2)
                        .invoke_async(&mut c)
                        .await
                        .map_err(|e| e.to_string())
                }
                .await;
                match result {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::warn!(error = %e, "rate limiter unavailable; letting the request through");
                        0
                    }
                }
            }
        };
        Decision {
            allowed: count <= limit,
            limit,
            remaining: limit.saturating_sub(count),
            reset_s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_per_bucket_and_refuses_past_the_limit() {
        let l = Limiter::memory();
        for i in 1..=3 {
            let d = l.check("k1:submit", 3).await;
            assert!(d.allowed);
            assert_eq!(d.remaining, 3 - i);
            assert!((1..=WINDOW_S).contains(&d.reset_s));
        }
        let d = l.check("k1:submit", 3).await;
        assert!(!d.allowed);
        assert_eq!(d.remaining, 0);
        assert!(l.check("k1:read", 3).await.allowed, "other class");
        assert!(l.check("k2:submit", 3).await.allowed, "other key");
    }
}
