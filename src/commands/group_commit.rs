//! Group commit for single sends. Each `sendNotification` is a request of
//! its own, and under load a transaction per send is what the cores run out
//! on. Here the concurrent sends of one tenant share transactions: each
//! commit carries every send that arrived while the previous ones ran (up
//! to `MAX_GROUP`), while a send to an idle service commits alone, at once.
//! Every send still gets its own answer ([`notifications::send_each`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::Instrument;

use super::notifications::{self, SendPolicy, Sent};
use super::{Actor, CommandError};
use crate::domain::SendNotification;
use crate::domain::values::TenantId;
use crate::eventstore::{EventStore, StoreError};
use crate::telemetry::trace::TracePoint;

/// Sends in one transaction at most.
const MAX_GROUP: usize = 100;
/// Transactions of one tenant's sends in flight at once.
const CONCURRENT_GROUPS: usize = 4;
/// A tenant's lane closes after this long without a send.
const IDLE: Duration = Duration::from_secs(30);

/// Cheap to clone; one per process.
#[derive(Clone)]
pub struct GroupCommit {
    inner: Arc<Inner>,
}

struct Inner {
    store: EventStore,
    policy: SendPolicy,
    lanes: Mutex<HashMap<TenantId, mpsc::Sender<Job>>>,
}

struct Job {
    input: SendNotification,
    actor: Actor,
    reply: oneshot::Sender<Result<Sent, CommandError>>,
}

impl GroupCommit {
    pub fn new(store: EventStore, policy: SendPolicy) -> GroupCommit {
        GroupCommit {
            inner: Arc::new(Inner {
                store,
                policy,
                lanes: Mutex::default(),
            }),
        }
    }

    /// What every send through it is checked against.
    pub fn policy(&self) -> &SendPolicy {
        &self.inner.policy
    }

    /// As [`notifications::send`], sharing a transaction with the tenant's
    /// concurrent sends.
    pub async fn send(
        &self,
        tenant_id: &TenantId,
        input: SendNotification,
        actor: &Actor,
    ) -> Result<Sent, CommandError> {
        // The command's span, in the notification's trace: a `trace_id` the
        // request names moves it (and what follows) there.
        let span = tracing::info_span!("send_notification", tenant_id = %tenant_id);
        let trace = notifications::trace_of(&input, actor);
        trace.adopt(&span);
        let actor = actor.at(TracePoint::of_span(&span).or(Some(trace)));
        // Boxed: the resolvers' futures are deep enough already for rustc.
        Box::pin(
            async move {
                let (reply, answer) = oneshot::channel();
                let job = Job {
                    input,
                    actor,
                    reply,
                };
                if let Err(mpsc::error::SendError(job)) = self.lane(tenant_id).send(job).await {
                    // The lane closed as it went idle: this send commits alone.
                    let Inner { store, policy, .. } = &*self.inner;
                    return notifications::send(store, tenant_id, job.input, policy, &job.actor)
                        .await;
                }
                // Dropped only if the committing task panicked.
                answer
                    .await
                    .unwrap_or(Err(CommandError::Store(StoreError::TransactionAborted)))
            }
            .instrument(span),
        )
        .await
    }

    fn lane(&self, tenant_id: &TenantId) -> mpsc::Sender<Job> {
        let mut lanes = self
            .inner
            .lanes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(lane) = lanes.get(tenant_id)
            && !lane.is_closed()
        {
            return lane.clone();
        }
        let (lane, jobs) = mpsc::channel(MAX_GROUP * CONCURRENT_GROUPS);
        lanes.insert(tenant_id.clone(), lane.clone());
        tokio::spawn(gather(self.inner.clone(), tenant_id.clone(), jobs));
        lane
    }
}

/// Takes the tenant's sends as they come, a group whenever a transaction
/// slot is free, until the lane has been idle for `IDLE`.
async fn gather(inner: Arc<Inner>, tenant_id: TenantId, mut jobs: mpsc::Receiver<Job>) {
    let slots = Arc::new(Semaphore::new(CONCURRENT_GROUPS));
    loop {
        // A free slot first, so sends gather while every slot is committing.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let mut group = Vec::with_capacity(MAX_GROUP);
        let idle = match tokio::time::timeout(IDLE, jobs.recv_many(&mut group, MAX_GROUP)).await {
            Ok(0) => break,
            Ok(_) => false,
            Err(_) => {
                // Closed first, so nothing can slip in after the last look.
                jobs.close();
                while let Ok(job) = jobs.try_recv() {
                    group.push(job);
                }
                true
            }
        };
        if !group.is_empty() {
            let (inner, tenant_id) = (inner.clone(), tenant_id.clone());
            tokio::spawn(async move {
                commit(&inner, &tenant_id, group).await;
                drop(slot);
            });
        }
        if idle {
            break;
        }
    }
}

async fn commit(inner: &Inner, tenant_id: &TenantId, group: Vec<Job>) {
    let (inputs, replies): (Vec<_>, Vec<_>) = group
        .into_iter()
        .map(|job| ((job.input, job.actor), job.reply))
        .unzip();
    let sent = notifications::send_each(&inner.store, tenant_id, inputs, &inner.policy).await;
    for (reply, outcome) in replies.into_iter().zip(sent) {
        // The caller may have gone; the send stands either way.
        let _ = reply.send(outcome);
    }
}
