//! Delivery operations: the dead-letter queue (inspect, replay) and the
//! delivery queue's ops view (REST twins: `/admin/queues`, `/admin/dlq/replay`).

use async_graphql::{ComplexObject, Context, ID, InputObject, Object, Result, SimpleObject};
use base64::Engine;
use chrono::{DateTime, Utc};

use super::notification::NotificationNode;
use super::types::{Channel, PageInfo, Priority};
use super::{ApiError, MAX_PAGE, actor, api, parse_id, require};
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
    async fn notification(&self, ctx: &Context<'_>) -> Result<NotificationNode> {
        let principal = require(ctx, Scope::Ops)?;
        let id = parse_id("id", &self.id)?;
        let details = notifications::get(&api(ctx)?.store, &principal.tenant_id, &id)
            .await
            .map_err(ApiError::from)?
            .ok_or(ApiError::NotFound("notification"))?;
        Ok(NotificationNode::from_details(details))
    }
}

#[derive(SimpleObject)]
pub struct DeadLetterEdge {
    pub cursor: String,
    pub node: DeadLetter,
}

#[derive(SimpleObject)]
pub struct DeadLetterConnection {
    pub edges: Vec<DeadLetterEdge>,
    pub page_info: PageInfo,
}

/// One priority × channel line of the delivery queue.
#[derive(SimpleObject)]
pub struct QueueLine {
    pub priority: Priority,
    pub channel: Option<String>,
    /// Notifications waiting, due or not.
    pub depth: i64,
    /// Due now and not held by a worker.
    pub due: i64,
    /// Held by a worker right now (in flight).
    pub leased: i64,
    /// When the longest-waiting due notification fell due.
    pub oldest_due_at: Option<DateTime<Utc>>,
}

/// One worker process's view of one provider (as REST `/admin/providers`).
#[derive(SimpleObject)]
pub struct ProviderHealth {
    pub provider: String,
    /// The worker process that reports it (each keeps its own breakers).
    pub worker_id: ID,
    /// `closed` (healthy), `open` (refusing calls) or `half_open` (one probe).
    pub breaker: String,
    /// Failures within the breaker's window; while it is open or half-open,
    /// the failures that opened it.
    pub recent_failures: i32,
    pub opened_at: Option<DateTime<Utc>>,
    /// Calls to it in flight in that process.
    pub in_flight: i32,
    /// When the process last reported; older than a few seconds means it
    /// stopped or cannot reach the database.
    pub reported_at: DateTime<Utc>,
    /// For a webhook provider: the caller's own endpoints (by origin) that
    /// have failed lately, each with its own breaker (per tenant). An
    /// endpoint's failures pass over that endpoint, never open the
    /// provider's breaker.
    pub endpoints: Vec<EndpointHealth>,
}

/// One worker process's view of one webhook endpoint origin.
#[derive(SimpleObject)]
pub struct EndpointHealth {
    /// Scheme, host and port, e.g. `https://hooks.example.com`.
    pub origin: String,
    /// `closed`, `open` (its messages wait) or `half_open` (one probe).
    pub breaker: String,
    /// Failures within the breaker's window; while it is open or half-open,
    /// the failures that opened it.
    pub recent_failures: i32,
    pub opened_at: Option<DateTime<Utc>>,
    /// Calls to it in flight in that process.
    pub in_flight: i32,
}

fn cursor(row: &dead_letters::DeadLetter) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
        "{}|{}",
        row.dead_lettered_at.to_rfc3339(),
        row.notification_id
    ))
}

fn decode_cursor(cursor: &str) -> Result<(DateTime<Utc>, uuid::Uuid), ApiError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| {
            let (at, id) = text.split_once('|')?;
            Some((
                DateTime::parse_from_rfc3339(at).ok()?.with_timezone(&Utc),
                uuid::Uuid::parse_str(id).ok()?,
            ))
        })
        .ok_or_else(|| ApiError::field("after", "not a cursor from this API"))
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
    ) -> Result<DeadLetterConnection> {
        let principal = require(ctx, Scope::Ops)?;
        if !(1..=MAX_PAGE as i32).contains(&first) {
            return Err(
                ApiError::field("first", format!("must be between 1 and {MAX_PAGE}")).into(),
            );
        }
        let after = after.as_deref().map(decode_cursor).transpose()?;
        let filter = filter.unwrap_or_default().into();
        let (rows, has_next_page) = dead_letters::page(
            api(ctx)?.store.pool(),
            principal.tenant_id.as_str(),
            &filter,
            first as usize,
            after,
        )
        .await
        .map_err(ApiError::from)?;
        let end_cursor = rows.last().map(cursor);
        let edges = rows
            .into_iter()
            .map(|row| DeadLetterEdge {
                cursor: cursor(&row),
                node: DeadLetter {
                    id: ID(row.notification_id.to_string()),
                    reason: row.reason,
                    dead_lettered_at: row.dead_lettered_at,
                },
            })
            .collect();
        Ok(DeadLetterConnection {
            edges,
            page_info: PageInfo {
                has_next_page,
                end_cursor,
            },
        })
    }

    /// Each provider's circuit breaker and calls in flight, per worker
    /// process (requires `ops`). Providers are shared by every tenant.
    async fn provider_health(&self, ctx: &Context<'_>) -> Result<Vec<ProviderHealth>> {
        let principal = require(ctx, Scope::Ops)?;
        let rows = delivery_queue::provider_health(api(ctx)?.store.pool(), &principal.tenant_id)
            .await
            .map_err(ApiError::from)?;
        Ok(rows
            .into_iter()
            .map(|row| ProviderHealth {
                endpoints: row
                    .endpoints
                    .0
                    .into_iter()
                    .map(|endpoint| EndpointHealth {
                        origin: endpoint.origin,
                        breaker: endpoint.state,
                        recent_failures: endpoint.recent_failures,
                        opened_at: endpoint.opened_at,
                        in_flight: endpoint.in_flight,
                    })
                    .collect(),
                provider: row.provider,
                worker_id: ID(row.worker_id.to_string()),
                breaker: row.state,
                recent_failures: row.recent_failures,
                opened_at: row.opened_at,
                in_flight: row.in_flight,
                reported_at: row.updated_at,
            })
            .collect())
    }

    /// The tenant's delivery queue by priority and channel (requires `ops`).
    async fn delivery_queue(&self, ctx: &Context<'_>) -> Result<Vec<QueueLine>> {
        let principal = require(ctx, Scope::Ops)?;
        let stats = delivery_queue::stats(api(ctx)?.store.pool(), principal.tenant_id.as_str())
            .await
            .map_err(ApiError::from)?;
        Ok(stats
            .into_iter()
            .map(|line| QueueLine {
                priority: match line.priority {
                    0 => Priority::High,
                    1 => Priority::Normal,
                    _ => Priority::Low,
                },
                channel: line.channel,
                depth: line.depth,
                due: line.due,
                leased: line.leased,
                oldest_due_at: line.oldest_due_at,
            })
            .collect())
    }
}

#[derive(Default)]
pub struct DeliveryMutation;

#[Object]
impl DeliveryMutation {
    /// Sends a dead-lettered notification through again with a fresh retry
    /// budget (requires `ops`).
    async fn replay_dead_letter(&self, ctx: &Context<'_>, id: ID) -> Result<NotificationNode> {
        let principal = require(ctx, Scope::Ops)?;
        let id = parse_id("id", &id)?;
        let details = notifications::requeue(
            &api(ctx)?.store,
            &principal.tenant_id,
            &id,
            notifications::DEAD_LETTER_REPLAY,
            &actor(principal),
        )
        .await
        .map_err(ApiError::from)?;
        Ok(NotificationNode::from_details(details))
    }

    /// Requeues every dead letter the filter selects (at most 10,000 per
    /// call); returns how many were requeued.
    async fn replay_dead_letters(
        &self,
        ctx: &Context<'_>,
        filter: Option<DeadLetterFilter>,
    ) -> Result<i32> {
        let principal = require(ctx, Scope::Ops)?;
        let replayed = notifications::replay_dead_letters(
            &api(ctx)?.store,
            &principal.tenant_id,
            &filter.unwrap_or_default().into(),
            &actor(principal),
        )
        .await
        .map_err(ApiError::from)?;
        Ok(replayed as i32)
    }
}
