//! Accounts: the owners of jobs, keys, usage, credits and the webhook secret.

use rand::RngCore;
use sqlx::Row;

use super::{Db, DbError};

/// An account: the owner of jobs, keys, usage and the webhook secret.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Account {
    pub id: String,
    pub name: String,
    /// Signs this account's webhooks (HMAC-SHA256); shown to keys that can create jobs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
    /// Credit balance; null means unmetered.
    pub credits: Option<i64>,
    /// Jobs allowed per calendar month (UTC); null means no quota.
    pub monthly_job_quota: Option<i64>,
    /// The plan the operator put the account on (a label shown by usage documents).
    pub plan: Option<String>,
    /// Credits ever given to the account (set or added by an admin).
    pub credits_purchased: i64,
    pub created_at: String,
}

/// A change to an account (each part optional).
#[derive(Debug, Clone, Default)]
pub struct AccountChange {
    /// Set the balance (`Some(None)`: unmetered).
    pub credits: Option<Option<i64>>,
    /// Add to the balance (negative to take away).
    pub add_credits: Option<i64>,
    /// Set the monthly job quota (`Some(None)`: none).
    pub quota: Option<Option<i64>>,
    /// Set the plan label (`Some(None)`: none).
    pub plan: Option<Option<String>>,
}

/// A new webhook signing secret: `whsec_` and 64 hex digits.
pub fn generate_webhook_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("whsec_{}", hex::encode(bytes))
}

/// What an account's webhook secret is sealed to: a sealed secret copied to another account
/// does not open.
fn secret_context(account_id: &str) -> String {
    crate::sealing::context("account", account_id)
}

impl Db {
    /// A fresh webhook secret for `account_id`, sealed as it is stored.
    fn sealed_webhook_secret(&self, account_id: &str) -> String {
        self.sealer
            .seal(&generate_webhook_secret(), &secret_context(account_id))
    }

    /// A stored secret in the clear: sealed values are opened; one an earlier version wrote in
    /// the clear (`whsec_…`, sealed at the next start) is as it is.
    pub(crate) fn open_secret(&self, stored: &str, context: &str) -> Result<String, DbError> {
        if stored.starts_with("whsec_") {
            return Ok(stored.to_string());
        }
        Ok(self.sealer.open(stored, context)?)
    }

    /// An account's stored webhook secret in the clear.
    pub(crate) fn open_webhook_secret(
        &self,
        account_id: &str,
        stored: Option<String>,
    ) -> Result<Option<String>, DbError> {
        stored
            .map(|s| self.open_secret(&s, &secret_context(account_id)))
            .transpose()
    }

    /// Seal the secrets an earlier version stored in the clear (account webhook secrets and
    /// managed endpoints' secrets). Each update is guarded by the old value, so replicas
    /// starting together seal each secret once.
    pub(crate) async fn seal_clear_secrets(&self) -> Result<(), DbError> {
        for (table, id_column, column, kind) in [
            ("accounts", "id", "webhook_secret", "account"),
            ("webhook_endpoints", "id", "secret", "endpoint"),
            ("settings", "name", "value", "setting"),
        ] {
            let rows = sqlx::query(&format!(
                "SELECT {id_column} AS id, {column} AS secret FROM {table}
                 WHERE {column} LIKE 'whsec_%'"
            ))
            .fetch_all(&self.pool)
            .await?;
            for r in rows {
                let (id, clear): (String, String) = (r.try_get("id")?, r.try_get("secret")?);
                let sealed = self
                    .sealer
                    .seal(&clear, &crate::sealing::context(kind, &id));
                sqlx::query(&format!(
                    "UPDATE {table} SET {column} = $1 WHERE {id_column} = $2 AND {column} = $3"
                ))
                .bind(sealed)
                .bind(&id)
                .bind(&clear)
                .execute(&self.pool)
                .await?;
            }
        }
        Ok(())
    }

    /// Create an account with a fresh webhook secret.
    pub async fn create_account(
        &self,
        name: &str,
        credits: Option<i64>,
        monthly_job_quota: Option<i64>,
    ) -> Result<Account, DbError> {
        let now = kiln_protocol::now_ms();
        let id = uuid::Uuid::now_v7().to_string();
        sqlx::query(
            "INSERT INTO accounts (id, name, created_at, webhook_secret, credits, monthly_job_quota,
                                   credits_purchased)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&id)
        .bind(name)
        .bind(now)
        .bind(self.sealed_webhook_secret(&id))
        .bind(credits)
        .bind(monthly_job_quota)
        .bind(credits.unwrap_or(0).max(0))
        .execute(&self.pool)
        .await?;
        Ok(self.get_account(&id).await?.expect("just inserted"))
    }

    /// An account by id (its webhook secret created on first need for accounts made before
    /// webhooks existed).
    pub async fn get_account(&self, id: &str) -> Result<Option<Account>, DbError> {
        sqlx::query(
            "UPDATE accounts SET webhook_secret = $1 WHERE id = $2 AND webhook_secret IS NULL",
        )
        .bind(self.sealed_webhook_secret(id))
        .bind(id)
        .execute(&self.pool)
        .await?;
        let row = sqlx::query(
            "SELECT id, name, webhook_secret, credits, monthly_job_quota, plan, credits_purchased,
                    created_at
             FROM accounts WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            None => None,
            Some(r) => Some(Account {
                id: r.try_get("id")?,
                name: r.try_get("name")?,
                webhook_secret: self.open_webhook_secret(id, r.try_get("webhook_secret")?)?,
                credits: super::opt_i64(&r, "credits")?,
                monthly_job_quota: super::opt_i64(&r, "monthly_job_quota")?,
                plan: r.try_get("plan")?,
                credits_purchased: r.try_get("credits_purchased")?,
                created_at: crate::time::rfc3339(r.try_get("created_at")?),
            }),
        })
    }

    /// Replace an account's webhook secret; later deliveries are signed with the new one.
    pub async fn rotate_webhook_secret(&self, id: &str) -> Result<Option<Account>, DbError> {
        sqlx::query("UPDATE accounts SET webhook_secret = $1 WHERE id = $2")
            .bind(self.sealed_webhook_secret(id))
            .bind(id)
            .execute(&self.pool)
            .await?;
        self.get_account(id).await
    }

    /// Change an account's balance, quota and plan, in one transaction; every increase of
    /// the balance counts as purchased credits.
    pub async fn update_account(
        &self,
        id: &str,
        change: &AccountChange,
    ) -> Result<Option<Account>, DbError> {
        let mut tx = self.pool.begin().await?;
        if let Some(c) = change.credits {
            sqlx::query(
                "UPDATE accounts SET credits_purchased = credits_purchased
                        + CASE WHEN $1 > COALESCE(credits, 0) THEN $1 - COALESCE(credits, 0) ELSE 0 END,
                        credits = $1
                 WHERE id = $2",
            )
            .bind(c)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        if let Some(n) = change.add_credits {
            sqlx::query(
                "UPDATE accounts SET credits = COALESCE(credits, 0) + $1,
                        credits_purchased = credits_purchased + CASE WHEN $1 > 0 THEN $1 ELSE 0 END
                 WHERE id = $2",
            )
            .bind(n)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        if let Some(q) = change.quota {
            sqlx::query("UPDATE accounts SET monthly_job_quota = $1 WHERE id = $2")
                .bind(q)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(p) = &change.plan {
            sqlx::query("UPDATE accounts SET plan = $1 WHERE id = $2")
                .bind(p.as_deref())
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.get_account(id).await
    }
}
