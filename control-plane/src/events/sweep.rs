//! The retention sweep: outputs past their time, sources no live job needs, unused uploads.

use sqlx::Row;

use crate::AppState;

/// Delete what has expired: outputs past `expires_at` (then 410), sources no live job still
/// needs, and unused uploads past their time.
pub async fn sweep(state: &AppState) -> anyhow::Result<usize> {
    let now = kiln_protocol::now_ms();
    let mut n = 0;
    let rows = sqlx::query(
        "SELECT id, output_key, source_key FROM jobs
         WHERE expires_at IS NOT NULL AND expires_at <= $1 AND swept_at IS NULL
           AND status IN ('completed', 'failed', 'cancelled')
         ORDER BY expires_at LIMIT 200",
    )
    .bind(now)
    .fetch_all(&state.db.pool)
    .await?;
    for r in rows {
        let id: String = r.try_get("id")?;
        let output: String = r.try_get("output_key")?;
        let source: String = r.try_get("source_key")?;
        let tree = match state.db.get_job_any(&id).await? {
            Some(job) => job.output_tree(),
            None => None,
        };
        let deleted = match &tree {
            Some(t) => state.store.delete_tree(t).await,
            None => state.store.delete(&output).await,
        };
        match deleted {
            Ok(()) | Err(kiln_protocol::StoreError::NotFound(_)) => {}
            Err(e) => {
                tracing::warn!(job = %id, error = %e, "could not delete an expired output");
                continue;
            }
        }
        // A source shared by a batch stays while any job still needs it; uploads are swept
        // on their own schedule.
        if !source.starts_with("uploads/") && !source_in_use(state, &source, &id).await? {
            let _ = state.store.delete(&source).await;
        }
        sqlx::query("UPDATE jobs SET swept_at = $1, destination = NULL WHERE id = $2")
            .bind(now)
            .bind(&id)
            .execute(&state.db.pool)
            .await?;
        n += 1;
    }
    let uploads = sqlx::query(
        "SELECT id, object_key FROM uploads WHERE expires_at <= $1 AND swept_at IS NULL LIMIT 200",
    )
    .bind(now)
    .fetch_all(&state.db.pool)
    .await?;
    for r in uploads {
        let id: String = r.try_get("id")?;
        let key: String = r.try_get("object_key")?;
        if source_in_use(state, &key, "").await? {
            continue;
        }
        let _ = state.store.delete(&key).await;
        sqlx::query("UPDATE uploads SET swept_at = $1 WHERE id = $2")
            .bind(now)
            .bind(&id)
            .execute(&state.db.pool)
            .await?;
        n += 1;
    }
    if n > 0 {
        state.metrics.swept.inc_by(n as u64);
        tracing::info!(objects = n, "retention sweep deleted expired data");
    }
    Ok(n)
}

/// Whether a job other than `except` that is still running or waiting reads `source`.
async fn source_in_use(state: &AppState, source: &str, except: &str) -> anyhow::Result<bool> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS n FROM jobs WHERE source_key = $1 AND id <> $2
           AND status IN ('pending', 'processing')",
    )
    .bind(source)
    .bind(except)
    .fetch_one(&state.db.pool)
    .await?;
    Ok(row.try_get::<i64, _>("n")? > 0)
}
