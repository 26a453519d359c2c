//! Idempotency keys: the first answer to `(account, key)` kept for a day, replayed to a
//! retry with the same request, and a retry with another request refused.

use sqlx::Row;

use super::{opt_i64, Db, DbError};

/// How long an answer is kept for replay.
pub const KEEP_MS: i64 = 24 * 3600 * 1000;

/// What a key already holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    /// Nothing: this request claimed it.
    Claimed,
    /// Another request holds it (its hash differs).
    OtherRequest,
    /// The same request is still running.
    InProgress,
    /// The same request's answer: status and JSON body.
    Answered(u16, String),
}

impl Db {
    /// Claim `key` for a request hashing to `hash`, or say what holds it.
    pub async fn claim_idempotency(
        &self,
        account_id: &str,
        key: &str,
        hash: &str,
    ) -> Result<Held, DbError> {
        let now = kiln_protocol::now_ms();
        sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind(now - KEEP_MS)
            .execute(&self.pool)
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (account_id, idem_key, request_hash, created_at)
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(account_id)
        .bind(key)
        .bind(hash)
        .bind(now)
        .execute(&self.pool)
        .await;
        if inserted?.rows_affected() == 1 {
            return Ok(Held::Claimed);
        }
        let row = sqlx::query(
            "SELECT request_hash, status, response FROM idempotency_keys
             WHERE account_id = $1 AND idem_key = $2",
        )
        .bind(account_id)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else {
            return Ok(Held::InProgress);
        };
        if r.try_get::<String, _>("request_hash")? != hash {
            return Ok(Held::OtherRequest);
        }
        Ok(
            match (
                opt_i64(&r, "status")?,
                r.try_get::<Option<String>, _>("response")?,
            ) {
                (Some(s), Some(body)) => Held::Answered(s as u16, body),
                _ => Held::InProgress,
            },
        )
    }

    /// Keep the answer of a claimed key.
    pub async fn answer_idempotency(
        &self,
        account_id: &str,
        key: &str,
        status: u16,
        body: &str,
    ) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE idempotency_keys SET status = $1, response = $2
             WHERE account_id = $3 AND idem_key = $4",
        )
        .bind(status as i64)
        .bind(body)
        .bind(account_id)
        .bind(key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Give a claimed key up (the request failed: a retry may run it again).
    pub async fn release_idempotency(&self, account_id: &str, key: &str) -> Result<(), DbError> {
        sqlx::query("DELETE FROM idempotency_keys WHERE account_id = $1 AND idem_key = $2")
            .bind(account_id)
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
