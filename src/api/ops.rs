//! The ops views both APIs serve (REST `/admin/*`, GraphQL's ops
//! queries), one wire shape each.

use async_graphql::{ID, SimpleObject};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::graphql::Priority as GraphQLPriority;
use crate::domain::values::Priority;
use crate::projections::delivery_queue;

/// One worker process's view of one provider (as REST `/admin/providers`).
#[derive(Debug, Serialize, ToSchema, SimpleObject)]
#[schema(as = ProviderStatus)]
pub struct ProviderHealth {
    pub provider: String,
    /// The worker process that reports it (each keeps its own breakers).
    #[schema(value_type = uuid::Uuid)]
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
#[derive(Debug, Serialize, ToSchema, SimpleObject)]
#[schema(as = EndpointStatus)]
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

impl From<delivery_queue::ProviderHealth> for ProviderHealth {
    fn from(row: delivery_queue::ProviderHealth) -> Self {
        ProviderHealth {
            provider: row.provider,
            worker_id: ID(row.worker_id.to_string()),
            breaker: row.state,
            recent_failures: row.recent_failures,
            opened_at: row.opened_at,
            in_flight: row.in_flight,
            reported_at: row.updated_at,
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
        }
    }
}

/// One priority × channel line of the delivery queue.
#[derive(Debug, Serialize, ToSchema, SimpleObject)]
pub struct QueueLine {
    #[graphql(skip, derived(owned, name = "priority", into = "GraphQLPriority"))]
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

impl From<delivery_queue::QueueStats> for QueueLine {
    fn from(line: delivery_queue::QueueStats) -> Self {
        QueueLine {
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
        }
    }
}
