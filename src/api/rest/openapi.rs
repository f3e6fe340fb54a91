//! The REST twin's OpenAPI 3.1 document, derived by `utoipa` from the
//! handlers' `#[utoipa::path]` attributes and their wire types.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{IntoResponses, Modify, OpenApi, ToSchema};

use crate::api::error::ErrorBody;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Herald REST API",
        description = "The REST twin of Herald's GraphQL API, for services that do not \
            speak GraphQL: the same commands, read models and errors. Every route but this \
            document takes an API key as `Authorization: Bearer hk_...`; `/admin/*` needs the \
            `ops` scope. Errors are `{\"error\": {\"code\", \"message\", \"fields\", \
            \"error_id\"}}` with the HTTP status of their code. Bodies are JSON \
            (`Content-Type: application/json`), at most `max_request_bytes` (16 MiB by \
            default); a batch holds at most 1,000 sends."
    ),
    paths(
        super::send,
        super::list,
        super::read,
        super::batch,
        super::preview,
        super::short_link,
        super::trigger_workflow,
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
        (name = "workflows", description = "Trigger workflow runs"),
        (name = "admin", description = "Operations (scope `ops`)"),
    )
)]
struct RestApi;

/// What any route may answer besides its own answers: refusals of the key,
/// its scope, the request limiter and an unreachable database; listed once
/// here rather than on every path.
pub struct Refusals;

impl IntoResponses for Refusals {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        errors(&[
            ("401", "`UNAUTHENTICATED`: no valid API key"),
            ("403", "`FORBIDDEN`: the key lacks the scope"),
            (
                "429",
                "`RATE_LIMITED` or `QUOTA_EXCEEDED`, with `Retry-After`",
            ),
            (
                "503",
                "`UNAVAILABLE`: the database is unreachable or not migrated, with `Retry-After`",
            ),
        ])
    }
}

/// What a route that reads a JSON body may answer besides [`Refusals`].
pub struct BodyRefusals;

impl IntoResponses for BodyRefusals {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        errors(&[
            ("413", "`PAYLOAD_TOO_LARGE`"),
            ("415", "`UNSUPPORTED_MEDIA_TYPE`: send `application/json`"),
        ])
    }
}

/// Error answers by status, each with the error envelope as its body.
fn errors(answers: &[(&str, &str)]) -> BTreeMap<String, RefOr<Response>> {
    answers
        .iter()
        .map(|(status, description)| {
            let body = ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(ErrorBody::name())))
                .build();
            let answer = ResponseBuilder::new()
                .description(*description)
                .content("application/json", body)
                .build();
            (status.to_string(), RefOr::T(answer))
        })
        .collect()
}

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
