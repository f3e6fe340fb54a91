//! Ingesting raw source events: one at a time from the API, or
//! NDJSON streams (a source's file of events) in batches from the bulk endpoint
//! and `herald ingest`.
//!
//! Each event becomes a `SourceEventIngested` on its entity's stream, and a
//! row of `ingested_events` in the same transaction. A repeated event id from
//! the same source (per tenant) is stored as a duplicate, flagged, never as a
//! second original. The unique partial index on the originals decides: a
//! transaction first reads which of its events already have an original,
//! appends with that verdict, then inserts its originals with
//! `ON CONFLICT DO NOTHING`. An insert that finds a conflict means a
//! concurrent transaction committed the same original after the read; the
//! whole batch then rolls back and runs again, and the read sees it. So
//! concurrent identical ingests produce exactly one original.

mod input;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};
use uuid::Uuid;

use super::pipeline::{envelope, in_transaction};
use super::{Actor, CommandError};
use crate::domain::values::TenantId;
use crate::domain::{FieldError, SourceEvent, SourceEventIngested};
use crate::eventstore::{EventStore, ExpectedVersion, StoreError, StoreTransaction, StreamAppend};

pub use self::input::IngestEventInput;

/// Lines appended per transaction by the bulk paths.
pub const BATCH_LINES: usize = 500;
/// A longer NDJSON line is rejected without being held in memory.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;
/// Rejected lines listed in a bulk summary; the count covers them all.
pub const MAX_REJECTED_LISTED: usize = 100;

/// A batch that lost a race is run again this often before giving up.
const MAX_ATTEMPTS: usize = 10;
/// Up to this many streams, a batch takes one advisory lock per stream, so
/// concurrent writers to one entity queue instead of racing and retrying.
/// Past it, a batch relies on retries alone: every advisory lock takes a slot
/// of PostgreSQL's shared lock table, which is sized for ~64 per connection.
const MAX_STREAM_LOCKS: usize = 64;

/// The stream of one entity's raw events. The tenant is part of it, as
/// entities of different tenants are different entities; `/` cannot occur in
/// a tenant id or an entity type, so distinct entities never share a stream.
pub fn stream_id(tenant_id: &TenantId, event: &SourceEvent) -> String {
    format!(
        "entity-{tenant_id}/{}/{}",
        event.entity_type, event.entity_id
    )
}

/// One stored source event.
#[derive(Debug, Clone, Serialize)]
pub struct Ingested {
    /// The id of the `SourceEventIngested` event in the log.
    pub event_id: Uuid,
    pub position: i64,
    /// The source had already delivered this event id to the tenant.
    pub duplicate: bool,
}

/// Validates and stores one event.
pub async fn ingest(
    store: &EventStore,
    tenant_id: &TenantId,
    input: IngestEventInput,
    actor: &Actor,
) -> Result<Ingested, CommandError> {
    let event = input.parse(Utc::now())?;
    let mut stored = store_batch(store, tenant_id, &[event], actor).await?;
    stored.pop().ok_or(CommandError::NotFound("ingested event"))
}

/// Stores validated events in one transaction, in order; returns one outcome each.
pub async fn store_batch(
    store: &EventStore,
    tenant_id: &TenantId,
    events: &[SourceEvent],
    actor: &Actor,
) -> Result<Vec<Ingested>, CommandError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result =
            in_transaction(store, |tx| Box::pin(store_in(tx, tenant_id, events, actor))).await;
        match result {
            Ok(stored) => {
                let duplicates = stored.iter().filter(|s| s.duplicate).count() as u64;
                let tenant = tenant_id.to_string();
                metrics::counter!("source_events_ingested_total", "tenant" => tenant.clone())
                    .increment(stored.len() as u64 - duplicates);
                metrics::counter!("source_events_duplicate_total", "tenant" => tenant)
                    .increment(duplicates);
                return Ok(stored);
            }
            Err(error) if attempt < MAX_ATTEMPTS && is_race(&error) => {
                tracing::debug!(%error, attempt, "an ingest batch lost a race; running it again");
                let jitter = rand::random_range(0..=5 * attempt as u64);
                tokio::time::sleep(Duration::from_millis(jitter)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// A concurrent writer won; the same batch can simply run again.
fn is_race(error: &CommandError) -> bool {
    let database = match error {
        CommandError::Store(store) if store.is_conflict() => return true,
        CommandError::Store(StoreError::Database(database)) | CommandError::Database(database) => {
            database
        }
        _ => return false,
    };
    // Deadlock detected, serialization failure.
    matches!(database, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40P01" | "40001")))
}

const LOCK_STREAMS: &str = r#"
SELECT count(pg_advisory_xact_lock(hashtext('herald.ingest.stream'), k))
FROM (SELECT DISTINCT hashtext(s) AS k FROM unnest($1::text[]) AS s ORDER BY 1) AS keys
"#;

const EXISTING_ORIGINALS: &str = r#"
SELECT source, event_id FROM ingested_events
WHERE tenant_id = $1 AND NOT duplicate
  AND (source, event_id) IN (SELECT * FROM unnest($2::text[], $3::text[]))
"#;

/// Inserts every row; returns how many originals found one already there.
const INSERT_ROWS: &str = r#"
WITH input AS (
    SELECT * FROM unnest($2::int8[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::timestamptz[], $9::bool[])
        AS i(global_position, source, event_id, entity_type, entity_id, event_type, occurred_at, duplicate)
),
originals AS (
    INSERT INTO ingested_events (global_position, tenant_id, source, event_id, entity_type, entity_id, event_type, occurred_at, duplicate)
    SELECT global_position, $1, source, event_id, entity_type, entity_id, event_type, occurred_at, false
    FROM input WHERE NOT duplicate
    ON CONFLICT (tenant_id, source, event_id) WHERE NOT duplicate DO NOTHING
    RETURNING 1
),
duplicates AS (
    INSERT INTO ingested_events (global_position, tenant_id, source, event_id, entity_type, entity_id, event_type, occurred_at, duplicate)
    SELECT global_position, $1, source, event_id, entity_type, entity_id, event_type, occurred_at, true
    FROM input WHERE duplicate
)
SELECT (SELECT count(*) FROM input WHERE NOT duplicate) - (SELECT count(*) FROM originals)
"#;

async fn store_in(
    tx: &mut StoreTransaction,
    tenant_id: &TenantId,
    events: &[SourceEvent],
    actor: &Actor,
) -> Result<Vec<Ingested>, CommandError> {
    // Each stream's events in input order; streams in a stable order.
    let mut by_stream: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (index, event) in events.iter().enumerate() {
        by_stream
            .entry(stream_id(tenant_id, event))
            .or_default()
            .push(index);
    }
    if by_stream.len() <= MAX_STREAM_LOCKS {
        let streams: Vec<&str> = by_stream.keys().map(String::as_str).collect();
        sqlx::query(LOCK_STREAMS)
            .bind(&streams)
            .execute(tx.connection())
            .await?;
    }

    let sources: Vec<&str> = events.iter().map(|e| e.source.as_str()).collect();
    let event_ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    let existing: HashSet<(String, String)> = sqlx::query_as(EXISTING_ORIGINALS)
        .bind(tenant_id.as_str())
        .bind(&sources)
        .bind(&event_ids)
        .fetch_all(tx.connection())
        .await?
        .into_iter()
        .collect();
    // Within the batch, the first occurrence is the original.
    let mut seen = HashSet::with_capacity(events.len());
    let duplicate: Vec<bool> = events
        .iter()
        .map(|e| {
            let key = (e.source.as_str(), e.event_id.as_str());
            existing.contains(&(key.0.to_owned(), key.1.to_owned())) || !seen.insert(key)
        })
        .collect();

    let mut order = Vec::with_capacity(events.len());
    let mut appends = Vec::with_capacity(by_stream.len());
    for (stream_id, indexes) in by_stream {
        let mut new_events = Vec::with_capacity(indexes.len());
        for &index in &indexes {
            let fact = SourceEventIngested {
                source_event: events[index].clone(),
                duplicate: duplicate[index],
            };
            new_events.push(envelope(&fact, tenant_id.as_str(), actor)?);
        }
        order.extend(indexes);
        appends.push(StreamAppend {
            stream_id,
            expected: ExpectedVersion::Any,
            events: new_events,
        });
    }
    let appended_ids: Vec<Uuid> = appends
        .iter()
        .flat_map(|a| a.events.iter().map(|e| e.event_id))
        .collect();
    let appended_positions = tx.append(&appends).await?;

    let mut stored: Vec<Option<Ingested>> = vec![None; events.len()];
    for ((index, event_id), position) in order.into_iter().zip(appended_ids).zip(appended_positions)
    {
        stored[index] = Some(Ingested {
            event_id,
            position,
            duplicate: duplicate[index],
        });
    }
    let stored: Vec<Ingested> = stored.into_iter().flatten().collect();
    if stored.len() != events.len() {
        return Err(CommandError::Store(StoreError::InvalidBatch(
            "the log returned fewer positions than events appended".into(),
        )));
    }

    let positions: Vec<i64> = stored.iter().map(|s| s.position).collect();
    let entity_types: Vec<&str> = events.iter().map(|e| e.entity_type.as_str()).collect();
    let entity_ids: Vec<&str> = events.iter().map(|e| e.entity_id.as_str()).collect();
    let event_types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let occurred_at: Vec<DateTime<Utc>> = events.iter().map(|e| e.occurred_at).collect();
    let lost: i64 = sqlx::query_scalar(INSERT_ROWS)
        .bind(tenant_id.as_str())
        .bind(&positions)
        .bind(&sources)
        .bind(&event_ids)
        .bind(&entity_types)
        .bind(&entity_ids)
        .bind(&event_types)
        .bind(&occurred_at)
        .bind(&duplicate)
        .fetch_one(tx.connection())
        .await?;
    if lost > 0 {
        // Another transaction committed one of these originals after our read.
        return Err(CommandError::Store(StoreError::TransactionAborted));
    }
    Ok(stored)
}

/// What a bulk ingest did: each non-blank line is accepted (stored as an
/// original), a duplicate (stored, flagged) or rejected (not stored).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BulkSummary {
    /// Non-blank lines read.
    pub lines: u64,
    pub accepted: u64,
    pub duplicates: u64,
    /// Every rejected line, whether listed or not.
    pub rejected_count: u64,
    /// The first [`MAX_REJECTED_LISTED`] rejected lines.
    pub rejected: Vec<RejectedLine>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RejectedLine {
    /// 1-based, counting blank lines too, so it matches an editor's.
    pub line: u64,
    /// `path` is the field (`occurred_at`), or empty for the whole line.
    pub errors: Vec<FieldError>,
}

/// Counters a caller can watch while a bulk ingest runs.
#[derive(Debug, Default)]
pub struct Progress {
    pub lines: AtomicU64,
    pub accepted: AtomicU64,
    pub duplicates: AtomicU64,
    pub rejected: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum BulkFailure {
    #[error("reading the input failed: {0}")]
    Read(#[from] std::io::Error),
    #[error(transparent)]
    Command(#[from] CommandError),
}

/// A bulk ingest that stopped early; the batches before it are committed.
#[derive(Debug, thiserror::Error)]
#[error("{cause}")]
pub struct BulkError {
    pub committed: BulkSummary,
    pub cause: BulkFailure,
}

/// Reads NDJSON, one event per line, and stores the valid lines in batches of
/// [`BATCH_LINES`] per transaction while the next batch is read and parsed.
/// A bad line is reported and never stops the others; lines longer than
/// [`MAX_LINE_BYTES`] are rejected without being held in memory.
pub async fn ingest_ndjson<R: AsyncBufRead + Unpin>(
    store: &EventStore,
    tenant_id: &TenantId,
    input: R,
    actor: &Actor,
    progress: &Progress,
) -> Result<BulkSummary, BulkError> {
    let (batches, mut to_store) = tokio::sync::mpsc::channel::<Vec<SourceEvent>>(2);
    let read = async move {
        let mut lines = LineReader::new(input, MAX_LINE_BYTES);
        let mut summary = BulkSummary::default();
        let mut batch = Vec::with_capacity(BATCH_LINES);
        let result = loop {
            let line = match lines.next_line().await {
                Ok(Some(line)) => line,
                Ok(None) => break Ok(()),
                Err(error) => break Err(error),
            };
            let parsed = match line.text {
                Ok(text) if text.iter().all(u8::is_ascii_whitespace) => continue,
                Ok(text) => parse_line(text, Utc::now()),
                Err(TooLong) => Err(vec![FieldError {
                    path: String::new(),
                    message: format!("the line is longer than {MAX_LINE_BYTES} bytes"),
                }]),
            };
            summary.lines += 1;
            progress.lines.fetch_add(1, Ordering::Relaxed);
            match parsed {
                Ok(event) => batch.push(event),
                Err(errors) => {
                    summary.rejected_count += 1;
                    progress.rejected.fetch_add(1, Ordering::Relaxed);
                    if summary.rejected.len() < MAX_REJECTED_LISTED {
                        summary.rejected.push(RejectedLine {
                            line: line.number,
                            errors,
                        });
                    }
                }
            }
            if batch.len() >= BATCH_LINES {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_LINES));
                if batches.send(full).await.is_err() {
                    // The writer stopped on an error; it reports it.
                    return (summary, Ok(()));
                }
            }
        };
        if !batch.is_empty() {
            let _ = batches.send(batch).await;
        }
        (summary, result)
    };
    let write = async {
        let (mut accepted, mut duplicates) = (0u64, 0u64);
        while let Some(batch) = to_store.recv().await {
            let stored = match store_batch(store, tenant_id, &batch, actor).await {
                Ok(stored) => stored,
                Err(error) => return (accepted, duplicates, Err(error)),
            };
            let dups = stored.iter().filter(|s| s.duplicate).count() as u64;
            duplicates += dups;
            accepted += stored.len() as u64 - dups;
            progress.duplicates.fetch_add(dups, Ordering::Relaxed);
            progress
                .accepted
                .fetch_add(stored.len() as u64 - dups, Ordering::Relaxed);
        }
        (accepted, duplicates, Ok(()))
    };
    let ((mut summary, read_result), (accepted, duplicates, write_result)) =
        tokio::join!(read, write);
    metrics::counter!("source_events_rejected_total", "tenant" => tenant_id.to_string())
        .increment(summary.rejected_count);
    summary.accepted = accepted;
    summary.duplicates = duplicates;
    let cause = match (write_result, read_result) {
        (Err(error), _) => BulkFailure::Command(error),
        (Ok(()), Err(error)) => BulkFailure::Read(error),
        (Ok(()), Ok(())) => return Ok(summary),
    };
    // Lines read but not stored are neither accepted nor rejected.
    summary.lines = summary.accepted + summary.duplicates + summary.rejected_count;
    Err(BulkError {
        committed: summary,
        cause,
    })
}

/// One line's JSON into an event, or every reason it cannot be one.
fn parse_line(text: &[u8], now: DateTime<Utc>) -> Result<SourceEvent, Vec<FieldError>> {
    // Serde would also read a struct from an array of its fields in order.
    if text.trim_ascii_start().first() != Some(&b'{') {
        return Err(vec![FieldError {
            path: String::new(),
            message: "each line must be one JSON object".into(),
        }]);
    }
    let mut json = serde_json::Deserializer::from_slice(text);
    let input: IngestEventInput = serde_path_to_error::deserialize(&mut json).map_err(|error| {
        // `.` is the whole line, `?` a place serde could not name (a broken key).
        let path = error.path().to_string();
        let path = if path == "." || path.contains('?') {
            String::new()
        } else {
            path
        };
        vec![FieldError {
            path,
            message: error.into_inner().to_string(),
        }]
    })?;
    json.end().map_err(|error| {
        vec![FieldError {
            path: String::new(),
            message: format!("one JSON object per line: {error}"),
        }]
    })?;
    input.parse(now).map_err(|errors| errors.errors().to_vec())
}

/// A line past the length limit; its bytes were skipped, not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLong;

pub struct Line<'a> {
    /// 1-based.
    pub number: u64,
    /// Without the `\n` (or `\r\n`).
    pub text: Result<&'a [u8], TooLong>,
}

/// Splits a byte stream into lines of at most `max_bytes`, holding no more
/// than one line (and the reader's buffer) in memory.
pub struct LineReader<R> {
    input: R,
    max_bytes: usize,
    number: u64,
    line: Vec<u8>,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    pub fn new(input: R, max_bytes: usize) -> LineReader<R> {
        LineReader {
            input,
            max_bytes,
            number: 0,
            line: Vec::new(),
        }
    }

    /// The next line, or `None` at the end. A last line without `\n` counts.
    pub async fn next_line(&mut self) -> std::io::Result<Option<Line<'_>>> {
        self.line.clear();
        let mut too_long = false;
        let mut any = false;
        loop {
            let available = self.input.fill_buf().await?;
            if available.is_empty() {
                if !any {
                    return Ok(None);
                }
                break;
            }
            any = true;
            let (chunk, end) = match available.iter().position(|&b| b == b'\n') {
                Some(newline) => (&available[..newline], Some(newline + 1)),
                None => (available, None),
            };
            if !too_long {
                if self.line.len() + chunk.len() > self.max_bytes {
                    too_long = true;
                    self.line = Vec::new();
                } else {
                    self.line.extend_from_slice(chunk);
                }
            }
            let consumed = end.unwrap_or(chunk.len());
            self.input.consume(consumed);
            if end.is_some() {
                break;
            }
        }
        self.number += 1;
        if too_long {
            return Ok(Some(Line {
                number: self.number,
                text: Err(TooLong),
            }));
        }
        if self.line.last() == Some(&b'\r') {
            self.line.pop();
        }
        Ok(Some(Line {
            number: self.number,
            text: Ok(&self.line),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(input: &[u8], max: usize) -> Vec<(u64, Result<String, TooLong>)> {
        // A tiny buffer, so lines span many reads.
        let reader = tokio::io::BufReader::with_capacity(3, input);
        let mut lines = LineReader::new(reader, max);
        let mut out = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            out.push((
                line.number,
                line.text.map(|t| String::from_utf8(t.to_vec()).unwrap()),
            ));
        }
        out
    }

    #[tokio::test]
    async fn splits_lines_across_reads_and_skips_those_too_long() {
        let got = lines(b"ab\r\n\nabcdefgh\nxyz\nlast", 5).await;
        assert_eq!(
            got,
            vec![
                (1, Ok("ab".into())),
                (2, Ok("".into())),
                (3, Err(TooLong)),
                (4, Ok("xyz".into())),
                (5, Ok("last".into())),
            ]
        );
        assert_eq!(lines(b"", 5).await, vec![]);
        assert_eq!(lines(b"one\n", 5).await, vec![(1, Ok("one".into()))]);
        assert_eq!(lines(b"12345\n", 5).await, vec![(1, Ok("12345".into()))]);
    }

    #[test]
    fn bad_lines_name_their_fields() {
        let now = Utc::now();
        let paths = |line: &str| -> Vec<String> {
            parse_line(line.as_bytes(), now)
                .unwrap_err()
                .into_iter()
                .map(|e| e.path)
                .collect()
        };
        assert_eq!(paths("{not json"), [""]);
        assert_eq!(paths("[1, 2]"), [""]);
        assert_eq!(paths("{} {}"), [""]);
        assert_eq!(paths(r#"{"occurred_at": "yesterday"}"#), ["occurred_at"]);
        assert_eq!(paths(r#"{"source": 7}"#), ["source"]);
        assert_eq!(paths(r#"{"tenant_id": "t"}"#), ["tenant_id"]);
        assert_eq!(
            paths(r#"{"source": "Bad Name", "payload": {}}"#),
            [
                "event_id",
                "source",
                "entity_type",
                "entity_id",
                "event_type",
                "occurred_at"
            ]
        );
    }
}
