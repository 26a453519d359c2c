//! The same errors in each dialect's own shape and codes: the status and the meaning come from
//! [`ApiError`]; only the body differs, as each service documents it.
//!
//! - native: `{"error": {"code", "message"}}`
//! - Convertly: `{"error": "<message>"}`
//! - Convertrilo: `{"code", "message"}` at the top level (plus `requiredScope` on a missing
//!   scope), with its codes (`invalid_request`, `missing_required_scope`, `insufficient_tokens`…)
//! - Klipfast: `{"error": {"code", "message"}}` with its codes (`invalid_request`,
//!   `server_error`…)

use std::marker::PhantomData;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::ApiError;
use crate::dialect::Dialect;

/// `err` answered the way `dialect` documents errors; `code` overrides the dialect's code
/// for the error's status (a dialect-specific reason such as `no_video_files_found`).
pub fn render(dialect: Dialect, err: ApiError, code: Option<&'static str>) -> Response {
    if dialect == Dialect::Native && code.is_none() {
        return err.into_response();
    }
    let (status, native) = err.status_and_code();
    let message = err.client_message();
    let code = code.unwrap_or_else(|| dialect_code(dialect, &err, status, native));
    let body = match dialect {
        Dialect::Native | Dialect::Klipfast => {
            json!({"error": {"code": code, "message": message}})
        }
        Dialect::Convertly => json!({ "error": message }),
        Dialect::Convertrilo => {
            let mut b = json!({"code": code, "message": message});
            if let ApiError::MissingScope(scope) = &err {
                b["requiredScope"] = json!(scope);
            }
            b
        }
    };
    let mut resp = (status, Json(body)).into_response();
    err.decorate(&mut resp);
    resp
}

fn dialect_code(
    dialect: Dialect,
    err: &ApiError,
    status: StatusCode,
    native: &'static str,
) -> &'static str {
    match dialect {
        Dialect::Native | Dialect::Convertly => native,
        // Convertrilo's documented codes; 5xx ones it does not list keep Kiln's names.
        Dialect::Convertrilo => match err {
            ApiError::BadRequest(_) | ApiError::RangeNotSatisfiable { .. } => "invalid_request",
            ApiError::Unauthorized(_) => "invalid_api_key",
            ApiError::MissingScope(_) => "missing_required_scope",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "job_active",
            ApiError::Gone(_) => "output_not_available",
            ApiError::PaymentRequired(_) => "insufficient_tokens",
            ApiError::PayloadTooLarge(_) => "file_too_large",
            ApiError::UnsupportedMedia(_) => "unsupported_content_type",
            ApiError::Unprocessable(_) => "probe_failed",
            ApiError::SourceLimit(_) => "file_too_large",
            ApiError::RateLimited { .. } => "rate_limit_exceeded",
            ApiError::Unsupported(_) => "not_supported",
            ApiError::Unavailable { .. } | ApiError::Overloaded { .. } => "service_unavailable",
            ApiError::Internal(_) => "internal_error",
        },
        Dialect::Klipfast if matches!(err, ApiError::Unsupported(_)) => "not_supported",
        Dialect::Klipfast => match status.as_u16() {
            400 | 416 => "invalid_request",
            401 => "unauthorized",
            402 => "insufficient_credits",
            403 => "forbidden",
            404 => "not_found",
            409 => "conflict",
            410 => "gone",
            413 => "file_too_large",
            415 | 422 => "unprocessable_video",
            429 => "rate_limited",
            503 => "service_unavailable",
            _ => "server_error",
        },
    }
}

/// What a dialect's handlers fail with: an [`ApiError`] (and an optional code of the
/// dialect's own), answered in the dialect's shape.
pub struct DialectError<D> {
    pub error: ApiError,
    pub code: Option<&'static str>,
    dialect: PhantomData<D>,
}

/// Which dialect an error type answers for.
pub trait ErrorShape {
    const DIALECT: Dialect;
}

impl<D> DialectError<D> {
    /// `error` answered with the dialect's own `code`.
    pub fn coded(error: ApiError, code: &'static str) -> Self {
        Self {
            error,
            code: Some(code),
            dialect: PhantomData,
        }
    }
}

impl<D> std::fmt::Debug for DialectError<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} ({:?})", self.error, self.code)
    }
}

impl<D: ErrorShape> IntoResponse for DialectError<D> {
    fn into_response(self) -> Response {
        render(D::DIALECT, self.error, self.code)
    }
}

/// Everything that becomes an [`ApiError`] becomes a dialect's error the same way.
macro_rules! into_dialect_error {
    ($($t:ty),* $(,)?) => {$(
        impl<D> From<$t> for DialectError<D> {
            fn from(e: $t) -> Self {
                Self { error: e.into(), code: None, dialect: PhantomData }
            }
        }
    )*};
}

into_dialect_error!(
    ApiError,
    crate::submission::SubmitError,
    crate::sources::SourceError,
    crate::db::DbError,
    kiln_protocol::QueueError,
    kiln_protocol::StoreError,
    sqlx::Error,
    axum::extract::multipart::MultipartError,
    axum::extract::rejection::JsonRejection,
);

#[cfg(test)]
mod tests {
    use super::*;

    async fn answer(d: Dialect, e: ApiError) -> (u16, serde_json::Value) {
        let r = render(d, e, None);
        let status = r.status().as_u16();
        let b = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        (status, serde_json::from_slice(&b).unwrap())
    }

    #[tokio::test]
    async fn one_error_in_every_shape() {
        let scope = || ApiError::MissingScope("credentials:manage".into());
        let (s, b) = answer(Dialect::Native, scope()).await;
        assert_eq!((s, b["error"]["code"].as_str()), (403, Some("forbidden")));
        let (s, b) = answer(Dialect::Convertly, scope()).await;
        assert_eq!(s, 403);
        assert!(b["error"].as_str().unwrap().contains("credentials:manage"));
        let (s, b) = answer(Dialect::Convertrilo, scope()).await;
        assert_eq!(
            (s, b["code"].as_str(), b["requiredScope"].as_str()),
            (
                403,
                Some("missing_required_scope"),
                Some("credentials:manage")
            )
        );
        let (s, b) = answer(Dialect::Klipfast, ApiError::internal("boom")).await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (500, Some("server_error"))
        );
        assert_eq!(b["error"]["message"], "internal server error");
        let r = render(
            Dialect::Convertrilo,
            ApiError::NotFound("nothing".into()),
            Some("no_video_files_found"),
        );
        let b = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        let b: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(b["code"], "no_video_files_found");
    }
}
