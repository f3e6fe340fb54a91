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

use std::time::{Duration, Instant};

use sqlx::{Acquire, PgConnection};

use super::{Projection, ProjectionError};
use crate::eventstore::{Checkpoint, EventStore, RecordedEvent, StoreError};

/// Events per transaction while filling: large, so each batch's writes are a
/// few multi-row statements over thousands of rows.
const BATCH: usize = 10_000;
/// The second key of a rebuild's advisory lock namespace.
const REBUILD_LOCK_NAMESPACE: i32 = 0x6872_6c65;

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
    mut progress: impl FnMut(&Progress),
) -> Result<Progress, RebuildError> {
    let name = projection.name();
    let tables = projection.tables();
    if tables.is_empty() {
        return Err(RebuildError::Unsupported(name.to_owned()));
    }
    let shadow = format!("rebuild_{name}");
    let mut conn = store.pool().acquire().await?.detach();
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2))")
        .bind(REBUILD_LOCK_NAMESPACE)
        .bind(name)
        .fetch_one(&mut conn)
        .await?;
    if !locked {
        return Err(RebuildError::AlreadyRunning(name.to_owned()));
    }
    let result = run(store, projection, &shadow, &mut conn, &mut progress).await;
    if result.is_err() {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            quoted(&shadow)
        )))
        .execute(&mut conn)
        .await;
    }
    // Ends the session: releases the rebuild lock.
    let _ = sqlx::Connection::close(conn).await;
    result
}

async fn run(
    store: &EventStore,
    projection: &dyn Projection,
    shadow: &str,
    conn: &mut PgConnection,
    progress: &mut impl FnMut(&Progress),
) -> Result<Progress, RebuildError> {
    let started = Instant::now();
    let filter = projection.filter();
    let total: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE ($1::text[] IS NULL OR event_type = ANY($1))",
    )
    .bind(filter.event_types.as_deref())
    .fetch_one(&mut *conn)
    .await?;
    // Events an operator skipped stay skipped: the log says which.
    let skipped: Vec<i64> = store
        .read_stream(&format!("projection-{}", projection.name()), 1)
        .await?
        .iter()
        .filter(|e| e.event_type == super::checkpoints::SKIPPED_EVENT_TYPE)
        .filter_map(|e| e.payload["position"].as_i64())
        .collect();
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
    let kept: Vec<RecordedEvent>;
    let events = if events.iter().any(|e| skipped.contains(&e.global_position)) {
        kept = events
            .iter()
            .filter(|e| !skipped.contains(&e.global_position))
            .cloned()
            .collect();
        &kept[..]
    } else {
        events
    };
    if !events.is_empty() {
        let mut savepoint = conn.begin().await?;
        match projection.handle_batch(&mut savepoint, events).await {
            Ok(()) => savepoint.commit().await?,
            Err(error) if error.is_transient() => return Err(transient(error)),
            Err(error) => {
                savepoint.rollback().await?;
                return Err(at_fault(conn, projection, events, error).await);
            }
        }
    }
    sqlx::query("SET LOCAL search_path TO DEFAULT")
        .execute(&mut *conn)
        .await?;
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
