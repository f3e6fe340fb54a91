//! The in-app feed: a recipient's items (`inappFeed`), marking them
//! (`markInAppItems`, `markAllInAppRead`) and, for the `inappFeed`
//! subscription, what each event of the log changes in a feed.
//!
//! Scopes: reading a feed takes `read`; marking takes `send`, because the
//! caller is the product backend acting for its signed-in user, the same
//! party that sends that user notifications. A key is its tenant's: any
//! recipient of the tenant, none of another's.
//!
//! A browser uses a feed token instead (`issueFeedToken`, scope `send`):
//! it reads and marks its one recipient's feed, here and in the `inappFeed`
//! subscription, until it expires; every other field refuses it.

use std::sync::Arc;

use async_graphql::{Context, Enum, ID, Json, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};

use super::connection::Connection;
use super::types::Position;
use super::{ApiError, actor, api, require};
use crate::api::cursor::{self, page_size};
use crate::commands::Actor;
use crate::commands::inapp_feed as commands;
use crate::commands::links::FeedGrant;
use crate::domain::Scope;
use crate::domain::inapp_feed::{self as domain, InAppFeedEvent, MarkInAppItems};
use crate::domain::values::{RecipientId, TenantId};
use crate::eventstore::{EventStore, RecordedEvent};
use crate::projections::inapp_feed::{self, Delivery, FeedItem, SharedDeliveries};

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "crate::domain::inapp_feed::InAppItemState")]
pub enum InAppItemState {
    Unread,
    Read,
    Archived,
}

/// One item of a recipient's in-app feed: a notification delivered on the
/// in-app channel, with its request's content.
#[derive(SimpleObject, Clone)]
pub struct InAppItem {
    /// The notification's id.
    pub id: ID,
    pub recipient_id: String,
    pub title: Option<String>,
    pub text: Option<String>,
    pub cta_url: Option<String>,
    pub data: Option<Json<serde_json::Value>>,
    pub category: Option<String>,
    pub state: InAppItemState,
    pub delivered_at: DateTime<Utc>,
    /// When first read; cleared when marked unread again.
    pub read_at: Option<DateTime<Utc>>,
    pub archived_at: Option<DateTime<Utc>>,
    /// The log position of its delivery (its `NotificationSent`).
    pub position: Position,
}

impl InAppItem {
    fn from_row(row: FeedItem) -> InAppItem {
        InAppItem {
            id: ID(row.notification_id.to_string()),
            state: row.state().into(),
            recipient_id: row.recipient_id,
            title: row.title,
            text: row.text,
            cta_url: row.cta_url,
            data: row.data.map(Json),
            category: row.category,
            delivered_at: row.delivered_at,
            read_at: row.read_at,
            archived_at: row.archived_at,
            position: Position(row.delivered_position),
        }
    }

    fn delivered(delivery: &Delivery) -> InAppItem {
        InAppItem {
            id: ID(delivery.notification_id.to_string()),
            recipient_id: delivery.recipient_id.clone(),
            title: delivery.title.clone(),
            text: delivery.text.clone(),
            cta_url: delivery.cta_url.clone(),
            data: delivery.data.clone().map(Json),
            category: delivery.category.clone(),
            state: InAppItemState::Unread,
            delivered_at: delivery.delivered_at,
            read_at: None,
            archived_at: None,
            position: Position(delivery.position),
        }
    }
}

#[derive(SimpleObject)]
pub struct InAppFeedConnection {
    #[graphql(flatten)]
    pub items: Connection<InAppItem>,
    /// The recipient's unread items, whatever the filter.
    pub unread_count: i64,
}

/// What a mark recorded.
#[derive(SimpleObject)]
pub struct MarkInAppItemsPayload {
    pub state: InAppItemState,
    /// The items marked.
    pub ids: Vec<ID>,
    /// The log position of the mark, comparable with the `inappFeed`
    /// subscription's; null when there was nothing to mark. The `inappFeed`
    /// query shows the change once its read model has caught up to it.
    pub position: Option<Position>,
}

impl From<commands::Marked> for MarkInAppItemsPayload {
    fn from(marked: commands::Marked) -> Self {
        MarkInAppItemsPayload {
            state: marked.state.into(),
            ids: marked
                .notification_ids
                .iter()
                .map(|id| ID(id.to_string()))
                .collect(),
            position: marked.position.map(Position),
        }
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum InAppFeedChange {
    /// An item arrived, unread.
    Delivered,
    /// Items were marked.
    Marked,
}

/// A change in a recipient's in-app feed.
#[derive(SimpleObject, Clone)]
pub struct InAppFeedUpdate {
    /// The event's log position: pass the last one received as `after` to
    /// resume without gap or duplicate.
    pub position: Position,
    pub change: InAppFeedChange,
    /// The item delivered, or the items marked.
    pub ids: Vec<ID>,
    /// Their state after the change.
    pub state: InAppItemState,
    /// The item delivered; null for a mark.
    pub item: Option<InAppItem>,
    pub at: DateTime<Utc>,
}

pub(super) fn recipient(raw: &str) -> Result<RecipientId, ApiError> {
    RecipientId::parse(raw).map_err(|e| ApiError::field("recipient_id", e.to_string()))
}

/// Who works on `recipient`'s feed: an API key with `scope`, or a feed
/// token for that very recipient (its grant is returned so a subscription
/// can end when it expires).
pub(super) fn feed_caller(
    ctx: &Context<'_>,
    recipient: &RecipientId,
    scope: Scope,
) -> Result<(TenantId, Actor, Option<FeedGrant>), ApiError> {
    match ctx.data_opt::<FeedGrant>() {
        Some(grant) if grant.recipient_id == *recipient => Ok((
            grant.tenant_id.clone(),
            Actor::new(format!("feed-token:{}", grant.recipient_id)),
            Some(grant.clone()),
        )),
        Some(_) => Err(ApiError::FeedTokenOnly),
        None => {
            let principal = require(ctx, scope)?;
            Ok((principal.tenant_id.clone(), actor(principal), None))
        }
    }
}

/// `issueFeedToken`'s lifetime when none is asked for (or the maximum, if lower).
const DEFAULT_FEED_TOKEN_TTL_SECONDS: i64 = 60 * 60;

/// A browser's credential for one recipient's in-app feed.
#[derive(SimpleObject)]
pub struct FeedToken {
    /// Send as `Authorization: Bearer <token>` to `/graphql`, or as
    /// `{"feedToken": "<token>"}` in the socket's `connection_init`.
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Default)]
pub struct FeedQuery;

#[Object]
impl FeedQuery {
    /// A recipient's in-app items, newest first, with the unread count;
    /// `states` keeps only items in those states (all when omitted).
    async fn inapp_feed(
        &self,
        ctx: &Context<'_>,
        recipient_id: String,
        states: Option<Vec<InAppItemState>>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> Result<InAppFeedConnection, ApiError> {
        let recipient = recipient(&recipient_id)?;
        let (tenant_id, _, _) = feed_caller(ctx, &recipient, Scope::Read)?;
        let first = page_size("first", first.into())?;
        let after = cursor::decode(after.as_deref())?;
        let states: Option<Vec<domain::InAppItemState>> =
            states.map(|s| s.into_iter().map(Into::into).collect());
        let page = inapp_feed::page(
            api(ctx)?.store.pool(),
            tenant_id.as_str(),
            recipient.as_str(),
            states.as_deref(),
            first,
            after,
        )
        .await?;
        Ok(InAppFeedConnection {
            items: Connection::page(
                (page.items, page.has_more),
                |row| row.delivered_position,
                InAppItem::from_row,
            ),
            unread_count: page.unread,
        })
    }
}

#[derive(Default)]
pub struct FeedMutation;

#[Object]
impl FeedMutation {
    /// Puts up to 100 of a recipient's in-app items in `state` (scope
    /// `send`). Every id must be an item delivered to that recipient, or
    /// nothing is marked.
    async fn mark_in_app_items(
        &self,
        ctx: &Context<'_>,
        recipient_id: String,
        ids: Vec<ID>,
        state: InAppItemState,
    ) -> Result<MarkInAppItemsPayload, ApiError> {
        let (tenant_id, actor, _) = feed_caller(ctx, &recipient(&recipient_id)?, Scope::Send)?;
        let marked = commands::mark(
            &api(ctx)?.store,
            &tenant_id,
            MarkInAppItems {
                recipient_id,
                ids: ids.into_iter().map(|id| id.0).collect(),
                state: state.into(),
            },
            &actor,
        )
        .await?;
        Ok(marked.into())
    }

    /// Marks every unread item of a recipient read (scope `send`).
    async fn mark_all_in_app_read(
        &self,
        ctx: &Context<'_>,
        recipient_id: String,
    ) -> Result<MarkInAppItemsPayload, ApiError> {
        let (tenant_id, actor, _) = feed_caller(ctx, &recipient(&recipient_id)?, Scope::Send)?;
        let marked =
            commands::mark_all_read(&api(ctx)?.store, &tenant_id, &recipient_id, &actor).await?;
        Ok(marked.into())
    }

    /// A token that lets a browser read and mark `recipientId`'s in-app
    /// feed, and nothing else, for `ttlSeconds` (default an hour, at most
    /// `links.feed_token_max_ttl_seconds`; scope `send`). Hand it to the
    /// signed-in user's browser; a leak exposes that one feed until expiry.
    async fn issue_feed_token(
        &self,
        ctx: &Context<'_>,
        recipient_id: String,
        ttl_seconds: Option<i32>,
    ) -> Result<FeedToken, ApiError> {
        let principal = require(ctx, Scope::Send)?;
        let recipient = recipient(&recipient_id)?;
        let links = &api(ctx)?.links;
        let max = links.feed_token_max_ttl().num_seconds();
        let ttl = ttl_seconds.map_or(DEFAULT_FEED_TOKEN_TTL_SECONDS.min(max), i64::from);
        if !(1..=max).contains(&ttl) {
            return Err(ApiError::field(
                "ttl_seconds",
                format!("must be between 1 and {max}"),
            ));
        }
        let (token, expires_at) = links.issue_feed_token(
            &principal.tenant_id,
            &recipient,
            chrono::TimeDelta::seconds(ttl),
        );
        Ok(FeedToken { token, expires_at })
    }
}

/// One subscriber's view of a feed: turns the tenant's events into that
/// feed's changes. Deliveries are worked out once per process, shared with
/// every other feed subscriber, so no subscriber queries per event.
pub(super) struct FeedWatch {
    deliveries: Arc<SharedDeliveries>,
    store: EventStore,
    recipient: RecipientId,
    /// The feed's stream, where its marks are.
    stream_id: String,
}

impl FeedWatch {
    pub(super) fn new(
        ctx: &Context<'_>,
        tenant_id: &crate::domain::values::TenantId,
        recipient_id: &str,
    ) -> Result<FeedWatch, ApiError> {
        let api = api(ctx)?;
        let recipient = recipient(recipient_id)?;
        Ok(FeedWatch {
            deliveries: api.live.shared::<SharedDeliveries>(),
            store: api.store.clone(),
            stream_id: commands::stream_id(tenant_id, &recipient),
            recipient,
        })
    }

    /// What `event`, one of the tenant's, changes in this feed, if anything.
    pub(super) async fn update(
        &self,
        event: &RecordedEvent,
    ) -> Result<Option<InAppFeedUpdate>, ApiError> {
        let internal = |e: crate::projections::ProjectionError| ApiError::internal(e);
        match event.event_type.as_str() {
            "NotificationRequested" | "DeliveryAttempted" => {
                self.deliveries.observe(event).map_err(internal)?;
                Ok(None)
            }
            "NotificationSent" => {
                let delivery = self
                    .deliveries
                    .delivery(&self.store, event)
                    .await
                    .map_err(internal)?;
                Ok(delivery
                    .filter(|d| d.recipient_id == self.recipient.as_str())
                    .map(|d| InAppFeedUpdate {
                        position: Position(event.global_position),
                        change: InAppFeedChange::Delivered,
                        ids: vec![ID(d.notification_id.to_string())],
                        state: InAppItemState::Unread,
                        item: Some(InAppItem::delivered(&d)),
                        at: event.recorded_at,
                    }))
            }
            _ if event.stream_id == self.stream_id => {
                let InAppFeedEvent::ItemsMarked {
                    notification_ids,
                    state,
                    ..
                } = InAppFeedEvent::upcast(
                    &event.event_type,
                    event.schema_version,
                    event.payload.clone(),
                )
                .map_err(ApiError::internal)?;
                Ok(Some(InAppFeedUpdate {
                    position: Position(event.global_position),
                    change: InAppFeedChange::Marked,
                    ids: notification_ids
                        .iter()
                        .map(|id| ID(id.to_string()))
                        .collect(),
                    state: state.into(),
                    item: None,
                    at: event.recorded_at,
                }))
            }
            _ => Ok(None),
        }
    }
}
