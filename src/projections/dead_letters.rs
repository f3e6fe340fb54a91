//! `dead_letters`: the notifications that gave up, per tenant, newest first,
//! until an operator requeues them: what the dead-letter queue views list
//! and replay.
//!
//! Each row remembers the position of the event that wrote it, and a change
//! applies only over an older one; a requeue leaves a tombstone rather than
//! deleting the row. So handling any events again, in any range, leaves the
//! table as it was: `herald replay --into dead_letters` is safe.

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::notification_status::{decode, notification_id};
use super::{Projection, ProjectionError};
use crate::domain::NotificationEvent;
use crate::eventstore::{ReadFilter, RecordedEvent};

pub const NAME: &str = "dead_letters";
pub const VERSION: i32 = 1;

pub struct DeadLettersProjection;

impl Projection for DeadLettersProjection {
    fn name(&self) -> &str {
        NAME
    }

    fn version(&self) -> i32 {
        VERSION
    }

    fn tables(&self) -> &'static [&'static str] {
        &["dead_letters"]
    }

    /// A row changes only under an event at a later position than its own.
    fn idempotent(&self) -> bool {
        true
    }

    fn filter(&self) -> ReadFilter {
        super::events_of(&["NotificationDeadLettered", "NotificationRequeued"])
    }

    fn handle_batch<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(async move {
            for event in events {
                let Some(id) = notification_id(event)? else {
                    continue;
                };
                match decode(event)? {
                    NotificationEvent::DeadLettered { reason } => {
                        sqlx::query(
                            "INSERT INTO dead_letters (notification_id, tenant_id, reason, dead_lettered_at, global_position) \
                             VALUES ($1, $2, $3, $4, $5) \
                             ON CONFLICT (notification_id) DO UPDATE \
                                 SET reason = EXCLUDED.reason, dead_lettered_at = EXCLUDED.dead_lettered_at, \
                                     global_position = EXCLUDED.global_position, requeued = false \
                                 WHERE dead_letters.global_position < EXCLUDED.global_position",
                        )
                        .bind(id)
                        .bind(&event.tenant_id)
                        .bind(&reason)
                        .bind(event.recorded_at)
                        .bind(event.global_position)
                        .execute(&mut *conn)
                        .await?;
                    }
                    NotificationEvent::Requeued { .. } => {
                        // A tombstone rather than a delete: an older
                        // DeadLettered handled again must not revive it.
                        sqlx::query(
                            "INSERT INTO dead_letters (notification_id, tenant_id, reason, dead_lettered_at, global_position, requeued) \
                             VALUES ($1, $2, '', $3, $4, true) \
                             ON CONFLICT (notification_id) DO UPDATE \
                                 SET global_position = EXCLUDED.global_position, requeued = true \
                                 WHERE dead_letters.global_position < EXCLUDED.global_position",
                        )
                        .bind(id)
                        .bind(&event.tenant_id)
                        .bind(event.recorded_at)
                        .bind(event.global_position)
                        .execute(&mut *conn)
                        .await?;
                    }
                    _ => {}
                }
            }
            Ok(())
        })
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeadLetter {
    pub notification_id: Uuid,
    pub reason: String,
    pub dead_lettered_at: DateTime<Utc>,
}

/// Which dead letters to list or replay.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only notifications that asked for this channel.
    pub channel: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// A page of a tenant's dead letters, newest first, after `after` (the last
/// row of the previous page); the flag says whether more follow.
pub async fn page(
    pool: &PgPool,
    tenant_id: &str,
    filter: &Filter,
    first: usize,
    after: Option<(DateTime<Utc>, Uuid)>,
) -> Result<(Vec<DeadLetter>, bool), sqlx::Error> {
    let rows = sqlx::query_as(
        "SELECT d.notification_id, d.reason, d.dead_lettered_at FROM dead_letters d \
         WHERE d.tenant_id = $1 AND NOT d.requeued \
           AND ($2::text IS NULL OR EXISTS (SELECT 1 FROM notification_status s \
                WHERE s.notification_id = d.notification_id AND $2 = ANY(s.channels))) \
           AND ($3::timestamptz IS NULL OR d.dead_lettered_at >= $3) \
           AND ($4::timestamptz IS NULL OR d.dead_lettered_at < $4) \
           AND ($5::timestamptz IS NULL OR (d.dead_lettered_at, d.notification_id) < ($5, $6)) \
         ORDER BY d.dead_lettered_at DESC, d.notification_id DESC \
         LIMIT $7",
    )
    .bind(tenant_id)
    .bind(&filter.channel)
    .bind(filter.since)
    .bind(filter.until)
    .bind(after.map(|(at, _)| at))
    .bind(after.map(|(_, id)| id))
    .bind(first as i64 + 1)
    .fetch_all(pool)
    .await?;
    Ok(super::split_page(rows, first))
}
