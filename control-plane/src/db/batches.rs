//! Batches: the jobs of one submission, and whether a zip of their outputs was asked for.

use sqlx::Row;

use super::{Db, DbError};

/// One row of `batches`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchRow {
    pub id: String,
    pub account_id: String,
    /// Whether `GET /batches/{id}/archive` serves a zip of the outputs.
    pub archive: bool,
    pub created_at: i64,
}

impl Db {
    /// A batch of `account_id` (another account's batch is "not found").
    pub async fn get_batch(&self, account_id: &str, id: &str) -> Result<Option<BatchRow>, DbError> {
        let row = sqlx::query("SELECT * FROM batches WHERE id = $1 AND account_id = $2")
            .bind(id)
            .bind(account_id)
            .fetch_optional(&self.pool)
            .await?;
        let Some(r) = row else { return Ok(None) };
        Ok(Some(BatchRow {
            id: r.try_get("id")?,
            account_id: r.try_get("account_id")?,
            archive: r.try_get::<i64, _>("archive")? != 0,
            created_at: r.try_get("created_at")?,
        }))
    }
}

/// Record a batch inside the submission's transaction.
pub(super) async fn insert(conn: &mut sqlx::AnyConnection, b: &BatchRow) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO batches (id, account_id, archive, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(&b.id)
    .bind(&b.account_id)
    .bind(b.archive as i64)
    .bind(b.created_at)
    .execute(conn)
    .await?;
    Ok(())
}
