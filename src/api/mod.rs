//! The HTTP surface: GraphQL (with GraphiQL, served from the binary), the REST
//! twin, health and readiness; and, on a listener of its own, metrics.

mod auth;
mod campaigns;
mod cursor;
mod error;
mod graphiql;
pub mod graphql;
mod ingest;
mod links;
pub mod live;
mod ops;
mod receipts;
mod request_rate;
mod rest;
mod sockets;
pub mod tenant_slots;
mod traced;

use std::sync::Arc;
use std::time::Duration;

use async_graphql_axum::rejection::GraphQLRejection;
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
pub use self::receipts::TwilioReceiver;
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
    /// Whether PostgreSQL answers, from a probe apart from the pool.
    health: database::DatabaseHealth,
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
    /// Each `twilio` provider's callback check, by instance name.
    pub twilio: std::collections::BTreeMap<String, TwilioReceiver>,
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
    /// `[workflows]`: the time scale of the runs a trigger starts.
    pub workflows: crate::commands::workflows::WorkflowsConfig,
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
            workflows: options.workflows.clone(),
        };
        Ok(ApiState {
            health: database::DatabaseHealth::start(
                api.store.pool().connect_options().as_ref().clone(),
            )
            .await,
            schema: graphql::build(api.clone()),
            api,
            request_timeout: options.request_timeout,
            receipts: Arc::new(receipts::Receivers::new(&options.receipts, &options.twilio)),
            sockets: tenant_slots::TenantSlots::new(options.limits.max_sockets_per_tenant),
            requests: Arc::default(),
        })
    }
}

pub fn router(state: ApiState, options: &ApiOptions) -> Router {
    let database_reachable =
        axum::middleware::from_fn_with_state(state.clone(), while_database_reachable);
    // The bulk route streams bodies of any size for as long as they keep
    // arriving, so it sits outside the router-wide body limit and timeout.
    let streaming = Router::new()
        .route("/api/events/bulk", axum::routing::post(ingest::bulk))
        .route(
            "/api/campaigns/{id}/recipients",
            axum::routing::post(campaigns::recipients),
        )
        .route_layer(database_reachable.clone())
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
        .merge(rest::routes())
        .merge(links::routes())
        .merge(receipts::routes())
        .route_layer(database_reachable)
        .route("/schemas/event.json", get(ingest::event_schema))
        .route("/api/openapi.json", get(rest::serve_openapi))
        .route(graphiql::ASSETS_ROUTE, get(graphiql::asset))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .layer(DefaultBodyLimit::max(options.max_request_bytes))
        // The GraphQL extractor reads the raw body, which DefaultBodyLimit does not cover.
        .layer(RequestBodyLimitLayer::new(options.max_request_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            options.request_timeout,
        ))
        .merge(streaming)
        .layer(axum::middleware::from_fn(json_body_limit))
        .layer(axum::middleware::from_fn(traced::trace_requests))
        .with_state(state)
}

const JSON: &str = "application/json";

/// Whether the body is declared as `expected` (parameters such as `charset` aside).
fn has_media_type(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case(expected))
}

/// A body over the limit is refused by the body-limit layers before any
/// handler runs, in plain text; this gives it the route's JSON shape.
async fn json_body_limit(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let graphql = request.uri().path() == "/graphql";
    let response = next.run(request).await;
    // application/json, or GraphQL's application/graphql-response+json.
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.contains("json"));
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE && !is_json {
        answer(ApiError::PayloadTooLarge, graphql)
    } else {
        response
    }
}

/// `error` as a GraphQL error on `/graphql`, else as the REST envelope.
fn answer(error: ApiError, graphql: bool) -> axum::response::Response {
    if graphql {
        refused(error)
    } else {
        error.into_response()
    }
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
    headers: HeaderMap,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> axum::response::Response {
    let transport_ws = sockets::speaks_transport_ws(&headers);
    upgrade
        .protocols(async_graphql::http::ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| sockets::serve(state, socket, protocol, transport_ws))
}

async fn graphql(
    State(state): State<ApiState>,
    headers: HeaderMap,
    request: Result<GraphQLRequest, GraphQLRejection>,
) -> axum::response::Response {
    // JSON, or multipart for uploads: never a type a browser may send
    // cross-origin without a preflight (text/plain, a form).
    if !has_media_type(&headers, JSON) && !has_media_type(&headers, "multipart/form-data") {
        return refused(ApiError::UnsupportedMediaType(JSON));
    }
    let request = match request {
        Ok(request) => request,
        Err(GraphQLRejection(rejection)) => return refused(unreadable_graphql(rejection)),
    };
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
    let mut unavailable = false;
    for error in &mut response.errors {
        let extensions = error.extensions.get_or_insert_with(Default::default);
        match extensions.get("code") {
            None => extensions.set("code", "VALIDATION"),
            Some(code) => {
                unavailable |= *code == async_graphql::Value::from(ApiError::Unavailable.code())
            }
        }
    }
    let mut answer = GraphQLResponse::from(response).into_response();
    // A resolver that lost the database answers like the REST twin would,
    // so HTTP clients and proxies retry after a pause.
    if unavailable {
        *answer.status_mut() = ApiError::Unavailable.status();
        ApiError::Unavailable.set_retry_after(&mut answer);
    }
    answer
}

/// Why a `/graphql` body could not be read as a GraphQL request.
fn unreadable_graphql(rejection: async_graphql::ParseRequestError) -> ApiError {
    use async_graphql::ParseRequestError;
    let over_limit = match &rejection {
        ParseRequestError::PayloadTooLarge => true,
        // The body-limit layer cut a body that came without a length;
        // async-graphql-axum keeps only the message of that error
        // (http-body's `LengthLimitError`).
        ParseRequestError::Io(error) => error.to_string() == "length limit exceeded",
        _ => false,
    };
    if over_limit {
        ApiError::PayloadTooLarge
    } else {
        ApiError::BadRequest(format!("the body is not a GraphQL request: {rejection}"))
    }
}

/// A GraphQL request refused before it ran, as a GraphQL error. A refusal
/// HTTP itself has a status for keeps it, like the REST routes: past its
/// key's rate 429, and 503 while the database is unreachable, both with
/// `Retry-After`, so HTTP clients and proxies back off too
/// (`extensions.retryAfter` says the same); 400, 413 and 415 for a body that
/// cannot be read. Other refusals (a key without a scope, say) are 200, like
/// errors from resolvers.
fn refused(error: ApiError) -> axum::response::Response {
    let mut headers = axum::response::Response::new(());
    error.set_retry_after(&mut headers);
    let status = match error {
        ApiError::RateLimited { .. }
        | ApiError::Unavailable
        | ApiError::BadRequest(_)
        | ApiError::PayloadTooLarge
        | ApiError::UnsupportedMediaType(_) => error.status(),
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

/// The database answers and carries this binary's schema, as the health
/// probe last found (at most half a second ago): answered at once, so a load
/// balancer's check never waits on a busy pool or a dead database.
async fn ready(State(state): State<ApiState>) -> impl IntoResponse {
    let not_ready = |reason: &str| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not ready", "reason": reason })),
        )
    };
    match state.health.current() {
        database::Health::Ready => (StatusCode::OK, Json(json!({ "status": "ready" }))),
        database::Health::MigrationsPending => not_ready("database migrations are pending"),
        database::Health::Unreachable(_) => not_ready("database unreachable"),
    }
}

/// While the health probe finds PostgreSQL unreachable, a request that needs
/// it is answered 503 `UNAVAILABLE` at once, and one already waiting (on the
/// pool, say) is cut short, instead of each waiting out the pool's acquire
/// timeout. Handlers are cancellation-safe already (the request timeout
/// cancels them too), and a send cut short is retried with its key.
async fn while_database_reachable(
    State(state): State<ApiState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let graphql = request.uri().path() == "/graphql";
    let unavailable = || answer(ApiError::Unavailable, graphql);
    if state.health.is_unreachable() {
        return unavailable();
    }
    tokio::select! {
        response = next.run(request) => response,
        () = state.health.unreachable() => unavailable(),
    }
}
