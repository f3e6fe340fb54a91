//! Zero-downtime rebuild: the projection's tables are filled again from the
//! start of the log in a shadow schema while the serving tables keep
//! answering and the runner keeps updating them; then, in one transaction,
//! the shadow tables replace them and the checkpoint moves to where the
//! shadow stands.
//!
//! The handlers do not know: they write unqualified table names, and the
//! rebuild's transactions put the shadow schema first on the `search_path`.
//! The swap locks the serving tables (reads and writes wait for a moment),
//! applies the last events, drops the old tables, moves the shadow ones into
//! `public` under the same index and constraint names, and sets the
//! checkpoint. The serving runner's next batch then finds the checkpoint
//! moved (its guard fails), rolls back and resumes from the new checkpoint on
//! the new tables; statements that waited for the lock look the table name up
//! again and find the new table.
//!
//! One rebuild of a projection at a time, across processes: a rebuild holds
//! an advisory lock on a session of its own, and that session's
//! `application_name` carries its progress, so every process (`herald
//! projections list`, the GraphQL `projections` query) sees who rebuilds what
//! and how far, without a table to clean up when the rebuilding process dies.
//!
//! [`reapply`] is the small sibling for idempotent projections: a range of the
//! log run through the handler again, in place (`herald replay --into`).

use std::borrow::Cow;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{Acquire, PgConnection, PgPool};

use super::{Projection, ProjectionError};
use crate::eventstore::{Checkpoint, EventStore, ReadFilter, RecordedEvent, StoreError};

/// Events per transaction while filling: large, so each batch's writes are a
/// few multi-row statements over thousands of rows.
const BATCH: usize = 10_000;
/// The first key of a rebuild's advisory lock; the second is the hash of the
/// projection's name, whatever the version.
const REBUILD_LOCK_NAMESPACE: i32 = 0x6872_6c65;
/// How a rebuild's session names itself: `herald rebuild v<version> <events>/<total>`.
const LABEL: &str = "herald rebuild v";

#[derive(Debug, Clone)]
pub struct Progress {
    /// Events read from the log so far.
    pub events: u64,
    /// Events the projection reads in the whole log when the rebuild started.
    pub total: i64,
    pub elapsed: Duration,
    /// False while filling, true once the swap is done.
    pub swapped: bool,
}

impl Progress {
    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-3)
    }

    pub fn eta(&self) -> Option<Duration> {
        let rate = self.events_per_second();
        let left = (self.total - self.events as i64).max(0) as f64;
        (rate > 0.0).then(|| Duration::from_secs_f64(left / rate))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("projection {0} has no tables to rebuild")]
    Unsupported(String),
    #[error("a rebuild of {0} is already running")]
    AlreadyRunning(String),
    #[error(
        "projection {0} is not idempotent: events run through it again would count twice; \
         rebuild it instead (herald projections rebuild {0})"
    )]
    NotIdempotent(String),
    #[error("the rebuild stopped at event {position}: {error}")]
    Failed {
        position: i64,
        error: ProjectionError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// A projection error that is not the event's: a lost connection and the like.
fn transient(error: ProjectionError) -> RebuildError {
    match error {
        ProjectionError::Database(error) => RebuildError::Database(error),
        error => RebuildError::Failed { position: 0, error },
    }
}

/// Rebuilds `projection` and swaps it in; `progress` hears after every batch.
pub async fn rebuild(
    store: &EventStore,
    projection: &dyn Projection,
    progress: impl FnMut(&Progress),
) -> Result<Progress, RebuildError> {
    start(store, projection)
        .await?
        .run(store, projection, progress)
        .await
}

/// A rebuild that holds its projection's rebuild lock and has not folded yet.
pub struct Started {
    conn: PgConnection,
    version: i32,
    total: i64,
}

/// Takes the projection's rebuild lock (or says another process has it) and
/// counts the events to fold. Apart from [`Started::run`] so that a caller
/// can answer at once and fold in the background.
pub async fn start(
    store: &EventStore,
    projection: &dyn Projection,
) -> Result<Started, RebuildError> {
    let name = projection.name();
    if projection.tables().is_empty() {
        return Err(RebuildError::Unsupported(name.to_owned()));
    }
    let version = projection.version();
    let options = (*store.pool().connect_options())
        .clone()
        .application_name(&label(version, 0, 0));
    let mut conn = <PgConnection as sqlx::Connection>::connect_with(&options).await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2))")
        .bind(REBUILD_LOCK_NAMESPACE)
        .bind(name)
        .fetch_one(&mut conn)
        .await?;
    if !locked {
        let _ = sqlx::Connection::close(conn).await;
        return Err(RebuildError::AlreadyRunning(name.to_owned()));
    }
    let total: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE ($1::text[] IS NULL OR event_type = ANY($1))",
    )
    .bind(projection.filter().event_types.as_deref())
    .fetch_one(&mut conn)
    .await?;
    show_progress(&mut conn, version, 0, total).await?;
    Ok(Started {
        conn,
        version,
        total,
    })
}

impl Started {
    /// Fills the shadow tables and swaps them in; `projection` is the one
    /// given to [`start`]. The lock goes with the session, whatever the outcome.
    pub async fn run(
        mut self,
        store: &EventStore,
        projection: &dyn Projection,
        mut progress: impl FnMut(&Progress),
    ) -> Result<Progress, RebuildError> {
        let shadow = format!("rebuild_{}", projection.name());
        let (version, total) = (self.version, self.total);
        let result = run(
            store,
            projection,
            &shadow,
            &mut self.conn,
            (version, total),
            &mut progress,
        )
        .await;
        if result.is_err() {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {} CASCADE",
                quoted(&shadow)
            )))
            .execute(&mut self.conn)
            .await;
        }
        // Ends the session: releases the rebuild lock.
        let _ = sqlx::Connection::close(self.conn).await;
        result
    }
}

fn label(version: i32, events: u64, total: i64) -> String {
    format!("{LABEL}{version} {events}/{total}")
}

async fn show_progress(
    conn: &mut PgConnection,
    version: i32,
    events: u64,
    total: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT set_config('application_name', $1, false)")
        .bind(label(version, events, total))
        .execute(conn)
        .await?;
    Ok(())
}

/// A rebuild under way in some process, as its session shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RebuildProgress {
    /// The version being rebuilt.
    pub version: i32,
    /// Events folded so far.
    pub events: i64,
    /// Events the projection reads in the whole log when the rebuild started.
    pub total: i64,
    pub started_at: DateTime<Utc>,
    /// The backend that holds the rebuild lock.
    pub pid: i32,
}

impl RebuildProgress {
    pub fn events_per_second(&self) -> f64 {
        let elapsed = (Utc::now() - self.started_at).as_seconds_f64();
        self.events as f64 / elapsed.max(1e-3)
    }

    /// Seconds left at the rate so far; unknown before the first batch.
    pub fn eta_seconds(&self) -> Option<f64> {
        let rate = self.events_per_second();
        (self.events > 0).then(|| (self.total - self.events).max(0) as f64 / rate)
    }
}

/// The rebuild of `name` under way in any process, if there is one.
pub async fn in_progress(
    pool: &PgPool,
    name: &str,
) -> Result<Option<RebuildProgress>, sqlx::Error> {
    let row: Option<(i32, Option<String>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT l.pid, a.application_name, a.backend_start \
         FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 \
           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
           AND l.classid = $1::int4::oid AND l.objid = hashtext($2)::oid \
         LIMIT 1",
    )
    .bind(REBUILD_LOCK_NAMESPACE)
    .bind(name)
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|(pid, label, started_at)| {
        let label = label?;
        let (version, counts) = label.strip_prefix(LABEL)?.split_once(' ')?;
        let (events, total) = counts.split_once('/')?;
        Some(RebuildProgress {
            version: version.parse().ok()?,
            events: events.parse().ok()?,
            total: total.parse().ok()?,
            started_at,
            pid,
        })
    }))
}

async fn run(
    store: &EventStore,
    projection: &dyn Projection,
    shadow: &str,
    conn: &mut PgConnection,
    (version, total): (i32, i64),
    progress: &mut impl FnMut(&Progress),
) -> Result<Progress, RebuildError> {
    let started = Instant::now();
    let filter = projection.filter();
    // Events an operator skipped stay skipped: the log says which.
    let skipped = skipped(store.pool(), projection.name()).await?;
    let indexes = create_shadow(conn, shadow, projection.tables()).await?;

    let mut report = Progress {
        events: 0,
        total,
        elapsed: Duration::ZERO,
        swapped: false,
    };
    let mut checkpoint = Checkpoint::ORIGIN;
    let mut applied = 0u64;
    // The next batch is read on another connection while this one is applied.
    let mut batch = store.read_all(checkpoint, BATCH, &filter).await?;
    loop {
        let fill = async {
            let mut tx = conn.begin().await?;
            let applied = apply(&mut tx, projection, shadow, &skipped, &batch.events).await?;
            tx.commit().await?;
            Ok::<_, RebuildError>(applied)
        };
        let next = if batch.caught_up {
            applied += fill.await?;
            None
        } else {
            // A task of its own, so decoding the next batch's rows takes
            // another core while this one folds.
            let reading = tokio::spawn({
                let (store, filter, after) = (store.clone(), filter.clone(), batch.next);
                async move { store.read_all(after, BATCH, &filter).await }
            });
            let filled = fill.await;
            let next = reading
                .await
                .map_err(|e| RebuildError::Database(sqlx::Error::Io(std::io::Error::other(e))));
            applied += filled?;
            Some(next??)
        };
        checkpoint = batch.next;
        report.events += batch.events.len() as u64;
        report.elapsed = started.elapsed();
        progress(&report);
        show_progress(conn, version, report.events, total).await?;
        match next {
            Some(next) => batch = next,
            None => break,
        }
    }

    for definition in indexes {
        sqlx::query(sqlx::AssertSqlSafe(definition))
            .execute(&mut *conn)
            .await?;
    }

    // The swap: the serving tables first (so a runner's batch in flight
    // finishes before, and its next one waits), then the checkpoint rows.
    let mut tx = conn.begin().await?;
    sqlx::query("SET LOCAL lock_timeout = '30s'")
        .execute(&mut *tx)
        .await?;
    let serving: Vec<String> = projection
        .tables()
        .iter()
        .map(|t| format!("public.{}", quoted(t)))
        .collect();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
        serving.join(", ")
    )))
    .execute(&mut *tx)
    .await?;
    sqlx::query("SELECT 1 FROM projection_checkpoints WHERE name = $1 FOR UPDATE")
        .bind(projection.name())
        .execute(&mut *tx)
        .await?;
    loop {
        let batch = store.read_all(checkpoint, BATCH, &filter).await?;
        applied += apply(&mut tx, projection, shadow, &skipped, &batch.events).await?;
        checkpoint = batch.next;
        report.events += batch.events.len() as u64;
        if batch.caught_up {
            break;
        }
    }
    for (table, serving) in projection.tables().iter().zip(&serving) {
        for sql in [
            format!("DROP TABLE {serving}"),
            format!(
                "ALTER TABLE {}.{} SET SCHEMA public",
                quoted(shadow),
                quoted(table)
            ),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut *tx)
                .await?;
        }
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA {}",
        quoted(shadow)
    )))
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO projection_checkpoints (name, version, transaction_id, global_position, events_processed) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (name, version) DO UPDATE \
         SET transaction_id = EXCLUDED.transaction_id, global_position = EXCLUDED.global_position, \
             events_processed = EXCLUDED.events_processed, state = 'running', error = NULL, \
             failed_position = NULL, updated_at = now()",
    )
    .bind(projection.name())
    .bind(projection.version())
    .bind(checkpoint.transaction_id)
    .bind(checkpoint.global_position)
    .bind(applied as i64)
    .execute(&mut *tx)
    .await?;
    // Runners of other versions find their rows retired at their next batch
    // (their checkpoint guard fails) and stop writing.
    sqlx::query(
        "UPDATE projection_checkpoints \
         SET state = 'retired', error = NULL, failed_position = NULL, updated_at = now() \
         WHERE name = $1 AND version <> $2 AND state <> 'retired'",
    )
    .bind(projection.name())
    .bind(projection.version())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    report.elapsed = started.elapsed();
    report.swapped = true;
    progress(&report);
    Ok(report)
}

/// Applies events with the shadow schema first on the search path, inside the
/// caller's transaction, as one batch; when the handler refuses it, one at a
/// time to name the event at fault.
async fn apply(
    conn: &mut PgConnection,
    projection: &dyn Projection,
    shadow: &str,
    skipped: &[i64],
    events: &[RecordedEvent],
) -> Result<u64, RebuildError> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SET LOCAL search_path TO {}, public",
        quoted(shadow)
    )))
    .execute(&mut *conn)
    .await?;
    let events = without_skipped(events, skipped);
    if !events.is_empty() {
        let mut savepoint = conn.begin().await?;
        match projection.handle_batch(&mut savepoint, &events).await {
            Ok(()) => savepoint.commit().await?,
            Err(error) if error.is_transient() => return Err(transient(error)),
            Err(error) => {
                savepoint.rollback().await?;
                return Err(at_fault(conn, projection, &events, error).await);
            }
        }
    }
    sqlx::query("SET LOCAL search_path TO DEFAULT")
        .execute(&mut *conn)
        .await?;
    Ok(events.len() as u64)
}

/// The positions an operator skipped for the projection, from the
/// `ProjectionEventSkipped` records of its `projection-<name>` stream.
pub async fn skipped(pool: &PgPool, name: &str) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT (payload->>'position')::int8 FROM events \
         WHERE stream_id = $1 AND event_type = $2 AND payload ? 'position'",
    )
    .bind(format!("projection-{name}"))
    .bind(super::checkpoints::SKIPPED_EVENT_TYPE)
    .fetch_all(pool)
    .await
}

fn without_skipped<'a>(events: &'a [RecordedEvent], skipped: &[i64]) -> Cow<'a, [RecordedEvent]> {
    if events.iter().any(|e| skipped.contains(&e.global_position)) {
        Cow::Owned(
            events
                .iter()
                .filter(|e| !skipped.contains(&e.global_position))
                .cloned()
                .collect(),
        )
    } else {
        Cow::Borrowed(events)
    }
}

/// Up to `limit` events with positions in `from..=to` that `filter` selects,
/// after `after` in the log's read order, only committed ones (below the
/// snapshot's xmin, like every reader): a page of `herald replay --into`.
pub async fn in_positions(
    pool: &PgPool,
    (from, to): (i64, i64),
    filter: &ReadFilter,
    after: Checkpoint,
    limit: usize,
) -> Result<Vec<RecordedEvent>, sqlx::Error> {
    sqlx::query_as(
        "SELECT global_position, transaction_id::text::int8 AS transaction_id, stream_id, \
                stream_version::int8 AS stream_version, event_id, event_type, schema_version, \
                tenant_id, payload, metadata, recorded_at \
         FROM events \
         WHERE global_position BETWEEN $1 AND $2 \
           AND (transaction_id, global_position) > ($3::int8::text::xid8, $4) \
           AND transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
           AND ($5::text IS NULL OR tenant_id = $5) \
           AND ($6::text[] IS NULL OR event_type = ANY($6)) \
         ORDER BY events.transaction_id, events.global_position LIMIT $7",
    )
    .bind(from)
    .bind(to)
    .bind(after.transaction_id)
    .bind(after.global_position)
    .bind(filter.tenant_id.as_deref())
    .bind(filter.event_types.as_deref())
    .bind(limit as i64)
    .fetch_all(pool)
    .await
}

/// Runs `events` (in log order) through an idempotent projection's handler
/// again, on the serving tables, in one transaction, beside the runner: the
/// handler's guards make whichever write comes second change nothing. Events
/// an operator skipped stay skipped. Returns how many the handler got; on a
/// refused event, nothing of `events` is applied and the error names it.
pub async fn reapply(
    pool: &PgPool,
    projection: &dyn Projection,
    skipped: &[i64],
    events: &[RecordedEvent],
) -> Result<u64, RebuildError> {
    if !projection.idempotent() {
        return Err(RebuildError::NotIdempotent(projection.name().to_owned()));
    }
    let events = without_skipped(events, skipped);
    if events.is_empty() {
        return Ok(0);
    }
    let mut tx = pool.begin().await?;
    let mut savepoint = tx.begin().await?;
    match projection.handle_batch(&mut savepoint, &events).await {
        Ok(()) => savepoint.commit().await?,
        Err(error) if error.is_transient() => return Err(transient(error)),
        Err(error) => {
            savepoint.rollback().await?;
            return Err(at_fault(&mut tx, projection, &events, error).await);
        }
    }
    tx.commit().await?;
    Ok(events.len() as u64)
}

/// The first event of a refused batch that the handler refuses on its own.
async fn at_fault(
    conn: &mut PgConnection,
    projection: &dyn Projection,
    events: &[RecordedEvent],
    batch_error: ProjectionError,
) -> RebuildError {
    for event in events {
        let mut savepoint = match conn.begin().await {
            Ok(savepoint) => savepoint,
            Err(error) => return error.into(),
        };
        let result = projection
            .handle_batch(&mut savepoint, std::slice::from_ref(event))
            .await;
        let ended = match &result {
            Ok(()) => savepoint.commit().await,
            Err(_) => savepoint.rollback().await,
        };
        if let Err(error) = result {
            return if error.is_transient() {
                transient(error)
            } else {
                RebuildError::Failed {
                    position: event.global_position,
                    error,
                }
            };
        }
        if let Err(error) = ended {
            return error.into();
        }
    }
    // Refused together, applied one by one: report the batch's first event.
    RebuildError::Failed {
        position: events[0].global_position,
        error: batch_error,
    }
}

/// Empty copies of the serving tables in a fresh shadow schema, with the same
/// column defaults, checks and constraints under the same names. Returns the
/// other indexes' definitions on the shadow tables: built once the tables are
/// filled (faster than keeping them up to date row by row), before the swap,
/// so that after it nothing tells them from the tables the migrations made.
async fn create_shadow(
    conn: &mut PgConnection,
    shadow: &str,
    tables: &[&str],
) -> Result<Vec<String>, sqlx::Error> {
    let mut deferred = Vec::new();
    let schema = quoted(shadow);
    let mut tx = conn.begin().await?;
    for sql in [
        format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
        format!("CREATE SCHEMA {schema}"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut *tx)
            .await?;
    }
    for table in tables {
        let target = format!("{schema}.{}", quoted(table));
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE {target} (LIKE public.{} INCLUDING DEFAULTS INCLUDING CONSTRAINTS \
             INCLUDING GENERATED INCLUDING IDENTITY INCLUDING STORAGE INCLUDING COMMENTS)",
            quoted(table)
        )))
        .execute(&mut *tx)
        .await?;
        // Primary keys, unique and exclusion constraints, by their own names.
        let constraints: Vec<(String, String)> = sqlx::query_as(
            "SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint \
             WHERE conrelid = ('public.' || quote_ident($1))::regclass AND contype IN ('p', 'u', 'x') \
             ORDER BY conname",
        )
        .bind(table)
        .fetch_all(&mut *tx)
        .await?;
        for (name, definition) in &constraints {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "ALTER TABLE {target} ADD CONSTRAINT {} {definition}",
                quoted(name)
            )))
            .execute(&mut *tx)
            .await?;
        }
        // The other indexes, as defined, on the shadow table.
        let indexes: Vec<String> = sqlx::query_scalar(
            "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i \
             WHERE i.indrelid = ('public.' || quote_ident($1))::regclass \
               AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid) \
             ORDER BY i.indexrelid",
        )
        .bind(table)
        .fetch_all(&mut *tx)
        .await?;
        let serving = format!(" ON public.{} ", table);
        for definition in indexes {
            deferred.push(definition.replacen(&serving, &format!(" ON {target} "), 1));
        }
    }
    tx.commit().await?;
    Ok(deferred)
}

/// A double-quoted SQL identifier.
fn quoted(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}
