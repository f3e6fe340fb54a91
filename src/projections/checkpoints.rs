//! `projection_checkpoints`: where each projection version stands, the lock
//! that lets one process run it, and what operators do about a failed one.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::Projection;
use super::rebuild::{RebuildProgress, in_progress};
use crate::eventstore::{
    Checkpoint, EventStore, ExpectedVersion, NewEvent, StoreError, StreamAppend,
};

/// The first key of every projection's advisory lock ("hrld"); the second is
/// the hash of `name@version`, so a new version can run (and rebuild) beside
/// the old one.
const LOCK_NAMESPACE: i32 = 0x6872_6c64;

/// The event an operator's skip appends to `projection-<name>`.
pub const SKIPPED_EVENT_TYPE: &str = "ProjectionEventSkipped";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StoredState {
    Running,
    Failed,
    /// A newer version has been swapped in; this one must not write again.
    Retired,
}

pub(super) struct Stored {
    pub checkpoint: Checkpoint,
    pub state: StoredState,
}

/// Takes the projection version's session lock on `conn`, if no other session has it.
pub(super) async fn try_lock(
    conn: &mut PgConnection,
    name: &str,
    version: i32,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2 || '@' || $3::int4))")
        .bind(LOCK_NAMESPACE)
        .bind(name)
        .bind(version)
        .fetch_one(conn)
        .await
}

/// A version that has no row yet while another version of the projection
/// serves its tables: it must rebuild beside them before it may write.
pub(super) async fn needs_rebuild(
    conn: &mut PgConnection,
    name: &str,
    version: i32,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT NOT EXISTS (SELECT 1 FROM projection_checkpoints WHERE name = $1 AND version = $2) \
            AND EXISTS (SELECT 1 FROM projection_checkpoints WHERE name = $1 AND version <> $2 \
                        AND state <> 'retired')",
    )
    .bind(name)
    .bind(version)
    .fetch_one(conn)
    .await
}

pub(super) async fn ensure(
    conn: &mut PgConnection,
    name: &str,
    version: i32,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO projection_checkpoints (name, version) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(name)
    .bind(version)
    .execute(conn)
    .await?;
    Ok(())
}

pub(super) async fn load(
    conn: &mut PgConnection,
    name: &str,
    version: i32,
) -> Result<Stored, sqlx::Error> {
    let (transaction_id, global_position, state): (i64, i64, String) = sqlx::query_as(
        "SELECT transaction_id, global_position, state FROM projection_checkpoints \
         WHERE name = $1 AND version = $2",
    )
    .bind(name)
    .bind(version)
    .fetch_one(conn)
    .await?;
    Ok(Stored {
        checkpoint: Checkpoint {
            transaction_id,
            global_position,
        },
        state: match state.as_str() {
            "failed" => StoredState::Failed,
            "retired" => StoredState::Retired,
            _ => StoredState::Running,
        },
    })
}

/// Moves the checkpoint from `from` to `to`, only if it still is at `from`
/// and running: otherwise someone else changed it and the batch must not commit.
pub(super) async fn advance(
    conn: &mut PgConnection,
    name: &str,
    version: i32,
    from: Checkpoint,
    to: Checkpoint,
    events: usize,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE projection_checkpoints \
         SET transaction_id = $5, global_position = $6, events_processed = events_processed + $7, \
             updated_at = now() \
         WHERE name = $1 AND version = $2 AND transaction_id = $3 AND global_position = $4 \
           AND state = 'running'",
    )
    .bind(name)
    .bind(version)
    .bind(from.transaction_id)
    .bind(from.global_position)
    .bind(to.transaction_id)
    .bind(to.global_position)
    .bind(events as i64)
    .execute(conn)
    .await?;
    Ok(updated.rows_affected() == 1)
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn mark_failed(
    conn: &mut PgConnection,
    name: &str,
    version: i32,
    from: Checkpoint,
    to: Checkpoint,
    events: usize,
    position: i64,
    error: &str,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE projection_checkpoints \
         SET transaction_id = $5, global_position = $6, events_processed = events_processed + $7, \
             state = 'failed', failed_position = $8, error = $9, updated_at = now() \
         WHERE name = $1 AND version = $2 AND transaction_id = $3 AND global_position = $4 \
           AND state = 'running'",
    )
    .bind(name)
    .bind(version)
    .bind(from.transaction_id)
    .bind(from.global_position)
    .bind(to.transaction_id)
    .bind(to.global_position)
    .bind(events as i64)
    .bind(position)
    .bind(error)
    .execute(conn)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// What a projection version is doing, across every process: the checkpoint
/// row's state together with who holds its locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Activity {
    /// A process holds the projection's lock and applies events.
    Running,
    /// No process runs it now: it waits for one with the projections role.
    Standby,
    /// A process fills its tables again beside the serving ones (see `rebuild`).
    Rebuilding,
    /// Stopped at an event until an operator retries or skips it.
    Failed,
    /// A newer version replaced it.
    Retired,
}

/// One row of `herald projections list` and of the GraphQL `projections` query.
#[derive(Debug, Clone, Serialize)]
pub struct ProjectionStatus {
    pub name: String,
    pub version: i32,
    /// The checkpoint row's: `running`, `failed`, `retired` (a newer version
    /// replaced it), or `not started` for a known projection without a row.
    pub state: String,
    pub activity: Activity,
    pub checkpoint: Checkpoint,
    /// Events the projection reads that lie after its checkpoint.
    pub lag_events: i64,
    /// Age of the oldest of those events.
    pub lag_seconds: f64,
    pub error: Option<String>,
    pub failed_position: Option<i64>,
    /// The tenant of the event at `failed_position`: whose data the error may show.
    pub failed_tenant_id: Option<String>,
    pub events_processed: i64,
    pub updated_at: Option<DateTime<Utc>>,
    /// The backend that holds the projection's lock, if a process runs it.
    pub holder_pid: Option<i32>,
    /// The rebuild of this version under way in some process.
    pub rebuild: Option<RebuildProgress>,
}

impl ProjectionStatus {
    fn activity(state: &str, holder: Option<i32>, rebuilding: bool) -> Activity {
        match state {
            "retired" => Activity::Retired,
            _ if rebuilding => Activity::Rebuilding,
            "failed" => Activity::Failed,
            _ if holder.is_some() => Activity::Running,
            _ => Activity::Standby,
        }
    }
}

type StatusRow = (
    String,
    i32,
    String,
    i64,
    i64,
    Option<String>,
    Option<i64>,
    Option<String>,
    i64,
    DateTime<Utc>,
);

/// Every checkpoint row, and the known projections that have none yet.
pub async fn statuses(
    pool: &PgPool,
    known: &[Arc<dyn Projection>],
) -> Result<Vec<ProjectionStatus>, sqlx::Error> {
    // Rebuilds first: one that ends after this read has committed its
    // checkpoint before releasing its lock, so the rows read next show it
    // either rebuilding or swapped in, never as it was before.
    let mut rebuilds = Vec::with_capacity(known.len());
    for projection in known {
        if let Some(rebuild) = in_progress(pool, projection.name()).await? {
            rebuilds.push((projection.name(), rebuild));
        }
    }
    let rebuild_of = |name: &str, version: i32| {
        rebuilds
            .iter()
            .find(|(n, r)| *n == name && r.version == version)
            .map(|(_, r)| r.clone())
    };
    let rows: Vec<StatusRow> = sqlx::query_as(
        "SELECT c.name, c.version, c.state, c.transaction_id, c.global_position, c.error, \
                c.failed_position, e.tenant_id, c.events_processed, c.updated_at \
         FROM projection_checkpoints c \
         LEFT JOIN events e ON e.global_position = c.failed_position \
         ORDER BY c.name, c.version",
    )
    .fetch_all(pool)
    .await?;
    let mut statuses = Vec::with_capacity(rows.len());
    for (
        name,
        version,
        state,
        transaction_id,
        global_position,
        error,
        failed_position,
        failed_tenant_id,
        processed,
        updated_at,
    ) in rows
    {
        let checkpoint = Checkpoint {
            transaction_id,
            global_position,
        };
        let types = known
            .iter()
            .find(|p| p.name() == name)
            .and_then(|p| p.filter().event_types);
        let (lag_events, lag_seconds) = lag(pool, checkpoint, types.as_deref()).await?;
        let holder_pid = holder(pool, &name, version).await?;
        let rebuild = rebuild_of(&name, version).filter(|_| state != "retired");
        statuses.push(ProjectionStatus {
            activity: ProjectionStatus::activity(&state, holder_pid, rebuild.is_some()),
            holder_pid,
            rebuild,
            name,
            version,
            state,
            checkpoint,
            lag_events,
            lag_seconds,
            error,
            failed_position,
            failed_tenant_id,
            events_processed: processed,
            updated_at: Some(updated_at),
        });
    }
    for projection in known {
        if !statuses
            .iter()
            .any(|s| s.name == projection.name() && s.version == projection.version())
        {
            let types = projection.filter().event_types;
            let (lag_events, lag_seconds) = lag(pool, Checkpoint::ORIGIN, types.as_deref()).await?;
            let holder_pid = holder(pool, projection.name(), projection.version()).await?;
            // A new version's first run rebuilds before its row exists.
            let rebuild = rebuild_of(projection.name(), projection.version());
            statuses.push(ProjectionStatus {
                name: projection.name().to_owned(),
                version: projection.version(),
                state: "not started".into(),
                activity: ProjectionStatus::activity("not started", holder_pid, rebuild.is_some()),
                checkpoint: Checkpoint::ORIGIN,
                lag_events,
                lag_seconds,
                error: None,
                failed_position: None,
                failed_tenant_id: None,
                events_processed: 0,
                updated_at: None,
                holder_pid,
                rebuild,
            });
        }
    }
    Ok(statuses)
}

async fn lag(
    pool: &PgPool,
    after: Checkpoint,
    event_types: Option<&[String]>,
) -> Result<(i64, f64), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*), coalesce(extract(epoch FROM now() - min(recorded_at)), 0)::float8 \
         FROM events \
         WHERE (transaction_id, global_position) > ($1::int8::text::xid8, $2) \
           AND ($3::text[] IS NULL OR event_type = ANY($3))",
    )
    .bind(after.transaction_id)
    .bind(after.global_position)
    .bind(event_types)
    .fetch_one(pool)
    .await
}

/// The backend holding the projection version's lock: the process running it.
pub async fn holder(pool: &PgPool, name: &str, version: i32) -> Result<Option<i32>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_locks \
         WHERE locktype = 'advisory' AND granted AND objsubid = 2 \
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
           AND classid = $1::int4::oid AND objid = hashtext($2 || '@' || $3::int4)::oid \
         LIMIT 1",
    )
    .bind(LOCK_NAMESPACE)
    .bind(name)
    .bind(version)
    .fetch_optional(pool)
    .await
}

/// Clears a failed projection so its runner applies the failed event again
/// (within a second or so). Returns how many versions were failed.
pub async fn retry(pool: &PgPool, name: &str) -> Result<u64, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE projection_checkpoints \
         SET state = 'running', error = NULL, failed_position = NULL, updated_at = now() \
         WHERE name = $1 AND state = 'failed'",
    )
    .bind(name)
    .execute(pool)
    .await?;
    Ok(updated.rows_affected())
}

#[derive(Debug, thiserror::Error)]
pub enum SkipError {
    #[error("projection {name} is not failed at position {position}{}",
        match .failed_at { Some(p) => format!(" (it is failed at {p})"), None => String::new() })]
    NotFailedThere {
        name: String,
        position: i64,
        failed_at: Option<i64>,
    },
    #[error("a reason is required")]
    NoReason,
    /// PostgreSQL's jsonb refuses it.
    #[error("the reason must not contain NUL characters")]
    NulInReason,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// Steps a failed projection over exactly the event it failed on: records
/// `ProjectionEventSkipped` in the log (stream `projection-<name>`) and moves
/// the checkpoint onto that event, in one transaction. Returns the skip
/// event's position.
pub async fn skip(
    store: &EventStore,
    name: &str,
    position: i64,
    reason: &str,
    actor: &str,
) -> Result<i64, SkipError> {
    if reason.trim().is_empty() {
        return Err(SkipError::NoReason);
    }
    if reason.contains('\0') {
        return Err(SkipError::NulInReason);
    }
    let mut tx = store.begin().await?;
    let failed: Option<(i32, i64, i64)> = sqlx::query_as(
        "SELECT version, transaction_id, global_position FROM projection_checkpoints \
         WHERE name = $1 AND state = 'failed' AND failed_position = $2 \
         ORDER BY version LIMIT 1 FOR UPDATE",
    )
    .bind(name)
    .bind(position)
    .fetch_optional(tx.connection())
    .await?;
    let not_failed_there = |failed_at| SkipError::NotFailedThere {
        name: name.to_owned(),
        position,
        failed_at,
    };
    let Some((version, transaction_id, global_position)) = failed else {
        let failed_at: Option<i64> = sqlx::query_scalar(
            "SELECT failed_position FROM projection_checkpoints \
             WHERE name = $1 AND state = 'failed' LIMIT 1",
        )
        .bind(name)
        .fetch_optional(tx.connection())
        .await?
        .flatten();
        tx.rollback().await?;
        return Err(not_failed_there(failed_at));
    };
    let (event_transaction, tenant_id): (i64, String) = sqlx::query_as(
        "SELECT transaction_id::text::int8, tenant_id FROM events WHERE global_position = $1",
    )
    .bind(position)
    .fetch_one(tx.connection())
    .await?;
    let skipped = Checkpoint {
        transaction_id: event_transaction,
        global_position: position,
    };
    let stored = Checkpoint {
        transaction_id,
        global_position,
    };
    if skipped <= stored {
        tx.rollback().await?;
        return Err(not_failed_there(Some(position)));
    }
    let positions = tx
        .append(&[StreamAppend {
            stream_id: format!("projection-{name}"),
            expected: ExpectedVersion::Any,
            events: vec![NewEvent {
                event_id: Uuid::now_v7(),
                event_type: SKIPPED_EVENT_TYPE.into(),
                schema_version: 1,
                tenant_id,
                payload: json!({
                    "type": SKIPPED_EVENT_TYPE,
                    "name": name, "version": version, "position": position, "reason": reason,
                }),
                metadata: json!({ "actor": actor, "correlation_id": Uuid::now_v7() }),
            }],
        }])
        .await?;
    sqlx::query(
        "UPDATE projection_checkpoints \
         SET transaction_id = $3, global_position = $4, state = 'running', error = NULL, \
             failed_position = NULL, updated_at = now() \
         WHERE name = $1 AND version = $2",
    )
    .bind(name)
    .bind(version)
    .bind(skipped.transaction_id)
    .bind(skipped.global_position)
    .execute(tx.connection())
    .await?;
    tx.commit().await?;
    Ok(positions[0])
}
