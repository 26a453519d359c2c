//! Convertly's API under `/convertly/api` (a client switches by setting its base URL to
//! `https://kiln.example/convertly`): async jobs (`POST /api/jobs`, `GET` and `DELETE
//! /api/jobs/{id}`) as one Kiln batch each, and synchronous `POST /api/convert` and
//! `POST /api/compress` for images. Errors are `{"error": "<message>"}`.

use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{DialectError, ErrorShape};
use crate::AppState;

pub mod form;
pub mod jobs;
pub mod sync;

/// Convertly's error answers.
pub struct Shape;

impl ErrorShape for Shape {
    const DIALECT: crate::dialect::Dialect = crate::dialect::Dialect::Convertly;
}

/// What Convertly's handlers fail with.
pub type Error = DialectError<Shape>;

/// Convertly's error body.
#[derive(Serialize, ToSchema)]
#[schema(as = ConvertlyError)]
pub struct ErrorBody {
    pub error: String,
}

/// Most files a synchronous request takes (each within `KILN_MAX_IMAGE_BYTES`).
pub const MAX_SYNC_FILES: usize = 8;

/// Convertly's routes.
pub fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    // Jobs stream their files to the store; synchronous images are read whole, within the
    // image limit each (axum's cap sits above it so the rest can be drained after a 413).
    let streamed = OpenApiRouter::new()
        .routes(routes!(jobs::create))
        .layer(axum::extract::DefaultBodyLimit::disable());
    let image_limit = (state.config.max_image_bytes as usize)
        .saturating_mul(MAX_SYNC_FILES + 1)
        .saturating_add(1 << 20);
    let images = OpenApiRouter::new()
        .routes(routes!(sync::convert))
        .routes(routes!(sync::compress))
        .layer(axum::extract::DefaultBodyLimit::max(image_limit));
    OpenApiRouter::new()
        .merge(streamed)
        .merge(images)
        .routes(routes!(jobs::get, jobs::cancel))
}
