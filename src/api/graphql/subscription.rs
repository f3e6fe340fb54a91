//! Live subscriptions over graphql-transport-ws, fed by the process's one
//! log tailer and confined to the caller's tenant, which may hold at most
//! `limits.max_subscriptions_per_tenant` of them at once in this process.

use std::sync::Arc;

use async_graphql::{Context, ID, Json, Result, SimpleObject, Subscription};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};

use super::feed::{FeedWatch, InAppFeedUpdate, feed_caller};
use super::types::{NotificationStatus, Position};
use super::{ApiContext, ApiError, api, require};
use crate::api::live::LiveError;
use crate::api::tenant_slots::Slot;
use crate::commands::notifications::stream_id;
use crate::domain::values::TenantId;
use crate::domain::{NotificationEvent, Scope};
use crate::eventstore::{Checkpoint, RecordedEvent};

/// An event of the log, as subscribers see it.
#[derive(SimpleObject, Clone)]
pub struct LogEvent {
    /// Pass the last one received as `after` to resume without gap or duplicate.
    pub position: Position,
    #[graphql(name = "type")]
    pub event_type: String,
    pub stream_id: String,
    pub version: i64,
    pub recorded_at: DateTime<Utc>,
    pub data: Json<serde_json::Value>,
}

/// A change in one notification's life.
#[derive(SimpleObject, Clone)]
pub struct NotificationUpdate {
    pub notification_id: ID,
    pub position: Position,
    #[graphql(name = "type")]
    pub event_type: String,
    /// The status after this event; null for events that leave it (opens, clicks).
    pub status: Option<NotificationStatus>,
    pub recorded_at: DateTime<Utc>,
    pub data: Json<serde_json::Value>,
}

fn log_event(event: &RecordedEvent) -> LogEvent {
    LogEvent {
        position: Position(event.global_position),
        event_type: event.event_type.clone(),
        stream_id: event.stream_id.clone(),
        version: event.stream_version,
        recorded_at: event.recorded_at,
        data: Json(event.payload.clone()),
    }
}

fn notification_update(event: &RecordedEvent) -> Option<NotificationUpdate> {
    let id = event.stream_id.strip_prefix("notification-")?;
    let status = NotificationEvent::upcast(
        &event.event_type,
        event.schema_version,
        event.payload.clone(),
    )
    .ok()?
    .status_after();
    Some(NotificationUpdate {
        notification_id: ID(id.to_string()),
        position: Position(event.global_position),
        event_type: event.event_type.clone(),
        status: status.map(Into::into),
        recorded_at: event.recorded_at,
        data: Json(event.payload.clone()),
    })
}

/// Resolves `after` (a position the client saw) to the log's read order.
async fn resume_point(
    api: &ApiContext,
    after: Option<Position>,
) -> Result<Option<Checkpoint>, ApiError> {
    match after.map(|position| position.0) {
        None => Ok(None),
        Some(0) => Ok(Some(Checkpoint::ORIGIN)),
        Some(position) => api
            .store
            .checkpoint_at(position)
            .await?
            .map(Some)
            .ok_or_else(|| ApiError::field("after", format!("no event at position {position}"))),
    }
}

/// The caller's tenant's events, counted against its cap of live
/// subscriptions for as long as the stream lives.
fn tenant_events(
    ctx: &Context<'_>,
    tenant_id: &TenantId,
    after: Option<Checkpoint>,
) -> Result<impl Stream<Item = Result<Arc<RecordedEvent>, LiveError>> + Send + use<>, ApiError> {
    let api = api(ctx)?;
    let slot = subscription_slot(api, tenant_id)?;
    Ok(held(slot, api.live.events(tenant_id, after)))
}

/// One of the tenant's subscription slots, or `LIMIT_EXCEEDED`.
fn subscription_slot(api: &ApiContext, tenant_id: &TenantId) -> Result<Slot, ApiError> {
    api.subscriptions.try_take(tenant_id).ok_or_else(|| {
        ApiError::LimitExceeded(format!(
            "this tenant already has {} live subscriptions here; end one first",
            api.subscriptions.cap()
        ))
    })
}

/// `stream`, holding `slot` until it is dropped.
fn held<S: Stream>(slot: Slot, stream: S) -> impl Stream<Item = S::Item> {
    stream.map(move |item| {
        let _held = &slot;
        item
    })
}

fn to_graphql<T>(item: Result<T, LiveError>) -> Result<T> {
    item.map_err(|error| match error {
        LiveError::Store(store) => ApiError::from(store).into(),
        other => ApiError::Conflict(other.to_string()).into(),
    })
}

pub struct SubscriptionRoot;

#[Subscription]
impl SubscriptionRoot {
    /// The tenant's events in log order: from `after` (0 for the beginning)
    /// through the log, then live; only live ones without `after`.
    async fn events(
        &self,
        ctx: &Context<'_>,
        after: Option<Position>,
        types: Option<Vec<String>>,
    ) -> Result<impl Stream<Item = Result<LogEvent>> + use<>> {
        let principal = require(ctx, Scope::Read)?;
        let after = resume_point(api(ctx)?, after).await?;
        Ok(
            tenant_events(ctx, &principal.tenant_id, after)?.filter_map(move |item| {
                let wanted = match &item {
                    Ok(event) => types
                        .as_ref()
                        .is_none_or(|types| types.contains(&event.event_type)),
                    Err(_) => true,
                };
                futures::future::ready(wanted.then(|| to_graphql(item.map(|e| log_event(&e)))))
            }),
        )
    }

    /// Every change of one notification from now on.
    async fn notification_updated(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> Result<impl Stream<Item = Result<NotificationUpdate>> + use<>> {
        let principal = require(ctx, Scope::Read)?;
        let notification = super::parse_id("id", &id)?;
        let stream = stream_id(&notification);
        Ok(
            tenant_events(ctx, &principal.tenant_id, None)?.filter_map(move |item| {
                let update = match item {
                    Ok(event) if event.stream_id == stream => notification_update(&event).map(Ok),
                    Ok(_) => None,
                    Err(error) => Some(Err(error)),
                };
                futures::future::ready(update.map(to_graphql))
            }),
        )
    }

    /// Changes of any of the tenant's notifications, optionally only those
    /// reaching one of `statuses`.
    async fn notifications_updated(
        &self,
        ctx: &Context<'_>,
        statuses: Option<Vec<NotificationStatus>>,
    ) -> Result<impl Stream<Item = Result<NotificationUpdate>> + use<>> {
        let principal = require(ctx, Scope::Read)?;
        Ok(
            tenant_events(ctx, &principal.tenant_id, None)?.filter_map(move |item| {
                let update = match item {
                    Ok(event) => notification_update(&event)
                        .filter(|u| {
                            statuses
                                .as_ref()
                                .is_none_or(|s| u.status.is_some_and(|status| s.contains(&status)))
                        })
                        .map(Ok),
                    Err(error) => Some(Err(error)),
                };
                futures::future::ready(update.map(to_graphql))
            }),
        )
    }

    /// One campaign's summary counts: at once, then whenever they change
    /// (looked at most every 500 ms while its events arrive); ends after
    /// the final counts once the campaign is COMPLETED or CANCELLED.
    async fn campaign_progress(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> Result<impl Stream<Item = Result<super::campaigns::CampaignSummaryObject>> + use<>> {
        let slot = subscription_slot(api(ctx)?, &require(ctx, Scope::Read)?.tenant_id)?;
        Ok(held(
            slot,
            super::campaigns::campaign_progress(ctx, id).await?,
        ))
    }

    /// A recipient's in-app feed as it changes: items as they are
    /// delivered, marks as they are recorded. From `after` (a position
    /// received before, 0 for the beginning) through the log, then live;
    /// only live ones without `after`. On a socket opened with a feed
    /// token, only that token's recipient, ending when the token expires.
    async fn inapp_feed(
        &self,
        ctx: &Context<'_>,
        recipient_id: String,
        after: Option<Position>,
    ) -> Result<impl Stream<Item = Result<InAppFeedUpdate>> + use<>> {
        let recipient = super::feed::recipient(&recipient_id)?;
        let (tenant_id, _, grant) = feed_caller(ctx, &recipient, Scope::Read)?;
        let watch = Arc::new(FeedWatch::new(ctx, &tenant_id, &recipient_id)?);
        let api = api(ctx)?;
        let after = resume_point(api, after).await?;
        // A feed token's socket reads no longer than the token lives.
        let lifetime = grant.map(|grant| (grant.expires_at - chrono::Utc::now()).to_std());
        let expired = async move {
            match lifetime {
                Some(Ok(left)) => tokio::time::sleep(left).await,
                Some(Err(_)) => {}
                None => futures::future::pending().await,
            }
        };
        Ok(tenant_events(ctx, &tenant_id, after)?
            .take_until(expired)
            .then(move |item| {
                let watch = Arc::clone(&watch);
                async move {
                    match item {
                        Ok(event) => watch.update(&event).await.map_err(Into::into).transpose(),
                        Err(error) => Some(to_graphql(Err(error))),
                    }
                }
            })
            .filter_map(futures::future::ready))
    }
}
