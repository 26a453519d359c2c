//! API-key authentication: `Authorization: Bearer <key>` or `X-API-Key: <key>`.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

pub use crate::db::keys::Principal;
use crate::error::ApiError;
use crate::AppState;

/// The authenticated caller; extracting it answers 401 for a missing or wrong key.
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

fn presented_key(parts: &Parts) -> Option<&str> {
    if let Some(v) = parts.headers.get(axum::http::header::AUTHORIZATION) {
        let v = v.to_str().ok()?.trim();
        let (scheme, key) = v.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| key.trim());
    }
    parts.headers.get("x-api-key")?.to_str().ok().map(str::trim)
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let key = presented_key(parts)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                ApiError::Unauthorized(
                    "missing API key: send Authorization: Bearer <key> or X-API-Key".into(),
                )
            })?;
        match state.db.authenticate(key).await? {
            Some(p) => Ok(Auth(p)),
            None => Err(ApiError::Unauthorized("invalid API key".into())),
        }
    }
}
