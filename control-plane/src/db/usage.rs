//! What an account used over a period: jobs by status, bytes, encoded time, GPU and CPU
//! time and credits, counted by when jobs were submitted.

use std::collections::BTreeMap;

use sqlx::Row;

use super::{Db, DbError};

/// Sums over the jobs of a period.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeriodUsage {
    /// Jobs by status name.
    pub jobs: BTreeMap<String, i64>,
    pub input_bytes: i64,
    /// Outputs of completed jobs.
    pub output_bytes: i64,
    /// Duration of completed outputs.
    pub encoded_seconds: f64,
    /// Encode wall time where a GPU did the work, and where the CPU did.
    pub gpu_ms: i64,
    pub cpu_ms: i64,
    /// Credits charged and not refunded.
    pub credits: i64,
    /// The same sums by UTC day of submission, oldest first (days without jobs left out).
    pub days: Vec<DayUsage>,
}

/// One UTC day's share of a period.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DayUsage {
    /// Midnight UTC, ms.
    pub day_ms: i64,
    pub jobs: i64,
    pub completed: i64,
    pub failed: i64,
    pub input_bytes: i64,
    pub output_bytes: i64,
    pub encoded_seconds: f64,
    pub credits: i64,
}

impl Db {
    /// The usage of `account_id` over `[from, to)` (ms).
    pub async fn usage(
        &self,
        account_id: &str,
        from: i64,
        to: i64,
    ) -> Result<PeriodUsage, DbError> {
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS n,
                    CAST(COALESCE(SUM(input_size), 0) AS BIGINT) AS input_bytes,
                    CAST(COALESCE(SUM(CASE WHEN status = 'completed' THEN output_size ELSE 0 END), 0) AS BIGINT) AS output_bytes,
                    COALESCE(SUM(CASE WHEN status = 'completed' THEN output_duration ELSE 0.0 END), 0.0) AS seconds,
                    CAST(COALESCE(SUM(CASE WHEN gpu = 1 THEN encode_ms ELSE 0 END), 0) AS BIGINT) AS gpu_ms,
                    CAST(COALESCE(SUM(CASE WHEN gpu = 0 THEN encode_ms ELSE 0 END), 0) AS BIGINT) AS cpu_ms,
                    CAST(COALESCE(SUM(credits_charged - credits_refunded), 0) AS BIGINT) AS credits
             FROM jobs WHERE account_id = $1 AND created_at >= $2 AND created_at < $3
             GROUP BY status",
        )
        .bind(account_id)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        let mut u = PeriodUsage::default();
        for r in &rows {
            u.jobs.insert(r.try_get("status")?, r.try_get("n")?);
            u.input_bytes += r.try_get::<i64, _>("input_bytes")?;
            u.output_bytes += r.try_get::<i64, _>("output_bytes")?;
            u.encoded_seconds += r.try_get::<f64, _>("seconds")?;
            u.gpu_ms += r.try_get::<i64, _>("gpu_ms")?;
            u.cpu_ms += r.try_get::<i64, _>("cpu_ms")?;
            u.credits += r.try_get::<i64, _>("credits")?;
        }
        let days = sqlx::query(
            "SELECT CAST(created_at / 86400000 AS BIGINT) AS day, COUNT(*) AS n,
                    CAST(COALESCE(SUM(CASE WHEN status = 'completed' THEN 1 ELSE 0 END), 0) AS BIGINT) AS completed,
                    CAST(COALESCE(SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END), 0) AS BIGINT) AS failed,
                    CAST(COALESCE(SUM(input_size), 0) AS BIGINT) AS input_bytes,
                    CAST(COALESCE(SUM(CASE WHEN status = 'completed' THEN output_size ELSE 0 END), 0) AS BIGINT) AS output_bytes,
                    COALESCE(SUM(CASE WHEN status = 'completed' THEN output_duration ELSE 0.0 END), 0.0) AS seconds,
                    CAST(COALESCE(SUM(credits_charged - credits_refunded), 0) AS BIGINT) AS credits
             FROM jobs WHERE account_id = $1 AND created_at >= $2 AND created_at < $3
             GROUP BY CAST(created_at / 86400000 AS BIGINT) ORDER BY day",
        )
        .bind(account_id)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        for r in &days {
            u.days.push(DayUsage {
                day_ms: r.try_get::<i64, _>("day")? * 86_400_000,
                jobs: r.try_get("n")?,
                completed: r.try_get("completed")?,
                failed: r.try_get("failed")?,
                input_bytes: r.try_get("input_bytes")?,
                output_bytes: r.try_get("output_bytes")?,
                encoded_seconds: r.try_get("seconds")?,
                credits: r.try_get("credits")?,
            });
        }
        Ok(u)
    }

    /// Credits charged for an account's jobs that have not finished (what they hold).
    pub async fn credits_held(&self, account_id: &str) -> Result<i64, DbError> {
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(credits_charged), 0) AS BIGINT) AS n FROM jobs
             WHERE account_id = $1 AND status IN ('pending', 'processing')",
        )
        .bind(account_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }

    /// Bytes an account keeps in the store now: outputs not yet expired and live uploads.
    pub async fn bytes_stored(&self, account_id: &str, now: i64) -> Result<i64, DbError> {
        let jobs = sqlx::query(
            "SELECT CAST(COALESCE(SUM(output_size), 0) AS BIGINT) AS n FROM jobs
             WHERE account_id = $1 AND status = 'completed' AND swept_at IS NULL
               AND (expires_at IS NULL OR expires_at > $2)",
        )
        .bind(account_id)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        let uploads = sqlx::query(
            "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) AS n FROM uploads
             WHERE account_id = $1 AND swept_at IS NULL AND expires_at > $2",
        )
        .bind(account_id)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(jobs.try_get::<i64, _>("n")? + uploads.try_get::<i64, _>("n")?)
    }

    /// How fast this server encodes: seconds of output per second of encode over its most
    /// recent completed video jobs (`None` before it has any).
    pub async fn realtime_factor(&self) -> Result<Option<f64>, DbError> {
        let row = sqlx::query(
            "SELECT COALESCE(SUM(output_duration), 0.0) AS secs,
                    CAST(COALESCE(SUM(encode_ms), 0) AS BIGINT) AS ms
             FROM (SELECT output_duration, encode_ms FROM jobs
                   WHERE status = 'completed' AND kind = 'video' AND encode_ms > 0
                   ORDER BY completed_at DESC LIMIT 50) recent",
        )
        .fetch_one(&self.pool)
        .await?;
        let (secs, ms): (f64, i64) = (row.try_get("secs")?, row.try_get("ms")?);
        Ok((ms > 0 && secs > 0.0).then(|| secs / (ms as f64 / 1000.0)))
    }

    /// How many jobs an account submitted in `[from, to)` (ms).
    pub async fn jobs_created_between(
        &self,
        account_id: &str,
        from: i64,
        to: i64,
    ) -> Result<i64, DbError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM jobs WHERE account_id = $1 AND created_at >= $2 AND created_at < $3",
        )
        .bind(account_id)
        .bind(from)
        .bind(to)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }

    /// Jobs by status and codec (for the metrics gauge).
    pub async fn count_by_status(&self) -> Result<Vec<(String, String, i64)>, DbError> {
        let rows = sqlx::query(
            "SELECT status, COALESCE(codec, 'other') AS codec, COUNT(*) AS n
             FROM jobs GROUP BY status, COALESCE(codec, 'other')",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("status")?, r.try_get("codec")?, r.try_get("n")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// Jobs that failed as dead letters (every attempt lost its node), across accounts: how
    /// many, and the latest `limit` as (id, account, message, failed at ms).
    pub async fn dead_letters(
        &self,
        limit: i64,
    ) -> Result<(i64, Vec<(String, String, Option<String>, Option<i64>)>), DbError> {
        let count = sqlx::query(
            "SELECT COUNT(*) AS n FROM jobs WHERE status = 'failed' AND error_code = 'dead_letter'",
        )
        .fetch_one(&self.pool)
        .await?
        .try_get("n")?;
        let rows = sqlx::query(
            "SELECT id, account_id, error_message, completed_at FROM jobs
             WHERE status = 'failed' AND error_code = 'dead_letter'
             ORDER BY completed_at DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let latest = rows
            .iter()
            .map(|r| {
                Ok((
                    r.try_get("id")?,
                    r.try_get("account_id")?,
                    r.try_get("error_message")?,
                    r.try_get("completed_at")?,
                ))
            })
            .collect::<Result<_, sqlx::Error>>()?;
        Ok((count, latest))
    }
}
