//! The projection runner: follows the log for one projection and applies each
//! batch of events together with the checkpoint in one transaction.
//!
//! One process at a time: the runner takes a session-level advisory lock on a
//! connection of its own and does every write on that same connection. When
//! the process dies, its connection closes, the lock is released and a
//! standby takes over from the checkpoint; and a runner whose connection is
//! gone cannot write, so two runners never apply the same batch.
//!
//! A handler that refuses an event stops the projection: the events before it
//! are applied, the checkpoint stops just before it, and the row says
//! `failed` with the position and the error until an operator retries or
//! skips (see `checkpoints`).
//!
//! Each version has its own lock and checkpoint row. A version that finds
//! another version serving the tables first rebuilds beside it (see
//! `rebuild`); the swap retires the old version's row, and its runners, which
//! may be old binaries in other processes, stop writing at their next batch.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use sqlx::{Connection, PgConnection};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::checkpoints::{self, Stored, StoredState};
use super::rebuild;
use super::{Projection, ProjectionError};
use crate::eventstore::{Checkpoint, EventStore, RecordedEvent, StoreError};

/// After a failed rebuild: long enough not to refold the log in a loop.
const REBUILD_RETRY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct RunnerOptions {
    /// Events applied in one transaction, about (a lingering batch may take
    /// one more ready chunk).
    pub batch_size: usize,
    /// How often a standby tries for the lock, and a failed projection looks
    /// for an operator's retry or skip.
    pub standby_retry: Duration,
    /// The wait after a lost connection or another error that is not the event's.
    pub error_backoff: Duration,
    /// After a batch smaller than `batch_size`, how long to let more events
    /// gather before applying: under a steady stream of small appends, one
    /// transaction per few events would cost every projection a commit each
    /// time. The read model lags by at most this much more.
    pub linger: Duration,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        RunnerOptions {
            batch_size: 500,
            standby_retry: Duration::from_secs(1),
            error_backoff: Duration::from_secs(1),
            linger: Duration::from_millis(50),
        }
    }
}

/// What a runner is doing, as this process sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunnerState {
    /// Another process holds the projection's lock (or this one is connecting).
    Standby,
    /// Holds the lock and applies events.
    Running,
    /// Holds the lock; the projection is stopped at a failed event.
    Failed,
    /// A new version filling its tables from the start of the log beside the
    /// serving version's, to swap them in when caught up.
    Rebuilding,
    /// A newer version has replaced this one; it writes nothing.
    Retired,
    /// Shut down.
    Stopped,
}

pub struct RunnerHandle {
    pub state: watch::Receiver<RunnerState>,
    pub task: JoinHandle<()>,
}

/// Starts every projection of [`super::all`]; the task ends when all runners
/// have stopped after `shutdown`.
pub fn spawn_all(store: EventStore, shutdown: CancellationToken) -> JoinHandle<()> {
    let runners: Vec<RunnerHandle> = super::all()
        .into_iter()
        .map(|projection| {
            crate::telemetry::metrics::zero_projection(projection.name());
            spawn(
                store.clone(),
                projection,
                RunnerOptions::default(),
                shutdown.clone(),
            )
        })
        .collect();
    tokio::spawn(async move {
        for runner in runners {
            if let Err(error) = runner.task.await {
                tracing::error!(%error, "a projection runner panicked");
            }
        }
    })
}

/// Runs one projection until `shutdown`: standing by while another process
/// holds it, applying batches while this one does. On shutdown the batch in
/// hand is finished (or rolled back) before the lock is released.
pub fn spawn(
    store: EventStore,
    projection: Arc<dyn Projection>,
    options: RunnerOptions,
    shutdown: CancellationToken,
) -> RunnerHandle {
    let (state, receiver) = watch::channel(RunnerState::Standby);
    let task = tokio::spawn(async move {
        let runner = Runner {
            store,
            projection,
            options,
            shutdown,
            state,
        };
        runner.run().await;
    });
    RunnerHandle {
        state: receiver,
        task,
    }
}

struct Runner {
    store: EventStore,
    projection: Arc<dyn Projection>,
    options: RunnerOptions,
    shutdown: CancellationToken,
    state: watch::Sender<RunnerState>,
}

#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Projection(#[from] ProjectionError),
}

/// How a batch ended.
enum Applied {
    /// Committed; the checkpoint is now this.
    Advanced(Checkpoint),
    /// The checkpoint row changed under us (an operator, or the projection
    /// failed): read it again.
    Reload,
}

impl Runner {
    fn name(&self) -> &str {
        self.projection.name()
    }

    fn set_state(&self, state: RunnerState) {
        self.state.send_if_modified(|current| {
            let changed = *current != state;
            *current = state;
            changed
        });
    }

    async fn run(self) {
        while !self.shutdown.is_cancelled() {
            match self.lead().await {
                Ok(()) => break,
                Err(error) => {
                    tracing::warn!(projection = self.name(), %error, retry_in = ?self.options.error_backoff,
                        "projection runner lost its connection or hit an error; standing by");
                    self.set_state(RunnerState::Standby);
                    tokio::select! {
                        _ = self.shutdown.cancelled() => break,
                        _ = tokio::time::sleep(self.options.error_backoff) => {}
                    }
                }
            }
        }
        self.set_state(RunnerState::Stopped);
    }

    /// Connects, waits for the lock, then follows the log. `Ok` means shut down.
    async fn lead(&self) -> Result<(), RunError> {
        let options = (*self.store.pool().connect_options())
            .clone()
            .application_name(&format!("herald projection {}", self.name()));
        let mut conn = PgConnection::connect_with(&options).await?;
        let result = self.lead_on(&mut conn).await;
        if result.is_ok() {
            // Released before this returns, so a standby never waits on a
            // session that is still going away.
            let _ = sqlx::query("SELECT pg_advisory_unlock_all()")
                .execute(&mut conn)
                .await;
        }
        // Ends the session, which releases the lock; a broken connection just drops.
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.close()).await;
        result
    }

    async fn lead_on(&self, conn: &mut PgConnection) -> Result<(), RunError> {
        loop {
            if checkpoints::try_lock(conn, self.name(), self.projection.version()).await? {
                break;
            }
            self.set_state(RunnerState::Standby);
            tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(self.options.standby_retry) => {}
            }
        }
        let version = self.projection.version();
        tracing::info!(
            projection = self.name(),
            version,
            "this process runs the projection"
        );
        while checkpoints::needs_rebuild(conn, self.name(), version).await? {
            if self.rebuild().await {
                return Ok(());
            }
        }
        checkpoints::ensure(conn, self.name(), version).await?;
        loop {
            let stored = checkpoints::load(conn, self.name(), version).await?;
            let idle = match stored.state {
                StoredState::Running => None,
                StoredState::Failed => Some(RunnerState::Failed),
                StoredState::Retired => Some(RunnerState::Retired),
            };
            if let Some(idle) = idle {
                self.set_state(idle);
                tokio::select! {
                    _ = self.shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(self.options.standby_retry) => continue,
                }
            }
            self.set_state(RunnerState::Running);
            if self.follow(conn, stored).await? {
                return Ok(());
            }
        }
    }

    /// A new version's first run: fill shadow tables beside the serving
    /// version's and swap them in. A rebuild that fails is tried again from
    /// the start a minute later. `true` on shutdown.
    async fn rebuild(&self) -> bool {
        self.set_state(RunnerState::Rebuilding);
        let name = self.name();
        let mut last_report = std::time::Instant::now();
        let rebuilt = rebuild::rebuild(&self.store, self.projection.as_ref(), |progress| {
            if last_report.elapsed() >= Duration::from_secs(10) {
                last_report = std::time::Instant::now();
                tracing::info!(
                    projection = name,
                    events = progress.events,
                    total = progress.total,
                    events_per_second = progress.events_per_second(),
                    "rebuilding beside the serving version"
                );
            }
        });
        let rebuilt = tokio::select! {
            _ = self.shutdown.cancelled() => return true,
            rebuilt = rebuilt => rebuilt,
        };
        match rebuilt {
            Ok(done) => {
                tracing::info!(
                    projection = name,
                    version = self.projection.version(),
                    events = done.events,
                    seconds = done.elapsed.as_secs_f64(),
                    "rebuilt and swapped in"
                );
                false
            }
            Err(error) => {
                tracing::error!(projection = name, %error, "rebuilding the new version failed; trying again in a minute");
                tokio::select! {
                    _ = self.shutdown.cancelled() => true,
                    _ = tokio::time::sleep(REBUILD_RETRY) => false,
                }
            }
        }
    }

    /// Applies batches from the stored checkpoint on. `Ok(true)` on shutdown,
    /// `Ok(false)` when the checkpoint row must be read again.
    async fn follow(&self, conn: &mut PgConnection, stored: Stored) -> Result<bool, RunError> {
        let mut checkpoint = stored.checkpoint;
        let mut events = self
            .store
            .subscribe(
                format!("projection-{}", self.name()),
                checkpoint,
                self.projection.filter(),
            )
            .ready_chunks(self.options.batch_size);
        loop {
            let batch = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return Ok(true),
                batch = events.next() => batch,
            };
            let Some(batch) = batch else {
                return Err(StoreError::Database(sqlx::Error::PoolClosed).into());
            };
            let mut batch = batch.into_iter().collect::<Result<Vec<_>, _>>()?;
            if batch.len() < self.options.batch_size && !self.options.linger.is_zero() {
                tokio::time::sleep(self.options.linger).await;
                while batch.len() < self.options.batch_size {
                    let Some(Some(more)) = events.next().now_or_never() else {
                        break;
                    };
                    batch.extend(more.into_iter().collect::<Result<Vec<_>, _>>()?);
                }
            }
            match self.apply(conn, checkpoint, &batch).await? {
                Applied::Advanced(next) => checkpoint = next,
                Applied::Reload => return Ok(false),
            }
            // The batch is committed; shutting down loses nothing.
            if self.shutdown.is_cancelled() {
                return Ok(true);
            }
        }
    }

    /// One transaction: the whole batch, then the checkpoint. A batch the
    /// handler refuses is tried again event by event to find the event at fault.
    async fn apply(
        &self,
        conn: &mut PgConnection,
        from: Checkpoint,
        batch: &[RecordedEvent],
    ) -> Result<Applied, RunError> {
        if batch.is_empty() {
            return Ok(Applied::Advanced(from));
        }
        let started = std::time::Instant::now();
        let mut tx = conn.begin().await?;
        if let Err(error) = self.handle(&mut tx, batch).await {
            if error.is_transient() {
                return Err(error.into());
            }
            tx.rollback().await?;
            return self.one_by_one(conn, from, batch).await;
        }
        self.commit(tx, from, batch, started).await
    }

    /// Moves the checkpoint past `batch` and commits what the handler wrote.
    async fn commit(
        &self,
        mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
        from: Checkpoint,
        batch: &[RecordedEvent],
        started: std::time::Instant,
    ) -> Result<Applied, RunError> {
        let to = batch.last().map_or(from, RecordedEvent::checkpoint);
        let saved = checkpoints::advance(
            &mut tx,
            self.name(),
            self.projection.version(),
            from,
            to,
            batch.len(),
        )
        .await?;
        if !saved {
            tx.rollback().await?;
            return Ok(Applied::Reload);
        }
        tx.commit().await?;
        metrics::counter!("projection_events_total", "projection" => self.name().to_owned())
            .increment(batch.len() as u64);
        metrics::histogram!("projection_batch_seconds", "projection" => self.name().to_owned())
            .record(started.elapsed().as_secs_f64());
        Ok(Applied::Advanced(to))
    }

    /// After a refused batch: applies it again one event at a time, each in a
    /// savepoint, in one transaction. The events before the first refused one
    /// stay applied, the checkpoint stops right before it (where a skip can
    /// step over exactly that event) and the projection is marked failed. If
    /// every event goes through on its own, the batch commits as usual.
    async fn one_by_one(
        &self,
        conn: &mut PgConnection,
        from: Checkpoint,
        batch: &[RecordedEvent],
    ) -> Result<Applied, RunError> {
        let started = std::time::Instant::now();
        let mut tx = conn.begin().await?;
        for (index, event) in batch.iter().enumerate() {
            let mut savepoint = tx.begin().await?;
            match self
                .handle(&mut savepoint, std::slice::from_ref(event))
                .await
            {
                Ok(()) => savepoint.commit().await?,
                Err(error) if error.is_transient() => return Err(error.into()),
                Err(error) => {
                    savepoint.rollback().await?;
                    return self.fail(tx, from, &batch[..index], event, error).await;
                }
            }
        }
        self.commit(tx, from, batch, started).await
    }

    /// Calls the handler; a panic counts as the handler refusing the batch.
    async fn handle(
        &self,
        conn: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        match AssertUnwindSafe(self.projection.handle_batch(conn, events))
            .catch_unwind()
            .await
        {
            Ok(result) => result,
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a non-string panic".into());
                Err(ProjectionError::Refused(format!(
                    "the handler panicked: {message}"
                )))
            }
        }
    }

    /// Marks the projection failed at `event`, in `tx`, which holds the
    /// events `before` it applied, and commits.
    async fn fail(
        &self,
        mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
        from: Checkpoint,
        before: &[RecordedEvent],
        event: &RecordedEvent,
        error: ProjectionError,
    ) -> Result<Applied, RunError> {
        tracing::error!(projection = self.name(), position = event.global_position,
            event_type = %event.event_type, %error, "projection stopped at an event it cannot apply");
        let to = before.last().map_or(from, RecordedEvent::checkpoint);
        let saved = checkpoints::mark_failed(
            &mut tx,
            self.name(),
            self.projection.version(),
            from,
            to,
            before.len(),
            event.global_position,
            &error.to_string(),
        )
        .await?;
        if saved {
            tx.commit().await?;
            self.set_state(RunnerState::Failed);
            metrics::counter!("projection_failures_total", "projection" => self.name().to_owned())
                .increment(1);
        } else {
            tx.rollback().await?;
        }
        Ok(Applied::Reload)
    }
}
