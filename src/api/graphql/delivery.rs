//! Delivery operations: the dead-letter queue (inspect, replay) and the
//! delivery queue's ops view (REST twins: `/admin/queues`, `/admin/dlq/replay`).

use async_graphql::{ComplexObject, Context, ID, InputObject, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};

use super::connection::Connection;
use super::notification::NotificationNode;
use super::types::Channel;
use super::{ApiError, actor, api, parse_id, require, run};
use crate::api::cursor::{self, page_size};
use crate::api::ops::{ProviderHealth, QueueLine};
use crate::commands::notifications;
use crate::domain::Scope;
use crate::projections::{dead_letters, delivery_queue};

#[derive(InputObject, Default)]
pub struct DeadLetterFilter {
    /// Only notifications that asked for this channel.
    pub channel: Option<Channel>,
    /// Dead-lettered at or after.
    pub since: Option<DateTime<Utc>>,
    /// Dead-lettered before.
    pub until: Option<DateTime<Utc>>,
}

impl From<DeadLetterFilter> for dead_letters::Filter {
    fn from(filter: DeadLetterFilter) -> Self {
        dead_letters::Filter {
            channel: filter
                .channel
                .map(|c| crate::domain::values::Channel::from(c).as_str().to_string()),
            since: filter.since,
            until: filter.until,
        }
    }
}

#[derive(SimpleObject)]
#[graphql(complex)]
pub struct DeadLetter {
    pub id: ID,
    /// Why it gave up: the last attempt's error, or why no route was left.
    pub reason: String,
    pub dead_lettered_at: DateTime<Utc>,
}

#[ComplexObject]
impl DeadLetter {
    /// The notification with its whole timeline.
    async fn notification(&self, ctx: &Context<'_>) -> Result<NotificationNode, ApiError> {
        let principal = require(ctx, Scope::Ops)?;
        let id = parse_id("id", &self.id)?;
        let details = notifications::get(&api(ctx)?.store, &principal.tenant_id, &id)
            .await?
            .ok_or(ApiError::NotFound("notification"))?;
        Ok(NotificationNode::from_details(details))
    }
}

#[derive(Default)]
pub struct DeliveryQuery;

#[Object]
impl DeliveryQuery {
    /// Notifications that gave up, newest first (requires the `ops` scope).
    async fn dead_letters(
        &self,
        ctx: &Context<'_>,
        filter: Option<DeadLetterFilter>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> Result<Connection<DeadLetter>, ApiError> {
        let principal = require(ctx, Scope::Ops)?;
        let first = page_size("first", first.into())?;
        let after = cursor::decode(after.as_deref())?;
        let filter = filter.unwrap_or_default().into();
        let page = dead_letters::page(
            api(ctx)?.store.pool(),
            principal.tenant_id.as_str(),
            &filter,
            first,
            after,
        )
        .await?;
        Ok(Connection::page(
            page,
            |row| (row.dead_lettered_at, row.notification_id),
            |row| DeadLetter {
                id: ID(row.notification_id.to_string()),
                reason: row.reason,
                dead_lettered_at: row.dead_lettered_at,
            },
        ))
    }

    /// Each provider's circuit breaker and calls in flight, per worker
    /// process (requires `ops`). Providers are shared by every tenant.
    async fn provider_health(&self, ctx: &Context<'_>) -> Result<Vec<ProviderHealth>, ApiError> {
        let principal = require(ctx, Scope::Ops)?;
        let rows =
            delivery_queue::provider_health(api(ctx)?.store.pool(), &principal.tenant_id).await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// The tenant's delivery queue by priority and channel (requires `ops`).
    async fn delivery_queue(&self, ctx: &Context<'_>) -> Result<Vec<QueueLine>, ApiError> {
        let principal = require(ctx, Scope::Ops)?;
        let stats =
            delivery_queue::stats(api(ctx)?.store.pool(), principal.tenant_id.as_str()).await?;
        Ok(stats.into_iter().map(Into::into).collect())
    }
}

#[derive(Default)]
pub struct DeliveryMutation;

#[Object]
impl DeliveryMutation {
    /// Sends a dead-lettered notification through again with a fresh retry
    /// budget (requires `ops`).
    async fn replay_dead_letter(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> Result<NotificationNode, ApiError> {
        let principal = require(ctx, Scope::Ops)?;
        let id = parse_id("id", &id)?;
        let details = notifications::requeue(
            &api(ctx)?.store,
            &principal.tenant_id,
            &id,
            notifications::DEAD_LETTER_REPLAY,
            &actor(principal),
        )
        .await?;
        Ok(NotificationNode::from_details(details))
    }

    /// Requeues every dead letter the filter selects (at most 10,000 per
    /// call); returns how many were requeued.
    async fn replay_dead_letters(
        &self,
        ctx: &Context<'_>,
        filter: Option<DeadLetterFilter>,
    ) -> Result<i32, ApiError> {
        let principal = require(ctx, Scope::Ops)?;
        let filter = dead_letters::Filter::from(filter.unwrap_or_default());
        let replayed = run(ctx, principal, &filter, notifications::replay_dead_letters).await?;
        Ok(replayed as i32)
    }
}
