//! Live events for subscriptions: one log tailer per process fans out to every
//! subscriber through a bounded broadcast channel, so a subscriber costs no
//! query per event, and one too slow to keep up is dropped, not buffered.
//! Every subscriber sees one tenant's events only; its catch-up reads only
//! that tenant's from the log.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::broadcast;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::domain::TenantEvent;
use crate::domain::values::{ApiKeyId, TenantId};
use crate::eventstore::{Checkpoint, EventStore, ReadFilter, RecordedEvent, StoreError};

/// Events a subscriber may fall behind by before it is closed.
const CAPACITY: usize = 4096;
/// Revocations a socket may fall behind by before it looks its key up again.
const REVOCATIONS_CAPACITY: usize = 256;
const CATCH_UP_BATCH: usize = 500;

#[derive(Clone)]
pub struct LiveHub {
    inner: Arc<Inner>,
}

struct Inner {
    sender: broadcast::Sender<Arc<RecordedEvent>>,
    /// Keys revoked, as the log records them (in any process).
    revoked: broadcast::Sender<ApiKeyId>,
    /// The checkpoint of the last event broadcast; set before it is sent.
    last: Mutex<Checkpoint>,
    store: EventStore,
    /// See [`LiveHub::shared`].
    shared: Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
    _stop: DropGuard,
}

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error(
        "this subscriber fell {0} events behind and was closed; resubscribe with `after` set to the last position received"
    )]
    TooSlow(u64),
    #[error("the live event feed stopped")]
    Closed,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl LiveHub {
    /// Starts the tailer at the current horizon. Returns once the horizon is
    /// known, so every subscriber has a defined catch-up target.
    pub async fn start(store: EventStore) -> Result<LiveHub, StoreError> {
        let start = store.horizon().await?;
        let (sender, _) = broadcast::channel(CAPACITY);
        let (revoked, _) = broadcast::channel(REVOCATIONS_CAPACITY);
        let stop = CancellationToken::new();
        let inner = Arc::new(Inner {
            sender,
            revoked,
            last: Mutex::new(start),
            store: store.clone(),
            shared: Mutex::default(),
            _stop: stop.clone().drop_guard(),
        });
        tokio::spawn(tail(store, start, Arc::downgrade(&inner), stop));
        Ok(LiveHub { inner })
    }

    /// The hub's one value of type `T`, made on first use: what every
    /// subscriber of one kind works out from the events once for all of them
    /// (the in-app feed's deliveries, say) rather than each on its own.
    pub fn shared<T: Default + Send + Sync + 'static>(&self) -> Arc<T> {
        let mut shared = self.inner.shared.lock().unwrap_or_else(|p| p.into_inner());
        let value = shared
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Arc::new(T::default()));
        Arc::clone(value)
            .downcast::<T>()
            .expect("stored under its own type id")
    }

    /// API keys revoked from now on, in this process or any other: the log
    /// tells every process, so a socket needs no polling to learn of it.
    pub fn revocations(&self) -> broadcast::Receiver<ApiKeyId> {
        self.inner.revoked.subscribe()
    }

    /// `tenant`'s events after `after` (from the log, then live), or only
    /// live ones when `after` is `None`; in log order, with no gap and no
    /// duplicate where the catch-up meets the live feed.
    pub fn events(
        &self,
        tenant: &TenantId,
        after: Option<Checkpoint>,
    ) -> impl Stream<Item = Result<Arc<RecordedEvent>, LiveError>> + Send + use<> {
        // Subscribe before reading the catch-up target, so that every event
        // past the target is certain to arrive on the channel.
        let mut live = self.inner.sender.subscribe();
        let target = *self.inner.last.lock().unwrap_or_else(|p| p.into_inner());
        let store = self.inner.store.clone();
        let tenant = tenant.to_string();
        async_stream::try_stream! {
            let mut delivered = after.unwrap_or(target);
            if let Some(after) = after {
                // The database filters: other tenants' events never leave it.
                let filter = ReadFilter {
                    tenant_id: Some(tenant.clone()),
                    ..ReadFilter::default()
                };
                let mut checkpoint = after;
                while checkpoint < target {
                    let batch = store.read_all(checkpoint, CATCH_UP_BATCH, &filter).await?;
                    for event in batch.events {
                        delivered = event.checkpoint();
                        yield Arc::new(event);
                    }
                    if batch.caught_up && batch.next == checkpoint {
                        // The tailer read past this point, so it is readable; wait briefly.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    checkpoint = batch.next;
                }
                delivered = delivered.max(checkpoint);
            }
            loop {
                match live.recv().await {
                    Ok(event) if event.checkpoint() > delivered && event.tenant_id == tenant => {
                        delivered = event.checkpoint();
                        yield event;
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(missed)) => Err(LiveError::TooSlow(missed))?,
                    Err(broadcast::error::RecvError::Closed) => Err(LiveError::Closed)?,
                }
            }
        }
    }
}

async fn tail(
    store: EventStore,
    start: Checkpoint,
    hub: std::sync::Weak<Inner>,
    stop: CancellationToken,
) {
    let mut events = store.subscribe("live", start, ReadFilter::default());
    loop {
        let next = tokio::select! {
            _ = stop.cancelled() => return,
            next = events.next() => next,
        };
        let Some(hub) = hub.upgrade() else { return };
        match next {
            Some(Ok(event)) => {
                *hub.last.lock().unwrap_or_else(|p| p.into_inner()) = event.checkpoint();
                if let Some(key_id) = revoked_key(&event) {
                    // No receivers is fine: no socket is open right now.
                    let _ = hub.revoked.send(key_id);
                }
                let _ = hub.sender.send(Arc::new(event));
            }
            Some(Err(error)) => {
                if !store.pool().is_closed() {
                    tracing::error!(%error, "live feed stopped reading the log");
                }
                return;
            }
            None => return,
        }
    }
}

fn revoked_key(event: &RecordedEvent) -> Option<ApiKeyId> {
    if event.event_type != "ApiKeyRevoked" {
        return None;
    }
    match TenantEvent::upcast(
        &event.event_type,
        event.schema_version,
        event.payload.clone(),
    ) {
        Ok(TenantEvent::ApiKeyRevoked { key_id }) => Some(key_id),
        _ => None,
    }
}
