//! `POST /api/campaigns/{id}/recipients`: a CSV body (`text/csv`) imported
//! into a campaign as it arrives, never whole, like `/api/events/bulk`. The
//! answer counts the good and refused rows and lists the first refused ones
//! by line.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use tokio_util::io::StreamReader;
use uuid::Uuid;

use super::auth::actor;
use super::error::ApiError;
use super::ingest::idle_timeout;
use super::rest::caller;
use super::{ApiState, has_media_type};
use crate::commands::campaigns::{self, ImportProgress, ImportSummary};
use crate::domain::Scope;

const CSV: &str = "text/csv";

/// This route has no router body limit and no overall timeout (it sits
/// beside the bulk route): the import reads at most
/// `campaigns.max_import_bytes` and 1 MiB per record, and not a byte before
/// the campaign is known to be the caller's; a body that stalls for the
/// request timeout fails.
pub async fn recipients(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ImportSummary>, ApiError> {
    let principal = caller(&state, &headers, Scope::Send).await?;
    let Ok(campaign_id) = Uuid::parse_str(&id) else {
        return Err(ApiError::field("id", "is not a campaign id"));
    };
    if !has_media_type(&headers, CSV) {
        return Err(ApiError::UnsupportedMediaType(CSV));
    }
    let chunks = Box::pin(idle_timeout(body, state.request_timeout));
    let summary = campaigns::import_csv(
        &state.api.store,
        &principal.tenant_id,
        campaign_id,
        StreamReader::new(chunks),
        "http",
        state.api.max_import_bytes,
        &actor(&principal),
        &ImportProgress::default(),
    )
    .await?;
    Ok(Json(summary))
}
