//! The web console at `/console/`: the files `build.rs` built from `console/` (Vite) and
//! embedded in this binary. The page itself holds no data and needs no key: it signs in with
//! an API key and then uses only the public API. Hashed assets are cached for good; the page
//! is revalidated so a new binary's console is picked up at once.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

mod built {
    include!(concat!(env!("OUT_DIR"), "/console_assets.rs"));
}

/// What the console may load: only this origin (the API and signed media links included).
const CSP: &str = "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; \
    style-src 'self' 'unsafe-inline'; script-src 'self'; connect-src 'self'; \
    frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, e)| e) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

/// `GET /console`: to the page.
pub async fn root() -> Redirect {
    Redirect::permanent("/console/")
}

/// `GET /console/`: the page.
pub async fn index() -> Response {
    file("index.html")
}

/// `GET /console/{*path}`: an asset (unknown paths get the page: its routes live in the hash).
pub async fn asset(Path(path): Path<String>) -> Response {
    if built::ASSETS.iter().any(|(p, _)| *p == path) {
        file(&path)
    } else if path.starts_with("assets/") {
        (StatusCode::NOT_FOUND, "no such console asset").into_response()
    } else {
        file("index.html")
    }
}

fn file(path: &str) -> Response {
    let Some((_, body)) = built::ASSETS.iter().find(|(p, _)| *p == path) else {
        let why = built::MISSING.unwrap_or("its files are missing");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!(
                "This Kiln was built without its console: {why}. Rebuild with npm installed.\n"
            ),
        )
            .into_response();
    };
    let cache = if path.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mut resp = (
        [
            (header::CONTENT_TYPE, content_type(path)),
            (header::CACHE_CONTROL, cache),
        ],
        *body,
    )
        .into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    resp
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_console_is_embedded() {
        // CI builds with npm: the console must be in the binary it tests.
        assert!(
            super::built::MISSING.is_none(),
            "{}",
            super::built::MISSING.unwrap_or_default()
        );
        let page = super::built::ASSETS
            .iter()
            .find(|(p, _)| *p == "index.html")
            .expect("index.html");
        let page = std::str::from_utf8(page.1).unwrap();
        // Every asset the page names is embedded, under the base the page uses.
        for part in page.split("/console/").skip(1) {
            let name = &part[..part.find('"').unwrap()];
            assert!(
                super::built::ASSETS.iter().any(|(p, _)| *p == name),
                "{name} is named by the page but not embedded"
            );
        }
    }
}
