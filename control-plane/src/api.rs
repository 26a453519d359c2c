//! The HTTP API: routes, and the middleware around them.

use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::AppState;

pub mod admin;
pub mod compress;
pub mod convert;
pub mod docs;
pub mod jobs;
pub mod nodes;
pub mod submit;
pub mod time;

/// Every `/api/v1` route with its OpenAPI operation: registering a route here is what puts it
/// in the spec, so the two cannot drift apart.
pub fn api_routes(state: &AppState) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    // Kiln's own check refuses images over the limit with 413; axum's limit sits above it so
    // the rest of a moderately oversized body can still be drained (see `drain`).
    let image_limit = (state.config.max_image_bytes as usize).saturating_mul(2) + (1 << 20);
    // Video uploads stream to storage; the store enforces their size limit, not axum.
    let streamed = OpenApiRouter::new()
        .routes(routes!(compress::compress))
        .routes(routes!(submit::upload))
        .layer(DefaultBodyLimit::disable());
    let images = OpenApiRouter::new()
        .routes(routes!(convert::convert))
        .layer(DefaultBodyLimit::max(image_limit));
    let rest = OpenApiRouter::new()
        .routes(routes!(jobs::status))
        .routes(routes!(jobs::download))
        .routes(routes!(admin::usage))
        .routes(routes!(submit::create_jobs, jobs::list))
        .routes(routes!(jobs::get_job, jobs::cancel))
        .routes(routes!(jobs::job_download))
        .routes(routes!(submit::create_batch))
        .routes(routes!(submit::get_batch))
        .routes(routes!(submit::archive))
        .routes(routes!(admin::create_key, admin::list_keys))
        .routes(routes!(admin::revoke_key))
        .routes(routes!(admin::create_account))
        .routes(routes!(admin::update_account))
        .routes(routes!(admin::own_account))
        .routes(routes!(admin::rotate_webhook_secret))
        .routes(routes!(nodes::list));
    let (router, mut spec) = OpenApiRouter::with_openapi(docs::ApiDoc::openapi())
        .merge(streamed)
        .merge(images)
        .merge(rest)
        .split_for_parts();
    spec.info.version = env!("CARGO_PKG_VERSION").to_string();
    document_middleware_answers(&mut spec);
    (router, spec)
}

/// The authentication middleware can answer any operation with 401 (a wrong key) or 429
/// (over the key's limit), and any can fail with 500 or 503: say so on every operation.
fn document_middleware_answers(spec: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let error = |what: &str| {
        ResponseBuilder::new()
            .description(what)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Error")))
                    .build(),
            )
            .build()
    };
    for item in spec.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
        {
            let responses = &mut op.responses.responses;
            responses
                .entry("401".into())
                .or_insert_with(|| error("Missing or invalid API key").into());
            responses.entry("429".into()).or_insert_with(|| {
                error("Over the key's rate limit (see Retry-After) or the account's quota").into()
            });
            responses
                .entry("500".into())
                .or_insert_with(|| error("Internal error (details are logged, not sent)").into());
            responses.entry("503".into()).or_insert_with(|| {
                error("The database, queue or store is unreachable; retry with backoff").into()
            });
        }
    }
}

/// Every route Kiln serves.
pub fn router(state: AppState) -> Router {
    let (api, spec) = api_routes(&state);
    let spec = std::sync::Arc::new(spec);
    let api = api
        .route(
            "/api/v1/openapi.json",
            get(move || {
                let spec = spec.clone();
                async move { Json(spec.as_ref().clone()) }
            }),
        )
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::auth::authenticate,
        ));
    Router::new()
        .merge(api)
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Text fields are short; anything longer is a malformed request.
const MAX_FIELD_BYTES: usize = 4096;

/// Read a text field, refusing it past [`MAX_FIELD_BYTES`] without buffering the rest (this
/// upload routes stream their files and set no overall body limit).
pub(crate) async fn small_field(
    mut field: axum::extract::multipart::Field<'_>,
    name: &str,
) -> Result<String, ApiError> {
    let mut buf = Vec::new();
    while let Some(chunk) = field.chunk().await? {
        if buf.len() + chunk.len() > MAX_FIELD_BYTES {
            return Err(ApiError::BadRequest(format!("field {name:?} is too long")));
        }
        buf.extend_from_slice(&chunk);
    }
    String::from_utf8(buf).map_err(|_| ApiError::BadRequest(format!("field {name:?} is not UTF-8")))
}

/// After refusing an upload part-way (too large), read and discard what the client is still
/// sending, for a bounded time, so it receives the error response instead of a reset
/// connection mid-write.
pub(crate) async fn drain(multipart: &mut axum::extract::Multipart) {
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while let Ok(Some(mut field)) = multipart.next_field().await {
            while let Ok(Some(_)) = field.chunk().await {}
        }
    })
    .await;
}

async fn healthz(State(state): State<AppState>) -> Response {
    if !state.db.ping().await {
        return ApiError::Unavailable("database not reachable".into()).into_response();
    }
    if let Err(e) = state.queue.depth().await {
        return ApiError::Unavailable(format!("job queue not reachable: {e}")).into_response();
    }
    Json(serde_json::json!({"status": "ok"})).into_response()
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(),
    )
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".into())
}

/// Record each request's latency by route template (not raw path, to bound label cardinality).
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let started = Instant::now();
    let resp = next.run(req).await;
    let class = match resp.status().as_u16() {
        s if s < 400 => "2xx",
        s if s < 500 => "4xx",
        _ => "5xx",
    };
    state
        .metrics
        .http_seconds
        .with_label_values(&[route.as_str(), class])
        .observe(started.elapsed().as_secs_f64());
    if resp.status() == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::warn!(%route, "request answered 500");
    }
    resp
}
