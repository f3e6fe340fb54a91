//! `notification_status`: each notification's current status, for listing and
//! filtering.
//!
//! Two writers keep it, both through [`write`] and both guarded by the
//! stream's version, so whichever comes first wins and the other changes
//! nothing: the command side upserts inline in the append's transaction (a
//! send is listed the moment it returns), and the projection runner folds
//! every notification event, which covers events appended without the inline
//! upsert and builds the table from nothing on a rebuild.

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{Projection, ProjectionError};
use crate::domain::values::TenantId;
use crate::domain::{Notification, NotificationEvent, NotificationState};
use crate::eventstore::{ReadFilter, RecordedEvent};

pub const NAME: &str = "notification_status";
pub const VERSION: i32 = 1;

const STREAM_PREFIX: &str = "notification-";

/// The inline path: the state after `version` events, in the append's transaction.
pub async fn upsert(
    conn: &mut PgConnection,
    state: &NotificationState,
    version: i64,
) -> Result<(), sqlx::Error> {
    write(conn, state, version, None).await
}

/// Writes the row for `state` at stream `version`, unless the row already
/// holds that version or a later one. `updated_at` defaults to the
/// transaction's start, which is the appended event's `recorded_at`.
async fn write(
    conn: &mut PgConnection,
    state: &NotificationState,
    version: i64,
    updated_at: Option<DateTime<Utc>>,
) -> Result<(), sqlx::Error> {
    let request = &state.request;
    let channels: Vec<&str> = request.channels.iter().map(|c| c.as_str()).collect();
    let tags: Vec<&str> = request.tags.iter().map(|t| t.as_str()).collect();
    sqlx::query(
        "INSERT INTO notification_status (notification_id, tenant_id, status, priority, channels, recipient_id, \
             category, tags, created_at, updated_at, stream_version) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, coalesce($11::timestamptz, now()), $10) \
         ON CONFLICT (notification_id) DO UPDATE \
             SET status = EXCLUDED.status, updated_at = EXCLUDED.updated_at, stream_version = EXCLUDED.stream_version \
             WHERE notification_status.stream_version < EXCLUDED.stream_version",
    )
    .bind(state.notification_id.as_uuid())
    .bind(state.tenant_id.as_str())
    .bind(state.status.as_str())
    .bind(request.priority.as_str())
    .bind(&channels)
    .bind(request.recipient.id.as_ref().map(|r| r.as_str()))
    .bind(request.category.as_ref().map(|c| c.as_str()))
    .bind(&tags)
    .bind(state.requested_at)
    .bind(version as i32)
    .bind(updated_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// The runner's path: folds each notification event into the row.
pub struct NotificationStatusProjection;

impl Projection for NotificationStatusProjection {
    fn name(&self) -> &str {
        NAME
    }

    fn version(&self) -> i32 {
        VERSION
    }

    fn tables(&self) -> &'static [&'static str] {
        &["notification_status"]
    }

    fn filter(&self) -> ReadFilter {
        ReadFilter {
            tenant_id: None,
            event_types: Some(
                NotificationEvent::EVENT_TYPES
                    .iter()
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
            let Some(id) = notification_id(event)? else {
                return Ok(());
            };
            let current: Option<i32> = sqlx::query_scalar(
                "SELECT stream_version FROM notification_status WHERE notification_id = $1",
            )
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
            // The inline upsert, or an earlier event of this batch, got here first.
            if current.is_some_and(|v| i64::from(v) >= event.stream_version) {
                return Ok(());
            }
            let state = state_at(conn, &event.stream_id, event.stream_version).await?;
            let Some(state) = state.state() else {
                return Err(ProjectionError::Refused(format!(
                    "stream {} has no NotificationRequested at or before version {}",
                    event.stream_id, event.stream_version
                )));
            };
            write(conn, state, event.stream_version, Some(event.recorded_at)).await?;
            Ok(())
        })
    }
}

/// The notification a notification event belongs to; `None` for other events.
pub(super) fn notification_id(event: &RecordedEvent) -> Result<Option<Uuid>, ProjectionError> {
    if !NotificationEvent::EVENT_TYPES.contains(&event.event_type.as_str()) {
        return Ok(None);
    }
    let id = event
        .stream_id
        .strip_prefix(STREAM_PREFIX)
        .and_then(|id| Uuid::parse_str(id).ok())
        .ok_or_else(|| {
            ProjectionError::Refused(format!(
                "{} at position {} is in stream {}, not a notification stream",
                event.event_type, event.global_position, event.stream_id
            ))
        })?;
    Ok(Some(id))
}

/// The notification as of `version`, folded from its stream. Every earlier
/// version has committed (each append saw the one before it), so this is
/// exact even when the log's read order puts a later version first.
pub(super) async fn state_at(
    conn: &mut PgConnection,
    stream_id: &str,
    version: i64,
) -> Result<Notification, ProjectionError> {
    let rows: Vec<(i64, String, i16, serde_json::Value)> = sqlx::query_as(
        "SELECT global_position, event_type, schema_version, payload FROM events \
         WHERE stream_id = $1 AND stream_version <= $2 ORDER BY stream_version",
    )
    .bind(stream_id)
    .bind(version as i32)
    .fetch_all(conn)
    .await?;
    let mut notification = Notification::default();
    for (position, event_type, schema_version, payload) in rows {
        let event =
            NotificationEvent::upcast(&event_type, schema_version, payload).map_err(|e| {
                ProjectionError::Decode {
                    position,
                    reason: e.to_string(),
                }
            })?;
        notification.apply(&event);
    }
    Ok(notification)
}

#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub statuses: Option<Vec<String>>,
    pub channel: Option<String>,
    pub recipient_id: Option<String>,
    pub tag: Option<String>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Row {
    pub notification_id: Uuid,
    pub status: String,
    pub priority: String,
    pub channels: Vec<String>,
    pub recipient_id: Option<String>,
    pub category: Option<String>,
    pub tags: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Newest first, strictly after the cursor (an id, which never changes), so
/// pages stay stable while notifications arrive. Fetches `first + 1` rows to
/// tell whether another page follows.
pub async fn page(
    pool: &PgPool,
    tenant_id: &TenantId,
    filter: &Filter,
    first: usize,
    after: Option<Uuid>,
) -> Result<(Vec<Row>, bool), sqlx::Error> {
    let mut rows: Vec<Row> = sqlx::query_as(
        "SELECT notification_id, status, priority, channels, recipient_id, category, tags, created_at, updated_at \
         FROM notification_status \
         WHERE tenant_id = $1 \
           AND ($2::uuid IS NULL OR notification_id < $2) \
           AND ($3::text[] IS NULL OR status = ANY($3)) \
           AND ($4::text IS NULL OR channels @> ARRAY[$4]) \
           AND ($5::text IS NULL OR recipient_id = $5) \
           AND ($6::text IS NULL OR tags @> ARRAY[$6]) \
           AND ($7::timestamptz IS NULL OR created_at >= $7) \
           AND ($8::timestamptz IS NULL OR created_at < $8) \
         ORDER BY notification_id DESC \
         LIMIT $9",
    )
    .bind(tenant_id.as_str())
    .bind(after)
    .bind(filter.statuses.as_deref())
    .bind(filter.channel.as_deref())
    .bind(filter.recipient_id.as_deref())
    .bind(filter.tag.as_deref())
    .bind(filter.created_after)
    .bind(filter.created_before)
    .bind(first as i64 + 1)
    .fetch_all(pool)
    .await?;
    let more = rows.len() > first;
    rows.truncate(first);
    Ok((rows, more))
}
