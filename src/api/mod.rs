//! The HTTP surface: GraphQL (with GraphiQL), the REST twin, health,
//! readiness and metrics.

mod auth;
mod campaigns;
mod error;
pub mod graphql;
mod ingest;
mod links;
pub mod live;
mod receipts;
mod request_rate;
mod rest;

use std::sync::Arc;
use std::time::Duration;

use async_graphql::http::GraphiQLSource;
use async_graphql_axum::{GraphQLProtocol, GraphQLRequest, GraphQLResponse, GraphQLWebSocket};
use axum::extract::WebSocketUpgrade;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

pub use self::auth::KeyCache;
pub use self::error::ApiError;
use self::graphql::{ApiContext, Caller, HeraldSchema};
use crate::commands::tenants::Principal;
use crate::database;
use crate::eventstore::EventStore;

#[derive(Clone)]
pub struct ApiState {
    pub api: ApiContext,
    pub schema: HeraldSchema,
    pub metrics: Option<PrometheusHandle>,
    /// The streaming bulk route fails when its body stalls this long.
    pub request_timeout: Duration,
    /// The receipt routes' configuration and certificate cache.
    receipts: Arc<receipts::Receivers>,
    /// Every API key's request bucket.
    requests: Arc<request_rate::RequestLimiter>,
}

#[derive(Debug, Clone)]
pub struct ApiOptions {
    pub idempotency_window: Duration,
    pub request_timeout: Duration,
    pub max_request_bytes: usize,
    pub limits: crate::commands::limits::LimitsConfig,
    /// Prices for the monthly budget, from `routing`.
    pub costs: crate::commands::limits::CostTable,
    /// See `Config::operator_tenants`.
    pub operator_tenants: Vec<String>,
    /// `[receipts]`: SNS and signed provider receipts.
    pub receipts: crate::commands::receipts::ReceiptsConfig,
    /// `[links]` with its public URL resolved (`Config::links`).
    pub links: crate::commands::links::LinksConfig,
    /// `[attachments]`: the tenant caps inline attachments are checked against.
    pub attachments: crate::domain::attachment::AttachmentsConfig,
}

impl ApiState {
    /// The caller behind `token` (`Authorization: Bearer`), once it has a
    /// token left in its request bucket: the one check every HTTP request
    /// with a key goes through, before anything it asks for.
    async fn admit(&self, token: &str) -> Result<Principal, ApiError> {
        let pool = self.api.store.pool();
        let principal = self.api.keys.authenticate(pool, token).await?;
        self.requests
            .admit(&self.api.limits, pool, &principal)
            .await?;
        Ok(principal)
    }

    pub async fn new(
        store: EventStore,
        metrics: Option<PrometheusHandle>,
        options: &ApiOptions,
    ) -> Result<ApiState, crate::eventstore::StoreError> {
        let links = crate::commands::links::Links::new(store.pool(), &options.links).await?;
        let limits = Arc::new(
            crate::commands::limits::Limits::new(options.limits.clone())
                .with_operators(&options.operator_tenants)
                .with_costs(options.costs.clone()),
        );
        let sends = crate::commands::group_commit::GroupCommit::new(
            store.clone(),
            crate::commands::notifications::SendPolicy {
                idempotency_window: options.idempotency_window,
                limits: limits.clone(),
                attachments: Arc::new(options.attachments.clone()),
            },
        );
        let api = ApiContext {
            live: live::LiveHub::start(store.clone()).await?,
            store,
            keys: Arc::new(KeyCache::default()),
            limits,
            operator_tenants: options.operator_tenants.clone().into(),
            links: Arc::new(links),
            sends,
        };
        Ok(ApiState {
            schema: graphql::build(api.clone()),
            api,
            metrics,
            request_timeout: options.request_timeout,
            receipts: Arc::new(receipts::Receivers::new(&options.receipts)),
            requests: Arc::default(),
        })
    }
}

pub fn router(state: ApiState, options: &ApiOptions) -> Router {
    // The bulk route streams bodies of any size for as long as they keep
    // arriving, so it sits outside the router-wide body limit and timeout.
    let streaming = Router::new()
        .route("/api/events/bulk", axum::routing::post(ingest::bulk))
        .route(
            "/api/campaigns/{id}/recipients",
            axum::routing::post(campaigns::recipients),
        )
        .layer(DefaultBodyLimit::disable());
    Router::new()
        .route("/graphql", get(graphiql).post(graphql))
        .route("/graphql/ws", get(graphql_ws))
        .route("/api/notifications", axum::routing::post(rest::send))
        .route("/api/notifications/{id}", get(rest::get))
        .route("/schemas/event.json", get(ingest::event_schema))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .merge(links::routes())
        .merge(receipts::routes())
        .layer(DefaultBodyLimit::max(options.max_request_bytes))
        // The GraphQL extractor reads the raw body, which DefaultBodyLimit does not cover.
        .layer(RequestBodyLimitLayer::new(options.max_request_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            options.request_timeout,
        ))
        .merge(streaming)
        .with_state(state)
}

async fn graphiql() -> impl IntoResponse {
    Html(
        GraphiQLSource::build()
            .endpoint("/graphql")
            .subscription_endpoint("/graphql/ws")
            .finish(),
    )
}

/// Subscriptions over graphql-transport-ws (and the older graphql-ws). The API
/// key goes in the `connection_init` payload, as `{"apiKey": "..."}` or
/// `{"authorization": "Bearer ..."}`; without a valid one the socket closes.
async fn graphql_ws(
    State(state): State<ApiState>,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> axum::response::Response {
    upgrade
        .protocols(async_graphql::http::ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| {
            let (keys, pool) = (state.api.keys.clone(), state.api.store.pool().clone());
            GraphQLWebSocket::new(socket, state.schema.clone(), protocol)
                .on_connection_init(move |payload| async move {
                    let token = connection_key(&payload).ok_or_else(|| {
                        async_graphql::Error::new("connection_init needs {\"apiKey\": \"...\"}")
                    })?;
                    let principal = keys
                        .authenticate(&pool, &token)
                        .await
                        .map_err(|error| async_graphql::Error::new(error.message()))?;
                    let mut data = async_graphql::Data::default();
                    data.insert(Caller(Some(principal)));
                    Ok(data)
                })
                .serve()
        })
}

fn connection_key(payload: &serde_json::Value) -> Option<String> {
    if let Some(key) = payload.get("apiKey").and_then(|k| k.as_str()) {
        return Some(key.to_string());
    }
    let header = ["authorization", "Authorization"]
        .iter()
        .find_map(|name| payload.get(*name).and_then(|v| v.as_str()))?;
    let (scheme, token) = header.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

async fn graphql(
    State(state): State<ApiState>,
    headers: HeaderMap,
    request: GraphQLRequest,
) -> axum::response::Response {
    // An unknown or revoked key is treated as no key: resolvers answer UNAUTHENTICATED.
    let principal = match auth::bearer(&headers) {
        Some(token) => match state.admit(token).await {
            Ok(principal) => Some(principal),
            Err(ApiError::Unauthenticated) => None,
            Err(error) => return refused(error),
        },
        None => None,
    };
    let mut response = state
        .schema
        .execute(request.into_inner().data(Caller(principal)))
        .await;
    // Errors raised by the GraphQL layer itself (syntax, unknown fields, input
    // coercion, depth and complexity limits) are the request's fault.
    for error in &mut response.errors {
        let extensions = error.extensions.get_or_insert_with(Default::default);
        if extensions.get("code").is_none() {
            extensions.set("code", "VALIDATION");
        }
    }
    GraphQLResponse::from(response).into_response()
}

/// A GraphQL request refused before it ran, as a GraphQL error. Past its key's
/// rate the status is 429 with `Retry-After`, like the REST routes, so HTTP
/// clients and proxies back off too; `extensions.retryAfter` says the same.
fn refused(error: ApiError) -> axum::response::Response {
    let mut headers = axum::response::Response::new(());
    error.set_retry_after(&mut headers);
    let status = match error {
        ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::OK,
    };
    let error = async_graphql::Error::from(error);
    let mut server_error = async_graphql::ServerError::new(error.message, None);
    server_error.extensions = error.extensions;
    let body = GraphQLResponse::from(async_graphql::Response::from_errors(vec![server_error]));
    (status, headers.into_parts().0.headers, body).into_response()
}

/// The process is up; says nothing of its dependencies.
async fn health() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// The database answers and carries this binary's schema.
async fn ready(State(state): State<ApiState>) -> impl IntoResponse {
    match database::is_migrated(state.api.store.pool()).await {
        Ok(true) => (StatusCode::OK, Json(json!({ "status": "ready" }))),
        Ok(false) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not ready", "reason": "database migrations are pending" })),
        ),
        Err(error) => {
            tracing::warn!(%error, "readiness check could not reach the database");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "not ready", "reason": "database unreachable" })),
            )
        }
    }
}

async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    let body = state
        .metrics
        .as_ref()
        .map(|handle| handle.render())
        .unwrap_or_default();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        body,
    )
}
