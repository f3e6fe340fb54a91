//! Appending batches: one statement on the hot path, diagnosis only when it fails.
//!
//! The fast path is a single `INSERT ... SELECT` that checks every expected
//! version and every event id inside the statement, so an autocommit append
//! costs one round trip like a raw INSERT does. It inserts either all rows or
//! none; when it inserts none, or a concurrent writer wins a unique index race,
//! a second query finds out why (stale version, duplicate, or a race to retry).

use std::collections::HashSet;

use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::error::StoreError;
use super::model::{ExpectedVersion, StreamAppend};

/// An Any-version append can lose the race for the next version to a concurrent
/// writer; each lost race means someone else progressed, so a bound this size
/// is only reached by pathological contention.
pub(super) const MAX_ATTEMPTS: usize = 50;

/// The batch as parallel arrays, the shape `unnest` wants.
pub(super) struct Columns {
    stream_ids: Vec<String>,
    stream_offsets: Vec<i32>,
    expected: Vec<i64>,
    event_ids: Vec<Uuid>,
    event_types: Vec<String>,
    schema_versions: Vec<i16>,
    tenant_ids: Vec<String>,
    payloads: Vec<Value>,
    metadata: Vec<Value>,
    /// One entry per stream in the batch.
    streams: Vec<String>,
}

impl Columns {
    pub(super) fn len(&self) -> usize {
        self.event_ids.len()
    }

    pub(super) fn parse(batch: &[StreamAppend]) -> Result<Columns, StoreError> {
        let total = batch.iter().map(|s| s.events.len()).sum();
        let mut cols = Columns {
            stream_ids: Vec::with_capacity(total),
            stream_offsets: Vec::with_capacity(total),
            expected: Vec::with_capacity(total),
            event_ids: Vec::with_capacity(total),
            event_types: Vec::with_capacity(total),
            schema_versions: Vec::with_capacity(total),
            tenant_ids: Vec::with_capacity(total),
            payloads: Vec::with_capacity(total),
            metadata: Vec::with_capacity(total),
            streams: Vec::with_capacity(batch.len()),
        };
        let mut seen_streams = HashSet::with_capacity(batch.len());
        let mut seen_events = HashSet::with_capacity(total);
        for stream in batch {
            if stream.stream_id.is_empty() {
                return Err(StoreError::InvalidBatch("a stream id is empty".into()));
            }
            if !seen_streams.insert(stream.stream_id.as_str()) {
                return Err(StoreError::InvalidBatch(format!(
                    "stream {} appears twice in one batch; put its events in one entry",
                    stream.stream_id
                )));
            }
            let expected = match stream.expected {
                ExpectedVersion::Any => -1,
                other => match other.required() {
                    Some(v) if v >= 0 => v,
                    _ => {
                        return Err(StoreError::InvalidBatch(format!(
                            "stream {}: expected version must not be negative",
                            stream.stream_id
                        )));
                    }
                },
            };
            cols.streams.push(stream.stream_id.clone());
            for (offset, event) in stream.events.iter().enumerate() {
                if !seen_events.insert(event.event_id) {
                    return Err(StoreError::InvalidBatch(format!(
                        "event id {} appears twice in one batch",
                        event.event_id
                    )));
                }
                if event.event_type.is_empty() || event.tenant_id.is_empty() {
                    return Err(StoreError::InvalidBatch(format!(
                        "event {} needs an event type and a tenant id",
                        event.event_id
                    )));
                }
                cols.stream_ids.push(stream.stream_id.clone());
                cols.stream_offsets.push(offset as i32 + 1);
                cols.expected.push(expected);
                cols.event_ids.push(event.event_id);
                cols.event_types.push(event.event_type.clone());
                cols.schema_versions.push(event.schema_version);
                cols.tenant_ids.push(event.tenant_id.clone());
                cols.payloads.push(event.payload.clone());
                cols.metadata.push(event.metadata.clone());
            }
        }
        Ok(cols)
    }
}

/// Inserts every event or none. Versions follow each stream's head as the
/// statement sees it; the guard clauses make it insert nothing when an expected
/// version is stale or an event id is already stored.
const APPEND: &str = r#"
WITH input AS (
    SELECT *
    FROM unnest($1::text[], $2::int4[], $3::int8[], $4::uuid[], $5::text[], $6::int2[], $7::text[], $8::jsonb[], $9::jsonb[])
        WITH ORDINALITY AS i(stream_id, stream_offset, expected, event_id, event_type, schema_version, tenant_id, payload, metadata, ord)
),
heads AS (
    SELECT s.stream_id, s.expected,
           coalesce((SELECT max(e.stream_version) FROM events e WHERE e.stream_id = s.stream_id), 0) AS head
    FROM (SELECT DISTINCT stream_id, expected FROM input) s
)
INSERT INTO events (stream_id, stream_version, event_id, event_type, schema_version, tenant_id, payload, metadata)
SELECT i.stream_id, h.head + i.stream_offset, i.event_id, i.event_type, i.schema_version, i.tenant_id, i.payload, i.metadata
FROM input i
JOIN heads h ON h.stream_id = i.stream_id
WHERE NOT EXISTS (SELECT 1 FROM heads WHERE expected >= 0 AND expected <> head)
  AND NOT EXISTS (SELECT 1 FROM events e JOIN input x ON e.event_id = x.event_id)
ORDER BY i.ord
RETURNING global_position, event_id
"#;

/// The common case, one stream, without the multi-stream joins: a statement
/// PostgreSQL plans in a fraction of the time, which shows at batch size 1.
const APPEND_ONE_STREAM: &str = r#"
INSERT INTO events (stream_id, stream_version, event_id, event_type, schema_version, tenant_id, payload, metadata)
SELECT $1, h.head + i.ord, i.event_id, i.event_type, i.schema_version, i.tenant_id, i.payload, i.metadata
FROM (SELECT coalesce(max(stream_version), 0) AS head FROM events WHERE stream_id = $1) h
CROSS JOIN unnest($3::uuid[], $4::text[], $5::int2[], $6::text[], $7::jsonb[], $8::jsonb[])
    WITH ORDINALITY AS i(event_id, event_type, schema_version, tenant_id, payload, metadata, ord)
WHERE ($2::int8 < 0 OR h.head = $2)
  AND NOT EXISTS (SELECT 1 FROM events e WHERE e.event_id = ANY($3))
ORDER BY i.ord
RETURNING global_position, event_id
"#;

/// One event, scalar parameters: the shape of a raw single-row INSERT, and
/// the most frequent append of all.
const APPEND_ONE_EVENT: &str = r#"
INSERT INTO events (stream_id, stream_version, event_id, event_type, schema_version, tenant_id, payload, metadata)
SELECT $1, h.head + 1, $3, $4, $5, $6, $7, $8
FROM (SELECT coalesce(max(stream_version), 0) AS head FROM events WHERE stream_id = $1) h
WHERE ($2::int8 < 0 OR h.head = $2)
  AND NOT EXISTS (SELECT 1 FROM events e WHERE e.event_id = $3)
RETURNING global_position, event_id
"#;

/// Why the fast path inserted nothing.
pub(super) enum Diagnosis {
    /// Every event is already stored, identically: the append happened before.
    AlreadyAppended(Vec<i64>),
    Failed(StoreError),
    /// The obstacle is gone (a racing writer rolled back, or an `Any` append
    /// lost the race for a version): try again.
    Retry,
}

pub(super) enum Attempt {
    Appended(Vec<i64>),
    /// A guard clause stopped the insert; nothing was written and the
    /// connection's transaction is intact.
    Refused,
    /// A concurrent writer won a unique-index race; the statement failed.
    Raced,
}

pub(super) async fn try_append(
    conn: &mut PgConnection,
    cols: &Columns,
) -> Result<Attempt, StoreError> {
    let query = if cols.len() == 1 {
        sqlx::query_as(APPEND_ONE_EVENT)
            .bind(&cols.streams[0])
            .bind(cols.expected[0])
            .bind(cols.event_ids[0])
            .bind(&cols.event_types[0])
            .bind(cols.schema_versions[0])
            .bind(&cols.tenant_ids[0])
            .bind(&cols.payloads[0])
            .bind(&cols.metadata[0])
    } else if cols.streams.len() == 1 {
        sqlx::query_as(APPEND_ONE_STREAM)
            .bind(&cols.streams[0])
            .bind(cols.expected[0])
            .bind(&cols.event_ids)
            .bind(&cols.event_types)
            .bind(&cols.schema_versions)
            .bind(&cols.tenant_ids)
            .bind(&cols.payloads)
            .bind(&cols.metadata)
    } else {
        sqlx::query_as(APPEND)
            .bind(&cols.stream_ids)
            .bind(&cols.stream_offsets)
            .bind(&cols.expected)
            .bind(&cols.event_ids)
            .bind(&cols.event_types)
            .bind(&cols.schema_versions)
            .bind(&cols.tenant_ids)
            .bind(&cols.payloads)
            .bind(&cols.metadata)
    };
    let rows: Result<Vec<(i64, Uuid)>, sqlx::Error> = query.fetch_all(conn).await;
    match rows {
        Ok(rows) if rows.is_empty() => Ok(Attempt::Refused),
        Ok(rows) => Ok(Attempt::Appended(in_input_order(rows, &cols.event_ids))),
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("23505") => {
            Ok(Attempt::Raced)
        }
        Err(other) => Err(other.into()),
    }
}

/// RETURNING order is not promised to match the input, so match by event id.
fn in_input_order(rows: Vec<(i64, Uuid)>, event_ids: &[Uuid]) -> Vec<i64> {
    if rows.iter().map(|(_, id)| id).eq(event_ids.iter()) {
        return rows.into_iter().map(|(position, _)| position).collect();
    }
    let by_id: std::collections::HashMap<Uuid, i64> =
        rows.into_iter().map(|(p, id)| (id, p)).collect();
    event_ids.iter().map(|id| by_id[id]).collect()
}

const STORED_BY_ID: &str = r#"
SELECT e.global_position,
       (e.stream_id = i.stream_id AND e.event_type = i.event_type AND e.payload = i.payload) AS same
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::jsonb[]) WITH ORDINALITY AS i(event_id, stream_id, event_type, payload, ord)
LEFT JOIN events e ON e.event_id = i.event_id
ORDER BY i.ord
"#;

const HEADS: &str = r#"
SELECT coalesce((SELECT max(e.stream_version) FROM events e WHERE e.stream_id = s.stream_id), 0)::int8
FROM unnest($1::text[]) WITH ORDINALITY AS s(stream_id, ord)
ORDER BY s.ord
"#;

pub(super) async fn diagnose(
    conn: &mut PgConnection,
    batch: &[StreamAppend],
    cols: &Columns,
) -> Result<Diagnosis, StoreError> {
    let stored: Vec<(Option<i64>, Option<bool>)> = sqlx::query_as(STORED_BY_ID)
        .bind(&cols.event_ids)
        .bind(&cols.stream_ids)
        .bind(&cols.event_types)
        .bind(&cols.payloads)
        .fetch_all(&mut *conn)
        .await?;
    let found = stored
        .iter()
        .filter(|(position, _)| position.is_some())
        .count();
    if found > 0 {
        let differing = stored
            .iter()
            .zip(&cols.event_ids)
            .find(|((position, same), _)| position.is_none() || *same != Some(true));
        return Ok(match differing {
            None => Diagnosis::AlreadyAppended(stored.into_iter().filter_map(|(p, _)| p).collect()),
            Some((_, event_id)) => Diagnosis::Failed(StoreError::EventIdReused {
                event_id: *event_id,
            }),
        });
    }

    let heads: Vec<i64> = sqlx::query_scalar(HEADS)
        .bind(&cols.streams)
        .fetch_all(&mut *conn)
        .await?;
    for (stream, actual) in batch.iter().zip(heads) {
        if let Some(required) = stream.expected.required()
            && required != actual
        {
            return Ok(Diagnosis::Failed(StoreError::Conflict {
                stream: stream.stream_id.clone(),
                expected: stream.expected,
                actual,
            }));
        }
    }
    Ok(Diagnosis::Retry)
}

/// The error an exhausted retry loop reports: the contended stream's head.
pub(super) async fn contention_error(
    conn: &mut PgConnection,
    batch: &[StreamAppend],
    cols: &Columns,
) -> StoreError {
    let heads: Result<Vec<i64>, sqlx::Error> = sqlx::query_scalar(HEADS)
        .bind(&cols.streams)
        .fetch_all(conn)
        .await;
    match (heads, batch.first()) {
        (Ok(heads), Some(stream)) => StoreError::Conflict {
            stream: stream.stream_id.clone(),
            expected: stream.expected,
            actual: heads.first().copied().unwrap_or(0),
        },
        (Err(e), _) => e.into(),
        (Ok(_), None) => StoreError::InvalidBatch("empty batch".into()),
    }
}
