//! The REST twin's OpenAPI 3.1 document, derived by `utoipa` from the
//! handlers' `#[utoipa::path]` attributes and their wire types.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api::error::ErrorBody;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Herald REST API",
        description = "The REST twin of Herald's GraphQL API (seed 002's surface): the same \
            commands, read models and errors. Every route but this document takes an API key \
            as `Authorization: Bearer hk_...`; `/admin/*` needs the `ops` scope. Errors are \
            `{\"error\": {\"code\", \"message\", \"fields\", \"error_id\"}}` with the HTTP \
            status of their code. Bodies are JSON (`Content-Type: application/json`), at \
            most `max_request_bytes` (1 MiB by default); a batch holds at most 1,000 sends."
    ),
    paths(
        super::send,
        super::list,
        super::read,
        super::batch,
        super::preview,
        super::short_link,
        super::admin::healthz,
        super::admin::providers,
        super::admin::queues,
        super::admin::dlq_replay,
    ),
    components(schemas(ErrorBody)),
    modifiers(&ApiKey),
    tags(
        (name = "notifications", description = "Send, list and read notifications"),
        (name = "templates", description = "Preview a template version"),
        (name = "links", description = "Tracked short links"),
        (name = "admin", description = "Operations (scope `ops`)"),
    )
)]
struct RestApi;

/// The `api_key` security scheme the paths name.
struct ApiKey;

impl Modify for ApiKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "api_key",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some(
                            "An API key from `herald tenants create` or `issueApiKey`",
                        ))
                        .build(),
                ),
            );
    }
}

/// The document as JSON, built once.
pub fn document() -> &'static str {
    static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
        RestApi::openapi()
            .to_pretty_json()
            .expect("the OpenAPI document serialises")
    });
    &DOCUMENT
}

/// `GET /api/openapi.json`, no key needed: the document describes only
/// what the code already is.
pub async fn serve() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document())
}
