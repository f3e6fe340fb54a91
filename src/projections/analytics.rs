//! `analytics_counts`: how many notifications entered each status, per tenant,
//! hour (UTC, of the event's `recorded_at`) and channel. A counter is not
//! idempotent, so this read model is kept by the runner alone: its counts and
//! its checkpoint commit together, which is what makes each event count once.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use futures::future::BoxFuture;
use sqlx::{PgConnection, PgPool};

use super::notification_status::{notification_id, state_at};
use super::{Projection, ProjectionError};
use crate::domain::NotificationEvent;
use crate::eventstore::{ReadFilter, RecordedEvent};

pub const NAME: &str = "analytics";
pub const VERSION: i32 = 1;

/// Engagement leaves the status as it is; everything else moves it.
const STATUS_UNCHANGED: [&str; 2] = ["NotificationOpened", "NotificationClicked"];

pub struct AnalyticsProjection;

impl Projection for AnalyticsProjection {
    fn name(&self) -> &str {
        NAME
    }

    fn version(&self) -> i32 {
        VERSION
    }

    fn tables(&self) -> &'static [&'static str] {
        &["analytics_counts"]
    }

    fn filter(&self) -> ReadFilter {
        ReadFilter {
            tenant_id: None,
            event_types: Some(
                NotificationEvent::EVENT_TYPES
                    .iter()
                    .filter(|t| !STATUS_UNCHANGED.contains(t))
                    .map(|t| t.to_string())
                    .collect(),
            ),
        }
    }

    fn handle<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        event: &'a RecordedEvent,
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(async move {
            if STATUS_UNCHANGED.contains(&event.event_type.as_str())
                || notification_id(event)?.is_none()
            {
                return Ok(());
            }
            let notification = state_at(conn, &event.stream_id, event.stream_version).await?;
            // Events before NotificationRequested change nothing (the aggregate ignores them).
            let Some(state) = notification.state() else {
                return Ok(());
            };
            let channel = state
                .channel
                .or_else(|| state.request.channels.first().copied())
                .map(|c| c.as_str())
                .unwrap_or("none");
            sqlx::query(
                "INSERT INTO analytics_counts (tenant_id, hour, channel, status, count) \
                 VALUES ($1, $2, $3, $4, 1) \
                 ON CONFLICT (tenant_id, hour, channel, status) \
                 DO UPDATE SET count = analytics_counts.count + 1",
            )
            .bind(state.tenant_id.as_str())
            .bind(hour_of(event.recorded_at))
            .bind(channel)
            .bind(state.status.as_str())
            .execute(conn)
            .await?;
            Ok(())
        })
    }
}

fn hour_of(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(TimeDelta::hours(1)).unwrap_or(at)
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Count {
    pub hour: DateTime<Utc>,
    pub channel: String,
    pub status: String,
    pub count: i64,
}

/// A tenant's counts in `[from, to)`, by hour, channel and status.
pub async fn counts(
    pool: &PgPool,
    tenant_id: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Count>, sqlx::Error> {
    sqlx::query_as(
        "SELECT hour, channel, status, count FROM analytics_counts \
         WHERE tenant_id = $1 AND hour >= $2 AND hour < $3 \
         ORDER BY hour, channel, status",
    )
    .bind(tenant_id)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await
}
