//! Uploads: files stored by `POST /uploads` for later jobs, usable until they expire.

use sqlx::Row;

use super::{opt_i64, Db, DbError};

/// One row of `uploads`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRow {
    pub id: String,
    pub account_id: String,
    pub object_key: String,
    pub filename: Option<String>,
    pub size: i64,
    pub created_at: i64,
    pub expires_at: i64,
    pub swept_at: Option<i64>,
}

impl UploadRow {
    /// Whether jobs may still read it at `now_ms`.
    pub fn usable(&self, now_ms: i64) -> bool {
        self.swept_at.is_none() && self.expires_at > now_ms
    }
}

impl Db {
    /// Record a stored upload.
    pub async fn insert_upload(&self, u: &UploadRow) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO uploads (id, account_id, object_key, filename, size, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&u.id)
        .bind(&u.account_id)
        .bind(&u.object_key)
        .bind(u.filename.as_deref())
        .bind(u.size)
        .bind(u.created_at)
        .bind(u.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// An upload of `account_id` (another account's upload is "not found").
    pub async fn get_upload(
        &self,
        account_id: &str,
        id: &str,
    ) -> Result<Option<UploadRow>, DbError> {
        let row = sqlx::query("SELECT * FROM uploads WHERE id = $1 AND account_id = $2")
            .bind(id)
            .bind(account_id)
            .fetch_optional(&self.pool)
            .await?;
        let Some(r) = row else { return Ok(None) };
        Ok(Some(UploadRow {
            id: r.try_get("id")?,
            account_id: r.try_get("account_id")?,
            object_key: r.try_get("object_key")?,
            filename: r.try_get("filename")?,
            size: r.try_get("size")?,
            created_at: r.try_get("created_at")?,
            expires_at: r.try_get("expires_at")?,
            swept_at: opt_i64(&r, "swept_at")?,
        }))
    }
}
