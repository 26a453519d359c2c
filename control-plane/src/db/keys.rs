//! Accounts and API keys. Keys are stored only as SHA-256 hashes.

use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::{Db, DbError};

/// Every scope a key can hold.
pub const ALL_SCOPES: &[&str] = &[
    "jobs:create",
    "jobs:read",
    "jobs:cancel",
    "usage:read",
    "admin",
];

/// The caller behind a valid key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub key_id: String,
    pub account_id: String,
    pub scopes: Vec<String>,
}

impl Principal {
    /// Whether the key holds `scope` (or `admin`, which holds them all).
    pub fn has(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope || s == "admin")
    }
}

/// SHA-256 of a key, hex: what the database stores.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A new random key: `kiln_` and 40 hex digits (160 bits).
pub fn generate_key() -> String {
    let mut bytes = [0u8; 20];
    rand::rng().fill_bytes(&mut bytes);
    format!("kiln_{}", hex::encode(bytes))
}

impl Db {
    /// How many keys exist (revoked included).
    pub async fn count_keys(&self) -> Result<i64, DbError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM api_keys")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>("n")?)
    }

    /// Create an account with one key holding `scopes`; returns the account id.
    pub async fn create_account_with_key(
        &self,
        account_name: &str,
        key_name: &str,
        key: &str,
        scopes: &[&str],
    ) -> Result<String, DbError> {
        let now = kiln_protocol::now_ms();
        let account_id = uuid::Uuid::now_v7().to_string();
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO accounts (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(&account_id)
            .bind(account_name)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO api_keys (id, account_id, name, prefix, key_hash, scopes, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(&account_id)
        .bind(key_name)
        .bind(key.chars().take(12).collect::<String>())
        .bind(hash_key(key))
        .bind(scopes.join(" "))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(account_id)
    }

    /// The principal behind `key`, if it exists and is not revoked.
    pub async fn authenticate(&self, key: &str) -> Result<Option<Principal>, DbError> {
        let row = sqlx::query(
            "SELECT id, account_id, scopes FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
        )
        .bind(hash_key(key))
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(r) => Some(Principal {
                key_id: r.try_get("id")?,
                account_id: r.try_get("account_id")?,
                scopes: r
                    .try_get::<String, _>("scopes")?
                    .split_whitespace()
                    .map(str::to_string)
                    .collect(),
            }),
            None => None,
        })
    }
}
