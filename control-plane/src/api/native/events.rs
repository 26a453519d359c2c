//! Live progress as Server-Sent Events: `GET /jobs/{id}/events` (one job) and `GET /events`
//! (every job of the caller's account). Each event is named by what happened (`job.created`,
//! `job.started`, `job.progress`, `job.retrying`, `job.completed`, `job.failed`,
//! `job.cancelled`), carries the job's document as it stood after, and has the feed's id, so
//! a client that reconnects with `Last-Event-ID` (or `?last_event_id=`, for clients that cannot
//! set headers) gets exactly what it missed — from any control-plane replica in a fleet.
//!
//! A job's stream opened without an id starts with `job.snapshot` (the document now), and ends
//! after the job's final event. The account stream starts at the present and never ends.
//! Comments every 15 s keep proxies from closing an idle stream.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use tokio::sync::{broadcast, mpsc};

use crate::api::docs::Error;
use crate::auth::Auth;
use crate::error::ApiError;
use crate::feed::{EventId, FeedEvent};
use crate::AppState;

/// How many retained events one read of the feed returns while catching up.
const PAGE: usize = 500;

/// Query of the event streams.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct EventsQuery {
    /// Resume after this event id (the `Last-Event-ID` header wins when both are given).
    pub last_event_id: Option<String>,
}

fn resume_from(headers: &HeaderMap, q: &EventsQuery) -> Result<Option<EventId>, ApiError> {
    let given = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| q.last_event_id.clone())
        .filter(|v| !v.trim().is_empty());
    given
        .map(|v| v.parse::<EventId>().map_err(ApiError::BadRequest))
        .transpose()
}

/// `GET /events`: every change of every job of the caller's account, from now (or after
/// `Last-Event-ID`).
#[utoipa::path(get, path = "/api/v1/events", tag = "jobs", params(EventsQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id")),
    responses((status = 200, content_type = "text/event-stream", body = String,
            description = "Server-Sent Events; each `data` is the job's document (`JobView`)"),
        (status = 400, body = Error), (status = 401, body = Error), (status = 403, body = Error)))]
pub async fn account_events(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let account = auth.require("jobs:read")?.account_id.clone();
    let resume = resume_from(&headers, &q)?;
    sse(state, account, None, resume).await
}

/// `GET /jobs/{id}/events`: one job's changes — a snapshot first (unless resuming), then each
/// change until its final event.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/events", tag = "jobs", params(
        ("id" = String, Path, description = "Job id"), EventsQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id")),
    responses((status = 200, content_type = "text/event-stream", body = String,
            description = "Server-Sent Events; each `data` is the job's document (`JobView`)"),
        (status = 400, body = Error), (status = 401, body = Error), (status = 403, body = Error),
        (status = 404, body = Error)))]
pub async fn job_events(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let job = super::jobs::load(&state, &auth, &id, "jobs:read").await?;
    let resume = resume_from(&headers, &q)?;
    sse(state, job.account_id, Some(job.id), resume).await
}

async fn sse(
    state: AppState,
    account: String,
    job: Option<String>,
    resume: Option<EventId>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let (tx, rx) = mpsc::channel::<Event>(64);
    // Subscribed before anything is read, so nothing falls between the history and the live
    // events (ids already sent are skipped).
    let live = state.feed.subscribe();
    // Where "now" is, read before the answer goes out: a client that submits a job as soon
    // as its stream opens must see that job's first event.
    let start = match resume {
        Some(id) => Start::After(id),
        None => Start::Now(state.feed.head().await.map_err(ApiError::internal)?),
    };
    tokio::spawn(async move {
        let watch = Watch { account, job };
        if let Err(e) = pump(&state, &watch, start, live, &tx).await {
            tracing::debug!(error = %e, "event stream ended");
        }
    });
    let stream =
        futures::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) },
        );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Where a stream starts: after the client's last event, or at the feed's head when it opened.
enum Start {
    After(EventId),
    Now(EventId),
}

/// What one stream shows.
struct Watch {
    account: String,
    job: Option<String>,
}

impl Watch {
    fn wants(&self, e: &FeedEvent) -> bool {
        e.account_id == self.account && self.job.as_deref().is_none_or(|j| j == e.job_id)
    }
}

fn event(e: &FeedEvent) -> Event {
    Event::default()
        .id(e.id.to_string())
        .event(&e.kind)
        .data(&e.data)
}

/// Why a stream stops early: the client left, the job ended, or the feed failed.
#[derive(Debug)]
enum Stop {
    Gone,
    Ended,
    Feed(anyhow::Error),
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Gone => f.write_str("the client left"),
            Self::Ended => f.write_str("the job ended"),
            Self::Feed(e) => write!(f, "feed: {e}"),
        }
    }
}

/// Send `e` if the stream wants it; stop after a job's final event.
async fn send(watch: &Watch, e: &FeedEvent, tx: &mpsc::Sender<Event>) -> Result<(), Stop> {
    if !watch.wants(e) {
        return Ok(());
    }
    tx.send(event(e)).await.map_err(|_| Stop::Gone)?;
    if watch.job.is_some() && e.is_final() {
        return Err(Stop::Ended);
    }
    Ok(())
}

/// Send every retained event after `last`; the new `last`.
async fn catch_up(
    state: &AppState,
    watch: &Watch,
    mut last: EventId,
    tx: &mpsc::Sender<Event>,
) -> Result<EventId, Stop> {
    loop {
        let page = state.feed.after(last, PAGE).await.map_err(Stop::Feed)?;
        for e in &page {
            last = e.id;
            send(watch, e, tx).await?;
        }
        if page.len() < PAGE {
            return Ok(last);
        }
    }
}

async fn pump(
    state: &AppState,
    watch: &Watch,
    start: Start,
    mut live: broadcast::Receiver<Arc<FeedEvent>>,
    tx: &mpsc::Sender<Event>,
) -> Result<(), Stop> {
    let mut last = match start {
        Start::After(id) => id,
        Start::Now(head) => {
            // The head was read first, the row now: a change after the head is in the feed,
            // one before it is in the row.
            if let Some(job) = &watch.job {
                let row = state
                    .db
                    .get_job_any(job)
                    .await
                    .map_err(|e| Stop::Feed(e.into()))?
                    .ok_or(Stop::Ended)?;
                let view =
                    crate::views::JobView::new(&row, &state.signing_key, kiln_protocol::now_ms());
                let snapshot = Event::default()
                    .id(head.to_string())
                    .event("job.snapshot")
                    .data(serde_json::to_string(&view).map_err(|e| Stop::Feed(e.into()))?);
                tx.send(snapshot).await.map_err(|_| Stop::Gone)?;
                if !row.status.is_live() {
                    return Ok(());
                }
            }
            head
        }
    };
    last = catch_up(state, watch, last, tx).await?;
    let mut stopping = state.shutdown.clone();
    loop {
        tokio::select! {
            _ = tx.closed() => return Err(Stop::Gone),
            // The service is stopping: end the stream (the client resumes elsewhere).
            _ = async { stopping.wait_for(|v| *v).await.map(|_| ()) } => return Ok(()),
            r = live.recv() => match r {
                Ok(e) if e.id > last => {
                    last = e.id;
                    send(watch, &e, tx).await?;
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    last = catch_up(state, watch, last, tx).await?;
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            }
        }
    }
}
