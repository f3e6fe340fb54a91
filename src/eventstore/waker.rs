//! Wake-ups for readers. A wake-up only shortens a reader's wait; readers also
//! poll, so a lost wake-up delays and never loses an event.
//!
//! Appends in this process wake its readers directly after commit. Other
//! processes hear a `NOTIFY` that a background task sends outside the append
//! transactions, at most once per coalescing window: a `pg_notify` inside every
//! append would serialise commits (docs/architecture.md, "The event log").

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

pub(super) const CHANNEL: &str = "herald_events";

#[derive(Clone)]
pub(super) struct Waker {
    local: Arc<watch::Sender<u64>>,
    notify_others: Arc<Notify>,
}

impl Waker {
    /// Starts the NOTIFY sender and the LISTEN task; both stop when `stop` is cancelled.
    pub(super) fn start(pool: PgPool, coalesce: Duration, stop: CancellationToken) -> Waker {
        let waker = Waker {
            local: Arc::new(watch::Sender::new(0)),
            notify_others: Arc::new(Notify::new()),
        };
        tokio::spawn(send_notifications(
            pool.clone(),
            waker.notify_others.clone(),
            coalesce,
            stop.clone(),
        ));
        tokio::spawn(listen(pool, waker.local.clone(), stop));
        waker
    }

    /// Called after a commit that appended events.
    pub(super) fn committed(&self) {
        wake(&self.local);
        self.notify_others.notify_one();
    }

    pub(super) fn subscribe(&self) -> watch::Receiver<u64> {
        self.local.subscribe()
    }
}

fn wake(local: &watch::Sender<u64>) {
    local.send_modify(|generation| *generation = generation.wrapping_add(1));
}

async fn send_notifications(
    pool: PgPool,
    requests: Arc<Notify>,
    coalesce: Duration,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = requests.notified() => {}
        }
        if let Err(error) = sqlx::query("SELECT pg_notify($1, '')")
            .bind(CHANNEL)
            .execute(&pool)
            .await
        {
            tracing::debug!(%error, "could not notify other processes of new events; they will poll");
        }
        // Appends during this pause leave one stored permit, so they cost one NOTIFY in all.
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(coalesce) => {}
        }
    }
}

async fn listen(pool: PgPool, local: Arc<watch::Sender<u64>>, stop: CancellationToken) {
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::debug!(%error, "cannot LISTEN for new events yet; readers poll meanwhile");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        if let Err(error) = listener.listen(CHANNEL).await {
            tracing::debug!(%error, "LISTEN failed; readers poll meanwhile");
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
            }
        }
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                received = listener.recv() => match received {
                    Ok(_) => wake(&local),
                    Err(error) => {
                        tracing::debug!(%error, "LISTEN connection lost; reconnecting");
                        // Events may have been announced while we were away.
                        wake(&local);
                        break;
                    }
                }
            }
        }
    }
}
