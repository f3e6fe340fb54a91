//! Reading the log: one stream by version, or everything in commit-safe order.

use sqlx::{FromRow, PgConnection, PgPool, Row, postgres::PgRow};

use super::error::StoreError;
use super::model::{Checkpoint, ReadBatch, ReadFilter, RecordedEvent};

const COLUMNS: &str = "global_position, transaction_id::text::int8 AS transaction_id, stream_id, \
     stream_version::int8 AS stream_version, event_id, event_type, schema_version, tenant_id, \
     payload, metadata, recorded_at";

/// Reads the columns of `COLUMNS` (by name), so other queries over `events` can
/// decode their rows the same way.
impl<'r> sqlx::FromRow<'r, PgRow> for RecordedEvent {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        Ok(RecordedEvent {
            global_position: row.try_get("global_position")?,
            transaction_id: row.try_get("transaction_id")?,
            stream_id: row.try_get("stream_id")?,
            stream_version: row.try_get("stream_version")?,
            event_id: row.try_get("event_id")?,
            event_type: row.try_get("event_type")?,
            schema_version: row.try_get("schema_version")?,
            tenant_id: row.try_get("tenant_id")?,
            payload: row
                .try_get::<Option<serde_json::Value>, _>("payload")?
                .unwrap_or_default(),
            metadata: row
                .try_get::<Option<serde_json::Value>, _>("metadata")?
                .unwrap_or_default(),
            recorded_at: row.try_get("recorded_at")?,
        })
    }
}

pub(super) async fn read_stream(
    pool: &PgPool,
    stream_id: &str,
    from_version: i64,
) -> Result<Vec<RecordedEvent>, StoreError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM events WHERE stream_id = $1 AND stream_version >= $2 ORDER BY events.stream_version"
    )))
    .bind(stream_id)
    .bind(from_version)
    .fetch_all(pool)
    .await?)
}

/// Every event of each named stream, grouped by stream in version order.
pub(super) async fn read_streams(
    pool: &PgPool,
    stream_ids: &[String],
) -> Result<Vec<RecordedEvent>, StoreError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM events WHERE stream_id = ANY($1) ORDER BY events.stream_id, events.stream_version"
    )))
    .bind(stream_ids)
    .fetch_all(pool)
    .await?)
}

/// Reads after `after` in `(transaction_id, global_position)` order, only below
/// the snapshot's xmin: every transaction under it has ended, so nothing can
/// commit later into the range already read.
const READ_ALL: &str = r#"
WITH horizon AS (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin)
SELECT h.xmin::text::int8 AS horizon,
       -- The newest transaction by the read-order index, not EXISTS: the
       -- planner guesses a third of the log matches and scans it all.
       COALESCE((SELECT transaction_id FROM events ORDER BY transaction_id DESC LIMIT 1) >= h.xmin, false) AS held_back,
       (SELECT max(global_position) FROM events) AS head,
       e.*
FROM horizon h
LEFT JOIN LATERAL (
    SELECT global_position, transaction_id::text::int8 AS transaction_id, stream_id,
           stream_version::int8 AS stream_version, event_id, event_type, schema_version,
           tenant_id,
           CASE WHEN $6::text[] IS NULL OR event_type = ANY($6) THEN payload END AS payload,
           CASE WHEN $6::text[] IS NULL OR event_type = ANY($6) THEN metadata END AS metadata,
           recorded_at
    FROM events
    WHERE (transaction_id, global_position) > ($1::int8::text::xid8, $2)
      AND transaction_id < h.xmin
      AND ($3::text IS NULL OR tenant_id = $3)
      AND ($4::text[] IS NULL OR event_type = ANY($4))
    -- Qualified: the bare names would sort by the int8 aliases above, which
    -- no index serves (a full sort of everything after the checkpoint).
    ORDER BY events.transaction_id, events.global_position
    LIMIT $5
) e ON true
"#;

pub(super) async fn read_all(
    conn: &mut PgConnection,
    after: Checkpoint,
    limit: usize,
    filter: &ReadFilter,
) -> Result<ReadBatch, StoreError> {
    if limit == 0 {
        return Err(StoreError::InvalidBatch(
            "read limit must be at least 1".into(),
        ));
    }
    let rows = sqlx::query(READ_ALL)
        .bind(after.transaction_id)
        .bind(after.global_position)
        .bind(filter.tenant_id.as_deref())
        .bind(filter.event_types.as_deref())
        .bind(limit as i64)
        .bind(filter.payload_types.as_deref())
        .fetch_all(conn)
        .await?;
    // The LEFT JOIN yields one row of NULL event columns when nothing is readable.
    let first = rows.first().ok_or(sqlx::Error::RowNotFound)?;
    let horizon: i64 = first.try_get("horizon")?;
    let held_back: bool = first.try_get("held_back")?;
    let head: Option<i64> = first.try_get("head")?;
    let mut events = Vec::with_capacity(rows.len());
    for row in &rows {
        if row.try_get::<Option<i64>, _>("global_position")?.is_some() {
            events.push(RecordedEvent::from_row(row)?);
        }
    }
    let caught_up = events.len() < limit;
    let next = match events.last() {
        Some(last) if !caught_up => last.checkpoint(),
        // Everything matching below the horizon has been read; anything that
        // commits from now on has a transaction id at or above it.
        _ => after.max(Checkpoint {
            transaction_id: horizon,
            global_position: 0,
        }),
    };
    Ok(ReadBatch {
        events,
        next,
        caught_up,
        held_back,
        head: head.unwrap_or(0),
    })
}

/// The transaction holding every reader back, for the warning that names it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OldestTransaction {
    pub pid: i32,
    pub database: Option<String>,
    pub age_seconds: f64,
    pub state: Option<String>,
}

pub(super) async fn oldest_transaction(
    pool: &PgPool,
) -> Result<Option<OldestTransaction>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT pid, datname AS database, \
                coalesce(extract(epoch FROM now() - xact_start), 0)::float8 AS age_seconds, state \
         FROM pg_stat_activity WHERE backend_xid IS NOT NULL \
         ORDER BY age(backend_xid) DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await?)
}
