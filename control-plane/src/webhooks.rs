//! Signed webhooks: `job.completed`, `job.failed`, `job.cancelled` and (opt-in)
//! `job.progress`, delivered at least once, retried with exponential backoff for hours.
//!
//! Each event is a row in `webhook_deliveries` written when the job changes (so an event is
//! never lost with a process), with an id (`evt_…`) the receiver can de-duplicate on. The
//! delivery loop (every control-plane replica runs one; a row is locked before sending, so
//! one replica sends it) POSTs the JSON body with
//! `Kiln-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>` — the
//! account's webhook secret, the same scheme as Stripe's — plus `Kiln-Event-Id` and
//! `Kiln-Event-Type`. A 2xx answer delivers it; anything else is retried after
//! `KILN_WEBHOOK_BACKOFF_MS` × 2^(attempt−1), at most an hour apart, up to
//! `KILN_WEBHOOK_MAX_ATTEMPTS`. Every attempt's outcome is visible on the job.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use sqlx::Row;

use crate::db::JobRow;
use crate::dialect::Dialect;
use crate::AppState;

pub mod payload;

use payload::Scheme;

/// `t=…,v1=…` for `body` sent at `t` (unix seconds).
pub fn signature(secret: &str, t: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Record an event for `job`: to its webhook URL (`job.progress` only when opted in), and,
/// for a Convertrilo job, to each of the account's managed endpoints that takes it.
pub async fn record(state: &AppState, job: &JobRow, event: &str) -> anyhow::Result<()> {
    let now = kiln_protocol::now_ms();
    let mut targets: Vec<(String, Scheme, Option<String>)> = Vec::new();
    if Dialect::of_row(job.dialect.as_deref()) == Dialect::Convertrilo {
        let Some(name) = payload::convertrilo_event(event) else {
            return Ok(());
        };
        for ep in state.db.endpoints(&job.account_id).await? {
            if ep.active && ep.events.iter().any(|e| e == name) {
                targets.push((ep.url, Scheme::Convertrilo, Some(ep.id)));
            }
        }
        if let Some(url) = &job.webhook_url {
            targets.push((url.clone(), Scheme::ConvertriloUnsigned, None));
        }
    } else if let Some(url) = &job.webhook_url {
        targets.push((url.clone(), Scheme::Kiln, None));
    }
    for (url, scheme, endpoint) in targets {
        let id = format!("evt_{}", uuid::Uuid::now_v7().simple());
        let (body, event) = match scheme {
            Scheme::Kiln => (payload::kiln(state, job, event, &id, now), event),
            _ => {
                let name = payload::convertrilo_event(event).unwrap_or(event);
                (payload::convertrilo(state, job, name, now), name)
            }
        };
        sqlx::query(
            "INSERT INTO webhook_deliveries (id, job_id, account_id, url, event, payload, status,
                                             attempts, next_attempt_at, created_at, scheme,
                                             endpoint_id)
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, $7, $8, $9)",
        )
        .bind(&id)
        .bind(&job.id)
        .bind(&job.account_id)
        .bind(&url)
        .bind(event)
        .bind(body.to_string())
        .bind(now)
        .bind(scheme.as_str())
        .bind(endpoint.as_deref())
        .execute(&state.db.pool)
        .await?;
    }
    state.webhook_wake.notify_one();
    Ok(())
}

/// `X-Webhook-Signature` of Convertrilo's managed webhooks: hex HMAC-SHA256 of the body.
pub fn convertrilo_signature(secret: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// One event's delivery to a job's webhook, as the job's document shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Delivery {
    /// `evt_…`: what the receiver de-duplicates on (also `Kiln-Event-Id`).
    pub event_id: String,
    /// job.completed, job.failed, job.cancelled or job.progress.
    pub event: String,
    /// pending (to be retried), delivered or failed (gave up).
    pub status: String,
    pub attempts: i64,
    pub last_status_code: Option<i64>,
    pub last_error: Option<String>,
    /// While pending: when the next attempt goes out.
    pub next_attempt_at: Option<String>,
    pub delivered_at: Option<String>,
}

/// The deliveries of a job, oldest first.
pub async fn deliveries(state: &AppState, job_id: &str) -> Result<Vec<Delivery>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, event, status, attempts, next_attempt_at, last_status_code, last_error,
                created_at, delivered_at
         FROM webhook_deliveries WHERE job_id = $1 ORDER BY created_at, id",
    )
    .bind(job_id)
    .fetch_all(&state.db.pool)
    .await?;
    let t = crate::time::rfc3339;
    rows.iter()
        .map(|r| {
            let status: String = r.try_get("status")?;
            Ok(Delivery {
                event_id: r.try_get("id")?,
                event: r.try_get("event")?,
                attempts: r.try_get("attempts")?,
                last_status_code: crate::db::opt_i64(r, "last_status_code")?,
                last_error: r.try_get("last_error")?,
                next_attempt_at: (status == "pending")
                    .then(|| r.try_get::<i64, _>("next_attempt_at").map(t))
                    .transpose()?,
                delivered_at: crate::db::opt_i64(r, "delivered_at")?.map(t),
                status,
            })
        })
        .collect()
}

/// Delay before attempt `n + 1` after `n` failed attempts.
pub fn backoff(base_ms: u64, failed: u32) -> Duration {
    let ms = base_ms.saturating_mul(1u64 << failed.saturating_sub(1).min(20));
    Duration::from_millis(ms.min(3_600_000))
}

/// Deliver due events until shutdown.
pub async fn run(state: AppState, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let client = state.url_policy.client(Duration::from_secs(10)).clone();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let due = match due(&state).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "could not read due webhooks");
                Vec::new()
            }
        };
        let busy = !due.is_empty();
        let mut sends = Vec::new();
        for id in due {
            let (state, client) = (state.clone(), client.clone());
            sends.push(tokio::spawn(async move {
                if let Err(e) = attempt(&state, &client, &id).await {
                    tracing::warn!(delivery = %id, error = %e, "webhook attempt not recorded");
                }
            }));
        }
        for s in sends {
            let _ = s.await;
        }
        if busy {
            continue;
        }
        tokio::select! {
            _ = state.webhook_wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Lock up to 16 due deliveries for this replica (for a minute) and return their ids.
async fn due(state: &AppState) -> anyhow::Result<Vec<String>> {
    let now = kiln_protocol::now_ms();
    let rows = sqlx::query(
        "SELECT id FROM webhook_deliveries
         WHERE status = 'pending' AND next_attempt_at <= $1
           AND (locked_until IS NULL OR locked_until < $1)
         ORDER BY next_attempt_at LIMIT 16",
    )
    .bind(now)
    .fetch_all(&state.db.pool)
    .await?;
    let mut out = Vec::new();
    for r in rows {
        let id: String = r.try_get("id")?;
        let locked = sqlx::query(
            "UPDATE webhook_deliveries SET locked_until = $1
             WHERE id = $2 AND status = 'pending' AND (locked_until IS NULL OR locked_until < $3)",
        )
        .bind(now + 60_000)
        .bind(&id)
        .bind(now)
        .execute(&state.db.pool)
        .await?;
        if locked.rows_affected() == 1 {
            out.push(id);
        }
    }
    Ok(out)
}

/// Send one delivery and record the outcome.
async fn attempt(state: &AppState, client: &reqwest::Client, id: &str) -> anyhow::Result<()> {
    let row = sqlx::query(
        "SELECT d.url, d.event, d.payload, d.attempts, d.scheme, d.endpoint_id, d.account_id,
                a.webhook_secret
         FROM webhook_deliveries d JOIN accounts a ON a.id = d.account_id WHERE d.id = $1",
    )
    .bind(id)
    .fetch_one(&state.db.pool)
    .await?;
    let url: String = row.try_get("url")?;
    let event: String = row.try_get("event")?;
    let payload: String = row.try_get("payload")?;
    let attempts: i64 = row.try_get::<i64, _>("attempts")? + 1;
    let account: String = row.try_get("account_id")?;
    let secret = state
        .db
        .open_webhook_secret(&account, row.try_get("webhook_secret")?)?
        .unwrap_or_default();
    let scheme = Scheme::parse(&row.try_get::<String, _>("scheme")?);
    let endpoint: Option<String> = row.try_get("endpoint_id")?;
    let t = kiln_protocol::now_ms() / 1000;

    let result = match state.url_policy.check(&url) {
        Err(e) => Err((None, e)),
        Ok(u) => {
            let mut req = client
                .post(u)
                .header("content-type", "application/json")
                .body(payload.clone());
            req = match scheme {
                Scheme::Kiln => req
                    .header("kiln-event-id", id)
                    .header("kiln-event-type", &event)
                    .header("kiln-delivery-attempt", attempts.to_string())
                    .header("kiln-signature", signature(&secret, t, &payload)),
                Scheme::Convertrilo | Scheme::ConvertriloUnsigned => {
                    let mut r = req.header("x-webhook-event", &event);
                    if let Some(ep) = &endpoint {
                        r = r.header("x-webhook-id", ep);
                    }
                    if scheme == Scheme::Convertrilo {
                        // A deleted endpoint's pending deliveries go unsigned: the receiver
                        // refuses them, as it should.
                        let secret = match endpoint.as_deref() {
                            Some(ep) => state.db.endpoint(ep).await?.map(|e| e.secret),
                            None => None,
                        };
                        if let Some(secret) = secret {
                            r = r.header(
                                "x-webhook-signature",
                                convertrilo_signature(&secret, &payload),
                            );
                        }
                    }
                    r
                }
            };
            match req.send().await {
                Ok(r) if r.status().is_success() => Ok(r.status().as_u16()),
                Ok(r) => Err((
                    Some(r.status().as_u16()),
                    format!("the receiver answered {}", r.status()),
                )),
                Err(e) => Err((None, crate::error::chain(&e))),
            }
        }
    };
    let now = kiln_protocol::now_ms();
    match result {
        Ok(code) => {
            state
                .metrics
                .webhooks
                .with_label_values(&["delivered"])
                .inc();
            sqlx::query(
                "UPDATE webhook_deliveries SET status = 'delivered', attempts = $1,
                        last_status_code = $2, last_error = NULL, delivered_at = $3,
                        locked_until = NULL
                 WHERE id = $4",
            )
            .bind(attempts)
            .bind(code as i64)
            .bind(now)
            .bind(id)
            .execute(&state.db.pool)
            .await?;
        }
        Err((code, error)) => {
            let give_up = attempts >= state.config.webhook_max_attempts as i64;
            state
                .metrics
                .webhooks
                .with_label_values(&[if give_up { "failed" } else { "retry" }])
                .inc();
            let next =
                now + backoff(state.config.webhook_backoff_ms, attempts as u32).as_millis() as i64;
            tracing::info!(delivery = %id, attempts, %error, give_up, "webhook not delivered");
            sqlx::query(
                "UPDATE webhook_deliveries SET status = $1, attempts = $2, last_status_code = $3,
                        last_error = $4, next_attempt_at = $5, locked_until = NULL
                 WHERE id = $6",
            )
            .bind(if give_up { "failed" } else { "pending" })
            .bind(attempts)
            .bind(code.map(|c| c as i64))
            .bind(error)
            .bind(next)
            .bind(id)
            .execute(&state.db.pool)
            .await?;
        }
    }
    Ok(())
}

/// Shared wake-up for the delivery loop when a new event is recorded.
pub type Wake = Arc<tokio::sync::Notify>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_reference_hmac() {
        // Reference value from Python's hmac module:
        // hmac.new(b"whsec_test", b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
        assert_eq!(
            signature("whsec_test", 1700000000, "{\"a\":1}"),
            "t=1700000000,v1=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
        );
        let a = signature("whsec_x", 1700000000, "{\"a\":1}");
        assert!(a.starts_with("t=1700000000,v1="));
        assert_eq!(a.len(), "t=1700000000,v1=".len() + 64);
        assert_eq!(a, signature("whsec_x", 1700000000, "{\"a\":1}"));
        assert_ne!(a, signature("whsec_y", 1700000000, "{\"a\":1}"));
        assert_ne!(a, signature("whsec_x", 1700000001, "{\"a\":1}"));
    }

    #[test]
    fn convertrilo_signature_matches_a_reference_hmac() {
        // hmac.new(b"whsec_test", b'{"event":"job.completed"}', hashlib.sha256).hexdigest()
        assert_eq!(
            convertrilo_signature("whsec_test", "{\"event\":\"job.completed\"}"),
            "85365e50e1ff644279c32d6cb56b252a9f50c8716ded23a964fca930cec42238"
        );
    }

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        assert_eq!(backoff(30_000, 1), Duration::from_secs(30));
        assert_eq!(backoff(30_000, 2), Duration::from_secs(60));
        assert_eq!(backoff(30_000, 5), Duration::from_secs(480));
        assert_eq!(backoff(30_000, 12), Duration::from_secs(3600));
        let total: Duration = (1..15).map(|n| backoff(30_000, n)).sum();
        assert!(
            total > Duration::from_secs(5 * 3600),
            "{total:?}: retried for hours"
        );
    }
}
