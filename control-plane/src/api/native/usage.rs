//! `GET /usage`: what the caller's account used over a period.

use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;

use crate::api::docs::Error;
use crate::auth::Auth;
use crate::error::ApiError;
use crate::time::{month_bounds, parse_date};
use crate::views::UsageView;
use crate::AppState;

/// Query of `GET /usage`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct UsageQuery {
    /// `YYYY-MM-DD` (UTC), inclusive; default the first of this month.
    pub from: Option<String>,
    /// `YYYY-MM-DD` (UTC), exclusive; default the first of next month.
    pub to: Option<String>,
}

/// `GET /usage`: the account's jobs, bytes, encoded minutes, GPU and CPU seconds and credits
/// over a period (jobs counted by when they were submitted).
#[utoipa::path(get, path = "/api/v1/usage", tag = "konvrt", params(UsageQuery),
    responses((status = 200, body = UsageView), (status = 400, body = Error),
        (status = 401, body = Error), (status = 403, body = Error)))]
pub async fn usage(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<UsageQuery>,
) -> Result<Json<UsageView>, ApiError> {
    let principal = auth.require("usage:read")?;
    let now = kiln_protocol::now_ms();
    let (month_from, month_to) = month_bounds(now);
    let date = |v: &Option<String>, default: i64, name: &str| -> Result<i64, ApiError> {
        match v.as_deref().filter(|s| !s.is_empty()) {
            None => Ok(default),
            Some(s) => parse_date(s).ok_or_else(|| {
                ApiError::BadRequest(format!("{name} must be a date like 2026-11-01, got {s:?}"))
            }),
        }
    };
    let from = date(&q.from, month_from, "from")?;
    let to = date(&q.to, month_to, "to")?;
    if to <= from {
        return Err(ApiError::BadRequest("`to` must be after `from`".into()));
    }
    let usage = state.db.usage(&principal.account_id, from, to).await?;
    let account = state
        .db
        .get_account(&principal.account_id)
        .await?
        .ok_or_else(|| ApiError::internal("account of a valid key is missing"))?;
    let month = state
        .db
        .jobs_created_between(&principal.account_id, month_from, month_to)
        .await?;
    Ok(Json(UsageView::new(&account, from, to, &usage, month)))
}
