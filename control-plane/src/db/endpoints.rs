//! Managed webhook endpoints (Convertrilo's `POST /webhooks`): an account's URLs, the events
//! each takes, and the secret that signs what is sent to it.

use sqlx::Row;

use super::{Db, DbError};

/// One managed endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub id: String,
    pub account_id: String,
    pub url: String,
    /// The events it takes (`job.completed`, …).
    pub events: Vec<String>,
    /// Signs deliveries (hex HMAC-SHA256 of the body); shown once, at creation. Stored sealed.
    pub secret: String,
    pub active: bool,
    pub created_at: i64,
}

/// What an endpoint's secret is sealed to.
fn secret_context(id: &str) -> String {
    crate::sealing::context("endpoint", id)
}

fn from_row(db: &Db, r: &sqlx::any::AnyRow) -> Result<Endpoint, DbError> {
    let id: String = r.try_get("id")?;
    let secret = db.open_secret(&r.try_get::<String, _>("secret")?, &secret_context(&id))?;
    Ok(Endpoint {
        id,
        account_id: r.try_get("account_id")?,
        url: r.try_get("url")?,
        events: r
            .try_get::<String, _>("events")?
            .split_whitespace()
            .map(str::to_string)
            .collect(),
        secret,
        active: r.try_get::<i64, _>("active")? != 0,
        created_at: r.try_get("created_at")?,
    })
}

impl Db {
    /// Record a managed endpoint.
    pub async fn insert_endpoint(&self, e: &Endpoint) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO webhook_endpoints (id, account_id, url, events, secret, active, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&e.id)
        .bind(&e.account_id)
        .bind(&e.url)
        .bind(e.events.join(" "))
        .bind(self.sealer.seal(&e.secret, &secret_context(&e.id)))
        .bind(e.active as i64)
        .bind(e.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// An account's endpoints, oldest first.
    pub async fn endpoints(&self, account_id: &str) -> Result<Vec<Endpoint>, DbError> {
        let rows = sqlx::query(
            "SELECT * FROM webhook_endpoints WHERE account_id = $1 ORDER BY created_at, id",
        )
        .bind(account_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| from_row(self, r)).collect()
    }

    /// One endpoint by id (any account: the delivery loop signs with it).
    pub async fn endpoint(&self, id: &str) -> Result<Option<Endpoint>, DbError> {
        let row = sqlx::query("SELECT * FROM webhook_endpoints WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(|r| from_row(self, r)).transpose()
    }

    /// Remove an account's endpoint; false if it has no such endpoint.
    pub async fn delete_endpoint(&self, account_id: &str, id: &str) -> Result<bool, DbError> {
        let r = sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1 AND account_id = $2")
            .bind(id)
            .bind(account_id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }
}
