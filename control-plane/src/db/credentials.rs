//! Saved S3 credentials (Convertrilo's `credentials:manage`): an account's keys for its own
//! buckets, used by name in `outputS3`/`sourceS3`. The secret key is stored sealed with the
//! server's key (`crate::sealing`) and never returned.

use sqlx::Row;

use super::{Db, DbError};

/// A saved credential as listed (never the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedCredential {
    pub id: String,
    pub account_id: String,
    pub name: String,
    pub access_key_id: String,
    /// The secret key, sealed.
    pub secret_sealed: String,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub created_at: i64,
}

fn from_row(r: &sqlx::any::AnyRow) -> Result<SavedCredential, sqlx::Error> {
    Ok(SavedCredential {
        id: r.try_get("id")?,
        account_id: r.try_get("account_id")?,
        name: r.try_get("name")?,
        access_key_id: r.try_get("access_key_id")?,
        secret_sealed: r.try_get("secret_sealed")?,
        region: r.try_get("region")?,
        endpoint: r.try_get("endpoint")?,
        created_at: r.try_get("created_at")?,
    })
}

impl Db {
    /// Save a credential; false if the account already has one of that name.
    pub async fn insert_credential(&self, c: &SavedCredential) -> Result<bool, DbError> {
        if self.credential(&c.account_id, &c.name).await?.is_some() {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO s3_credentials (id, account_id, name, access_key_id, secret_sealed,
                                         region, endpoint, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&c.id)
        .bind(&c.account_id)
        .bind(&c.name)
        .bind(&c.access_key_id)
        .bind(&c.secret_sealed)
        .bind(c.region.as_deref())
        .bind(c.endpoint.as_deref())
        .bind(c.created_at)
        .execute(&self.pool)
        .await?;
        Ok(true)
    }

    /// An account's saved credentials, by name.
    pub async fn credentials(&self, account_id: &str) -> Result<Vec<SavedCredential>, DbError> {
        let rows = sqlx::query("SELECT * FROM s3_credentials WHERE account_id = $1 ORDER BY name")
            .bind(account_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
    }

    /// An account's credential by name.
    pub async fn credential(
        &self,
        account_id: &str,
        name: &str,
    ) -> Result<Option<SavedCredential>, DbError> {
        let row = sqlx::query("SELECT * FROM s3_credentials WHERE account_id = $1 AND name = $2")
            .bind(account_id)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(from_row).transpose()?)
    }

    /// Delete an account's credential by id or name; false if there is none.
    pub async fn delete_credential(
        &self,
        account_id: &str,
        id_or_name: &str,
    ) -> Result<bool, DbError> {
        let r = sqlx::query(
            "DELETE FROM s3_credentials WHERE account_id = $1 AND (id = $2 OR name = $2)",
        )
        .bind(account_id)
        .bind(id_or_name)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }
}
