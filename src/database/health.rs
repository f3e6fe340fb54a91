//! Whether PostgreSQL can be reached, as a probe on a connection of its own
//! finds it.
//!
//! The pool alone cannot tell "unreachable" from "busy": both look like a
//! wait for a connection until the acquire timeout. So the pool keeps its
//! long timeout (a busy pool's requests wait their turn, as before), and the
//! API answers 503 at once only while this probe, which never waits on the
//! pool, fails to reach the database.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::watch;

/// How often the probe asks; also about how long an outage goes unnoticed.
const PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// A database that cannot answer the probe's one-row query this fast is, for
/// a client, as good as down (a refused connection fails at once).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Ready,
    MigrationsPending,
    /// Why the last probe failed.
    Unreachable(String),
}

/// The latest probe's finding; the probe runs until every clone is dropped.
#[derive(Clone)]
pub struct DatabaseHealth {
    state: watch::Receiver<Health>,
}

impl DatabaseHealth {
    /// Probes once, then every [`PROBE_INTERVAL`] in the background.
    pub async fn start(options: PgConnectOptions) -> DatabaseHealth {
        let mut probe = Probe {
            options: options.disable_statement_logging(),
            connection: None,
        };
        let (report, state) = watch::channel(probe.check().await);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(PROBE_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    () = report.closed() => return,
                }
                let health = probe.check().await;
                report.send_if_modified(|current| {
                    if *current == health {
                        return false;
                    }
                    match &health {
                        Health::Unreachable(reason) => {
                            tracing::error!(%reason, "the database became unreachable")
                        }
                        _ => tracing::info!(?health, "the database is reachable"),
                    }
                    *current = health;
                    true
                });
            }
        });
        DatabaseHealth { state }
    }

    pub fn current(&self) -> Health {
        self.state.borrow().clone()
    }

    pub fn is_unreachable(&self) -> bool {
        matches!(*self.state.borrow(), Health::Unreachable(_))
    }

    /// Resolves once the database is unreachable (at once if it is now).
    pub async fn unreachable(&self) {
        let mut state = self.state.clone();
        if state
            .wait_for(|health| matches!(health, Health::Unreachable(_)))
            .await
            .is_err()
        {
            // The probe is gone, so no outage will ever be reported.
            std::future::pending::<()>().await;
        }
    }
}

struct Probe {
    options: PgConnectOptions,
    /// Kept between probes, so a healthy database costs one query a probe.
    connection: Option<PgConnection>,
}

impl Probe {
    async fn check(&mut self) -> Health {
        let outcome = tokio::time::timeout(PROBE_TIMEOUT, self.migrated()).await;
        match outcome {
            Ok(Ok(true)) => Health::Ready,
            Ok(Ok(false)) => Health::MigrationsPending,
            Ok(Err(error)) => {
                self.connection = None;
                Health::Unreachable(error.to_string())
            }
            Err(_) => {
                self.connection = None;
                Health::Unreachable(format!(
                    "no answer within {} s",
                    PROBE_TIMEOUT.as_secs_f64()
                ))
            }
        }
    }

    async fn migrated(&mut self) -> Result<bool, sqlx::Error> {
        let connection = match &mut self.connection {
            Some(connection) => connection,
            None => self
                .connection
                .insert(PgConnection::connect_with(&self.options).await?),
        };
        super::is_migrated(connection).await
    }
}

/// Whether `error` says the database could not be reached or went away
/// (rather than refusing this one statement): the request may be retried.
/// A pool timeout counts: after the pool's long wait, retrying later is the
/// only useful answer, whether the database is down or overloaded.
pub fn is_unreachable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // Class 08, connection exceptions; 57P01-57P03, the server shutting
        // down or not yet accepting connections.
        sqlx::Error::Database(error) => error
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
        _ => false,
    }
}
