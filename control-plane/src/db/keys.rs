//! Accounts and API keys. Keys are stored only as SHA-256 hashes.

use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::{Db, DbError};

pub use super::accounts::{generate_webhook_secret, Account};

/// Every scope a key can hold.
/// What a revocation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    Done,
    NoSuchKey,
    /// Refused: the key is the last live one with the admin scope.
    LastAdmin,
}

pub const ALL_SCOPES: &[&str] = &[
    "jobs:create",
    "jobs:read",
    "jobs:cancel",
    "usage:read",
    // Convertrilo's: saved S3 credentials, and managed webhooks.
    "credentials:manage",
    "webhooks:manage",
    "admin",
];

/// The caller behind a valid key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub key_id: String,
    pub account_id: String,
    pub scopes: Vec<String>,
    /// Per-minute limits for this key (writes, reads); `None` takes the server's default.
    pub rate_submit: Option<i64>,
    pub rate_read: Option<i64>,
}

/// A key as an admin sees it (never the key itself).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct KeyInfo {
    pub id: String,
    pub account_id: String,
    pub name: String,
    /// The key's first characters, to recognise it.
    pub prefix: String,
    pub scopes: Vec<String>,
    /// Per-minute limits for writes and reads; null takes the server's default.
    pub rate_limits: RateLimits,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

/// Per-key overrides of the per-minute request limits.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct RateLimits {
    /// Writes (POST, DELETE) per minute.
    pub submit: Option<i64>,
    /// Reads (GET) per minute.
    pub read: Option<i64>,
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

/// Check a key brought from another service (`kvrt_` + 32 alphanumerics, say) before its
/// hash is stored: 16 to 200 visible ASCII characters, no spaces.
pub fn validate_imported_key(key: &str) -> Result<(), String> {
    if !(16..=200).contains(&key.len()) {
        return Err("an imported key must be 16 to 200 characters long".into());
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("an imported key may hold only visible ASCII characters, no spaces".into());
    }
    Ok(())
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
        let account = self.create_account(account_name, None, None).await?;
        let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
        self.insert_key(&account.id, key_name, key, &scopes, &RateLimits::default())
            .await?;
        Ok(account.id)
    }

    /// Store a key's hash for `account_id`; returns the key's id.
    pub async fn insert_key(
        &self,
        account_id: &str,
        name: &str,
        key: &str,
        scopes: &[String],
        limits: &RateLimits,
    ) -> Result<String, DbError> {
        let id = uuid::Uuid::now_v7().to_string();
        sqlx::query(
            "INSERT INTO api_keys (id, account_id, name, prefix, key_hash, scopes, created_at, rate_submit, rate_read)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&id)
        .bind(account_id)
        .bind(name)
        .bind(key.chars().take(12).collect::<String>())
        .bind(hash_key(key))
        .bind(scopes.join(" "))
        .bind(kiln_protocol::now_ms())
        .bind(limits.submit)
        .bind(limits.read)
        .execute(&self.pool)
        .await?;
        Ok(id)
    }

    /// Every key (of one account, if given), newest first.
    pub async fn list_keys(&self, account_id: Option<&str>) -> Result<Vec<KeyInfo>, DbError> {
        const COLS: &str = "SELECT id, account_id, name, prefix, scopes, created_at, revoked_at, rate_submit, rate_read FROM api_keys";
        let rows = match account_id {
            Some(a) => {
                sqlx::query(&format!("{COLS} WHERE account_id = $1 ORDER BY id DESC"))
                    .bind(a)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                sqlx::query(&format!("{COLS} ORDER BY id DESC"))
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter()
            .map(|r| {
                Ok(KeyInfo {
                    id: r.try_get("id")?,
                    account_id: r.try_get("account_id")?,
                    name: r.try_get("name")?,
                    prefix: r.try_get("prefix")?,
                    scopes: r
                        .try_get::<String, _>("scopes")?
                        .split_whitespace()
                        .map(str::to_string)
                        .collect(),
                    rate_limits: RateLimits {
                        submit: super::opt_i64(r, "rate_submit")?,
                        read: super::opt_i64(r, "rate_read")?,
                    },
                    created_at: crate::time::rfc3339(r.try_get("created_at")?),
                    revoked_at: super::opt_i64(r, "revoked_at")?.map(crate::time::rfc3339),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// Revoke a key; false if there is no such key. Revoking twice keeps the first time.
    pub async fn revoke_key(&self, id: &str) -> Result<Revoked, DbError> {
        // One statement: the key is revoked unless it is the last live admin key (which
        // would leave nobody able to manage the server over the API).
        let r = sqlx::query(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2
             AND NOT (revoked_at IS NULL AND (' ' || scopes || ' ') LIKE '% admin %'
                      AND (SELECT COUNT(*) FROM api_keys
                           WHERE revoked_at IS NULL AND (' ' || scopes || ' ') LIKE '% admin %') <= 1)",
        )
        .bind(kiln_protocol::now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        if r.rows_affected() == 1 {
            return Ok(Revoked::Done);
        }
        let exists = sqlx::query("SELECT 1 FROM api_keys WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .is_some();
        Ok(if exists {
            Revoked::LastAdmin
        } else {
            Revoked::NoSuchKey
        })
    }

    /// The principal behind `key`, if it exists and is not revoked.
    pub async fn authenticate(&self, key: &str) -> Result<Option<Principal>, DbError> {
        let row = sqlx::query(
            "SELECT id, account_id, scopes, rate_submit, rate_read FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
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
                rate_submit: super::opt_i64(&r, "rate_submit")?,
                rate_read: super::opt_i64(&r, "rate_read")?,
            }),
            None => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imported_keys() {
        assert!(validate_imported_key("kvrt_0123456789abcdefghijABCDEFGHIJ01").is_ok());
        assert!(validate_imported_key(&generate_key()).is_ok());
        for bad in [
            "short",
            "kvrt_0123456789 abcdef",
            "kvrt_01234567\u{e9}89abcdef",
            &"x".repeat(201),
        ] {
            assert!(validate_imported_key(bad).is_err(), "{bad}");
        }
    }
}
