//! The REST admin routes, for `ops` keys (as the GraphQL ops queries):
//! health, provider breakers, the delivery queue, DLQ replay.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};

use super::openapi::{BodyRefusals, Refusals};
use super::wire::*;
use super::{actor, caller, json_body};
use crate::api::ApiState;
use crate::api::error::{ApiError, ErrorBody};
use crate::api::ops::{ProviderHealth, QueueLine};
use crate::commands::notifications;
use crate::database::Health;
use crate::domain::Scope;
use crate::domain::values::NotificationId;
use crate::projections::checkpoints::{self, Activity};
use crate::projections::{self as read_models, dead_letters, delivery_queue};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/admin/healthz", get(healthz))
        .route("/admin/providers", get(providers))
        .route("/admin/queues", get(queues))
        .route("/admin/dlq/replay", post(dlq_replay))
}

/// The database (as the health probe last found it), the read models and
/// the providers' breakers. An unreachable database is 503 `UNAVAILABLE`.
#[utoipa::path(
    get,
    path = "/admin/healthz",
    tag = "admin",
    responses(
        (status = 200, description = "OK", body = Healthz),
        Refusals,
    ),
    security(("api_key" = []))
)]
pub(super) async fn healthz(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<Healthz>, ApiError> {
    let principal = caller(&state, &headers, Scope::Ops).await?;
    if state.health.current() != Health::Ready {
        return Err(ApiError::Unavailable);
    }
    let pool = state.api.store.pool();
    let projections: Vec<ProjectionHealth> = checkpoints::statuses(pool, &read_models::all())
        .await?
        .into_iter()
        .filter(|status| status.activity != Activity::Retired)
        .map(|status| ProjectionHealth {
            state: serde_json::to_value(status.activity)
                .ok()
                .and_then(|state| state.as_str().map(str::to_string))
                .unwrap_or_default(),
            name: status.name,
            version: status.version,
            lag_events: status.lag_events,
            lag_seconds: status.lag_seconds,
        })
        .collect();
    let open_breakers = delivery_queue::provider_health(pool, &principal.tenant_id)
        .await?
        .iter()
        .filter(|provider| provider.state == "open")
        .count();
    let failed = projections.iter().any(|p| p.state == "failed");
    Ok(Json(Healthz {
        status: if failed || open_breakers > 0 {
            "degraded"
        } else {
            "ok"
        }
        .into(),
        database: "ready".into(),
        open_breakers,
        projections,
    }))
}

/// Each provider's circuit breaker and calls in flight, per worker process
/// (the GraphQL `providerHealth` query). Providers are shared by every tenant.
#[utoipa::path(
    get,
    path = "/admin/providers",
    tag = "admin",
    responses(
        (status = 200, description = "OK", body = Vec<ProviderHealth>),
        Refusals,
    ),
    security(("api_key" = []))
)]
pub(super) async fn providers(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<Vec<ProviderHealth>>, ApiError> {
    let principal = caller(&state, &headers, Scope::Ops).await?;
    let rows =
        delivery_queue::provider_health(state.api.store.pool(), &principal.tenant_id).await?;
    Ok(Json(rows.into_iter().map(Into::into).collect()))
}

/// The tenant's delivery queue by priority and channel (the GraphQL
/// `deliveryQueue` query).
#[utoipa::path(
    get,
    path = "/admin/queues",
    tag = "admin",
    responses(
        (status = 200, description = "OK", body = Vec<QueueLine>),
        Refusals,
    ),
    security(("api_key" = []))
)]
pub(super) async fn queues(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<Vec<QueueLine>>, ApiError> {
    let principal = caller(&state, &headers, Scope::Ops).await?;
    let stats = delivery_queue::stats(state.api.store.pool(), principal.tenant_id.as_str()).await?;
    Ok(Json(stats.into_iter().map(Into::into).collect()))
}

/// Requeues dead letters with a fresh retry budget: one by `id` (the
/// GraphQL `replayDeadLetter`), or all the filter selects, at most 10,000
/// (`replayDeadLetters`). An empty body replays every dead letter.
#[utoipa::path(
    post,
    path = "/admin/dlq/replay",
    tag = "admin",
    request_body = DlqReplayRequest,
    responses(
        (status = 200, description = "OK", body = DlqReplayed),
        (status = 400, description = "`VALIDATION` (by field) or `BAD_REQUEST`", body = ErrorBody),
        (status = 404, description = "No such notification", body = ErrorBody),
        (status = 409, description = "The notification is not dead-lettered", body = ErrorBody),
        Refusals, BodyRefusals,
    ),
    security(("api_key" = []))
)]
pub(super) async fn dlq_replay(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<DlqReplayed>, ApiError> {
    let principal = caller(&state, &headers, Scope::Ops).await?;
    let request: DlqReplayRequest = if body.is_empty() {
        DlqReplayRequest::default()
    } else {
        read(json_body(&headers, &body)?)?
    };
    let actor = actor(&principal);
    let replayed = match request.id {
        Some(id) => {
            if request.channel.is_some() || request.since.is_some() || request.until.is_some() {
                return Err(ApiError::field(
                    "id",
                    "give either id or a filter, not both",
                ));
            }
            notifications::requeue(
                &state.api.store,
                &principal.tenant_id,
                &NotificationId::from(id),
                notifications::DEAD_LETTER_REPLAY,
                &actor,
            )
            .await?;
            1
        }
        None => {
            let filter = dead_letters::Filter {
                channel: request.channel.map(|c| c.as_str().to_string()),
                since: request.since,
                until: request.until,
            };
            notifications::replay_dead_letters(
                &state.api.store,
                &principal.tenant_id,
                &filter,
                &actor,
            )
            .await?
        }
    };
    Ok(Json(DlqReplayed { replayed }))
}
