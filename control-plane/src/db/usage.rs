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
        Ok(u)
    }
}
