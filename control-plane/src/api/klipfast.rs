//! Klipfast's API under `/klipfast/api/v1` (a client's base URL becomes
//! `https://kiln.example/klipfast`): `POST /process` makes a Kiln job of a video URL,
//! `GET /jobs/{id}` and `GET /jobs?limit&cursor` read them, `GET /usage` the account's month.
//! Every answer carries `X-RateLimit-*` (401 and 404 included: `auth`); errors are
//! `{"error": {"code", "message"}}` with Klipfast's codes (`server_error` for a 500).
//!
//! Klipfast's AI features are outside a transcoder: `caption_style` and `language` are
//! accepted and ignored with a `warnings` entry, and `clips` is always `[]` (the transcoded
//! video is `download_url`).

use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{DialectError, ErrorShape};
use crate::AppState;

pub mod jobs;

/// Klipfast's error answers.
pub struct Shape;

impl ErrorShape for Shape {
    const DIALECT: crate::dialect::Dialect = crate::dialect::Dialect::Klipfast;
}

/// What Klipfast's handlers fail with.
pub type Error = DialectError<Shape>;

/// Klipfast's error body.
#[derive(Serialize, ToSchema)]
#[schema(as = KlipfastError)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// `code`: invalid_request, unauthorized, forbidden, not_found, rate_limited,
/// insufficient_credits, unprocessable_video, server_error, …
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = KlipfastErrorDetail)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

/// Klipfast's routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(jobs::process))
        .routes(routes!(jobs::get))
        .routes(routes!(jobs::list))
        .routes(routes!(jobs::usage))
}

/// Klipfast's job ids: `job_` and Kiln's id.
pub fn public_id(id: &str) -> String {
    format!("job_{id}")
}

/// Kiln's id of a Klipfast job id (with or without the `job_` prefix).
pub fn kiln_id(id: &str) -> &str {
    id.strip_prefix("job_").unwrap_or(id)
}
