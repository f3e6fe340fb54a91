//! The entity index, for replay: entity and time window to log positions, over
//! `ingested_events`, which the ingest path keeps in step. Replay reads it.

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgPool, Row};

use crate::eventstore::{Checkpoint, RecordedEvent};

/// At most this many events per page of a replay.
pub const MAX_REPLAY_PAGE: usize = 1_000;

#[derive(Debug, Clone)]
pub struct ReplayQuery {
    pub tenant_id: String,
    pub entity_type: String,
    pub entity_id: String,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// With `false`, a repeated event id is returned once, the first time it
    /// occurs in the window: a source's retries are not replayed twice.
    pub include_duplicates: bool,
    pub limit: usize,
    /// Resume strictly after this point of the log's read order.
    pub after: Checkpoint,
}

#[derive(Debug, Clone)]
pub struct ReplayedEvent {
    pub event: RecordedEvent,
    pub duplicate: bool,
}

#[derive(Debug, Clone)]
pub struct ReplayPage {
    pub events: Vec<ReplayedEvent>,
    /// Where the next page starts, when there is one.
    pub next: Option<Checkpoint>,
}

const REPLAY: &str = r#"
SELECT e.global_position, e.transaction_id::text::int8 AS transaction_id, e.stream_id,
       e.stream_version::int8 AS stream_version, e.event_id, e.event_type, e.schema_version,
       e.tenant_id, e.payload, e.metadata, e.recorded_at, i.duplicate
FROM ingested_events i
JOIN events e ON e.global_position = i.global_position
WHERE i.tenant_id = $1 AND i.entity_type = $2 AND i.entity_id = $3
  AND ($4::timestamptz IS NULL OR i.occurred_at >= $4)
  AND ($5::timestamptz IS NULL OR i.occurred_at < $5)
  AND ($6 OR NOT EXISTS (
        SELECT 1 FROM ingested_events j
        WHERE j.tenant_id = i.tenant_id AND j.entity_type = i.entity_type AND j.entity_id = i.entity_id
          AND j.source = i.source AND j.event_id = i.event_id
          AND ($4::timestamptz IS NULL OR j.occurred_at >= $4)
          AND ($5::timestamptz IS NULL OR j.occurred_at < $5)
          AND j.global_position < i.global_position))
  AND (e.transaction_id, e.global_position) > ($7::int8::text::xid8, $8)
  AND e.transaction_id < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY e.transaction_id, e.global_position
LIMIT $9
"#;

/// One page of an entity's events in log order.
pub async fn replay(pool: &PgPool, query: &ReplayQuery) -> Result<ReplayPage, sqlx::Error> {
    let limit = query.limit.clamp(1, MAX_REPLAY_PAGE);
    let rows = sqlx::query(REPLAY)
        .bind(&query.tenant_id)
        .bind(&query.entity_type)
        .bind(&query.entity_id)
        .bind(query.from)
        .bind(query.to)
        .bind(query.include_duplicates)
        .bind(query.after.transaction_id)
        .bind(query.after.global_position)
        .bind(limit as i64 + 1)
        .fetch_all(pool)
        .await?;
    let more = rows.len() > limit;
    let events = rows
        .iter()
        .take(limit)
        .map(|row| {
            Ok(ReplayedEvent {
                duplicate: row.try_get("duplicate")?,
                event: RecordedEvent::from_row(row)?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let next = if more {
        events.last().map(|e| e.event.checkpoint())
    } else {
        None
    };
    Ok(ReplayPage { events, next })
}

/// A tenant's events with positions in `from..=to`, in log order.
pub async fn by_positions(
    pool: &PgPool,
    tenant_id: &str,
    from: i64,
    to: i64,
    limit: usize,
) -> Result<Vec<RecordedEvent>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT global_position, transaction_id::text::int8 AS transaction_id, stream_id, \
                stream_version::int8 AS stream_version, event_id, event_type, schema_version, \
                tenant_id, payload, metadata, recorded_at \
         FROM events WHERE tenant_id = $1 AND global_position BETWEEN $2 AND $3 \
           AND transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
         ORDER BY events.transaction_id, events.global_position LIMIT $4",
    )
    .bind(tenant_id)
    .bind(from)
    .bind(to)
    .bind(limit as i64)
    .fetch_all(pool)
    .await?;
    rows.iter().map(RecordedEvent::from_row).collect()
}
