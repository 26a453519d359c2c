//! API-key authentication (`Authorization: Bearer <key>` or `X-API-Key: <key>`) and per-key
//! rate limits, as one middleware in front of every `/api/v1` route.
//!
//! The middleware authenticates a presented key (401 if it is wrong), counts the request
//! against the key's window for its class — writes (`POST`, `PUT`, `PATCH`, `DELETE`) are
//! limited more strictly than reads; Convertrilo's dialect has its own documented windows;
//! requests without a valid key count per client address (pre-signed links excepted) —
//! answers 429 with `Retry-After`
//! past the limit, and puts `X-RateLimit-Limit/Remaining/Reset` on every response. Handlers
//! then take [`Auth`], which answers 401 when no key was presented at all (pre-signed
//! downloads take no key). Errors take the shape of the API the path belongs to.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;

pub use crate::db::keys::Principal;
use crate::dialect::Dialect;
use crate::error::{render, ApiError};
use crate::ratelimit::Decision;
use crate::AppState;

/// The authenticated caller; extracting it answers 401 for a missing key.
pub struct Auth(pub Principal);

impl Auth {
    /// 403 unless the key holds `scope`.
    pub fn require(&self, scope: &str) -> Result<&Principal, ApiError> {
        if self.0.has(scope) {
            Ok(&self.0)
        } else {
            Err(ApiError::MissingScope(scope.to_string()))
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
    type Rejection = Response;

    /// A missing key answers 401 in the shape of the API the request is for.
    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Response> {
        match parts.extensions.get::<Principal>() {
            Some(p) => Ok(Auth(p.clone())),
            None => Err(render(
                Dialect::of_path(parts.uri.path()),
                ApiError::Unauthorized(
                    "missing API key: send Authorization: Bearer <key> or X-API-Key".into(),
                ),
                None,
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

/// Convertrilo's documented limits: 100 requests a minute on the dialect, 10 of them on
/// `ondemand/encode`.
pub const CONVERTRILO_PER_MIN: u64 = 100;
pub const CONVERTRILO_ENCODE_PER_MIN: u64 = 10;

/// The windows a keyed request counts against: (bucket, limit, label).
fn buckets(
    state: &AppState,
    p: &Principal,
    dialect: Dialect,
    method: &Method,
    path: &str,
) -> Vec<(String, u64, &'static str)> {
    if dialect == Dialect::Convertrilo {
        let mut b = vec![(
            format!("{}:convertrilo", p.key_id),
            CONVERTRILO_PER_MIN,
            "convertrilo",
        )];
        if *method == Method::POST && path.trim_end_matches('/') == "/convertrilo/ondemand/encode" {
            b.push((
                format!("{}:convertrilo-encode", p.key_id),
                CONVERTRILO_ENCODE_PER_MIN,
                "convertrilo_encode",
            ));
        }
        return b;
    }
    let (limit, name) = match RateClass::of(method) {
        RateClass::Write => (
            p.rate_submit.unwrap_or(state.config.rate_write_per_min),
            "write",
        ),
        RateClass::Read => (
            p.rate_read.unwrap_or(state.config.rate_read_per_min),
            "read",
        ),
    };
    vec![(format!("{}:{name}", p.key_id), limit.max(0) as u64, name)]
}

/// The window of requests without a valid key: per client address, at the read limit, so a
/// wrong key cannot be tried without bound and every answer carries the headers.
fn anonymous_bucket(state: &AppState, req: &Request) -> (String, u64, &'static str) {
    let addr = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into());
    (
        format!("ip:{addr}:anonymous"),
        state.config.rate_read_per_min.max(0) as u64,
        "anonymous",
    )
}

fn set_headers(resp: &mut Response, d: &Decision) {
    let h = resp.headers_mut();
    h.insert("x-ratelimit-limit", HeaderValue::from(d.limit));
    h.insert("x-ratelimit-remaining", HeaderValue::from(d.remaining));
    h.insert("x-ratelimit-reset", HeaderValue::from(d.reset_s));
}

/// The middleware described in the module documentation.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let dialect = Dialect::of_path(&path);
    let method = req.method().clone();
    let mut refusal = None;
    let principal = match presented_key(req.headers()) {
        None => None,
        Some(key) => match state.db.authenticate(key).await {
            Ok(Some(p)) => Some(p),
            Ok(None) => {
                refusal = Some(ApiError::Unauthorized("invalid API key".into()));
                None
            }
            Err(e) => return render(dialect, e.into(), None),
        },
    };
    // A pre-signed download is a capability link a browser or a CDN fetches without a key,
    // often many from one address: it is not counted.
    // A signed streaming path (`/api/v1/stream/…`) is the same kind of link, fetched once per
    // segment by a player.
    let signed_link = refusal.is_none()
        && (req.uri().query().is_some_and(|q| q.contains("signature="))
            || path.starts_with("/api/v1/stream/"));
    let windows = match &principal {
        Some(p) => buckets(&state, p, dialect, &method, &path),
        None if signed_link => Vec::new(),
        None => vec![anonymous_bucket(&state, &req)],
    };
    // Every window counts the request; the first one past its limit answers, and the headers
    // show the window closest to its limit.
    let mut shown: Option<Decision> = None;
    for (bucket, limit, name) in &windows {
        let d = state.limiter.check(bucket, *limit).await;
        if !d.allowed {
            state.metrics.rate_limited.with_label_values(&[name]).inc();
            let mut resp = render(
                dialect,
                ApiError::RateLimited {
                    message: format!(
                        "rate limit of {} requests per minute exceeded; retry in {} s",
                        d.limit, d.reset_s
                    ),
                    retry_after: d.reset_s,
                },
                None,
            );
            set_headers(&mut resp, &d);
            return resp;
        }
        if shown.as_ref().is_none_or(|s| d.remaining < s.remaining) {
            shown = Some(d);
        }
    }
    let mut resp = match refusal {
        Some(e) => render(dialect, e, None),
        None => {
            if let Some(p) = principal {
                req.extensions_mut().insert(p);
            }
            next.run(req).await
        }
    };
    if let Some(d) = &shown {
        set_headers(&mut resp, d);
    }
    resp
}
