//! Read models folded from the log (docs/architecture.md). Each file owns one
//! table and the queries over it; `runner` keeps them in step, one process per
//! projection, tables and checkpoint in one transaction.

pub mod analytics;
pub mod checkpoints;
pub mod dead_letters;
pub mod delivery_queue;
pub mod engagement_gauges;
pub mod entity_index;
pub mod inapp_feed;
pub mod notification_status;
pub mod rebuild;
pub mod runner;
pub mod webhook_outbox;

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use futures::future::BoxFuture;
use sqlx::PgConnection;

use crate::eventstore::{ReadFilter, RecordedEvent};

pub use checkpoints::{ProjectionStatus, SkipError};
pub use runner::{RunnerHandle, RunnerOptions, RunnerState, spawn, spawn_all};

/// Notification event types that read models name.
const REQUESTED: &str = "NotificationRequested";
const ATTEMPTED: &str = "DeliveryAttempted";
const SENT: &str = "NotificationSent";

/// A read model kept in step with the log by the runner.
///
/// `handle_batch` runs inside the runner's batch transaction on `conn`: whatever
/// it writes commits together with the checkpoint, or not at all. It gets the
/// events in log order and must leave the tables as handling them one at a
/// time would (a failing batch is tried again event by event to find the
/// event at fault, and a skipped event is never handed over). It must ignore
/// event types it does not know, and fail (not skip) on events it cannot read.
pub trait Projection: Send + Sync + 'static {
    /// Names the checkpoint row, the advisory lock and the log stream
    /// (`projection-<name>`) that records operator actions.
    fn name(&self) -> &str;
    /// A new version rebuilds from the start of the log beside the old one.
    fn version(&self) -> i32;
    /// The events `handle_batch` wants; the others are never read.
    fn filter(&self) -> ReadFilter {
        ReadFilter::default()
    }
    /// The tables in `public` that `handle_batch` writes, by unqualified name;
    /// a rebuild fills copies of them in a shadow schema that comes first on
    /// the `search_path`, then swaps them in. Empty: no rebuild.
    fn tables(&self) -> &'static [&'static str] {
        &[]
    }
    /// Handling an event again leaves the tables as handling it once did
    /// (writes guarded by stream version or position, not counters): only
    /// then may `herald replay --into` re-run a range of the log through it.
    fn idempotent(&self) -> bool {
        false
    }
    fn handle_batch<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, Result<(), ProjectionError>>;
}

/// Every projection `herald serve --roles projections` runs.
pub fn all() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(notification_status::NotificationStatusProjection),
        Arc::new(analytics::AnalyticsProjection::new()),
        Arc::new(dead_letters::DeadLettersProjection),
        Arc::new(webhook_outbox::WebhookOutboxProjection),
        Arc::new(inapp_feed::InAppFeedProjection::new()),
    ]
}

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// The stored event cannot be read into today's shape.
    #[error("event {position} cannot be read: {reason}")]
    Decode { position: i64, reason: String },
    /// The handler refuses the event.
    #[error("{0}")]
    Refused(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl ProjectionError {
    /// The stored event at `position` cannot be read, for `reason`.
    fn unreadable(position: i64, reason: impl std::fmt::Display) -> ProjectionError {
        ProjectionError::Decode {
            position,
            reason: reason.to_string(),
        }
    }

    /// Errors that say nothing about the event (a lost connection, a deadlock,
    /// a server shutting down): the batch is tried again, the projection is not
    /// marked failed.
    pub fn is_transient(&self) -> bool {
        match self {
            ProjectionError::Database(error) => is_transient(error),
            _ => false,
        }
    }
}

pub(crate) fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // Connection exceptions, transaction rollbacks (serialization, deadlock),
        // insufficient resources, operator intervention, system errors.
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            ["08", "40", "53", "57", "58"].contains(&&code[..2.min(code.len())])
        }),
        _ => false,
    }
}

/// Every event of these types, of every tenant.
fn events_of(event_types: &[&str]) -> ReadFilter {
    ReadFilter {
        event_types: Some(event_types.iter().map(|t| t.to_string()).collect()),
        ..ReadFilter::default()
    }
}

/// Every notification event, of every tenant: what the notification read models read.
fn notification_events() -> ReadFilter {
    events_of(&crate::domain::NotificationEvent::EVENT_TYPES)
}

/// A page of rows fetched with `LIMIT first + 1`: the first `first`, and
/// whether more follow.
pub(crate) fn split_page<T>(mut rows: Vec<T>, first: usize) -> (Vec<T>, bool) {
    let more = rows.len() > first;
    rows.truncate(first);
    (rows, more)
}

/// Entries in two generations of `N` each: the older is dropped when the
/// newer fills, so memory stays bounded and what is in use stays.
struct Recent<K, V, const N: usize> {
    current: HashMap<K, V>,
    older: HashMap<K, V>,
}

impl<K: Eq + Hash + Clone, V, const N: usize> Default for Recent<K, V, N> {
    fn default() -> Self {
        Recent {
            current: HashMap::new(),
            older: HashMap::new(),
        }
    }
}

impl<K: Eq + Hash + Clone, V, const N: usize> Recent<K, V, N> {
    fn entry(&mut self, key: &K, make: impl FnOnce() -> V) -> &mut V {
        if !self.current.contains_key(key) {
            let value = self.older.remove(key).unwrap_or_else(make);
            self.insert(key.clone(), value);
        }
        self.current.get_mut(key).expect("just inserted")
    }

    fn insert(&mut self, key: K, value: V) {
        if self.current.len() >= N {
            self.older = std::mem::take(&mut self.current);
        }
        self.current.insert(key, value);
    }

    fn get(&self, key: &K) -> Option<&V> {
        self.current.get(key).or_else(|| self.older.get(key))
    }

    fn take(&mut self, key: &K) -> Option<V> {
        self.current.remove(key).or_else(|| self.older.remove(key))
    }
}
