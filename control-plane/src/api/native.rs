//! Kiln's native API under `/api/v1`, Konvrt's paths among it (they are native): each module
//! is one resource's handlers, each handler one operation of the OpenAPI document.

use axum::extract::DefaultBodyLimit;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;

pub mod admin;
pub mod batches;
pub mod compress;
pub mod convert;
pub mod download;
pub mod events;
pub mod jobs;
pub mod nodes;
pub mod queue;
pub mod stream;
pub mod submit;
pub mod uploads;
pub mod usage;

/// Every native route with its OpenAPI operation: registering a route here is what puts it
/// in the spec, so the two cannot drift apart.
pub fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    // Kiln's own check refuses images over the limit with 413; axum's limit sits above it so
    // the rest of a moderately oversized body can still be drained (`multipart::drain`).
    let image_limit = (state.config.max_image_bytes as usize).saturating_mul(2) + (1 << 20);
    // Video uploads stream to storage; the store enforces their size limit, not axum.
    let streamed = OpenApiRouter::new()
        .routes(routes!(compress::compress))
        .routes(routes!(uploads::upload))
        .layer(DefaultBodyLimit::disable());
    let images = OpenApiRouter::new()
        .routes(routes!(convert::convert))
        .layer(DefaultBodyLimit::max(image_limit));
    let rest = OpenApiRouter::new()
        .routes(routes!(jobs::status))
        .routes(routes!(download::download))
        .routes(routes!(usage::usage))
        .routes(routes!(submit::create_jobs, jobs::list))
        .routes(routes!(jobs::get_job, jobs::cancel))
        .routes(routes!(events::job_events))
        .routes(routes!(events::account_events))
        .routes(routes!(download::job_download))
        .routes(routes!(stream::job_stream))
        .routes(routes!(stream::signed_stream))
        .routes(routes!(submit::create_batch))
        .routes(routes!(batches::get_batch))
        .routes(routes!(batches::archive))
        .routes(routes!(admin::create_key, admin::list_keys))
        .routes(routes!(admin::revoke_key))
        .routes(routes!(admin::create_account))
        .routes(routes!(admin::update_account))
        .routes(routes!(admin::own_account))
        .routes(routes!(admin::rotate_webhook_secret))
        .routes(routes!(nodes::list))
        .routes(routes!(nodes::enable_gpu))
        .routes(routes!(nodes::disable_gpu))
        .routes(routes!(nodes::drain))
        .routes(routes!(nodes::resume))
        .routes(routes!(queue::queue));
    OpenApiRouter::new()
        .merge(streamed)
        .merge(images)
        .merge(rest)
}
