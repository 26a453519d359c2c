//! A submission's database side: the quota check, the charge and the rows of every job (and
//! its batch) in one transaction, so a submission is recorded and paid for whole or not at
//! all; taking it back whole when the queue refuses it; and the outbox of recorded jobs the
//! queue does not have yet (migration 0006).

use sqlx::Row;

use super::batches::BatchRow;
use super::jobs::NewJob;
use super::{opt_i64, Db, DbError};

/// Everything one submission records.
#[derive(Debug, Clone)]
pub struct NewSubmission<'a> {
    pub account_id: &'a str,
    /// Credits it costs (taken only from accounts with a balance).
    pub cost: i64,
    /// The calendar month the account's quota counts: `[from, to)` in ms.
    pub month: (i64, i64),
    pub batch: Option<BatchRow>,
    pub jobs: Vec<NewJob<'a>>,
    /// When the control plane enqueues the jobs itself if the submitter has not (ms).
    pub enqueue_after: i64,
}

/// Why a submission was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("monthly job quota reached: {used} of {quota} jobs used this month")]
    QuotaReached { used: i64, quota: i64 },
    #[error("insufficient credits: this submission costs {cost}, the balance is {balance}")]
    InsufficientCredits { cost: i64, balance: i64 },
    #[error("no account {0:?}")]
    NoAccount(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for RecordError {
    fn from(e: sqlx::Error) -> Self {
        Self::Db(e.into())
    }
}

/// A recorded job the queue may not have, as the outbox hands it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unqueued {
    pub id: String,
    pub spec: String,
    pub attempts: i64,
}

impl Db {
    /// Check the quota, charge the credits and insert the batch and every job, in one
    /// transaction.
    pub async fn record_submission(&self, s: &NewSubmission<'_>) -> Result<(), RecordError> {
        let mut tx = self.pool.begin().await?;
        // Lock the account's row first (a no-op write): concurrent submissions of one account
        // then take turns, so the count and the balance below are not raced past.
        let locked = sqlx::query("UPDATE accounts SET name = name WHERE id = $1")
            .bind(s.account_id)
            .execute(&mut *tx)
            .await?;
        if locked.rows_affected() != 1 {
            return Err(RecordError::NoAccount(s.account_id.to_string()));
        }
        let account = sqlx::query("SELECT credits, monthly_job_quota FROM accounts WHERE id = $1")
            .bind(s.account_id)
            .fetch_one(&mut *tx)
            .await?;
        let credits = opt_i64(&account, "credits")?;
        if let Some(quota) = opt_i64(&account, "monthly_job_quota")? {
            let used: i64 = sqlx::query(
                "SELECT COUNT(*) AS n FROM jobs
                 WHERE account_id = $1 AND created_at >= $2 AND created_at < $3",
            )
            .bind(s.account_id)
            .bind(s.month.0)
            .bind(s.month.1)
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
            if used + s.jobs.len() as i64 > quota {
                return Err(RecordError::QuotaReached { used, quota });
            }
        }
        if let Some(balance) = credits.filter(|_| s.cost > 0) {
            let charged = sqlx::query(
                "UPDATE accounts SET credits = credits - $1 WHERE id = $2 AND credits >= $1",
            )
            .bind(s.cost)
            .bind(s.account_id)
            .execute(&mut *tx)
            .await?;
            if charged.rows_affected() != 1 {
                return Err(RecordError::InsufficientCredits {
                    cost: s.cost,
                    balance,
                });
            }
        }
        if let Some(b) = &s.batch {
            super::batches::insert(&mut tx, b).await?;
        }
        for j in &s.jobs {
            super::jobs::insert(&mut tx, j, Some(s.enqueue_after)).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Take back a recorded submission the queue refused: its jobs and batch deleted and
    /// its credits given back, in one transaction.
    pub async fn withdraw_submission(
        &self,
        account_id: &str,
        job_ids: &[String],
        batch_id: Option<&str>,
        cost: i64,
    ) -> Result<(), DbError> {
        let mut tx = self.pool.begin().await?;
        for id in job_ids {
            sqlx::query("DELETE FROM jobs WHERE id = $1 AND account_id = $2")
                .bind(id)
                .bind(account_id)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(b) = batch_id {
            sqlx::query("DELETE FROM batches WHERE id = $1 AND account_id = $2")
                .bind(b)
                .bind(account_id)
                .execute(&mut *tx)
                .await?;
        }
        if cost > 0 {
            sqlx::query(
                "UPDATE accounts SET credits = credits + $1 WHERE id = $2 AND credits IS NOT NULL",
            )
            .bind(cost)
            .bind(account_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The queue has these jobs: take them out of the outbox.
    pub async fn mark_enqueued(&self, job_ids: &[String]) -> Result<(), DbError> {
        for id in job_ids {
            sqlx::query("UPDATE jobs SET enqueue_after = NULL WHERE id = $1")
                .bind(id)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Up to `limit` pending jobs whose `enqueue_after` has passed at `now`, each claimed (its
    /// `enqueue_after` moved `hold_ms` on) so one replica enqueues it.
    pub async fn claim_unqueued(
        &self,
        now: i64,
        hold_ms: i64,
        limit: i64,
    ) -> Result<Vec<Unqueued>, DbError> {
        let rows = sqlx::query(
            "SELECT id, spec, attempts, enqueue_after FROM jobs
             WHERE enqueue_after IS NOT NULL AND enqueue_after <= $1 AND status = 'pending'
             ORDER BY enqueue_after LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for r in rows {
            let id: String = r.try_get("id")?;
            let was: i64 = r.try_get("enqueue_after")?;
            let claimed = sqlx::query(
                "UPDATE jobs SET enqueue_after = $1 WHERE id = $2 AND enqueue_after = $3",
            )
            .bind(now + hold_ms)
            .bind(&id)
            .bind(was)
            .execute(&self.pool)
            .await?;
            if claimed.rows_affected() == 1 {
                out.push(Unqueued {
                    id,
                    spec: r.try_get("spec")?,
                    attempts: r.try_get("attempts")?,
                });
            }
        }
        Ok(out)
    }

    /// Record a job that was done at once (a synchronous conversion kept for download):
    /// completed, its output downloadable for `ttl_ms`.
    pub async fn record_finished(&self, j: &NewJob<'_>, done: &Finished) -> Result<(), DbError> {
        let now = kiln_protocol::now_ms();
        let mut tx = self.pool.begin().await?;
        super::jobs::insert(&mut tx, j, None).await?;
        sqlx::query(
            "UPDATE jobs SET status = 'completed', progress = 100, output_size = $1,
                    output_width = $2, output_height = $3, output_duration = 0, report = $4,
                    started_at = $5, completed_at = $5, updated_at = $5, expires_at = $5 + $6,
                    encode_ms = $7, gpu = $8
             WHERE id = $9",
        )
        .bind(done.output_size)
        .bind(done.width)
        .bind(done.height)
        .bind(done.report.as_deref())
        .bind(now)
        .bind(done.ttl_ms)
        .bind(done.encode_ms)
        .bind(done.gpu as i64)
        .bind(j.id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// What a job done at once produced.
#[derive(Debug, Clone, Default)]
pub struct Finished {
    pub output_size: i64,
    pub width: i64,
    pub height: i64,
    /// How it was made (JSON of the encode report).
    pub report: Option<String>,
    pub encode_ms: i64,
    pub gpu: bool,
    pub ttl_ms: i64,
}
