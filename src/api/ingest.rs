//! Raw source events over REST: `POST /api/events/bulk` (NDJSON, streamed)
//! and the published JSON Schema of one event, `GET /schemas/event.json`.

use std::sync::LazyLock;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde_json::json;
use tokio_util::io::StreamReader;

use super::auth::actor;
use super::error::ApiError;
use super::rest::caller;
use super::{ApiState, has_media_type};
use crate::commands::ingest::{self, BulkFailure, IngestEventInput, Progress};
use crate::domain::Scope;

const NDJSON: &str = "application/x-ndjson";

/// Reads the body of the request as it arrives, never whole: each line is
/// parsed and stored in batches, so the body may be any size. This route has
/// no body limit and no overall timeout; it fails when the client sends
/// nothing for the request timeout instead.
pub async fn bulk(State(state): State<ApiState>, headers: HeaderMap, body: Body) -> Response {
    let principal = match caller(&state, &headers, Scope::Send).await {
        Ok(principal) => principal,
        Err(error) => return error.into_response(),
    };
    if !has_media_type(&headers, NDJSON) {
        return ApiError::UnsupportedMediaType(NDJSON).into_response();
    }
    let reader = StreamReader::new(Box::pin(idle_timeout(body, state.request_timeout)));
    let progress = Progress::default();
    match ingest::ingest_ndjson(
        &state.api.store,
        &principal.tenant_id,
        reader,
        &actor(&principal),
        &progress,
    )
    .await
    {
        Ok(summary) => (StatusCode::OK, Json(summary)).into_response(),
        Err(failed) => {
            let error = match failed.cause {
                BulkFailure::Read(error) if error.kind() == std::io::ErrorKind::TimedOut => {
                    ApiError::Timeout
                }
                BulkFailure::Read(error) => {
                    ApiError::field("body", format!("the body could not be read: {error}"))
                }
                BulkFailure::Command(error) => error.into(),
            };
            // What is already stored stays stored; say how far it got.
            let mut body = error.body();
            body["committed"] = json!(failed.committed);
            (error.status(), Json(body)).into_response()
        }
    }
}

/// The body's chunks, for a reader: ends with a `TimedOut` error when no
/// chunk arrives for `idle`.
pub(super) fn idle_timeout(
    body: Body,
    idle: Duration,
) -> impl Stream<Item = std::io::Result<axum::body::Bytes>> + Send + 'static {
    async_stream::stream! {
        let mut chunks = std::pin::pin!(body.into_data_stream());
        loop {
            match tokio::time::timeout(idle, chunks.next()).await {
                Ok(Some(Ok(chunk))) => yield Ok(chunk),
                Ok(Some(Err(error))) => {
                    yield Err(std::io::Error::other(error));
                    break;
                }
                Ok(None) => break,
                Err(_) => {
                    yield Err(std::io::Error::from(std::io::ErrorKind::TimedOut));
                    break;
                }
            }
        }
    }
}

static EVENT_SCHEMA: LazyLock<serde_json::Value> = LazyLock::new(|| {
    let mut schema = serde_json::to_value(schemars::schema_for!(IngestEventInput))
        .unwrap_or_else(|error| json!({ "description": format!("unavailable: {error}") }));
    schema["$id"] = json!("/schemas/event.json");
    schema
});

/// `GET /schemas/event.json`: the canonical ingest event, generated from the
/// Rust input type, so it cannot drift from what the API accepts.
pub async fn event_schema() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/schema+json")],
        Json(EVENT_SCHEMA.clone()),
    )
}
