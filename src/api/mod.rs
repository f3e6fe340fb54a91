//! The HTTP surface: GraphQL (with GraphiQL, served from the binary), the REST
//! twin, health and readiness; and, on a listener of its own, metrics.

mod auth;
mod campaigns;
mod error;
mod graphiql;
pub mod graphql;
mod ingest;
mod links;
pub mod live;
mod receipts;
mod request_rate;
mod rest;
mod sockets;
pub mod tenant_slots;

use std::sync::Arc;
use std::time::Duration;

use async_graphql_axum::{GraphQLProtocol, GraphQLRequest, GraphQLResponse};
use axum::extract::WebSocketUpgrade;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

pub use self::auth::KeyCache;
pub use self::error::ApiError;
use self::graphql::{ApiContext, Caller, HeraldSchema};
use crate::commands::links::FEED_TOKEN_PREFIX;
use crate::commands::tenants::Principal;
use crate::database;
use crate::eventstore::EventStore;

#[derive(Clone)]
pub struct ApiState {
    pub api: ApiContext,
    pub schema: HeraldSchema,
    /// The streaming bulk route fails when its body stalls this long.
    pub request_timeout: Duration,
    /// The receipt routes' configuration and certificate cache.
    receipts: Arc<receipts::Receivers>,
    /// GraphQL WebSockets each tenant holds open in this process.
    sockets: tenant_slots::TenantSlots,
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
    /// Browser origins allowed to call `/graphql` (CORS); none by default.
    pub cors_origins: Vec<CorsOrigin>,
    /// `[egress]`: what tenants' URLs may reach.
    pub egress: crate::egress::EgressConfig,
    /// `[campaigns] max_import_bytes`: the largest CSV one import reads.
    pub max_import_bytes: u64,
}

/// A browser origin (`https://app.example.com`, no path), checked when the
/// configuration is read.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct CorsOrigin(String);

impl CorsOrigin {
    pub fn parse(raw: &str) -> Result<CorsOrigin, String> {
        let origin = url::Url::parse(raw)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https"))
            .map(|url| url.origin().ascii_serialization());
        match origin {
            Some(origin) if origin == raw => Ok(CorsOrigin(origin)),
            _ => Err(format!(
                "cors_origins: {raw:?} is not an origin like \"https://app.example.com\" \
                 (scheme, host and optional port; no path or trailing slash)"
            )),
        }
    }
}

impl<'de> serde::Deserialize<'de> for CorsOrigin {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        CorsOrigin::parse(&raw).map_err(serde::de::Error::custom)
    }
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
        options: &ApiOptions,
    ) -> Result<ApiState, crate::eventstore::StoreError> {
        let links = crate::commands::links::Links::new(store.pool(), &options.links).await?;
        let limits = Arc::new(
            crate::commands::limits::Limits::new(options.limits.clone())
                .with_operators(&options.operator_tenants)
                .with_costs(options.costs.clone()),
        );
        let egress = crate::egress::Egress::new(&options.egress);
        let sends = crate::commands::group_commit::GroupCommit::new(
            store.clone(),
            crate::commands::notifications::SendPolicy {
                idempotency_window: options.idempotency_window,
                limits: limits.clone(),
                attachments: Arc::new(options.attachments.clone()),
                egress: egress.clone(),
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
            subscriptions: tenant_slots::TenantSlots::new(
                options.limits.max_subscriptions_per_tenant,
            ),
            egress,
            max_import_bytes: options.max_import_bytes,
        };
        Ok(ApiState {
            schema: graphql::build(api.clone()),
            api,
            request_timeout: options.request_timeout,
            receipts: Arc::new(receipts::Receivers::new(&options.receipts)),
            sockets: tenant_slots::TenantSlots::new(options.limits.max_sockets_per_tenant),
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
    // Browsers holding a feed token call /graphql from the tenant's own
    // origins; no other route answers a cross-origin browser.
    let graphql_routes = Router::new().route("/graphql", get(graphiql::page).post(graphql));
    let graphql_routes = match cors(&options.cors_origins) {
        Some(cors) => graphql_routes.layer(cors),
        None => graphql_routes,
    };
    Router::new()
        .merge(graphql_routes)
        .route("/graphql/ws", get(graphql_ws))
        .route(graphiql::ASSETS_ROUTE, get(graphiql::asset))
        .route("/api/notifications", axum::routing::post(rest::send))
        .route("/api/notifications/{id}", get(rest::get))
        .route("/schemas/event.json", get(ingest::event_schema))
        .route("/health", get(health))
        .route("/ready", get(ready))
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

/// Preflights and answers for the configured origins only; `None` when
/// there are none, so no CORS header is ever sent.
fn cors(origins: &[CorsOrigin]) -> Option<CorsLayer> {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|origin| HeaderValue::from_str(&origin.0).ok())
        .collect();
    (!origins.is_empty()).then(|| {
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .max_age(Duration::from_secs(60 * 60))
    })
}

/// Prometheus metrics, for a listener of their own (`metrics_listen`):
/// they describe every tenant's traffic, so they stay off the public API.
pub fn metrics_router(handle: PrometheusHandle) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let body = handle.render();
            async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body) }
        }),
    )
}

/// Subscriptions over graphql-transport-ws (and the older graphql-ws); see
/// [`sockets`] for who may hold one.
async fn graphql_ws(
    State(state): State<ApiState>,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> axum::response::Response {
    upgrade
        .protocols(async_graphql::http::ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| sockets::serve(state, socket, protocol))
}

async fn graphql(
    State(state): State<ApiState>,
    headers: HeaderMap,
    request: GraphQLRequest,
) -> axum::response::Response {
    // An unknown or revoked key, or an expired or altered feed token, is
    // treated as no credential: resolvers answer UNAUTHENTICATED.
    let (caller, grant) = match auth::bearer(&headers) {
        Some(token) if token.starts_with(FEED_TOKEN_PREFIX) => {
            match state.api.links.verify_feed_token(token) {
                Ok(grant) => (Caller(None), Some(grant)),
                Err(_) => (Caller(None), None),
            }
        }
        Some(token) => match state.admit(token).await {
            Ok(principal) => (Caller(Some(principal)), None),
            Err(ApiError::Unauthenticated) => (Caller(None), None),
            Err(error) => return refused(error),
        },
        None => (Caller(None), None),
    };
    let mut request = request.into_inner().data(caller);
    if let Some(grant) = grant {
        request = request.data(grant);
    }
    let mut response = state.schema.execute(request).await;
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
