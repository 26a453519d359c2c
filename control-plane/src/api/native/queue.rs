//! `GET /api/v1/queue` (admin): what waits for nodes, by class, and the jobs that ended as dead
//! letters.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::docs::Error;
use crate::auth::Auth;
use crate::error::ApiError;
use crate::time::rfc3339;
use crate::AppState;

/// The queue now.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QueueView {
    /// Jobs waiting for a node, over every class.
    pub waiting: u64,
    /// Waiting jobs by class (`h264`, `h264:nvenc`, `image`, …), every class seen so far.
    pub classes: Vec<ClassDepth>,
    /// Jobs that failed because every attempt lost its node (all accounts).
    pub dead_letters: i64,
    /// The latest dead letters, newest first (at most 20).
    pub latest_dead_letters: Vec<DeadLetter>,
}

/// One class's waiting jobs.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ClassDepth {
    pub class: String,
    pub waiting: u64,
}

/// A dead-lettered job.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeadLetter {
    pub job_id: String,
    pub account_id: String,
    pub reason: Option<String>,
    pub failed_at: Option<String>,
}

/// The queue's depth by class and its dead letters.
#[utoipa::path(get, path = "/api/v1/queue", tag = "admin",
    responses((status = 200, body = QueueView), (status = 401, body = Error), (status = 403, body = Error)))]
pub async fn queue(State(state): State<AppState>, auth: Auth) -> Result<Json<QueueView>, ApiError> {
    auth.require("admin")?;
    let classes: Vec<ClassDepth> = state
        .queue
        .depth_by_class()
        .await?
        .into_iter()
        .map(|(class, waiting)| ClassDepth { class, waiting })
        .collect();
    let (dead_letters, latest) = state.db.dead_letters(20).await?;
    Ok(Json(QueueView {
        waiting: classes.iter().map(|c| c.waiting).sum(),
        classes,
        dead_letters,
        latest_dead_letters: latest
            .into_iter()
            .map(|(job_id, account_id, reason, at)| DeadLetter {
                job_id,
                account_id,
                reason,
                failed_at: at.map(rfc3339),
            })
            .collect(),
    }))
}
