//! The one place errors become HTTP responses: `{"error": {"code": "...", "message": "..."}}`
//! with a stable code, or the same error in a dialect's own shape (`error/dialect.rs`).
//! Internal errors are logged and answered with an opaque 500.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

/// An error the API answers with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    /// The key lacks a scope (403); dialects name it in their own way.
    #[error("this API key lacks the {0:?} scope")]
    MissingScope(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Gone(String),
    /// Credits exhausted (402).
    #[error("{0}")]
    PaymentRequired(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// A `Range` outside the object; `size` goes into `Content-Range: bytes */size`.
    #[error("the requested range is outside the {size}-byte output")]
    RangeNotSatisfiable { size: u64 },
    #[error("{0}")]
    UnsupportedMedia(String),
    #[error("{0}")]
    Unprocessable(String),
    /// The source is larger than this server accepts (picture size, duration, streams): 422.
    #[error("{0}")]
    SourceLimit(String),
    /// Too many requests; `retry_after` seconds go into `Retry-After`.
    #[error("{message}")]
    RateLimited { message: String, retry_after: u64 },
    /// Too much work already: 503 with `Retry-After` (the synchronous image pool's queue is
    /// full).
    #[error("{message}")]
    Overloaded { message: String, retry_after: u64 },
    /// A service Kiln needs is unreachable; `what` is shown, the cause only logged.
    #[error("service unavailable: {what}")]
    Unavailable {
        what: &'static str,
        #[source]
        source: Option<BoxError>,
    },
    /// Asked of Kiln but not something it does, e.g. a Google Drive destination: 422 (the
    /// request is well formed; this server will not do it, and asking again will not help).
    #[error("{0}")]
    Unsupported(String),
    /// Never shown to the client; logged with its sources.
    #[error("internal error")]
    Internal(#[source] BoxError),
}

mod dialect;

pub use dialect::{render, DialectError, ErrorShape};

/// Any error, as a cause.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl ApiError {
    /// The HTTP status and the stable code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden(_) | Self::MissingScope(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::Gone(_) => (StatusCode::GONE, "gone"),
            Self::PaymentRequired(_) => (StatusCode::PAYMENT_REQUIRED, "payment_required"),
            Self::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::RangeNotSatisfiable { .. } => {
                (StatusCode::RANGE_NOT_SATISFIABLE, "range_not_satisfiable")
            }
            Self::UnsupportedMedia(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media"),
            Self::Unprocessable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unprocessable"),
            Self::SourceLimit(_) => (StatusCode::UNPROCESSABLE_ENTITY, "source_limit_exceeded"),
            Self::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            Self::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::Overloaded { .. } => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            Self::Unsupported(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unsupported"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// Wrap any internal failure (database, queue, storage) without leaking its detail.
    pub fn internal(e: impl Into<BoxError>) -> Self {
        Self::Internal(e.into())
    }

    /// `what` is unreachable (shown), because of `source` (logged).
    pub fn unavailable(what: &'static str, source: impl Into<BoxError>) -> Self {
        Self::Unavailable {
            what,
            source: Some(source.into()),
        }
    }
}

/// An error and its sources, joined (reqwest's own message omits the cause).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

impl From<crate::db::DbError> for ApiError {
    fn from(e: crate::db::DbError) -> Self {
        Self::internal(e)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        Self::internal(e)
    }
}

impl From<kiln_protocol::QueueError> for ApiError {
    fn from(e: kiln_protocol::QueueError) -> Self {
        match e {
            kiln_protocol::QueueError::Unavailable(_) => Self::unavailable("the job queue", e),
            other => Self::internal(other),
        }
    }
}

impl From<kiln_protocol::StoreError> for ApiError {
    fn from(e: kiln_protocol::StoreError) -> Self {
        match e {
            kiln_protocol::StoreError::TooLarge { limit } => {
                Self::PayloadTooLarge(format!("larger than the limit of {limit} bytes"))
            }
            // Kiln's own store failing (or a key it made being refused) is Kiln's fault.
            other => Self::internal(other),
        }
    }
}

impl From<crate::sources::SourceError> for ApiError {
    fn from(e: crate::sources::SourceError) -> Self {
        use crate::sources::SourceError;
        match e {
            SourceError::Invalid(m) => Self::BadRequest(m),
            e @ SourceError::TooLarge { .. } => Self::PayloadTooLarge(e.to_string()),
            SourceError::Unreadable(m) => Self::Unprocessable(m),
            SourceError::Store(s) => Self::internal(s),
        }
    }
}

impl From<crate::submission::SubmitError> for ApiError {
    fn from(e: crate::submission::SubmitError) -> Self {
        use crate::submission::SubmitError;
        match e {
            SubmitError::Invalid(m) => Self::BadRequest(m),
            e @ SubmitError::NoUpload(_) => Self::NotFound(e.to_string()),
            e @ SubmitError::UploadExpired(_) => Self::Gone(e.to_string()),
            SubmitError::Source(s) => s.into(),
            e @ SubmitError::NoVideoStream => Self::UnsupportedMedia(e.to_string()),
            SubmitError::Unprocessable(m) => Self::Unprocessable(m),
            SubmitError::SourceLimit(m) => Self::SourceLimit(m),
            e @ SubmitError::QuotaReached { retry_after, .. } => Self::RateLimited {
                message: e.to_string(),
                retry_after,
            },
            e @ SubmitError::InsufficientCredits { .. } => Self::PaymentRequired(e.to_string()),
            SubmitError::Queue(q) => q.into(),
            SubmitError::Db(d) => d.into(),
            SubmitError::Internal(i) => Self::Internal(i),
        }
    }
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(e: axum::extract::rejection::JsonRejection) -> Self {
        match e {
            axum::extract::rejection::JsonRejection::MissingJsonContentType(_) => {
                Self::UnsupportedMedia("send the body as application/json".into())
            }
            other => Self::BadRequest(format!("malformed JSON body: {}", other.body_text())),
        }
    }
}

impl From<axum::extract::multipart::MultipartError> for ApiError {
    fn from(e: axum::extract::multipart::MultipartError) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::PayloadTooLarge(e.body_text())
        } else {
            Self::BadRequest(format!("malformed multipart body: {}", e.body_text()))
        }
    }
}

impl ApiError {
    /// The message a client sees: the error's own words, or nothing of an internal cause
    /// (which is logged here, once).
    pub fn client_message(&self) -> String {
        match self {
            Self::Internal(source) => {
                tracing::error!(error = %chain(source.as_ref()), "internal error");
                "internal server error".to_string()
            }
            Self::Unavailable {
                what,
                source: Some(source),
            } => {
                tracing::warn!(%what, error = %chain(source.as_ref()), "dependency unavailable");
                self.to_string()
            }
            other => other.to_string(),
        }
    }

    /// Headers an answer carries whatever its shape: `Content-Range` on a 416,
    /// `Retry-After` on a 429, `WWW-Authenticate` on a 401.
    pub fn decorate(&self, resp: &mut Response) {
        if let Self::RangeNotSatisfiable { size } = self {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
        }
        if let Self::RateLimited { retry_after, .. } | Self::Overloaded { retry_after, .. } = self {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
        }
        if resp.status() == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let body = crate::api::docs::Error {
            error: crate::api::docs::ErrorBody {
                code: code.to_string(),
                message: self.client_message(),
            },
        };
        let mut resp = (status, Json(body)).into_response();
        self.decorate(&mut resp);
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(e: ApiError) -> (StatusCode, serde_json::Value) {
        let resp = e.into_response();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn causes_are_logged_not_sent() {
        // A queue outage: 503 that names the queue, without Redis' own words.
        let q = kiln_protocol::QueueError::Unavailable(
            "Connection refused (os error 111) redis://10.0.0.7:6379".into(),
        );
        let (status, doc) = body(q.into()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(doc["error"]["code"], "unavailable");
        let m = doc["error"]["message"].as_str().unwrap();
        assert!(
            m.contains("job queue") && !m.contains("10.0.0.7") && !m.contains("refused"),
            "{m}"
        );
        // Kiln's own store failing is a 500 with nothing of the cause.
        let s = kiln_protocol::StoreError::Io(std::io::Error::other("/var/lib/kiln: disk full"));
        let (status, doc) = body(s.into()).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(doc["error"]["message"], "internal server error");
        let (status, _) = body(sqlx::Error::PoolTimedOut.into()).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
