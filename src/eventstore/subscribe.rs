//! Following the log as an async stream.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::Stream;

use super::error::StoreError;
use super::model::{Checkpoint, ReadFilter, RecordedEvent};
use super::{EventStore, read};

const BATCH: usize = 500;
const MAX_ERROR_BACKOFF: Duration = Duration::from_secs(5);
const STALL_WARNING_EVERY: Duration = Duration::from_secs(30);
const HELD_BACK_FIRST_RETRY: Duration = Duration::from_millis(10);

/// Every committed event after a checkpoint, once each, in read order; then
/// new ones as they commit. Database errors are retried with backoff; the
/// stream ends only when the pool is closed.
pub struct Subscription {
    events: Pin<Box<dyn Stream<Item = Result<RecordedEvent, StoreError>> + Send>>,
}

impl Subscription {
    pub(super) fn new(
        store: EventStore,
        name: String,
        after: Checkpoint,
        filter: ReadFilter,
    ) -> Subscription {
        let events = async_stream::try_stream! {
            let options = store.inner.options.clone();
            let mut wake = store.inner.waker.subscribe();
            let mut checkpoint = after;
            let mut last_position = after.global_position;
            let mut last_progress = Instant::now();
            let mut last_warning: Option<Instant> = None;
            let mut backoff = options.poll_interval;
            let mut held_back_wait = Duration::ZERO;
            loop {
                // Mark wake-ups seen before reading, so one that arrives during
                // the read still ends the wait below.
                wake.borrow_and_update();
                let batch = {
                    let read = async {
                        let mut conn = store.inner.pool.acquire().await?;
                        read::read_all(&mut conn, checkpoint, BATCH, &filter).await
                    };
                    match read.await {
                        Ok(batch) => batch,
                        Err(error) if store.inner.pool.is_closed() => Err(error)?,
                        Err(error) => {
                            tracing::warn!(reader = %name, %error, retry_in = ?backoff, "reading the event log failed");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(MAX_ERROR_BACKOFF);
                            continue;
                        }
                    }
                };
                backoff = options.poll_interval;
                if batch.next != checkpoint {
                    last_progress = Instant::now();
                }
                checkpoint = batch.next;
                if let Some(last) = batch.events.last() {
                    last_position = last.global_position;
                }
                let lag = if batch.caught_up && !batch.held_back { 0 } else { (batch.head - last_position).max(0) };
                metrics::gauge!("eventstore_head_position").set(batch.head as f64);
                metrics::gauge!("eventstore_reader_lag_events", "reader" => name.clone()).set(lag as f64);

                let caught_up = batch.caught_up;
                let held_back = batch.held_back;
                for event in batch.events {
                    yield event;
                }
                if !caught_up {
                    continue;
                }
                if held_back && last_progress.elapsed() >= options.stall_warning
                    && last_warning.is_none_or(|at| at.elapsed() >= STALL_WARNING_EVERY)
                {
                    last_warning = Some(Instant::now());
                    warn_about_stall(&store, &name, last_progress.elapsed()).await;
                }
                // Committed events wait above the horizon: no wake-up will
                // announce that the older transaction ended, so look again
                // soon, backing off while it lasts.
                let wait = if held_back {
                    held_back_wait = (held_back_wait * 2).max(HELD_BACK_FIRST_RETRY).min(options.poll_interval);
                    held_back_wait
                } else {
                    held_back_wait = Duration::ZERO;
                    options.poll_interval
                };
                let _ = tokio::time::timeout(wait, wake.changed()).await;
            }
        };
        Subscription {
            events: Box::pin(events),
        }
    }
}

async fn warn_about_stall(store: &EventStore, reader: &str, stalled_for: Duration) {
    match store.oldest_transaction().await {
        Ok(Some(oldest)) => {
            metrics::gauge!("eventstore_oldest_transaction_seconds").set(oldest.age_seconds);
            tracing::warn!(
                reader,
                stalled_for = ?stalled_for,
                backend_pid = oldest.pid,
                database = oldest.database.as_deref().unwrap_or("?"),
                transaction_age_seconds = oldest.age_seconds,
                state = oldest.state.as_deref().unwrap_or("?"),
                "a long-running transaction holds every event reader back; committed events wait until it ends"
            );
        }
        Ok(None) => tracing::warn!(
            reader,
            stalled_for = ?stalled_for,
            "event readers are held back, but no running transaction holds an xid (a prepared transaction?)"
        ),
        Err(error) => {
            tracing::warn!(reader, %error, "event readers are held back; could not find the transaction")
        }
    }
}

impl Stream for Subscription {
    type Item = Result<RecordedEvent, StoreError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.events.as_mut().poll_next(cx)
    }
}
