//! `notification_status`: each notification's current status, for listing and
//! filtering. Kept in step by the command side in the append's transaction.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::NotificationState;
use crate::domain::values::TenantId;

pub async fn upsert(
    conn: &mut PgConnection,
    state: &NotificationState,
    version: i64,
) -> Result<(), sqlx::Error> {
    let request = &state.request;
    let channels: Vec<&str> = request.channels.iter().map(|c| c.as_str()).collect();
    let tags: Vec<&str> = request.tags.iter().map(|t| t.as_str()).collect();
    sqlx::query(
        "INSERT INTO notification_status (notification_id, tenant_id, status, priority, channels, recipient_id, \
             category, tags, created_at, updated_at, stream_version) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now(), $10) \
         ON CONFLICT (notification_id) DO UPDATE \
             SET status = EXCLUDED.status, updated_at = now(), stream_version = EXCLUDED.stream_version \
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
    .execute(conn)
    .await?;
    Ok(())
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
