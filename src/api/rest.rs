//! The REST twin of the send and read API (seed 002's surface), for services
//! that do not speak GraphQL. Same commands, same errors, as JSON.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::auth::bearer;
use super::error::ApiError;
use super::{ApiState, JSON, has_media_type};
use crate::commands::notifications::NotificationDetails;
use crate::commands::tenants::Principal;
use crate::commands::{self, Actor};
use crate::domain::values::NotificationId;
use crate::domain::{NotificationState, Scope, SendNotification};

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

fn summary(state: &NotificationState) -> Value {
    json!({
        "notification_id": state.notification_id.as_uuid(),
        "status": state.status.as_str(),
        "priority": state.request.priority.as_str(),
        "channels": state.request.channels.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
        "created_at": state.requested_at,
    })
}

fn view(details: &NotificationDetails) -> Value {
    let mut view = summary(&details.state);
    view["attempts"] = json!(details.state.attempts);
    view["events"] = details
        .timeline
        .iter()
        .map(|e| {
            let mut event = json!({
                "type": e.event_type,
                "position": e.global_position,
                "version": e.stream_version,
                "recorded_at": e.recorded_at,
                "data": e.payload,
            });
            // Only on an event that cannot be read; the status and attempts
            // above are folded from the others.
            if let Some(error) = details.read_error(e.global_position) {
                event["read_error"] = json!(error);
            }
            event
        })
        .collect();
    view
}

/// `POST /api/notifications`: the body is a `SendNotificationInput` as JSON;
/// an `Idempotency-Key` header sets the idempotency key.
pub async fn send(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let principal = caller(&state, &headers, Scope::Send).await?;
    if !has_media_type(&headers, JSON) {
        return Err(ApiError::UnsupportedMediaType(JSON));
    }
    let mut input: SendNotification = serde_json::from_slice(&body)
        .map_err(|e| ApiError::field("body", format!("not a valid send request: {e}")))?;
    if let Some(key) = headers.get("idempotency-key") {
        let key = key
            .to_str()
            .map_err(|_| ApiError::field("Idempotency-Key", "must be printable ASCII"))?;
        input.idempotency_key = Some(key.to_string());
    }
    let actor = Actor::new(format!("api-key:{}", principal.key_id));
    let sent = state
        .api
        .sends
        .send(&principal.tenant_id, input, &actor)
        .await?;
    let status = if sent.duplicate {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let mut body = summary(&sent.notification);
    body["duplicate"] = json!(sent.duplicate);
    Ok((status, Json(body)))
}

/// `GET /api/notifications/{id}`: status and every event.
pub async fn get(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let principal = caller(&state, &headers, Scope::Read).await?;
    let id = NotificationId::parse(&id).map_err(|e| ApiError::field("id", e.to_string()))?;
    let details = commands::notifications::get(&state.api.store, &principal.tenant_id, &id)
        .await?
        .ok_or(ApiError::NotFound("notification"))?;
    Ok(Json(view(&details)))
}
