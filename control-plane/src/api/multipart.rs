//! Reading multipart bodies without buffering them: short text fields, a `file` field
//! streamed into the store, and draining what a client still sends after a refusal. Shared
//! by the native endpoints and every dialect.

use axum::extract::multipart::{Field, MultipartError};
use axum::extract::Multipart;
use futures::TryStreamExt;
use kiln_protocol::StoreError;
use tokio_util::io::StreamReader;

use crate::error::ApiError;
use crate::AppState;

/// Text fields are short; anything longer is a malformed request.
const MAX_FIELD_BYTES: usize = 4096;

/// Read a text field, refusing it past [`MAX_FIELD_BYTES`] without buffering the rest (the
/// upload routes stream their files and set no overall body limit).
pub async fn small_field(mut field: Field<'_>, name: &str) -> Result<String, ApiError> {
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
pub async fn drain(multipart: &mut Multipart) {
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while let Ok(Some(mut field)) = multipart.next_field().await {
            while let Ok(Some(_)) = field.chunk().await {}
        }
    })
    .await;
}

/// Stream a multipart file field into the store at `key` under the upload size limit;
/// returns its size and the client's file name.
pub async fn store_file_field(
    state: &AppState,
    field: Field<'_>,
    key: &str,
) -> Result<(u64, Option<String>), ApiError> {
    let filename = field.file_name().map(str::to_string);
    let mut reader = StreamReader::new(field.map_err(std::io::Error::other));
    let size = state
        .store
        .put_stream(key, &mut reader, state.config.max_upload_bytes)
        .await
        .map_err(upload_error)?;
    Ok((size, filename))
}

/// An upload that stopped: too large (413), the client's body broken (400), or Kiln's own
/// store failing (500).
fn upload_error(e: StoreError) -> ApiError {
    match e {
        StoreError::TooLarge { limit } => {
            ApiError::PayloadTooLarge(format!("upload exceeds the limit of {limit} bytes"))
        }
        StoreError::Io(io)
            if io
                .get_ref()
                .is_some_and(|inner| inner.is::<MultipartError>()) =>
        {
            ApiError::BadRequest(format!("upload interrupted or malformed: {io}"))
        }
        other => other.into(),
    }
}
