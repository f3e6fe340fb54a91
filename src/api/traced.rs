//! One span per HTTP request, in the caller's trace when it sends a W3C
//! `traceparent` header, else in a new one; what a handler records (a
//! notification's events, its command's span) goes in the same trace.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::telemetry::trace::{TracePoint, in_request};

pub(super) async fn trace_requests(request: Request, next: Next) -> Response {
    // The route, not the path: span names stay few.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |path| path.as_str())
        .to_owned();
    // A load balancer's probes would bury the traces that matter.
    if matches!(route.as_str(), "/health" | "/ready") {
        return next.run(request).await;
    }
    let method = request.method().clone();
    let span = tracing::info_span!(
        "http_request",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
    );
    let caller = request
        .headers()
        .get("traceparent")
        .and_then(|value| value.to_str().ok())
        .and_then(TracePoint::from_traceparent);
    if let Some(caller) = caller {
        caller.adopt(&span);
    }
    let trace = TracePoint::of_span(&span)
        .or(caller)
        .unwrap_or_else(TracePoint::new_trace);
    let response = in_request(trace, next.run(request))
        .instrument(span.clone())
        .await;
    span.record("http.response.status_code", response.status().as_u16());
    response
}
