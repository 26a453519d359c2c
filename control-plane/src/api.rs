//! The HTTP API: routes, and the middleware around them.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::dialect::Dialect;
use crate::error::{render, ApiError};
use crate::AppState;

pub mod console;
pub mod convertly;
pub mod convertrilo;
pub mod docs;
pub mod klipfast;
pub mod multipart;
pub mod native;

/// Every route with its OpenAPI operation — the native API and each dialect the server
/// serves (`KILN_DIALECTS`) — and the document they make.
pub fn api_routes(state: &AppState) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let mut routes =
        OpenApiRouter::with_openapi(docs::ApiDoc::openapi()).merge(native::routes(state));
    let dialects = &state.config.dialects;
    if dialects.serves(Dialect::Convertly) {
        routes = routes.merge(convertly::routes(state));
    }
    if dialects.serves(Dialect::Convertrilo) {
        routes = routes.merge(convertrilo::routes());
    }
    if dialects.serves(Dialect::Klipfast) {
        routes = routes.merge(klipfast::routes());
    }
    let (router, mut spec) = routes.split_for_parts();
    spec.info.version = env!("CARGO_PKG_VERSION").to_string();
    document_middleware_answers(&mut spec);
    (router, spec)
}

/// The authentication middleware can answer any operation with 401 (a wrong key) or 429
/// (over the key's limit), and any can fail with 500 or 503: say so on every operation; and
/// 400 / 415 where axum's extractors refuse input (`json_rejections`).
fn document_middleware_answers(spec: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    for (path, item) in spec.paths.paths.iter_mut() {
        // Each API answers errors in its own shape.
        let schema = match Dialect::of_path(path) {
            Dialect::Native => "Error",
            Dialect::Convertly => "ConvertlyError",
            Dialect::Convertrilo => "ConvertriloError",
            Dialect::Klipfast => "KlipfastError",
        };
        let error = |what: &str| {
            ResponseBuilder::new()
                .description(what)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name(schema)))
                        .build(),
                )
                .build()
        };
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
            // axum refuses a query or path value that does not parse, and a JSON body sent
            // as something else (see `json_rejections`).
            let takes_input = op.parameters.as_ref().is_some_and(|p| !p.is_empty());
            let json_body = op
                .request_body
                .as_ref()
                .is_some_and(|b| b.content.contains_key("application/json"));
            let responses = &mut op.responses.responses;
            if takes_input || op.request_body.is_some() {
                responses
                    .entry("400".into())
                    .or_insert_with(|| error("A parameter or the body does not parse").into());
            }
            if json_body {
                responses
                    .entry("415".into())
                    .or_insert_with(|| error("The body was not sent as application/json").into());
            }
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
    let app = Router::new()
        .merge(api)
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/console", get(console::root))
        .route("/console/", get(console::index))
        .route("/console/{*path}", get(console::asset))
        .fallback(not_found);
    resilient(app)
        .layer(middleware::from_fn(json_rejections))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// A handler that panics answers 500 (the error document, the panic logged) instead of
/// dropping the connection; the service goes on serving.
fn resilient<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router.layer(tower_http::catch_panic::CatchPanicLayer::custom(
        |panic: Box<dyn std::any::Any + Send + 'static>| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            ApiError::internal(format!("a handler panicked: {what}")).into_response()
        },
    ))
}

async fn healthz(State(state): State<AppState>) -> Response {
    if !state.db.ping().await {
        return ApiError::Unavailable {
            what: "the database",
            source: None,
        }
        .into_response();
    }
    if let Err(e) = state.queue.depth().await {
        return ApiError::unavailable("the job queue", e).into_response();
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

async fn not_found(uri: axum::http::Uri) -> Response {
    render(
        Dialect::of_path(uri.path()),
        ApiError::NotFound("no such endpoint".into()),
        None,
    )
}

/// axum's own extractors refuse what does not parse (a query value out of range, a path
/// segment that is not a number) with a text/plain body; the API answers every error as its
/// JSON document, in the caller's dialect. This is the one place those refusals are mapped.
async fn json_rejections(req: Request, next: Next) -> Response {
    let dialect = Dialect::of_path(req.uri().path());
    let console = req.uri().path().starts_with("/console");
    let resp = next.run(req).await;
    let status = resp.status();
    let plain = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    if console || !status.is_client_error() || !plain {
        return resp;
    }
    let body = axum::body::to_bytes(resp.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let message = String::from_utf8_lossy(&body).trim().to_string();
    let err = match status {
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMedia(message),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(message),
        StatusCode::UNPROCESSABLE_ENTITY => ApiError::Unprocessable(message),
        StatusCode::NOT_FOUND => ApiError::NotFound(message),
        _ => ApiError::BadRequest(message),
    };
    render(dialect, err, None)
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

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_panicking_handler_answers_500_and_the_router_keeps_serving() {
        async fn boom() -> &'static str {
            panic!("kaboom")
        }
        let app = resilient(
            Router::new()
                .route("/boom", get(boom))
                .route("/fine", get(|| async { "ok" })),
        );
        let req = |p: &str| {
            Request::builder()
                .uri(p)
                .body(axum::body::Body::empty())
                .unwrap()
        };
        let resp = app.clone().oneshot(req("/boom")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(doc["error"]["code"], "internal");
        assert!(
            !doc.to_string().contains("kaboom"),
            "the panic is logged, not sent"
        );
        let resp = app.oneshot(req("/fine")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
}
