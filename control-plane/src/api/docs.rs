//! The OpenAPI 3.1 document, served at `/api/v1/openapi.json`. Paths come from the handlers'
//! `#[utoipa::path]` attributes, registered with their routes in one place (`api::native`
//! and each dialect), so a route cannot exist without being documented; the response
//! schemas are derived from the very view structs the handlers serialise (`crate::views`).
//! `tests/api.rs` checks every documented operation's real answers against it.

use serde::Serialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// Every error: `{"error": {"code", "message"}}`.
#[derive(Serialize, ToSchema)]
pub struct Error {
    pub error: ErrorBody,
}

/// Stable `code` (bad_request, unauthorized, forbidden, not_found, conflict, gone,
/// payment_required, payload_too_large, range_not_satisfiable, unsupported_media,
/// unprocessable, rate_limited, unavailable, internal) and a message for people.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

/// The document's fixed parts; paths are added by the router.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Kiln",
        description = "Self-hosted GPU media transcoding. Authenticate with `Authorization: Bearer <key>` or `X-API-Key`. Every response to a keyed request carries `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset` (seconds); 429 carries `Retry-After`. Errors are `{\"error\": {\"code\", \"message\"}}`.",
    ),
    modifiers(&Security),
    security(("bearer" = []), ("api_key" = [])),
    components(schemas(Error)),
    tags(
        (name = "konvrt", description = "Konvrt-compatible endpoints"),
        (name = "jobs", description = "Kiln's jobs API"),
        (name = "admin", description = "Keys, accounts and nodes (admin scope)"),
        (name = "convertly", description = "Convertly's API: base URL `<kiln>/convertly`"),
        (name = "convertrilo", description = "Convertrilo's API: base URL `<kiln>/convertrilo`"),
        (name = "klipfast", description = "Klipfast's API: base URL `<kiln>/klipfast`"),
    )
)]
pub struct ApiDoc;
