//! The `Notification` object: a summary row from the status view, or the
//! full state folded from its stream; the timeline loads on demand.

use async_graphql::{Context, ID, Json, Object};
use chrono::{DateTime, Utc};

use super::types::{Channel, NotificationStatus, Position, Priority, TimelineEvent};
use super::{ApiError, api, require};
use crate::api::rest::wire::NotificationSummary;
use crate::commands::notifications::{self, NotificationDetails};
use crate::domain::values::{NotificationId, TenantId};
use crate::domain::{NotificationState, Scope};
use crate::projections::notification_status;

pub struct NotificationNode {
    /// The fields lists show, as the REST twin shows them.
    summary: NotificationSummary,
    tenant_id: TenantId,
    /// What is already known; the rest is loaded from the stream when asked for.
    state: Option<NotificationState>,
    details: Option<NotificationDetails>,
}

impl NotificationNode {
    pub fn from_details(details: NotificationDetails) -> NotificationNode {
        let mut node = NotificationNode::from_state(details.state.clone());
        node.details = Some(details);
        node
    }

    pub fn from_state(state: NotificationState) -> NotificationNode {
        NotificationNode {
            summary: NotificationSummary::of_state(&state),
            tenant_id: state.tenant_id.clone(),
            details: None,
            state: Some(state),
        }
    }

    /// From the status view; rows are written by Herald, so they parse.
    pub fn from_row(
        tenant_id: &TenantId,
        row: notification_status::Row,
    ) -> Option<NotificationNode> {
        Some(NotificationNode {
            summary: NotificationSummary::of_row(row)?,
            tenant_id: tenant_id.clone(),
            state: None,
            details: None,
        })
    }

    async fn state(&self, ctx: &Context<'_>) -> Result<NotificationState, ApiError> {
        match &self.state {
            Some(state) => Ok(state.clone()),
            None => Ok(self.load(ctx).await?.state),
        }
    }

    async fn load(&self, ctx: &Context<'_>) -> Result<NotificationDetails, ApiError> {
        let id = NotificationId::from(self.summary.notification_id);
        notifications::get(&api(ctx)?.store, &self.tenant_id, &id)
            .await?
            .ok_or(ApiError::NotFound("notification"))
    }
}

#[Object(name = "Notification")]
impl NotificationNode {
    async fn id(&self) -> ID {
        ID(self.summary.notification_id.to_string())
    }
    async fn status(&self) -> NotificationStatus {
        self.summary.status.into()
    }
    async fn priority(&self) -> Priority {
        self.summary.priority.into()
    }
    /// In order of preference.
    async fn channels(&self) -> Vec<Channel> {
        self.summary.channels.iter().map(|c| (*c).into()).collect()
    }
    async fn recipient_id(&self) -> Option<&str> {
        self.summary.recipient_id.as_deref()
    }
    async fn category(&self) -> Option<&str> {
        self.summary.category.as_deref()
    }
    async fn tags(&self) -> &[String] {
        &self.summary.tags
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.summary.created_at
    }
    /// Delivery attempts started so far.
    async fn attempts(&self, ctx: &Context<'_>) -> Result<u32, ApiError> {
        Ok(self.state(ctx).await?.attempts)
    }
    async fn schedule_at(&self, ctx: &Context<'_>) -> Result<Option<DateTime<Utc>>, ApiError> {
        let state = self.state(ctx).await?;
        Ok(state.schedule_at.or(state.request.schedule_at))
    }
    async fn expires_at(&self, ctx: &Context<'_>) -> Result<Option<DateTime<Utc>>, ApiError> {
        Ok(self.state(ctx).await?.expires_at())
    }
    /// The request as accepted (recipient addresses included; needs the read scope).
    async fn request(&self, ctx: &Context<'_>) -> Result<Json<serde_json::Value>, ApiError> {
        require(ctx, Scope::Read)?;
        let state = self.state(ctx).await?;
        Ok(Json(
            serde_json::to_value(&state.request).map_err(ApiError::internal)?,
        ))
    }
    /// Every event of this notification, in order (the request included;
    /// needs the read scope).
    async fn timeline(&self, ctx: &Context<'_>) -> Result<Vec<TimelineEvent>, ApiError> {
        require(ctx, Scope::Read)?;
        let details = match &self.details {
            Some(details) => details.clone(),
            None => self.load(ctx).await?,
        };
        Ok(details
            .timeline
            .iter()
            .map(|e| TimelineEvent {
                event_type: e.event_type.clone(),
                position: Position(e.global_position),
                version: e.stream_version,
                recorded_at: e.recorded_at,
                data: Json(e.payload.clone()),
                read_error: details.read_error(e.global_position).map(str::to_string),
            })
            .collect())
    }
}
