//! Jobs: their rows and every state change. Each transition is one guarded UPDATE, so a
//! duplicate or stale event (a retried node, a reclaimed lease) changes nothing.
//!
//! Attempt numbers are assigned by the queue (a reclaim bumps them atomically with the
//! re-enqueue). An event from an attempt *newer* than the row's advances the row to it, since
//! its `Requeued` event may be applied later (another control-plane replica, a replay after a
//! crash); an event from an *older* attempt is stale and ignored.

use kiln_protocol::JobErrorCode;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{opt_i64, Db, DbError};

/// A job's lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    Pending,
    Processing,
    Completed,
    Failed,
    Cancelled,
}

impl JobStatus {
    /// The API's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parse a stored or requested status name.
    pub fn parse_name(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "processing" => Self::Processing,
            "completed" => Self::Completed,
            "failed" => Self::Failed,
            "cancelled" | "canceled" => Self::Cancelled,
            _ => return None,
        })
    }

    fn parse(s: &str) -> Self {
        Self::parse_name(s).unwrap_or(Self::Pending)
    }

    /// Whether the job can still change.
    pub fn is_live(self) -> bool {
        matches!(self, Self::Pending | Self::Processing)
    }
}

/// One row of `jobs`.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRow {
    pub id: String,
    pub account_id: String,
    pub kind: String,
    pub status: JobStatus,
    pub spec: String,
    pub source_key: String,
    pub output_key: String,
    pub input_name: Option<String>,
    pub input_size: i64,
    pub output_size: Option<i64>,
    pub progress: f64,
    pub fps: Option<f64>,
    pub eta_s: Option<f64>,
    pub output_width: Option<i64>,
    pub output_height: Option<i64>,
    pub output_duration: Option<f64>,
    /// How the output was made, as the node reported it (JSON).
    pub report: Option<String>,
    pub attempts: i64,
    pub node_id: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub batch_id: Option<String>,
    pub webhook_url: Option<String>,
    pub destination_status: Option<String>,
    pub destination_error: Option<String>,
    pub credits_charged: i64,
    pub expires_at: Option<i64>,
    pub swept_at: Option<i64>,
    pub encode_ms: Option<i64>,
    pub gpu: Option<i64>,
    /// The dialect the job came in through (`None`: the native API).
    pub dialect: Option<String>,
    /// What the dialect keeps for its client (JSON).
    pub dialect_data: Option<String>,
    /// A title in chunks, while it encodes: where its chunks stand (JSON `ChunkCounts`).
    pub chunks_live: Option<String>,
}

impl JobRow {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: r.try_get("id")?,
            account_id: r.try_get("account_id")?,
            kind: r.try_get("kind")?,
            status: JobStatus::parse(&r.try_get::<String, _>("status")?),
            spec: r.try_get("spec")?,
            source_key: r.try_get("source_key")?,
            output_key: r.try_get("output_key")?,
            input_name: r.try_get("input_name")?,
            input_size: r.try_get("input_size")?,
            output_size: opt_i64(r, "output_size")?,
            progress: r.try_get("progress")?,
            fps: r.try_get("fps")?,
            eta_s: r.try_get("eta_s")?,
            output_width: opt_i64(r, "output_width")?,
            output_height: opt_i64(r, "output_height")?,
            output_duration: r.try_get("output_duration")?,
            report: r.try_get("report")?,
            attempts: r.try_get("attempts")?,
            node_id: r.try_get("node_id")?,
            error_code: r.try_get("error_code")?,
            error_message: r.try_get("error_message")?,
            created_at: r.try_get("created_at")?,
            started_at: opt_i64(r, "started_at")?,
            completed_at: opt_i64(r, "completed_at")?,
            batch_id: r.try_get("batch_id")?,
            webhook_url: r.try_get("webhook_url")?,
            destination_status: r.try_get("destination_status")?,
            destination_error: r.try_get("destination_error")?,
            credits_charged: r.try_get("credits_charged")?,
            expires_at: opt_i64(r, "expires_at")?,
            swept_at: opt_i64(r, "swept_at")?,
            encode_ms: opt_i64(r, "encode_ms")?,
            gpu: opt_i64(r, "gpu")?,
            dialect: r.try_get("dialect")?,
            dialect_data: r.try_get("dialect_data")?,
            chunks_live: r.try_get("chunks_live")?,
        })
    }
}

/// What a finished job produced.
#[derive(Debug, Clone, Default)]
pub struct Completion {
    pub output_size: i64,
    pub width: i64,
    pub height: i64,
    pub duration_s: f64,
    /// The node's encode report as JSON.
    pub report: Option<String>,
    /// Whether a GPU did the work (NVENC/NVDEC, or the wgpu resize).
    pub gpu: bool,
    /// How long the output stays downloadable.
    pub ttl_ms: i64,
}

/// What is needed to record a new job.
#[derive(Debug, Clone)]
pub struct NewJob<'a> {
    pub id: &'a str,
    pub account_id: &'a str,
    pub kind: &'a str,
    pub spec: &'a str,
    pub source_key: &'a str,
    pub output_key: &'a str,
    pub input_name: Option<&'a str>,
    pub input_size: i64,
    /// The output codec, for metrics.
    pub codec: Option<&'a str>,
    pub batch_id: Option<&'a str>,
    pub webhook_url: Option<&'a str>,
    /// Whether `job.progress` webhooks are wanted.
    pub webhook_progress: bool,
    /// Where the output is copied when done (JSON of the caller's bucket), if anywhere.
    pub destination: Option<&'a str>,
    /// Credits charged for it.
    pub credits: i64,
    /// The dialect it came in through (`None`: the native API).
    pub dialect: Option<&'a str>,
    /// What the dialect keeps for its client (JSON), if anything.
    pub dialect_data: Option<&'a str>,
}

/// Statuses from which a job can still move (a finished job never changes again).
const LIVE: &str = "status IN ('pending', 'processing')";

/// Record `j` as `pending` on its first attempt, on `conn` (a submission's transaction);
/// `enqueue_after` is when the control plane enqueues it itself if the submitter has not
/// cleared it by then (see migration 0006).
pub(super) async fn insert(
    conn: &mut sqlx::AnyConnection,
    j: &NewJob<'_>,
    enqueue_after: Option<i64>,
) -> Result<(), DbError> {
    let now = kiln_protocol::now_ms();
    sqlx::query(
        "INSERT INTO jobs (id, account_id, kind, status, spec, source_key, output_key,
                           input_name, input_size, attempts, created_at, updated_at, codec,
                           batch_id, webhook_url, webhook_progress, destination, credits_charged,
                           enqueue_after, dialect, dialect_data)
         VALUES ($1, $2, $3, 'pending', $4, $5, $6, $7, $8, 1, $9, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
    )
    .bind(j.id)
    .bind(j.account_id)
    .bind(j.kind)
    .bind(j.spec)
    .bind(j.source_key)
    .bind(j.output_key)
    .bind(j.input_name)
    .bind(j.input_size)
    .bind(now)
    .bind(j.codec)
    .bind(j.batch_id)
    .bind(j.webhook_url)
    .bind(j.webhook_progress as i64)
    .bind(j.destination)
    .bind(j.credits)
    .bind(enqueue_after)
    .bind(j.dialect)
    .bind(j.dialect_data)
    .execute(conn)
    .await?;
    Ok(())
}

impl Db {
    /// Record a job as `pending` on its first attempt (outside a submission; tests).
    pub async fn insert_job(&self, j: &NewJob<'_>) -> Result<(), DbError> {
        let mut conn = self.pool.acquire().await?;
        insert(&mut conn, j, None).await
    }

    /// A job by id, only if it belongs to `account_id` (another account's job is "not found").
    pub async fn get_job(&self, account_id: &str, id: &str) -> Result<Option<JobRow>, DbError> {
        let row = sqlx::query("SELECT * FROM jobs WHERE id = $1 AND account_id = $2")
            .bind(id)
            .bind(account_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(JobRow::from_row).transpose()?)
    }

    /// A node started attempt `attempt`.
    pub async fn mark_started(&self, id: &str, attempt: i64, node: &str) -> Result<bool, DbError> {
        let now = kiln_protocol::now_ms();
        let r = sqlx::query(&format!(
            "UPDATE jobs SET status = 'processing', node_id = $1, attempts = $4, chunks_live = NULL,
                    started_at = COALESCE(started_at, $2), updated_at = $2
             WHERE id = $3 AND attempts <= $4 AND {LIVE}"
        ))
        .bind(node)
        .bind(now)
        .bind(id)
        .bind(attempt)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Progress of attempt `attempt`; progress never goes backwards.
    pub async fn record_progress(
        &self,
        id: &str,
        attempt: i64,
        percent: f64,
        fps: f64,
        eta_s: Option<f64>,
        chunks: Option<&str>,
    ) -> Result<bool, DbError> {
        let now = kiln_protocol::now_ms();
        let r = sqlx::query(&format!(
            "UPDATE jobs SET status = 'processing',
                    progress = CASE WHEN attempts < $6 OR $1 > progress THEN $1 ELSE progress END,
                    attempts = $6,
                    fps = $2, eta_s = $3, started_at = COALESCE(started_at, $4), updated_at = $4,
                    chunks_live = $7
             WHERE id = $5 AND attempts <= $6 AND {LIVE}"
        ))
        .bind(percent)
        .bind(fps)
        .bind(eta_s)
        .bind(now)
        .bind(id)
        .bind(attempt)
        .bind(chunks)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Attempt `attempt` finished. Returns false if the job had already finished (a duplicate).
    pub async fn mark_completed(
        &self,
        id: &str,
        attempt: i64,
        done: &Completion,
    ) -> Result<bool, DbError> {
        let now = kiln_protocol::now_ms();
        let r = sqlx::query(&format!(
            "UPDATE jobs SET status = 'completed', progress = 100, eta_s = 0, output_size = $1,
                    output_width = $2, output_height = $3, output_duration = $4, report = $8,
                    completed_at = $5, updated_at = $5, error_code = NULL, error_message = NULL,
                    attempts = $7, gpu = $9, expires_at = $5 + $10,
                    encode_ms = $5 - COALESCE(started_at, $5)
             WHERE id = $6 AND attempts <= $7 AND {LIVE}"
        ))
        .bind(done.output_size)
        .bind(done.width)
        .bind(done.height)
        .bind(done.duration_s)
        .bind(now)
        .bind(id)
        .bind(attempt)
        .bind(done.report.as_deref())
        .bind(done.gpu as i64)
        .bind(done.ttl_ms)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Attempt `attempt` failed for good.
    pub async fn mark_failed(
        &self,
        id: &str,
        attempt: i64,
        code: JobErrorCode,
        message: &str,
    ) -> Result<bool, DbError> {
        let now = kiln_protocol::now_ms();
        // Failed and refunded in one step: nobody reads a failed job whose credit is still
        // spent.
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(&format!(
            "UPDATE jobs SET status = 'failed', error_code = $1, error_message = $2,
                    completed_at = $3, updated_at = $3, attempts = $5, expires_at = $3
             WHERE id = $4 AND attempts <= $5 AND {LIVE}"
        ))
        .bind(code.as_str())
        .bind(message)
        .bind(now)
        .bind(id)
        .bind(attempt)
        .execute(&mut *tx)
        .await?;
        let failed = r.rows_affected() == 1;
        if failed {
            refund_in(&mut tx, id).await?;
        }
        tx.commit().await?;
        Ok(failed)
    }

    /// Attempt `attempt` failed but may be retried: back to `pending` as attempt + 1.
    pub async fn mark_retry(
        &self,
        id: &str,
        attempt: i64,
        code: JobErrorCode,
        message: &str,
    ) -> Result<bool, DbError> {
        let now = kiln_protocol::now_ms();
        let r = sqlx::query(&format!(
            "UPDATE jobs SET status = 'pending', attempts = attempts + 1, progress = 0, chunks_live = NULL,
                    error_code = $1, error_message = $2, updated_at = $3
             WHERE id = $4 AND attempts = $5 AND {LIVE}"
        ))
        .bind(code.as_str())
        .bind(message)
        .bind(now)
        .bind(id)
        .bind(attempt)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// The queue took attempt `next - 1` back and queued `next` (its lease expired, or its
    /// node drained). Returns false if the row had already moved past it.
    pub async fn mark_requeued(&self, id: &str, next: i64, reason: &str) -> Result<bool, DbError> {
        let now = kiln_protocol::now_ms();
        let r = sqlx::query(&format!(
            "UPDATE jobs SET status = 'pending', attempts = $1, progress = 0, fps = NULL, chunks_live = NULL,
                    eta_s = NULL, node_id = NULL, error_code = $5, error_message = $2,
                    updated_at = $3, enqueue_after = NULL
             WHERE id = $4 AND attempts < $1 AND {LIVE}"
        ))
        .bind(next)
        .bind(reason)
        .bind(now)
        .bind(id)
        .bind(JobErrorCode::Requeued.as_str())
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Cancel a pending or processing job; false if it had already finished.
    pub async fn mark_cancelled(&self, id: &str) -> Result<bool, DbError> {
        let now = kiln_protocol::now_ms();
        let r = sqlx::query(&format!(
            "UPDATE jobs SET status = 'cancelled', error_code = $3,
                    error_message = 'cancelled through the API', fps = NULL, eta_s = NULL,
                    completed_at = $1, updated_at = $1, expires_at = $1
             WHERE id = $2 AND {LIVE}"
        ))
        .bind(now)
        .bind(id)
        .bind(JobErrorCode::Cancelled.as_str())
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Give back a failed or cancelled job's credits, once.
    pub async fn refund(&self, id: &str) -> Result<i64, DbError> {
        let mut tx = self.pool.begin().await?;
        let n = refund_in(&mut tx, id).await?;
        tx.commit().await?;
        Ok(n)
    }

    /// An account's jobs, newest first: at most `limit`, older than the `before` id, of one
    /// status if given.
    pub async fn list_jobs(
        &self,
        account_id: &str,
        before: Option<&str>,
        status: Option<JobStatus>,
        limit: i64,
    ) -> Result<Vec<JobRow>, DbError> {
        let rows = sqlx::query(
            "SELECT * FROM jobs WHERE account_id = $1 AND id < $2
                 AND (status = $3 OR $3 = '')
             ORDER BY id DESC LIMIT $4",
        )
        .bind(account_id)
        .bind(before.unwrap_or("~"))
        .bind(status.map(|s| s.as_str()).unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(JobRow::from_row)
            .collect::<Result<_, _>>()?)
    }

    /// The jobs of a batch, in submission order.
    pub async fn batch_jobs(
        &self,
        account_id: &str,
        batch_id: &str,
    ) -> Result<Vec<JobRow>, DbError> {
        let rows =
            sqlx::query("SELECT * FROM jobs WHERE account_id = $1 AND batch_id = $2 ORDER BY id")
                .bind(account_id)
                .bind(batch_id)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .iter()
            .map(JobRow::from_row)
            .collect::<Result<_, _>>()?)
    }

    /// A job by id whatever its account (for the event loop and pre-signed links).
    pub async fn get_job_any(&self, id: &str) -> Result<Option<JobRow>, DbError> {
        let row = sqlx::query("SELECT * FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(JobRow::from_row).transpose()?)
    }

    /// An account's jobs that came in through `dialect`, newest first: at most `limit`, older
    /// than the `before` id.
    pub async fn list_dialect_jobs(
        &self,
        account_id: &str,
        dialect: &str,
        before: Option<&str>,
        limit: i64,
    ) -> Result<Vec<JobRow>, DbError> {
        let rows = sqlx::query(
            "SELECT * FROM jobs WHERE account_id = $1 AND dialect = $2 AND id < $3
             ORDER BY id DESC LIMIT $4",
        )
        .bind(account_id)
        .bind(dialect)
        .bind(before.unwrap_or("~"))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(JobRow::from_row)
            .collect::<Result<_, _>>()?)
    }
}

/// Give back a failed or cancelled job's credits, once, inside the caller's transaction;
/// returns how many.
async fn refund_in(conn: &mut sqlx::AnyConnection, id: &str) -> Result<i64, DbError> {
    let row = sqlx::query(
        "UPDATE jobs SET credits_refunded = credits_charged
         WHERE id = $1 AND credits_charged > 0 AND credits_refunded = 0
           AND status IN ('failed', 'cancelled')
         RETURNING account_id, credits_charged",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let mut n = 0;
    if let Some(row) = row {
        let account: String = row.try_get("account_id")?;
        n = row.try_get("credits_charged")?;
        sqlx::query(
            "UPDATE accounts SET credits = credits + $1 WHERE id = $2 AND credits IS NOT NULL",
        )
        .bind(n)
        .bind(&account)
        .execute(&mut *conn)
        .await?;
    }
    Ok(n)
}
