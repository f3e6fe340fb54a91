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
use crate::eventstore::{Checkpoint, EventStore, StoreError};

const BATCH: usize = 1000;
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
    create_shadow(conn, shadow, projection.tables()).await?;

    let mut report = Progress {
        events: 0,
        total,
        elapsed: Duration::ZERO,
        swapped: false,
    };
    let mut checkpoint = Checkpoint::ORIGIN;
    let mut applied = 0u64;
    loop {
        let batch = store.read_all(checkpoint, BATCH, &filter).await?;
        let mut tx = conn.begin().await?;
        applied += apply(&mut tx, projection, shadow, &skipped, &batch.events).await?;
        tx.commit().await?;
        checkpoint = batch.next;
        report.events += batch.events.len() as u64;
        report.elapsed = started.elapsed();
        progress(&report);
        if batch.caught_up {
            break;
        }
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
/// caller's transaction.
async fn apply(
    conn: &mut PgConnection,
    projection: &dyn Projection,
    shadow: &str,
    skipped: &[i64],
    events: &[crate::eventstore::RecordedEvent],
) -> Result<u64, RebuildError> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SET LOCAL search_path TO {}, public",
        quoted(shadow)
    )))
    .execute(&mut *conn)
    .await?;
    let mut applied = 0;
    for event in events {
        if skipped.contains(&event.global_position) {
            continue;
        }
        applied += 1;
        projection
            .handle(&mut *conn, event)
            .await
            .map_err(|error| RebuildError::Failed {
                position: event.global_position,
                error,
            })?;
    }
    sqlx::query("SET LOCAL search_path TO DEFAULT")
        .execute(&mut *conn)
        .await?;
    Ok(applied)
}

/// Empty copies of the serving tables in a fresh shadow schema, with the same
/// column defaults, checks, constraints and indexes under the same names, so
/// that after the swap nothing tells them from the tables the migrations made.
async fn create_shadow(
    conn: &mut PgConnection,
    shadow: &str,
    tables: &[&str],
) -> Result<(), sqlx::Error> {
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
            let definition = definition.replacen(&serving, &format!(" ON {target} "), 1);
            sqlx::query(sqlx::AssertSqlSafe(definition))
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await
}

/// A double-quoted SQL identifier.
fn quoted(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}
