//! The `Notification` object: a summary row from the status view, or the
//! full state folded from its stream; the timeline loads on demand.

use async_graphql::{Context, ID, Json, Object, Result};
use chrono::{DateTime, Utc};

use super::types::{Channel, NotificationStatus, Position, Priority, TimelineEvent};
use super::{ApiContext, require};
use crate::commands::notifications::{self, NotificationDetails};
use crate::domain::values::{NotificationId, TenantId};
use crate::domain::{self, NotificationState, Scope};
use crate::projections::notification_status;

pub struct NotificationNode {
    id: NotificationId,
    tenant_id: TenantId,
    status: domain::NotificationStatus,
    priority: domain::values::Priority,
    channels: Vec<domain::values::Channel>,
    recipient_id: Option<String>,
    category: Option<String>,
    tags: Vec<String>,
    created_at: DateTime<Utc>,
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
        let request = &state.request;
        NotificationNode {
            id: state.notification_id,
            tenant_id: state.tenant_id.clone(),
            status: state.status,
            priority: request.priority,
            channels: request.channels.clone(),
            recipient_id: request.recipient.id.as_ref().map(|r| r.to_string()),
            category: request.category.as_ref().map(|c| c.to_string()),
            tags: request.tags.iter().map(|t| t.to_string()).collect(),
            created_at: state.requested_at,
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
            id: NotificationId::from(row.notification_id),
            tenant_id: tenant_id.clone(),
            status: domain::NotificationStatus::ALL
                .into_iter()
                .find(|s| s.as_str() == row.status)?,
            priority: domain::values::Priority::parse(&row.priority).ok()?,
            channels: row
                .channels
                .iter()
                .filter_map(|c| domain::values::Channel::parse(c).ok())
                .collect(),
            recipient_id: row.recipient_id,
            category: row.category,
            tags: row.tags,
            created_at: row.created_at,
            state: None,
            details: None,
        })
    }

    async fn state(&self, ctx: &Context<'_>) -> Result<NotificationState> {
        match &self.state {
            Some(state) => Ok(state.clone()),
            None => Ok(self.load(ctx).await?.state),
        }
    }

    async fn load(&self, ctx: &Context<'_>) -> Result<NotificationDetails> {
        let api = ctx.data::<ApiContext>()?;
        notifications::get(&api.store, &self.tenant_id, &self.id)
            .await
            .map_err(super::ApiError::from)?
            .ok_or_else(|| super::ApiError::NotFound("notification").into())
    }
}

#[Object(name = "Notification")]
impl NotificationNode {
    async fn id(&self) -> ID {
        ID(self.id.as_uuid().to_string())
    }
    async fn status(&self) -> NotificationStatus {
        self.status.into()
    }
    async fn priority(&self) -> Priority {
        self.priority.into()
    }
    /// In order of preference.
    async fn channels(&self) -> Vec<Channel> {
        self.channels.iter().map(|c| (*c).into()).collect()
    }
    async fn recipient_id(&self) -> Option<&str> {
        self.recipient_id.as_deref()
    }
    async fn category(&self) -> Option<&str> {
        self.category.as_deref()
    }
    async fn tags(&self) -> &[String] {
        &self.tags
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }
    /// Delivery attempts started so far.
    async fn attempts(&self, ctx: &Context<'_>) -> Result<u32> {
        Ok(self.state(ctx).await?.attempts)
    }
    async fn schedule_at(&self, ctx: &Context<'_>) -> Result<Option<DateTime<Utc>>> {
        let state = self.state(ctx).await?;
        Ok(state.schedule_at.or(state.request.schedule_at))
    }
    async fn expires_at(&self, ctx: &Context<'_>) -> Result<Option<DateTime<Utc>>> {
        Ok(self.state(ctx).await?.expires_at())
    }
    /// The request as accepted (recipient addresses included; needs the read scope).
    async fn request(&self, ctx: &Context<'_>) -> Result<Json<serde_json::Value>> {
        require(ctx, Scope::Read)?;
        let state = self.state(ctx).await?;
        Ok(Json(
            serde_json::to_value(&state.request).map_err(super::ApiError::internal)?,
        ))
    }
    /// Every event of this notification, in order (the request included;
    /// needs the read scope).
    async fn timeline(&self, ctx: &Context<'_>) -> Result<Vec<TimelineEvent>> {
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
