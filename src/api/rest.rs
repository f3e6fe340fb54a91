//! The REST twin, for services that do not speak
//! GraphQL: the same commands and read models as the GraphQL resolvers,
//! the same errors, as JSON. Its OpenAPI 3.1 document, derived from the
//! handlers and their wire types, is served at `/api/openapi.json`.

mod admin;
mod openapi;
pub(super) mod wire;

use axum::Json;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;

use self::openapi::{BodyRefusals, Refusals};
use self::wire::*;
use super::ApiState;
use super::auth::{actor, bearer};
use super::cursor::{self, filter_value, page_size};
use super::error::{ApiError, ErrorBody, ErrorDetail};
use super::graphql::MAX_BATCH;
use super::{JSON, has_media_type};
use crate::commands;
use crate::commands::tenants::Principal;
use crate::domain::values::{JsonObject, Locale};
use crate::domain::values::{NotificationId, RecipientId, Tag, TemplateKey, TemplateVersion};
use crate::domain::{FieldError, MAX_VARIABLES_BYTES, NotificationStatus, Scope, TemplateRef};
use crate::projections::notification_status;

/// The REST routes that need the database; `/api/openapi.json` does not.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/notifications", post(send).get(list))
        .route("/api/notifications/{id}", get(read))
        .route("/api/batch", post(batch))
        .route("/api/preview", post(preview))
        .route("/api/shortlinks", post(short_link))
        .route("/api/workflows/{key}/trigger", post(trigger_workflow))
        .merge(admin::routes())
}

pub use self::openapi::serve as serve_openapi;

pub(super) async fn caller(
    state: &ApiState,
    headers: &HeaderMap,
    scope: Scope,
) -> Result<Principal, ApiError> {
    let token = bearer(headers).ok_or(ApiError::Unauthenticated)?;
    let principal = state.admit(token).await?;
    if principal.allows(scope) {
        Ok(principal)
    } else {
        Err(ApiError::forbidden(scope))
    }
}

/// A JSON body as a value: 415 when it is declared as something else, 400
/// `BAD_REQUEST` when it is not JSON at all (the body limit is the router's).
fn json_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    if !has_media_type(headers, JSON) {
        return Err(ApiError::UnsupportedMediaType(JSON));
    }
    serde_json::from_slice(body)
        .map_err(|error| ApiError::BadRequest(format!("the body is not JSON: {error}")))
}

/// A query string that does not parse is `BAD_REQUEST`, in the envelope.
fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(query)| query)
        .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))
}

/// One send in either shape, through the send command's group commit.
/// Errors of a flat message name its own fields.
#[utoipa::path(
    post,
    path = "/api/notifications",
    tag = "notifications",
    request_body = SendBody,
    params(("Idempotency-Key" = Option<String>, Header,
        description = "Makes a retry safe: the same key within the idempotency window \
                       returns the original notification (200, `duplicate`)")),
    responses(
        (status = 202, description = "Accepted. A flat message is answered \
            `MessageAccepted`, Herald's own shape `Accepted`", body = SendAnswer),
        (status = 200, description = "The idempotency key named an earlier send", body = SendAnswer),
        (status = 400, description = "`VALIDATION` (by field) or `BAD_REQUEST`", body = ErrorBody),
        (status = 409, description = "`IDEMPOTENCY_CONFLICT`", body = ErrorBody),
        Refusals, BodyRefusals,
    ),
    security(("api_key" = []))
)]
async fn send(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let principal = caller(&state, &headers, Scope::Send).await?;
    let body = SendBody::read(json_body(&headers, &body)?)?;
    let seed = matches!(body, SendBody::Message(_));
    let mut input = body.into_send(&principal.tenant_id)?;
    if let Some(key) = headers.get("idempotency-key") {
        let key = key
            .to_str()
            .map_err(|_| ApiError::field("Idempotency-Key", "must be printable ASCII"))?;
        input.idempotency_key = Some(key.to_string());
    }
    let sent = state
        .api
        .sends
        .send(&principal.tenant_id, input, &actor(&principal))
        .await
        .map_err(|error| message_fields(seed, error.into()))?;
    let status = if sent.duplicate {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let answer = if seed {
        SendAnswer::Message(MessageAccepted {
            message_id: sent.notification.notification_id.as_uuid(),
            status: sent.notification.status,
        })
    } else {
        SendAnswer::Notification(Accepted {
            notification: NotificationSummary::of_state(&sent.notification),
            duplicate: sent.duplicate,
        })
    };
    Ok((status, Json(answer)).into_response())
}

/// A flat message's `VALIDATION` errors by its own field names.
fn message_fields(seed: bool, error: ApiError) -> ApiError {
    if seed {
        renamed_fields(error, Message::field_path)
    } else {
        error
    }
}

/// `error`, if `VALIDATION`, with each field's path renamed by `rename`.
fn renamed_fields(error: ApiError, rename: impl Fn(String) -> String) -> ApiError {
    match error {
        ApiError::Validation(fields) => ApiError::Validation(
            fields
                .into_iter()
                .map(|field| FieldError {
                    path: rename(field.path),
                    ..field
                })
                .collect(),
        ),
        other => other,
    }
}

/// `GET /api/notifications/{id}`: status and every event.
#[utoipa::path(
    get,
    path = "/api/notifications/{id}",
    tag = "notifications",
    params(("id" = uuid::Uuid, Path, description = "The notification id (a send's `notification_id` or `message_id`)")),
    responses(
        (status = 200, description = "OK", body = NotificationView),
        (status = 400, description = "`VALIDATION` (by field) or `BAD_REQUEST`", body = ErrorBody),
        (status = 404, description = "`NOT_FOUND`", body = ErrorBody),
        (status = 409, description = "`UNREADABLE_STREAM`", body = ErrorBody),
        Refusals,
    ),
    security(("api_key" = []))
)]
async fn read(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<NotificationView>, ApiError> {
    let principal = caller(&state, &headers, Scope::Read).await?;
    let id = NotificationId::parse(&id).map_err(|e| ApiError::field("id", e.to_string()))?;
    let details = commands::notifications::get(&state.api.store, &principal.tenant_id, &id)
        .await?
        .ok_or(ApiError::NotFound("notification"))?;
    Ok(Json(NotificationView::of(&details)))
}

/// The tenant's notifications, newest first, a page at a time (the
/// GraphQL `notifications` query's read model and cursors).
#[utoipa::path(
    get,
    path = "/api/notifications",
    tag = "notifications",
    params(ListParams),
    responses(
        (status = 200, description = "OK", body = NotificationPage),
        (status = 400, description = "`VALIDATION` (by field) or `BAD_REQUEST`", body = ErrorBody),
        Refusals,
    ),
    security(("api_key" = []))
)]
async fn list(
    State(state): State<ApiState>,
    headers: HeaderMap,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<NotificationPage>, ApiError> {
    let principal = caller(&state, &headers, Scope::Read).await?;
    let params = query(params)?;
    let limit = page_size("limit", params.limit.unwrap_or(20).into())?;
    let after = cursor::decode(params.after.as_deref())?;
    let statuses = params
        .status
        .as_deref()
        .map(|statuses| {
            statuses
                .split(',')
                .map(|name| {
                    NotificationStatus::ALL
                        .into_iter()
                        .find(|status| status.as_str() == name.trim())
                        .map(|status| status.as_str().to_string())
                        .ok_or_else(|| {
                            ApiError::field("status", format!("unknown status {name:?}"))
                        })
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let filter = notification_status::Filter {
        statuses,
        channel: params.channel.map(|c| c.as_str().to_string()),
        recipient_id: filter_value("recipient_id", params.recipient_id, RecipientId::parse)?,
        tag: filter_value("tag", params.tag, Tag::parse)?,
        created_after: params.from,
        created_before: params.to,
    };
    let (rows, has_more) = notification_status::page(
        state.api.store.pool(),
        &principal.tenant_id,
        &filter,
        limit,
        after,
    )
    .await?;
    let next_cursor = rows
        .last()
        .filter(|_| has_more)
        .map(|row| cursor::encode(&row.notification_id));
    Ok(Json(NotificationPage {
        items: rows
            .into_iter()
            .filter_map(NotificationSummary::of_row)
            .collect(),
        has_more,
        next_cursor,
    }))
}

/// Up to 1,000 sends in either shape, each succeeding or failing on its
/// own, stored in one transaction unless the batch as a whole is refused
/// (the GraphQL `sendNotifications` command).
#[utoipa::path(
    post,
    path = "/api/batch",
    tag = "notifications",
    request_body = BatchRequest,
    responses(
        (status = 200, description = "Each item's notification or error, in order", body = BatchAnswer),
        (status = 400, description = "Not a batch, or more than 1,000 items", body = ErrorBody),
        Refusals, BodyRefusals,
    ),
    security(("api_key" = []))
)]
async fn batch(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<BatchAnswer>, ApiError> {
    let principal = caller(&state, &headers, Scope::Send).await?;
    let request: BatchRequest = wire::read(json_body(&headers, &body)?)?;
    if request.messages.is_empty() || request.messages.len() > MAX_BATCH {
        return Err(ApiError::field(
            "messages",
            format!("give 1 to {MAX_BATCH} messages"),
        ));
    }
    // Items that do not read are answered as such; the rest go to the command.
    let mut results: Vec<Option<BatchItem>> = Vec::with_capacity(request.messages.len());
    let mut sends = Vec::new();
    let mut seeds = Vec::new();
    for (index, item) in request.messages.into_iter().enumerate() {
        let read = SendBody::read(item).and_then(|body| {
            let seed = matches!(body, SendBody::Message(_));
            Ok((seed, body.into_send(&principal.tenant_id)?))
        });
        match read {
            Ok((seed, send)) => {
                results.push(None);
                sends.push(send);
                seeds.push((index, seed));
            }
            Err(error) => results.push(Some(refused(index, error))),
        }
    }
    let sent = commands::notifications::send_many(
        &state.api.store,
        &principal.tenant_id,
        sends,
        &state.api.send_policy(),
        &actor(&principal),
    )
    .await;
    for ((index, seed), outcome) in seeds.into_iter().zip(sent) {
        results[index] = Some(match outcome {
            Ok(sent) => BatchItem {
                index,
                message_id: Some(sent.notification.notification_id.as_uuid()),
                status: Some(sent.notification.status),
                duplicate: sent.duplicate,
                error: None,
            },
            Err(error) => refused(index, message_fields(seed, error.into())),
        });
    }
    let results: Vec<BatchItem> = results.into_iter().flatten().collect();
    let refused_count = results.iter().filter(|item| item.error.is_some()).count();
    Ok(Json(BatchAnswer {
        accepted: results.len() - refused_count,
        refused: refused_count,
        results,
    }))
}

/// Item `index` refused; its fields are named from the batch's root
/// (`messages[1].to.phone`).
fn refused(index: usize, error: ApiError) -> BatchItem {
    let error = renamed_fields(error, |path| match path.as_str() {
        "body" => format!("messages[{index}]"),
        path => format!("messages[{index}].{path}"),
    });
    BatchItem {
        index,
        message_id: None,
        status: None,
        duplicate: false,
        error: Some(ErrorDetail::of(&error)),
    }
}

/// Starts a run of the workflow's latest version for each recipient (the
/// GraphQL `triggerWorkflow` mutation).
#[utoipa::path(
    post,
    path = "/api/workflows/{key}/trigger",
    tag = "workflows",
    request_body = TriggerRequest,
    params(("key" = String, Path, description = "The workflow's key")),
    responses(
        (status = 200, description = "OK", body = TriggerAnswer),
        (status = 400, description = "`VALIDATION` (by field) or `BAD_REQUEST`", body = ErrorBody),
        (status = 404, description = "`NOT_FOUND`: no such workflow published", body = ErrorBody),
        Refusals, BodyRefusals,
    ),
    security(("api_key" = []))
)]
async fn trigger_workflow(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(key): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<TriggerAnswer>, ApiError> {
    let principal = caller(&state, &headers, Scope::Send).await?;
    let request: TriggerRequest = wire::read(json_body(&headers, &body)?)?;
    let input = commands::workflows::TriggerWorkflow {
        key: Some(key),
        recipients: request.recipients,
        payload: request.payload,
        idempotency_key: request.idempotency_key,
    };
    let triggered = commands::workflows::trigger(
        &state.api.store,
        &principal.tenant_id,
        input,
        &state.api.workflow_settings(),
        &actor(&principal),
    )
    .await?;
    Ok(Json(TriggerAnswer {
        runs: triggered
            .into_iter()
            .map(|triggered| TriggeredRun {
                run_id: triggered.run.run_id,
                status: triggered.run.status,
                current_step: triggered.run.current_step,
                waiting_until: triggered.run.waiting_until,
                joined_digest: triggered.joined_digest,
            })
            .collect(),
    }))
}

/// Renders a template version with variables, without sending (the
/// GraphQL `previewTemplate` query).
#[utoipa::path(
    post,
    path = "/api/preview",
    tag = "templates",
    request_body = PreviewRequest,
    responses(
        (status = 200, description = "OK", body = Preview),
        (status = 400, description = "`VALIDATION`: no such template or version, a bad or \
            missing variable, a template that does not render", body = ErrorBody),
        Refusals, BodyRefusals,
    ),
    security(("api_key" = []))
)]
async fn preview(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Preview>, ApiError> {
    let principal = caller(&state, &headers, Scope::Read).await?;
    let request: PreviewRequest = wire::read(json_body(&headers, &body)?)?;
    let (key, version) = template_id(&request.template_id)?;
    let template = TemplateRef {
        key: TemplateKey::parse(key.trim())
            .map_err(|e| ApiError::field("template_id", e.to_string()))?,
        version: version
            .map(TemplateVersion::parse)
            .transpose()
            .map_err(|e| ApiError::field("template_id", e.to_string()))?,
        locale: request
            .locale
            .map(|l| Locale::parse(l.trim()))
            .transpose()
            .map_err(|e| ApiError::field("locale", e.to_string()))?,
        variables: match request.variables {
            None => JsonObject::default(),
            Some(value) => JsonObject::parse(value, MAX_VARIABLES_BYTES)
                .map_err(|e| ApiError::field("variables", e.to_string()))?,
        },
    };
    let (version, rendered) = commands::templates::preview_for_tenant(
        state.api.store.pool(),
        &principal.tenant_id,
        &template,
    )
    .await
    // The command names the fields of a send's template; the request's
    // are a flat message's.
    .map_err(|error| message_fields(true, error.into()))?;
    Ok(Json(Preview {
        template_id: format!("{}:v{}", template.key, version.get()),
        rendered,
    }))
}

/// A short tracked link (the GraphQL `createShortLink` mutation).
#[utoipa::path(
    post,
    path = "/api/shortlinks",
    tag = "links",
    request_body = ShortLinkRequest,
    responses(
        (status = 201, description = "Created", body = ShortLink),
        (status = 400, description = "`VALIDATION` (by field) or `BAD_REQUEST`", body = ErrorBody),
        Refusals, BodyRefusals,
    ),
    security(("api_key" = []))
)]
async fn short_link(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<ShortLink>), ApiError> {
    let principal = caller(&state, &headers, Scope::Send).await?;
    let request: ShortLinkRequest = wire::read(json_body(&headers, &body)?)?;
    let row = commands::links::create_short_link(
        &state.api.store,
        &state.api.links,
        &principal.tenant_id,
        &request.url,
        request.notification_id.map(NotificationId::from),
        &actor(&principal),
    )
    .await
    .map_err(|error| {
        renamed_fields(error.into(), |path| {
            path.replace("notificationId", "notification_id")
        })
    })?;
    Ok((
        StatusCode::CREATED,
        Json(ShortLink {
            short_url: state.api.links.short_url(&row.code).to_string(),
            code: row.code,
            url: row.url,
            notification_id: row.notification_id,
            expires_at: row.expires_at,
        }),
    ))
}
