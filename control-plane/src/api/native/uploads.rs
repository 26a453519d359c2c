//! `POST /uploads`: store a file once (streamed), for later `POST /jobs` and batches.

use axum::extract::{Multipart, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::api::docs::Error;
use crate::api::multipart;
use crate::auth::Auth;
use crate::db::uploads::UploadRow;
use crate::error::ApiError;
use crate::time::rfc3339;
use crate::views::UploadView;
use crate::AppState;

/// `POST /uploads`: store a file (multipart `file`, streamed) for later `POST /jobs`.
#[utoipa::path(post, path = "/api/v1/uploads", tag = "jobs",
    request_body(content_type = "multipart/form-data", description = "`file`: the media"),
    responses((status = 201, body = UploadView),
        (status = 400, body = Error), (status = 401, body = Error),
        (status = 403, body = Error), (status = 413, body = Error)))]
pub async fn upload(
    State(state): State<AppState>,
    auth: Auth,
    mut multipart: Multipart,
) -> Result<Response, ApiError> {
    let principal = auth.require("jobs:create")?.clone();
    let id = uuid::Uuid::now_v7().to_string();
    let key = format!("uploads/{id}");
    let result: Result<(u64, Option<String>), ApiError> = async {
        let mut got = None;
        while let Some(field) = multipart.next_field().await? {
            let name = field.name().unwrap_or_default().to_string();
            if name != "file" {
                multipart::small_field(field, &name).await?;
                continue;
            }
            if got.is_some() {
                return Err(ApiError::BadRequest("send exactly one `file` field".into()));
            }
            got = Some(multipart::store_file_field(&state, field, &key).await?);
        }
        let (size, filename) = got.ok_or_else(|| {
            ApiError::BadRequest(
                "missing `file` field: send the file as multipart form data".into(),
            )
        })?;
        if size == 0 {
            return Err(ApiError::BadRequest("the uploaded file is empty".into()));
        }
        Ok((size, filename))
    }
    .await;
    let (size, filename) = match result {
        Ok(v) => v,
        Err(e) => {
            if matches!(e, ApiError::PayloadTooLarge(_)) {
                multipart::drain(&mut multipart).await;
            }
            let _ = state.store.delete(&key).await;
            return Err(e);
        }
    };
    let now = kiln_protocol::now_ms();
    let row = UploadRow {
        id,
        account_id: principal.account_id.clone(),
        object_key: key,
        filename,
        size: size as i64,
        created_at: now,
        expires_at: now + state.config.upload_ttl_secs as i64 * 1000,
        swept_at: None,
    };
    state.db.insert_upload(&row).await?;
    Ok((
        StatusCode::CREATED,
        Json(UploadView {
            upload_id: row.id,
            size: row.size,
            filename: row.filename,
            expires_at: rfc3339(row.expires_at),
        }),
    )
        .into_response())
}
