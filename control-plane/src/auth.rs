//! API-key authentication (`Authorization: Bearer <key>` or `X-API-Key: <key>`) and per-key
//! rate limits, as one middleware in front of every `/api/v1` route.
//!
//! The middleware authenticates a presented key (401 if it is wrong), counts the request
//! against the key's window for its class — writes (`POST`, `PUT`, `PATCH`, `DELETE`) are
//! limited more strictly than reads — answers 429 with `Retry-After` past the limit, and puts
//! `X-RateLimit-Limit/Remaining/Reset` on every response. Handlers then take [`Auth`], which
//! answers 401 when no key was presented at all (pre-signed downloads take no key).

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

pub use crate::db::keys::Principal;
use crate::error::ApiError;
use crate::AppState;

/// The authenticated caller; extracting it answers 401 for a missing key.
pub struct Auth(pub Principal);

impl Auth {
    /// 403 unless the key holds `scope`.
    pub fn require(&self, scope: &str) -> Result<&Principal, ApiError> {
        if self.0.has(scope) {
            Ok(&self.0)
        } else {
            Err(ApiError::Forbidden(format!(
                "this API key lacks the {scope:?} scope"
            )))
        }
    }
}

/// The key a request presents, if any.
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    let key = if let Some(v) = headers.get(axum::http::header::AUTHORIZATION) {
        let v = v.to_str().ok()?.trim();
        let (scheme, key) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())?
    } else {
        headers.get("x-api-key")?.to_str().ok().map(str::trim)?
    };
    (!key.is_empty()).then_some(key)
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, ApiError> {
        match parts.extensions.get::<Principal>() {
            Some(p) => Ok(Auth(p.clone())),
            None => Err(ApiError::Unauthorized(
                "missing API key: send Authorization: Bearer <key> or X-API-Key".into(),
            )),
        }
    }
}

/// Which limit a request counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateClass {
    /// Submissions and other changes: `POST`, `PUT`, `PATCH`, `DELETE`.
    Write,
    /// Everything else.
    Read,
}

impl RateClass {
    fn of(method: &Method) -> Self {
        if matches!(
            *method,
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE
        ) {
            Self::Write
        } else {
            Self::Read
        }
    }
}

/// The middleware described in the module documentation.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(key) = presented_key(req.headers()) else {
        return next.run(req).await;
    };
    let principal = match state.db.authenticate(key).await {
        Ok(Some(p)) => p,
        Ok(None) => return ApiError::Unauthorized("invalid API key".into()).into_response(),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let class = RateClass::of(req.method());
    let (limit, name) = match class {
        RateClass::Write => (
            principal
                .rate_submit
                .unwrap_or(state.config.rate_write_per_min),
            "write",
        ),
        RateClass::Read => (
            principal
                .rate_read
                .unwrap_or(state.config.rate_read_per_min),
            "read",
        ),
    };
    let decision = state
        .limiter
        .check(&format!("{}:{name}", principal.key_id), limit.max(0) as u64)
        .await;
    let mut resp = if decision.allowed {
        req.extensions_mut().insert(principal);
        next.run(req).await
    } else {
        state.metrics.rate_limited.with_label_values(&[name]).inc();
        ApiError::RateLimited {
            message: format!(
                "rate limit of {} {name} requests per minute exceeded; retry in {} s",
                decision.limit, decision.reset_s
            ),
            retry_after: decision.reset_s,
        }
        .into_response()
    };
    let h = resp.headers_mut();
    h.insert("x-ratelimit-limit", HeaderValue::from(decision.limit));
    h.insert(
        "x-ratelimit-remaining",
        HeaderValue::from(decision.remaining),
    );
    h.insert("x-ratelimit-reset", HeaderValue::from(decision.reset_s));
    resp
}
