//! Reading batches: `GET /batches/{id}` (overall status, counts, jobs) and
//! `GET /batches/{id}/archive` (a zip of the results, streamed as it is written).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tokio_util::compat::TokioAsyncReadCompatExt;

use crate::api::docs::Error;
use crate::auth::Auth;
use crate::db::batches::BatchRow;
use crate::db::{JobRow, JobStatus};
use crate::error::ApiError;
use crate::views::{BatchStatus, BatchView, JobView, StatusCounts};
use crate::AppState;

async fn load_batch(
    state: &AppState,
    auth: &Auth,
    id: &str,
) -> Result<(BatchRow, Vec<JobRow>), ApiError> {
    let principal = auth.require("jobs:read")?;
    let batch = state
        .db
        .get_batch(&principal.account_id, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no batch {id:?}")))?;
    let jobs = state.db.batch_jobs(&principal.account_id, id).await?;
    Ok((batch, jobs))
}

/// `GET /batches/{id}`.
#[utoipa::path(get, path = "/api/v1/batches/{id}", tag = "jobs",
    params(("id" = String, Path, description = "Batch id")),
    responses((status = 200, body = BatchView), (status = 401, body = Error), (status = 404, body = Error)))]
pub async fn get_batch(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<BatchView>, ApiError> {
    let (batch, jobs) = load_batch(&state, &auth, &id).await?;
    Ok(Json(batch_view(&state, &batch, &jobs)))
}

/// The document of a batch and its jobs.
pub fn batch_view(state: &AppState, batch: &BatchRow, jobs: &[JobRow]) -> BatchView {
    let now = kiln_protocol::now_ms();
    let finished = !jobs.iter().any(|j| j.status.is_live());
    let any_done = jobs.iter().any(|j| j.status == JobStatus::Completed);
    BatchView {
        batch_id: batch.id.clone(),
        status: BatchStatus::of(jobs),
        counts: StatusCounts::of(jobs),
        jobs: jobs
            .iter()
            .map(|j| JobView::new(j, &state.signing_key, now))
            .collect(),
        archive_url: (batch.archive && finished && any_done)
            .then(|| format!("/api/v1/batches/{}/archive", batch.id)),
    }
}

/// `GET /batches/{id}/archive`: a zip (stored, not recompressed: media is compressed
/// already) of every completed output of a finished batch, streamed while it is written.
#[utoipa::path(get, path = "/api/v1/batches/{id}/archive", tag = "jobs",
    params(("id" = String, Path, description = "Batch id")),
    responses((status = 200, description = "A zip of the outputs", content_type = "application/zip"),
        (status = 401, body = Error), (status = 404, body = Error),
        (status = 409, body = Error), (status = 410, body = Error)))]
pub async fn archive(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (batch, jobs) = load_batch(&state, &auth, &id).await?;
    if !batch.archive {
        return Err(ApiError::NotFound(
            "this batch was submitted without `archive: true`".into(),
        ));
    }
    if jobs.iter().any(|j| j.status.is_live()) {
        return Err(ApiError::Conflict(
            "the batch is still running; the archive is ready once every job has finished".into(),
        ));
    }
    let now = kiln_protocol::now_ms();
    let done: Vec<JobRow> = jobs
        .into_iter()
        .filter(|j| j.status == JobStatus::Completed)
        .collect();
    if done.is_empty() {
        return Err(ApiError::Conflict("no job of this batch completed".into()));
    }
    if done.iter().any(|j| j.is_expired(now)) {
        return Err(ApiError::Gone("the batch's outputs have expired".into()));
    }
    let (reader, writer) = tokio::io::duplex(256 << 10);
    let store = state.store.clone();
    tokio::spawn(async move {
        let mut zip = async_zip::base::write::ZipFileWriter::with_tokio(writer);
        for (i, job) in done.iter().enumerate() {
            let (ext, _) = job.output_format();
            let stem = job.input_stem().unwrap_or_else(|| "output".into());
            let name = format!("{:02}_{stem}_{}.{ext}", i + 1, &job.id[job.id.len() - 6..]);
            let entry =
                async_zip::ZipEntryBuilder::new(name.into(), async_zip::Compression::Stored);
            let result: anyhow::Result<()> = async {
                let (src, _) = store.open(&job.output_key).await?;
                let mut w = zip.write_entry_stream(entry).await?;
                futures::io::copy(src.compat(), &mut w).await?;
                w.close().await?;
                Ok(())
            }
            .await;
            if let Err(e) = result {
                tracing::warn!(batch = %job.batch_id.clone().unwrap_or_default(), error = %e, "archive stopped");
                return;
            }
        }
        if let Err(e) = zip.close().await {
            tracing::warn!(error = %e, "could not finish the archive");
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/zip".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"batch-{id}.zip\""),
            ),
        ],
        Body::from_stream(tokio_util::io::ReaderStream::new(reader)),
    )
        .into_response())
}
