//! The one way a command reaches the log: load the aggregate's stream, fold
//! it, let the domain decide, append at the version it was decided on, write
//! the read tables that must be current in the same transaction, commit; and
//! when another writer moved the stream first, all of it again.
//!
//! Hooks return boxed futures because a `Send` bound cannot be put on the
//! future of a generic closure; [`Transaction`]'s lifetime lets them borrow
//! the command's inputs.

use std::marker::PhantomData;

use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::{Actor, CommandError};
use crate::domain::campaign::CampaignEvent;
use crate::domain::inapp_feed::InAppFeedEvent;
use crate::domain::quiet_hours::TenantQuietHoursEvent;
use crate::domain::recipient::RecipientEvent;
use crate::domain::schedule::ScheduleEvent;
use crate::domain::signed_link::LinkEvent;
use crate::domain::suppression::SuppressionEvent;
use crate::domain::template::{PartialEvent, TemplateEvent};
use crate::domain::values::TenantId;
use crate::domain::webhook_endpoint::WebhookEndpointEvent;
use crate::domain::workflow::{WorkflowEvent, WorkflowRunEvent};
use crate::domain::{Aggregate, DomainError, NotificationEvent, SourceEventIngested, TenantEvent};
use crate::eventstore::{
    EventStore, ExpectedVersion, NewEvent, RecordedEvent, StoreError, StoreTransaction,
    StreamAppend,
};

/// Commands retry this often when another writer moved the stream first.
const MAX_CONFLICT_RETRIES: usize = 5;

/// How an aggregate's events are stored: their type names, the schema
/// version they are written at, and the upcast that reads any stored one.
pub(crate) trait StoredEvent: Serialize + Sized + Send + Sync {
    const SCHEMA_VERSION: i16;
    fn event_type(&self) -> &'static str;
    fn upcast(event_type: &str, schema_version: i16, payload: Value) -> Result<Self, DomainError>;
}

/// The domain's event types already carry what [`StoredEvent`] asks for.
macro_rules! stored_events {
    ($($event:ty),* $(,)?) => {$(
        impl StoredEvent for $event {
            const SCHEMA_VERSION: i16 = <$event>::SCHEMA_VERSION;
            fn event_type(&self) -> &'static str {
                <$event>::event_type(self)
            }
            fn upcast(
                event_type: &str,
                schema_version: i16,
                payload: Value,
            ) -> Result<Self, DomainError> {
                <$event>::upcast(event_type, schema_version, payload)
            }
        }
    )*};
}

stored_events!(
    CampaignEvent,
    InAppFeedEvent,
    LinkEvent,
    NotificationEvent,
    PartialEvent,
    RecipientEvent,
    ScheduleEvent,
    SourceEventIngested,
    SuppressionEvent,
    TemplateEvent,
    TenantEvent,
    TenantQuietHoursEvent,
    WebhookEndpointEvent,
    WorkflowEvent,
    WorkflowRunEvent,
);

/// A domain event in the log's envelope.
pub(crate) fn envelope<E: StoredEvent>(
    event: &E,
    tenant_id: &str,
    actor: &Actor,
) -> Result<NewEvent, CommandError> {
    let event_type = event.event_type();
    let payload = serde_json::to_value(event).map_err(|e| CommandError::CorruptEvent {
        position: 0,
        reason: format!("cannot serialise {event_type}: {e}"),
    })?;
    Ok(NewEvent {
        event_id: Uuid::now_v7(),
        event_type: event_type.to_string(),
        schema_version: E::SCHEMA_VERSION,
        tenant_id: tenant_id.to_string(),
        payload,
        metadata: actor.metadata(),
    })
}

/// Domain events of one aggregate in the log's envelope, in order.
pub(crate) fn envelopes<E: StoredEvent>(
    events: &[E],
    tenant_id: &str,
    actor: &Actor,
) -> Result<Vec<NewEvent>, CommandError> {
    events
        .iter()
        .map(|event| envelope(event, tenant_id, actor))
        .collect()
}

/// Reads stored events back into domain events through the domain's upcaster.
pub(crate) fn decode<E: StoredEvent>(recorded: &[RecordedEvent]) -> Result<Vec<E>, CommandError> {
    recorded
        .iter()
        .map(|r| {
            E::upcast(&r.event_type, r.schema_version, r.payload.clone()).map_err(|e| {
                CommandError::CorruptEvent {
                    position: r.global_position,
                    reason: e.to_string(),
                }
            })
        })
        .collect()
}

/// What a hook does inside the transaction.
pub(crate) type Step<'c, T> = BoxFuture<'c, Result<T, CommandError>>;

/// A transaction a hook appends and writes in. Whatever the hook borrows
/// for `'a` outlives it, which is what lets a boxed hook borrow its inputs.
pub(crate) struct Transaction<'a> {
    tx: StoreTransaction,
    inputs: PhantomData<&'a ()>,
}

impl Transaction<'_> {
    async fn begin(store: &EventStore) -> Result<Self, StoreError> {
        Ok(Transaction {
            tx: store.begin().await?,
            inputs: PhantomData,
        })
    }

    async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await
    }
}

impl std::ops::Deref for Transaction<'_> {
    type Target = StoreTransaction;

    fn deref(&self) -> &StoreTransaction {
        &self.tx
    }
}

impl std::ops::DerefMut for Transaction<'_> {
    fn deref_mut(&mut self) -> &mut StoreTransaction {
        &mut self.tx
    }
}

/// Runs `work` in one transaction, committed when it succeeds; after an
/// error the transaction is dropped, which rolls it back.
pub(crate) async fn in_transaction<'a, T>(
    store: &EventStore,
    work: impl for<'c> FnOnce(&'c mut Transaction<'a>) -> Step<'c, T>,
) -> Result<T, CommandError> {
    let mut tx = Transaction::begin(store).await?;
    let done = work(&mut tx).await?;
    tx.commit().await?;
    Ok(done)
}

/// Runs `attempt` again while it fails because another writer moved a
/// stream first; each attempt reads afresh.
pub(crate) async fn retry_on_conflict<'a, T>(
    mut attempt: impl FnMut() -> Step<'a, T>,
) -> Result<T, CommandError> {
    for _ in 0..MAX_CONFLICT_RETRIES {
        match attempt().await {
            Err(CommandError::Store(error)) if error.is_conflict() => continue,
            done => return done,
        }
    }
    Err(CommandError::Store(StoreError::TransactionAborted))
}

/// An aggregate as of its stream's `version`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Loaded<A> {
    pub state: A,
    pub version: i64,
}

/// The aggregate `stream_id` holds, for a caller that learns from it whose
/// stream it is.
pub(crate) async fn load<A>(store: &EventStore, stream_id: &str) -> Result<Loaded<A>, CommandError>
where
    A: Aggregate,
    A::Event: StoredEvent,
{
    let recorded = store.read_stream(stream_id, 1).await?;
    Ok(Loaded {
        state: A::fold(&decode(&recorded)?),
        version: recorded.len() as i64,
    })
}

/// What an append left: the state after `events`, at `version`.
pub(crate) struct Applied<A: Aggregate> {
    pub state: A,
    pub events: Vec<A::Event>,
    pub version: i64,
}

/// What a command led to: nothing to record, or the hook's answer.
pub(crate) enum Executed<A, T> {
    Unchanged(Loaded<A>),
    Appended(T),
}

/// One aggregate's stream, written by `actor` in `tenant`'s name.
pub(crate) struct Stream<'a> {
    store: &'a EventStore,
    id: String,
    tenant: &'a TenantId,
    actor: &'a Actor,
}

impl<'a> Stream<'a> {
    pub(crate) fn new(
        store: &'a EventStore,
        id: String,
        tenant: &'a TenantId,
        actor: &'a Actor,
    ) -> Stream<'a> {
        Stream {
            store,
            id,
            tenant,
            actor,
        }
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    pub(crate) async fn load<A>(&self) -> Result<Loaded<A>, CommandError>
    where
        A: Aggregate,
        A::Event: StoredEvent,
    {
        load(self.store, &self.id).await
    }

    /// `events` in their envelopes, to follow the stream's `version`.
    pub(crate) fn appending<E: StoredEvent>(
        &self,
        version: i64,
        events: &[E],
    ) -> Result<StreamAppend, CommandError> {
        Ok(StreamAppend {
            stream_id: self.id.clone(),
            expected: match version {
                0 => ExpectedVersion::NoStream,
                version => ExpectedVersion::Exact(version),
            },
            events: envelopes(events, self.tenant.as_str(), self.actor)?,
        })
    }

    /// Appends `events` after `loaded` and runs `keep` in the same
    /// transaction; once, without a retry.
    pub(crate) async fn append<'k, A, T>(
        &self,
        loaded: Loaded<A>,
        events: Vec<A::Event>,
        keep: &(impl for<'c> Fn(&'c mut Transaction<'k>, &'c Applied<A>) -> Step<'c, T> + Sync),
    ) -> Result<T, CommandError>
    where
        A: Aggregate + Send + Sync,
        A::Event: StoredEvent,
        T: Send,
    {
        let batch = [self.appending(loaded.version, &events)?];
        let mut applied = Applied {
            version: loaded.version + events.len() as i64,
            state: loaded.state,
            events,
        };
        for event in &applied.events {
            applied.state.apply(event);
        }
        let mut tx = Transaction::begin(self.store).await?;
        tx.append(&batch).await?;
        let done = keep(&mut tx, &applied).await?;
        tx.commit().await?;
        Ok(done)
    }

    /// Loads the stream, lets `decide` choose the events, and appends them
    /// with `keep`'s writes; retries from the start when another writer
    /// moved the stream first. No events, no transaction.
    pub(crate) async fn execute<'k, A, T>(
        &self,
        decide: impl Fn(&A) -> Result<Vec<A::Event>, CommandError> + Sync,
        keep: impl for<'c> Fn(&'c mut Transaction<'k>, &'c Applied<A>) -> Step<'c, T> + Sync,
    ) -> Result<Executed<A, T>, CommandError>
    where
        A: Aggregate + Send + Sync,
        A::Event: StoredEvent,
        T: Send,
    {
        self.execute_from(None, decide, keep).await
    }

    /// [`Stream::execute`] deciding first on `known` (the state the
    /// caller's last append left), reloading only after a conflict.
    pub(crate) async fn execute_from<'k, A, T>(
        &self,
        known: Option<Loaded<A>>,
        decide: impl Fn(&A) -> Result<Vec<A::Event>, CommandError> + Sync,
        keep: impl for<'c> Fn(&'c mut Transaction<'k>, &'c Applied<A>) -> Step<'c, T> + Sync,
    ) -> Result<Executed<A, T>, CommandError>
    where
        A: Aggregate + Send + Sync,
        A::Event: StoredEvent,
        T: Send,
    {
        let (decide, keep) = (&decide, &keep);
        let mut known = known;
        retry_on_conflict(|| {
            let known = known.take();
            Box::pin(async move {
                let loaded = match known {
                    Some(loaded) => loaded,
                    None => self.load().await?,
                };
                let events = decide(&loaded.state)?;
                if events.is_empty() {
                    return Ok(Executed::Unchanged(loaded));
                }
                self.append(loaded, events, keep)
                    .await
                    .map(Executed::Appended)
            })
        })
        .await
    }
}
