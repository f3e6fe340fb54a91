//! The event log: append, read, subscribe. Knows nothing of notifications.
//!
//! Invariants (docs/architecture.md), each proved by tests/it/eventstore.rs:
//! optimistic concurrency, all-or-nothing batches, idempotent appends by event
//! id, and readers that never skip an event that commits late.

mod append;
mod error;
mod model;
mod read;
mod subscribe;
mod waker;

use std::sync::Arc;
use std::time::Duration;

use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use tokio_util::sync::{CancellationToken, DropGuard};

pub use error::StoreError;
pub use model::{
    Checkpoint, ExpectedVersion, NewEvent, ReadBatch, ReadFilter, RecordedEvent, StreamAppend,
};
pub use read::OldestTransaction;
pub use subscribe::Subscription;

use append::{Attempt, Columns, Diagnosis};
use waker::Waker;

#[derive(Debug, Clone)]
pub struct EventStoreOptions {
    /// How long a caught-up reader waits when no wake-up arrives.
    pub poll_interval: Duration,
    /// At most one NOTIFY to other processes per this window.
    pub notify_coalesce: Duration,
    /// A reader held back this long by an older transaction logs a warning naming it.
    pub stall_warning: Duration,
}

impl Default for EventStoreOptions {
    fn default() -> Self {
        EventStoreOptions {
            poll_interval: Duration::from_millis(500),
            notify_coalesce: Duration::from_millis(5),
            stall_warning: Duration::from_secs(10),
        }
    }
}

/// A handle to the log; cheap to clone. Background wake-up tasks stop when the
/// last clone is dropped.
#[derive(Clone)]
pub struct EventStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    waker: Waker,
    options: EventStoreOptions,
    _stop_tasks: DropGuard,
}

impl EventStore {
    pub fn new(pool: PgPool) -> EventStore {
        EventStore::with_options(pool, EventStoreOptions::default())
    }

    pub fn with_options(pool: PgPool, options: EventStoreOptions) -> EventStore {
        let stop = CancellationToken::new();
        let waker = Waker::start(pool.clone(), options.notify_coalesce, stop.clone());
        EventStore {
            inner: Arc::new(Inner {
                pool,
                waker,
                options,
                _stop_tasks: stop.drop_guard(),
            }),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// Appends a batch for one or many streams, all or nothing, and returns the
    /// global positions in batch order. Appending the same event ids again
    /// returns the original positions and writes nothing.
    pub async fn append(&self, batch: &[StreamAppend]) -> Result<Vec<i64>, StoreError> {
        let cols = Columns::parse(batch)?;
        if cols.len() == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.inner.pool.acquire().await?;
        for _ in 0..append::MAX_ATTEMPTS {
            if let Attempt::Appended(positions) = append::try_append(&mut conn, &cols).await? {
                self.inner.waker.committed();
                return Ok(positions);
            }
            match append::diagnose(&mut conn, batch, &cols).await? {
                Diagnosis::AlreadyAppended(positions) => return Ok(positions),
                Diagnosis::Failed(error) => return Err(error),
                Diagnosis::Retry => continue,
            }
        }
        Err(append::contention_error(&mut conn, batch, &cols).await)
    }

    /// Starts a transaction that can append events together with the caller's
    /// own writes. Keep it short: while it runs, it holds every reader back.
    pub async fn begin(&self) -> Result<StoreTransaction, StoreError> {
        Ok(StoreTransaction {
            tx: self.inner.pool.begin().await?,
            waker: self.inner.waker.clone(),
            appended: false,
        })
    }

    pub async fn read_stream(
        &self,
        stream_id: &str,
        from_version: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        read::read_stream(&self.inner.pool, stream_id, from_version).await
    }

    /// Changes whenever events are committed, here or (within a few
    /// milliseconds) in another process: a cue for workers to look for work.
    pub fn appended(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.waker.subscribe()
    }

    /// Several whole streams in one round trip, each in version order (the
    /// order between streams is unspecified).
    pub async fn read_streams(
        &self,
        stream_ids: &[String],
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        read::read_streams(&self.inner.pool, stream_ids).await
    }

    /// Reads up to `limit` events after `after`, in the log's read order.
    pub async fn read_all(
        &self,
        after: Checkpoint,
        limit: usize,
        filter: &ReadFilter,
    ) -> Result<ReadBatch, StoreError> {
        let mut conn = self.inner.pool.acquire().await?;
        read::read_all(&mut conn, after, limit, filter).await
    }

    /// Follows the log from `after`: every committed event once, in read order,
    /// waiting for new ones when caught up. `name` labels the reader's metrics.
    pub fn subscribe(
        &self,
        name: impl Into<String>,
        after: Checkpoint,
        filter: ReadFilter,
    ) -> Subscription {
        Subscription::new(self.clone(), name.into(), after, filter)
    }

    /// The running transaction with the oldest xid, if any: the one readers wait for.
    pub async fn oldest_transaction(&self) -> Result<Option<OldestTransaction>, StoreError> {
        read::oldest_transaction(&self.inner.pool).await
    }

    /// A checkpoint at the current horizon: a reader starting here sees only
    /// events that become readable from now on.
    pub async fn horizon(&self) -> Result<Checkpoint, StoreError> {
        let xmin: i64 =
            sqlx::query_scalar("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::int8")
                .fetch_one(&self.inner.pool)
                .await?;
        Ok(Checkpoint {
            transaction_id: xmin,
            global_position: 0,
        })
    }

    /// The checkpoint of the event at `global_position`, for readers that
    /// resume from a position they saw; `None` if there is no such event.
    pub async fn checkpoint_at(
        &self,
        global_position: i64,
    ) -> Result<Option<Checkpoint>, StoreError> {
        let transaction_id: Option<i64> = sqlx::query_scalar(
            "SELECT transaction_id::text::int8 FROM events WHERE global_position = $1",
        )
        .bind(global_position)
        .fetch_optional(&self.inner.pool)
        .await?;
        Ok(transaction_id.map(|transaction_id| Checkpoint {
            transaction_id,
            global_position,
        }))
    }
}

/// A database transaction that may append events. Commit through it so that
/// readers are woken; after any error from `append`, roll back.
pub struct StoreTransaction {
    tx: Transaction<'static, Postgres>,
    waker: Waker,
    appended: bool,
}

impl StoreTransaction {
    pub async fn append(&mut self, batch: &[StreamAppend]) -> Result<Vec<i64>, StoreError> {
        let cols = Columns::parse(batch)?;
        if cols.len() == 0 {
            return Ok(Vec::new());
        }
        for _ in 0..append::MAX_ATTEMPTS {
            match append::try_append(&mut self.tx, &cols).await? {
                Attempt::Appended(positions) => {
                    self.appended = true;
                    return Ok(positions);
                }
                // PostgreSQL has aborted the transaction; only the caller can start over.
                Attempt::Raced => return Err(StoreError::TransactionAborted),
                Attempt::Refused => {}
            }
            match append::diagnose(&mut self.tx, batch, &cols).await? {
                Diagnosis::AlreadyAppended(positions) => return Ok(positions),
                Diagnosis::Failed(error) => return Err(error),
                Diagnosis::Retry => continue,
            }
        }
        Err(append::contention_error(&mut self.tx, batch, &cols).await)
    }

    /// The transaction's connection, for the caller's own statements.
    pub fn connection(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await?;
        if self.appended {
            self.waker.committed();
        }
        Ok(())
    }

    pub async fn rollback(self) -> Result<(), StoreError> {
        Ok(self.tx.rollback().await?)
    }
}
