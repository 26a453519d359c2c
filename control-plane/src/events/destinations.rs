//! Copies of completed outputs to the caller's bucket (`output.s3`), claimed with a lock so one
//! replica copies each and a copy cut off by a crash is done again once the lock lapses.

use sqlx::Row;

use crate::AppState;

/// How long a copy to a caller's bucket may run before another replica takes it up again.
const DESTINATION_LOCK_MS: i64 = 30 * 60 * 1000;

/// A destination's JSON (with the caller's S3 secret) sealed to job `job_id`, as stored.
pub fn seal(state: &AppState, json: &str, job_id: &str) -> String {
    state
        .db
        .sealer
        .seal(json, &crate::sealing::context("destination", job_id))
}

/// A stored destination of job `job_id` in the clear (one an earlier version stored unsealed,
/// as JSON, is read as it is).
fn open(state: &AppState, stored: &str, job_id: &str) -> Result<String, String> {
    if stored.trim_start().starts_with('{') {
        return Ok(stored.to_string());
    }
    state
        .db
        .sealer
        .open(stored, &crate::sealing::context("destination", job_id))
        .map_err(|e| e.to_string())
}

/// Copy every completed output still owed to a caller's bucket (each claimed with a lock, so
/// one replica copies it, and a copy cut off by a crash is done again once the lock lapses),
/// then record its `job.completed` webhook.
pub async fn deliver_due(state: AppState) {
    let now = kiln_protocol::now_ms();
    let rows = match sqlx::query(
        "SELECT id, destination FROM jobs
         WHERE status = 'completed' AND destination IS NOT NULL AND destination_status IS NULL
           AND (destination_locked_until IS NULL OR destination_locked_until < $1)
         LIMIT 16",
    )
    .bind(now)
    .fetch_all(&state.db.pool)
    .await
    {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(error = %e, "could not read owed deliveries");
            return;
        }
    };
    for r in rows {
        let (Ok(id), Ok(dest)) = (
            r.try_get::<String, _>("id"),
            r.try_get::<String, _>("destination"),
        ) else {
            continue;
        };
        let claimed = sqlx::query(
            "UPDATE jobs SET destination_locked_until = $1
             WHERE id = $2 AND destination_status IS NULL
               AND (destination_locked_until IS NULL OR destination_locked_until < $3)",
        )
        .bind(now + DESTINATION_LOCK_MS)
        .bind(&id)
        .bind(now)
        .execute(&state.db.pool)
        .await;
        if !matches!(claimed, Ok(r) if r.rows_affected() == 1) {
            continue;
        }
        let state = state.clone();
        tokio::spawn(async move {
            let Ok(Some(job)) = state.db.get_job_any(&id).await else {
                return;
            };
            let dest = open(&state, &dest, &job.id);
            let parsed = dest.and_then(|d| {
                serde_json::from_str::<crate::sources::S3Location>(&d).map_err(|e| e.to_string())
            });
            let outcome = match parsed {
                Ok(loc) => match job.output_tree() {
                    Some(tree) => {
                        let folder = crate::sources::destination_folder(&loc, &job.id);
                        crate::sources::deliver_tree(&state, &loc, &tree, &job.output_key, &folder)
                            .await
                    }
                    None => {
                        let (ext, _) = job.output_format();
                        let key = crate::sources::destination_key(&loc, &job.id, ext);
                        crate::sources::deliver(&state, &loc, &job.output_key, &key).await
                    }
                },
                Err(e) => Err(format!("unreadable destination: {e}")),
            };
            let (status, error) = match &outcome {
                Ok(_) => ("delivered", None),
                Err(e) => {
                    tracing::warn!(job = %job.id, error = %e, "could not copy the output to the destination bucket");
                    ("failed", Some(e.clone()))
                }
            };
            // The caller's credentials are kept only until the copy is done.
            let recorded = sqlx::query(
                "UPDATE jobs SET destination_status = $1, destination_error = $2, destination = NULL
                 WHERE id = $3",
            )
            .bind(status)
            .bind(error)
            .bind(&job.id)
            .execute(&state.db.pool)
            .await;
            if let Err(e) = recorded {
                // The lock lapses and another pass copies it again.
                tracing::warn!(job = %job.id, error = %e, "could not record the destination copy");
                return;
            }
            if let Ok(Some(job)) = state.db.get_job_any(&job.id).await {
                if let Err(e) = crate::webhooks::record(&state, &job, "job.completed").await {
                    tracing::warn!(job = %job.id, error = %e, "could not record the webhook");
                }
            }
        });
    }
}
