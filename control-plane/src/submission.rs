//! The one way work enters Kiln. Every endpoint that creates jobs — `/compress`, `/jobs`,
//! `/batches` and each dialect's — builds a [`Submission`] and calls [`submit`], which runs
//! the same steps for all of them:
//!
//! 1. resolve the sources into Kiln's store (uploads, URLs, the caller's bucket);
//! 2. refuse media that cannot be done (probe, geometry, size targets);
//! 3. cost it; in **one database transaction** check the monthly quota, take the credits
//!    and record the batch and every job (each marked for the outbox, migration 0006);
//! 4. after the commit, enqueue every job and take them out of the outbox.
//!
//! A submission is accepted whole or not at all: a refusal before the commit leaves nothing
//! (copied-in sources are removed); a queue that refuses after it gets the submission taken
//! back in one transaction (jobs and batch deleted, credits returned). A crash between the
//! commit and the enqueue, or a take-back that itself fails, leaves jobs in the outbox, which
//! the control plane enqueues on its own (`events::enqueue_outbox`), so no recorded job is
//! left waiting forever.

use std::collections::BTreeMap;

use kiln_protocol::{ImageParams, JobSpec, LadderParams, QueueError, Task, VideoParams};

use crate::db::batches::BatchRow;
use crate::db::jobs::NewJob;
use crate::db::submissions::{NewSubmission, RecordError};
use crate::db::{DbError, JobRow};
use crate::dialect::Dialect;
use crate::sources::{S3Location, SourceError};
use crate::AppState;

mod edit;
pub mod finished;
pub mod ladder;
pub mod params;
mod source;
pub mod stills;

/// Most jobs one submission may create.
pub const MAX_BATCH_JOBS: usize = 100;

/// How long after recording a job the outbox enqueues it if the submitter has not (ms).
pub const OUTBOX_GRACE_MS: i64 = 60_000;

/// One validated output: what a job makes of its source.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Video(VideoParams),
    Image(ImageParams),
    /// An adaptive-streaming ladder (metered as video).
    Ladder(LadderParams),
    /// Thumbnails of a video.
    Thumbnails(kiln_protocol::stills::ThumbnailParams),
    /// A storyboard of a video.
    Storyboard(kiln_protocol::stills::StoryboardParams),
}

impl Output {
    /// `video` or `image`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Video(_) | Self::Ladder(_) | Self::Thumbnails(_) | Self::Storyboard(_) => "video",
            Self::Image(_) => "image",
        }
    }
}

/// Where a job's source comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Already in Kiln's store under `key` (a file streamed in by the endpoint itself, which
    /// removes it if the submission is refused).
    Stored {
        key: String,
        size: u64,
        name: Option<String>,
    },
    /// An id from `POST /uploads`.
    Upload(String),
    /// An https URL, fetched now.
    Url(String),
    /// An object in the caller's bucket, fetched now.
    S3(S3Location),
}

/// Webhook options of a submission.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Webhook {
    pub url: Option<String>,
    /// Whether `job.progress` events are wanted.
    pub progress: bool,
}

/// What is made of a submission's sources.
#[derive(Debug, Clone, PartialEq)]
pub enum Outputs {
    /// The same outputs of every source (sources × outputs).
    Each(Vec<Output>),
    /// Outputs per source, in source order (Convertly's per-file settings).
    PerSource(Vec<Vec<Output>>),
}

impl From<Vec<Output>> for Outputs {
    fn from(o: Vec<Output>) -> Self {
        Self::Each(o)
    }
}

impl Outputs {
    /// The outputs of source `i`.
    fn of(&self, i: usize) -> &[Output] {
        match self {
            Self::Each(o) => o,
            Self::PerSource(per) => per.get(i).map_or(&[], Vec::as_slice),
        }
    }

    /// Jobs these make of `sources` sources.
    fn jobs(&self, sources: usize) -> usize {
        (0..sources).map(|i| self.of(i).len()).sum()
    }
}

/// Everything one submission asks for, validated.
#[derive(Debug, Clone)]
pub struct Submission {
    pub account_id: String,
    pub sources: Vec<Source>,
    /// What is made of the sources.
    pub outputs: Outputs,
    /// The API it came in through; its jobs are listed and notified in that API's shapes.
    pub dialect: Dialect,
    /// What the dialect keeps for its client with each job (JSON), if anything.
    pub dialect_data: Option<String>,
    pub webhook: Webhook,
    /// Copy each output to the caller's bucket.
    pub destination: Option<S3Location>,
    /// Offer a zip of the outputs (`GET /batches/{id}/archive`).
    pub archive: bool,
    /// Record the jobs as a batch (the jobs API); a lone `/compress` job has none.
    pub batch: bool,
    /// The id of the job, for a single-job submission whose source was stored under it.
    pub job_id: Option<String>,
}

/// What was accepted.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub batch_id: Option<String>,
    /// The jobs, in submission order (sources × outputs), as recorded.
    pub jobs: Vec<JobRow>,
    /// Credits charged for all of them.
    pub cost: i64,
    /// Per source, its duration in seconds where it was probed (a video in a local store).
    pub source_durations: Vec<Option<f64>>,
}

/// Why a submission was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The request itself is wrong (400).
    #[error("{0}")]
    Invalid(String),
    #[error("no upload {0:?}")]
    NoUpload(String),
    #[error("upload {0:?} has expired")]
    UploadExpired(String),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("the uploaded file has no video stream")]
    NoVideoStream,
    /// The media cannot be done as asked (422).
    #[error("{0}")]
    Unprocessable(String),
    /// The source is larger than this server accepts (422).
    #[error("{0}")]
    SourceLimit(String),
    #[error("monthly job quota reached: {used} of {quota} jobs used this month")]
    QuotaReached {
        used: i64,
        quota: i64,
        /// Seconds until the next month.
        retry_after: u64,
    },
    #[error("insufficient credits: this submission costs {cost}, the balance is {balance}")]
    InsufficientCredits { cost: i64, balance: i64 },
    #[error("the job queue is unavailable")]
    Queue(#[source] QueueError),
    #[error("database error")]
    Db(#[from] DbError),
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Credits a job costs: an image 1; a video 1 per started 100 MB of source.
pub fn job_cost(video: bool, input_size: u64) -> i64 {
    if video {
        (input_size.div_ceil(100 << 20)).max(1) as i64
    } else {
        1
    }
}

/// One job about to be recorded.
struct Planned {
    spec: JobSpec,
    json: String,
    kind: &'static str,
    codec: Option<&'static str>,
    source: usize,
    credits: i64,
}

/// Run a submission (see the module documentation).
pub async fn submit(state: &AppState, mut sub: Submission) -> Result<Accepted, SubmitError> {
    if matches!(&sub.outputs, Outputs::PerSource(per) if per.len() != sub.sources.len()) {
        return Err(SubmitError::Invalid(
            "give one set of settings per file".into(),
        ));
    }
    let n_jobs = sub.outputs.jobs(sub.sources.len());
    if n_jobs == 0 {
        return Err(SubmitError::Invalid(
            "nothing to do: give at least one source and one output".into(),
        ));
    }
    if n_jobs > MAX_BATCH_JOBS {
        return Err(SubmitError::Invalid(format!(
            "{n_jobs} jobs in one submission; the limit is {MAX_BATCH_JOBS}"
        )));
    }
    if sub.job_id.is_some() && n_jobs != 1 {
        return Err(SubmitError::Internal(
            "a job id was given for a submission of several jobs".into(),
        ));
    }
    if let Some(d) = &sub.destination {
        if d.key.is_some() && n_jobs > 1 {
            return Err(SubmitError::Invalid(
                "output.s3.key names one object; use prefix for several outputs".into(),
            ));
        }
        // Checks the endpoint (and that it is one Kiln may reach) before any work.
        d.connect(state).await?;
    }
    // The files edits read (a watermark, subtitles) are uploads of the caller's.
    edit::resolve_assets(state, &sub.account_id, &mut sub.outputs).await?;
    let batch_id = sub.batch.then(|| uuid::Uuid::now_v7().to_string());
    let fetch_prefix = batch_id
        .clone()
        .or_else(|| sub.job_id.clone())
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());

    let mut resolved = Vec::new();
    for (i, s) in sub.sources.iter().enumerate() {
        let key = format!("sources/{fetch_prefix}-{i}");
        match source::resolve(state, &sub.account_id, s, key).await {
            Ok(r) => resolved.push(r),
            Err(e) => {
                remove_fetched(state, &resolved).await;
                return Err(e);
            }
        }
    }
    let result = record_and_enqueue(state, &sub, batch_id, &resolved).await;
    if result.is_err() {
        remove_fetched(state, &resolved).await;
    }
    result
}

async fn remove_fetched(state: &AppState, resolved: &[source::Resolved]) {
    for r in resolved.iter().filter(|r| r.fetched) {
        source::remove(state, &r.key).await;
    }
}

/// Steps 2–4 for resolved sources.
async fn record_and_enqueue(
    state: &AppState,
    sub: &Submission,
    batch_id: Option<String>,
    resolved: &[source::Resolved],
) -> Result<Accepted, SubmitError> {
    // Refuse what cannot be done before anything is charged or queued.
    let mut source_durations = vec![None; resolved.len()];
    for (i, src) in resolved.iter().enumerate() {
        for o in sub.outputs.of(i) {
            match o {
                Output::Video(p) => {
                    source_durations[i] = source::check_media(state, &src.key, p).await?
                }
                Output::Ladder(p) => {
                    source_durations[i] = source::check_ladder(state, &src.key, p).await?
                }
                Output::Thumbnails(_) | Output::Storyboard(_) => {
                    source_durations[i] = source::check_video_source(state, &src.key)
                        .await?
                        .and_then(|info| (info.duration_s > 0.0).then_some(info.duration_s))
                }
                Output::Image(_) => {}
            }
        }
    }
    let mut planned = Vec::with_capacity(sub.outputs.jobs(resolved.len()));
    for (i, src) in resolved.iter().enumerate() {
        for o in sub.outputs.of(i) {
            let id = match &sub.job_id {
                Some(id) => id.clone(),
                None => uuid::Uuid::now_v7().to_string(),
            };
            let (task, output_key, codec) = match o {
                Output::Video(p) => (
                    Task::Video(p.clone()),
                    format!("outputs/{id}.{}", p.container.extension()),
                    Some(p.codec.as_str()),
                ),
                Output::Image(p) => (
                    Task::Image(p.clone()),
                    format!("outputs/{id}.{}", image_extension(&p.fields)),
                    None,
                ),
                // A tree: the entry manifest, with every segment beside it.
                Output::Ladder(p) => (
                    Task::Ladder(p.clone()),
                    format!("outputs/{id}/{}", p.entry_file()),
                    Some(p.codec.as_str()),
                ),
                Output::Thumbnails(p) => (
                    Task::Thumbnails(p.clone()),
                    format!("outputs/{id}/{}", kiln_protocol::stills::THUMBNAILS_INDEX),
                    None,
                ),
                Output::Storyboard(p) => (
                    Task::Storyboard(p.clone()),
                    format!("outputs/{id}/{}", kiln_protocol::stills::STORYBOARD_VTT),
                    None,
                ),
            };
            let spec = JobSpec {
                id: id.clone(),
                attempt: 1,
                source_key: src.key.clone(),
                output_key,
                task,
            };
            let json = serde_json::to_string(&spec).map_err(|e| SubmitError::Internal(e.into()))?;
            planned.push(Planned {
                spec,
                json,
                kind: o.kind(),
                codec,
                source: i,
                credits: job_cost(!matches!(o, Output::Image(_)), src.size),
            });
        }
    }
    let cost: i64 = planned.iter().map(|p| p.credits).sum();
    let destination = sub
        .destination
        .as_ref()
        .map(|d| serde_json::to_string(d).map_err(|e| SubmitError::Internal(e.into())))
        .transpose()?;
    // A destination carries the caller's S3 secret until the copy is done: stored sealed, to
    // each job's own id.
    let destinations: Vec<Option<String>> = planned
        .iter()
        .map(|p| {
            destination
                .as_ref()
                .map(|d| crate::events::destinations::seal(state, d, &p.spec.id))
        })
        .collect();
    let now = kiln_protocol::now_ms();
    let month = crate::time::month_bounds(now);
    let record = NewSubmission {
        account_id: &sub.account_id,
        cost,
        month,
        batch: batch_id.as_ref().map(|id| BatchRow {
            id: id.clone(),
            account_id: sub.account_id.clone(),
            archive: sub.archive,
            created_at: now,
        }),
        jobs: planned
            .iter()
            .zip(&destinations)
            .map(|(p, destination)| {
                let src = &resolved[p.source];
                NewJob {
                    id: &p.spec.id,
                    account_id: &sub.account_id,
                    kind: p.kind,
                    spec: &p.json,
                    source_key: &src.key,
                    output_key: &p.spec.output_key,
                    input_name: src.name.as_deref(),
                    input_size: src.size as i64,
                    codec: p.codec,
                    batch_id: batch_id.as_deref(),
                    webhook_url: sub.webhook.url.as_deref(),
                    webhook_progress: sub.webhook.progress,
                    destination: destination.as_deref(),
                    credits: p.credits,
                    dialect: (sub.dialect != Dialect::Native).then(|| sub.dialect.name()),
                    dialect_data: sub.dialect_data.as_deref(),
                }
            })
            .collect(),
        enqueue_after: now + OUTBOX_GRACE_MS,
    };
    state
        .db
        .record_submission(&record)
        .await
        .map_err(|e| match e {
            RecordError::QuotaReached { used, quota } => SubmitError::QuotaReached {
                used,
                quota,
                retry_after: ((month.1 - now) / 1000).max(1) as u64,
            },
            RecordError::InsufficientCredits { cost, balance } => {
                SubmitError::InsufficientCredits { cost, balance }
            }
            RecordError::NoAccount(a) => SubmitError::Internal(format!("no account {a:?}").into()),
            RecordError::Db(e) => SubmitError::Db(e),
        })?;

    let ids: Vec<String> = planned.iter().map(|p| p.spec.id.clone()).collect();
    let mut jobs = Vec::with_capacity(ids.len());
    for id in &ids {
        if let Some(row) = state.db.get_job(&sub.account_id, id).await? {
            jobs.push(row);
        }
    }
    // Before the queue has them: a node may start a job, and say so, before enqueue returns.
    for job in &jobs {
        crate::feed::publish_job(state, job, "job.created").await;
    }
    if let Err((queued, e)) = enqueue_all(state, &planned).await {
        if withdraw(state, sub, &ids, batch_id.as_deref(), cost).await {
            // The rows are gone: make sure no node runs the jobs that did get queued.
            for p in &planned[..queued] {
                if let Err(c) = state.queue.cancel(&p.spec.id).await {
                    tracing::warn!(job = %p.spec.id, error = %c, "could not cancel a job of a refused submission");
                }
            }
        }
        return Err(SubmitError::Queue(e));
    }
    if let Err(e) = state.db.mark_enqueued(&ids).await {
        // Harmless: the outbox enqueues them again later (a duplicate entry of the same
        // attempt; completion is counted once).
        tracing::warn!(error = %e, "could not take submitted jobs out of the outbox");
    }
    for p in &planned {
        state
            .metrics
            .jobs_submitted
            .with_label_values(&[p.kind])
            .inc();
    }
    Ok(Accepted {
        batch_id,
        jobs,
        cost,
        source_durations,
    })
}

/// Enqueue every planned job, stopping at the first refusal: `Err((jobs queued, error))`.
async fn enqueue_all(state: &AppState, planned: &[Planned]) -> Result<(), (usize, QueueError)> {
    for (i, p) in planned.iter().enumerate() {
        state.queue.enqueue(&p.spec).await.map_err(|e| (i, e))?;
    }
    Ok(())
}

/// Take back a recorded submission the queue refused; whether it was. If that fails too,
/// the jobs stay recorded (and charged) and the outbox queues them later, so they still run:
/// logged loudly, never silent.
async fn withdraw(
    state: &AppState,
    sub: &Submission,
    ids: &[String],
    batch_id: Option<&str>,
    cost: i64,
) -> bool {
    match state
        .db
        .withdraw_submission(&sub.account_id, ids, batch_id, cost)
        .await
    {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(
                error = %e,
                jobs = ids.len(),
                "a submission the queue refused could not be taken back; its jobs stay recorded and the outbox will queue them"
            );
            false
        }
    }
}

/// The extension of an image output (validated before it gets here).
fn image_extension(fields: &BTreeMap<String, String>) -> &'static str {
    fields
        .get("format")
        .and_then(|f| kiln_gpu_node::imaging::OutputFormat::parse(f))
        .unwrap_or(kiln_gpu_node::imaging::OutputFormat::Jpeg)
        .as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs() {
        assert_eq!(job_cost(false, 10 << 30), 1);
        assert_eq!(job_cost(true, 1), 1);
        assert_eq!(job_cost(true, 100 << 20), 1);
        assert_eq!(job_cost(true, (100 << 20) + 1), 2);
    }
}
