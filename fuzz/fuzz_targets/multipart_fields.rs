//! Multipart bodies as the upload endpoints read them: axum's `Multipart` (multer) over an
//! arbitrary body, then Kiln's field reader (`small_field`, the 4 KiB cap and UTF-8 check) on
//! every part. Errors, never panics or hangs; a field read is at most the cap.
#![no_main]

use axum::body::Body;
use axum::extract::{FromRequest, Multipart};
use axum::http::Request;
use kiln_control_plane::api::multipart::small_field;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first line is the boundary the Content-Type header names.
    let (boundary, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b"X"[..], data),
    };
    let Ok(boundary) = std::str::from_utf8(boundary) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let Ok(req) = Request::builder()
            .method("POST")
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(Body::from(body.to_vec()))
        else {
            return;
        };
        let Ok(mut multipart) = Multipart::from_request(req, &()).await else {
            return;
        };
        for _ in 0..64 {
            match multipart.next_field().await {
                Ok(Some(field)) => {
                    let _ = field.file_name().map(str::len);
                    let _ = field.content_type().map(str::len);
                    let name = field.name().unwrap_or("").to_string();
                    if let Ok(text) = small_field(field, &name).await {
                        assert!(text.len() <= 4096);
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
    });
});
