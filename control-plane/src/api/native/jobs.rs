//! Reading and cancelling jobs: `GET /status/{id}` (Konvrt's shape), `GET /jobs/{id}`,
//! `GET /jobs` (cursor pages), `DELETE /jobs/{id}`.

use axum::extract::{Path, Query, State};
use axum::Json;

use crate::api::docs::Error;
use crate::auth::Auth;
use crate::db::{JobRow, JobStatus};
use crate::error::ApiError;
use crate::views::job::WebhookView;
use crate::views::{JobList, JobView};
use crate::AppState;

pub(crate) async fn load(
    state: &AppState,
    auth: &Auth,
    id: &str,
    scope: &str,
) -> Result<JobRow, ApiError> {
    let principal = auth.require(scope)?;
    // Ids are UUIDs; anything else cannot exist and need not reach the database.
    if uuid::Uuid::parse_str(id).is_err() {
        return Err(ApiError::NotFound(format!("no job {id:?}")));
    }
    state
        .db
        .get_job(&principal.account_id, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no job {id:?}")))
}

/// The full document of one job: its status, why it waits, and its webhook deliveries.
pub async fn full_view(state: &AppState, job: &JobRow) -> Result<JobView, ApiError> {
    let mut view = JobView::new(job, &state.signing_key, kiln_protocol::now_ms());
    if job.status == JobStatus::Pending {
        if let (Some(spec), Ok(nodes)) = (job.job_spec(), state.nodes.list().await) {
            view.waiting_reason = Some(kiln_protocol::node::unschedulable_reason(
                &spec.class(),
                &nodes,
                state.config.node_live_ms(),
            ));
        }
    }
    if let Some(url) = &job.webhook_url {
        view.webhook = Some(WebhookView {
            url: url.clone(),
            deliveries: crate::webhooks::deliveries(state, &job.id).await?,
        });
    }
    Ok(view)
}

/// `GET /status/{id}` (Konvrt) and `GET /jobs/{id}`: current status, progress and result of a
/// job. A pending job whose requirements no live node meets says so in `waiting_reason`.
#[utoipa::path(get, path = "/api/v1/status/{id}", tag = "konvrt",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, body = JobView), (status = 401, body = Error), (status = 404, body = Error)))]
pub async fn status(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let job = load(&state, &auth, &id, "jobs:read").await?;
    Ok(Json(full_view(&state, &job).await?))
}

/// `GET /jobs/{id}`.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, body = JobView), (status = 401, body = Error), (status = 404, body = Error)))]
pub async fn get_job(
    state: State<AppState>,
    auth: Auth,
    id: Path<String>,
) -> Result<Json<JobView>, ApiError> {
    status(state, auth, id).await
}

/// Query of `GET /jobs`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    /// 1–100, default 20.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only jobs in this status.
    pub status: Option<String>,
}

/// `GET /jobs`: the account's jobs, newest first, a page at a time.
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", params(ListQuery),
    responses((status = 200, body = JobList), (status = 400, body = Error), (status = 401, body = Error)))]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<ListQuery>,
) -> Result<Json<JobList>, ApiError> {
    let principal = auth.require("jobs:read")?;
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be from 1 to 100, got {limit}"
        )));
    }
    let status = q
        .status
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| {
            JobStatus::parse_name(s).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "status must be pending, processing, completed, failed or cancelled, got {s:?}"
                ))
            })
        })
        .transpose()?;
    let before = q
        .cursor
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(decode_cursor)
        .transpose()?;
    let mut rows = state
        .db
        .list_jobs(&principal.account_id, before.as_deref(), status, limit + 1)
        .await?;
    let has_more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = has_more
        .then(|| rows.last().map(|j| encode_cursor(&j.id)))
        .flatten();
    let now = kiln_protocol::now_ms();
    Ok(Json(JobList {
        jobs: rows
            .iter()
            .map(|j| JobView::new(j, &state.signing_key, now))
            .collect(),
        next_cursor,
        has_more,
    }))
}

/// Cursors are opaque to clients: the last job id of a page, tagged and hex-encoded.
pub fn encode_cursor(id: &str) -> String {
    hex::encode(format!("k1:{id}"))
}

pub(crate) fn decode_cursor(c: &str) -> Result<String, ApiError> {
    let bad = || ApiError::BadRequest("cursor is not one this API returned".into());
    let raw = hex::decode(c).map_err(|_| bad())?;
    let s = String::from_utf8(raw).map_err(|_| bad())?;
    let id = s.strip_prefix("k1:").ok_or_else(bad)?;
    uuid::Uuid::parse_str(id).map_err(|_| bad())?;
    Ok(id.to_string())
}

/// `DELETE /jobs/{id}`: cancel a pending or running job. A running encode stops on its node
/// within about a second and its partial output is removed; credits are refunded.
#[utoipa::path(delete, path = "/api/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, body = JobView), (status = 401, body = Error), (status = 403, body = Error), (status = 404, body = Error), (status = 409, body = Error)))]
pub async fn cancel(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let job = load(&state, &auth, &id, "jobs:cancel").await?;
    let job = cancel_job(&state, &job).await?;
    Ok(Json(full_view(&state, &job).await?))
}

/// Cancel a pending or processing job (409 for a finished one): the queue first, so a node
/// that is about to start it, or is running it, stops; then the row, the refund, the partial
/// output and the `job.cancelled` webhook. Returns the job as it stands after.
pub async fn cancel_job(state: &AppState, job: &JobRow) -> Result<JobRow, ApiError> {
    if !job.status.is_live() {
        return Err(ApiError::Conflict(format!(
            "job is {}; only pending or processing jobs can be cancelled",
            job.status.as_str()
        )));
    }
    state.queue.cancel(&job.id).await?;
    if state.db.mark_cancelled(&job.id).await? {
        state.db.refund(&job.id).await?;
        state
            .metrics
            .jobs_finished
            .with_label_values(&["cancelled"])
            .inc();
        let removed = match job.output_tree() {
            Some(tree) => state.store.delete_tree(&tree).await,
            None => state.store.delete(&job.output_key).await,
        };
        if let Err(e) = removed {
            tracing::warn!(job = %job.id, error = %e, "could not remove a cancelled job's output");
        }
    }
    let job = state
        .db
        .get_job_any(&job.id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no job {:?}", job.id)))?;
    if job.status == JobStatus::Cancelled {
        crate::feed::publish_job(state, &job, "job.cancelled").await;
        if let Err(e) = crate::webhooks::record(state, &job, "job.cancelled").await {
            tracing::warn!(job = %job.id, error = %e, "could not record the webhook");
        }
    }
    Ok(job)
}
