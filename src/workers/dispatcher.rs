//! The dispatcher: claims due notifications from `delivery_queue`, decides
//! each one's next step (expire, wait, fail over, attempt), calls the
//! provider and records what it said.
//!
//! Work goes in batches so a busy queue costs few round trips: one claim, one
//! read of all the claimed streams, one append for every decision, then the
//! provider calls run concurrently and their outcomes are appended together
//! by one writer task. Delivery is at least once: a crash after a provider
//! took a message but before `NotificationSent` was appended sends it again
//! when the lease runs out, with the same notification id as idempotency key.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::retry::retry_delay;
use super::routing::{Availability, Route, RouteDecision, next_route};
use super::{DeliveryConfig, RoutingConfig};
use crate::commands::notifications::{Change, Loaded, append_changes, load_many};
use crate::commands::{Actor, CommandError};
use crate::domain::values::NotificationId;
use crate::domain::{
    Content, DomainError, Notification, NotificationCommand, NotificationEvent, NotificationState,
    NotificationStatus,
};
use crate::eventstore::EventStore;
use crate::projections::delivery_queue;
use crate::providers::{OutboundMessage, Providers, Receipt, SendError};

/// How long to wait before looking again when every route is busy (open
/// breakers): short enough to catch a half-open probe soon after it is due.
const BUSY_RECHECK: TimeDelta = TimeDelta::seconds(5);
/// The longest idle sleep; wake-ups from appends usually come much sooner.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// Outcomes appended together at most.
const OUTCOME_BATCH: usize = 256;

/// Everything a dispatch loop needs; cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    store: EventStore,
    providers: Providers,
    routing: RoutingConfig,
    delivery: DeliveryConfig,
    /// Identifies this process's claims in the queue.
    worker_id: Uuid,
    /// Calls in flight per provider instance.
    provider_slots: HashMap<String, Arc<Semaphore>>,
    /// Claimed rows not yet finished, so claims never outrun the sends.
    in_flight: Arc<Semaphore>,
    actor: Actor,
}

/// A provider call that finished, waiting to be recorded.
struct Outcome {
    state: NotificationState,
    version: i64,
    route: Route,
    result: Result<Receipt, SendError>,
}

impl Dispatcher {
    pub fn new(
        store: EventStore,
        providers: Providers,
        routing: RoutingConfig,
        delivery: DeliveryConfig,
    ) -> Dispatcher {
        let provider_slots = providers
            .names()
            .map(|name| {
                (
                    name.to_string(),
                    Arc::new(Semaphore::new(delivery.provider_concurrency.max(1))),
                )
            })
            .collect();
        let in_flight = Arc::new(Semaphore::new((delivery.claim_batch as usize * 2).max(1)));
        Dispatcher {
            inner: Arc::new(Inner {
                store,
                providers,
                routing,
                delivery,
                worker_id: Uuid::now_v7(),
                provider_slots,
                in_flight,
                actor: Actor::new("dispatcher"),
            }),
        }
    }

    /// Runs `delivery.dispatchers` claim loops and the outcome writer until
    /// `shutdown`; then waits for calls in flight to be recorded.
    pub fn spawn(self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let (outcomes, received) = mpsc::channel(OUTCOME_BATCH * 4);
            let writer = tokio::spawn(self.clone().write_outcomes(received));
            let mut loops = JoinSet::new();
            for _ in 0..self.inner.delivery.dispatchers.max(1) {
                loops.spawn(self.clone().claim_loop(outcomes.clone(), shutdown.clone()));
            }
            drop(outcomes);
            while loops.join_next().await.is_some() {}
            // Every sender is gone once the sends in flight finish.
            let _ = writer.await;
            tracing::info!("dispatcher stopped");
        })
    }

    async fn claim_loop(self, outcomes: mpsc::Sender<Outcome>, shutdown: CancellationToken) {
        let inner = &self.inner;
        let mut appended = inner.store.appended();
        while !shutdown.is_cancelled() {
            let room = inner
                .in_flight
                .available_permits()
                .min(inner.delivery.claim_batch as usize);
            if room == 0 {
                tokio::select! {
                    _ = inner.in_flight.acquire() => {}
                    _ = shutdown.cancelled() => break,
                }
                continue;
            }
            let claimed = delivery_queue::claim(
                inner.store.pool(),
                inner.worker_id,
                room as u32,
                inner.delivery.lease_seconds,
            )
            .await;
            match claimed {
                Ok(claims) if !claims.is_empty() => {
                    let ids: Vec<NotificationId> = claims
                        .iter()
                        .map(|c| NotificationId::from(c.notification_id))
                        .collect();
                    if let Err(error) = self.dispatch_batch(&ids, &outcomes).await {
                        tracing::warn!(%error, claimed = ids.len(), "a dispatch batch failed; its claims return when their lease runs out");
                    }
                }
                Ok(_) => {
                    let sleep = match delivery_queue::next_due(inner.store.pool()).await {
                        Ok(Some(due)) => (due - Utc::now())
                            .to_std()
                            .unwrap_or_default()
                            .min(IDLE_POLL),
                        _ => IDLE_POLL,
                    };
                    tokio::select! {
                        _ = appended.changed() => {}
                        _ = tokio::time::sleep(sleep) => {}
                        _ = shutdown.cancelled() => break,
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "claiming from the delivery queue failed");
                    tokio::select! {
                        _ = tokio::time::sleep(IDLE_POLL) => {}
                        _ = shutdown.cancelled() => break,
                    }
                }
            }
        }
    }

    /// Decides the next step of every claimed notification, records the
    /// decisions in one append, then starts the provider calls.
    async fn dispatch_batch(
        &self,
        ids: &[NotificationId],
        outcomes: &mpsc::Sender<Outcome>,
    ) -> Result<(), CommandError> {
        let inner = &self.inner;
        let loaded = load_many(&inner.store, ids).await?;
        if loaded.len() < ids.len() {
            let found: Vec<NotificationId> = loaded
                .iter()
                .filter_map(|l| l.notification.state().map(|s| s.notification_id))
                .collect();
            let orphans: Vec<NotificationId> = ids
                .iter()
                .filter(|id| !found.contains(id))
                .copied()
                .collect();
            tracing::warn!(
                count = orphans.len(),
                "queued notifications without a stream were dropped from the queue"
            );
            delivery_queue::remove(inner.store.pool(), &orphans).await?;
        }
        let now = Utc::now();
        let mut changes = Vec::with_capacity(loaded.len());
        let mut routes = Vec::with_capacity(loaded.len());
        for item in loaded {
            match self.plan(item, now) {
                Ok((change, route)) => {
                    changes.push(change);
                    routes.push(route);
                }
                Err(error) => {
                    tracing::error!(%error, "a queued notification could not be planned; it stays leased until its lease runs out")
                }
            }
        }
        let recorded = match append_changes(&inner.store, &changes, &inner.actor).await {
            Ok(()) => vec![true; changes.len()],
            // Someone else moved one of the streams (a cancel, say): record
            // the batch one by one and hand the losers back to the queue.
            Err(CommandError::Store(error)) if error.is_conflict() => {
                let mut recorded = Vec::with_capacity(changes.len());
                for change in &changes {
                    let ok = match append_changes(
                        &inner.store,
                        std::slice::from_ref(change),
                        &inner.actor,
                    )
                    .await
                    {
                        Ok(()) => true,
                        Err(CommandError::Store(error)) if error.is_conflict() => {
                            delivery_queue::release(
                                inner.store.pool(),
                                &[change.state.notification_id],
                            )
                            .await?;
                            false
                        }
                        Err(error) => return Err(error),
                    };
                    recorded.push(ok);
                }
                recorded
            }
            Err(error) => return Err(error),
        };
        for ((change, route), recorded) in changes.into_iter().zip(routes).zip(recorded) {
            if let (Some(route), true) = (route, recorded) {
                self.start_send(change, route, outcomes.clone()).await;
            }
        }
        Ok(())
    }

    /// The events that move one notification on, and the route to call if it
    /// is to be attempted now.
    fn plan(
        &self,
        loaded: Loaded,
        now: DateTime<Utc>,
    ) -> Result<(Change, Option<Route>), DomainError> {
        let Loaded {
            mut notification,
            version,
        } = loaded;
        let mut events = Vec::new();
        let mut decide = |notification: &mut Notification,
                          command: NotificationCommand|
         -> Result<(), DomainError> {
            for event in notification.decide(command, now)? {
                notification.apply(&event);
                events.push(event);
            }
            Ok(())
        };
        let state = notification
            .state()
            .ok_or(DomainError::NotRequested)?
            .clone();
        let mut route = None;
        // A claim of a notification still SENDING means its worker died mid-call:
        // the outcome is unknown, so count it as a transient failure and go on.
        if state.status == NotificationStatus::Sending {
            decide(
                &mut notification,
                NotificationCommand::RecordFailure {
                    attempt: state.attempts,
                    provider: state.provider.clone().unwrap_or_default(),
                    error: "the worker's lease ran out before the provider answered; the outcome is unknown".into(),
                    permanent: false,
                    retry_at: Some(now),
                },
            )?;
        }
        let state = notification
            .state()
            .ok_or(DomainError::NotRequested)?
            .clone();
        if state.status.is_pending() {
            if state.expires_at().is_some_and(|at| at <= now) {
                decide(&mut notification, NotificationCommand::Expire)?;
            } else if let Some(wait_until) = self.wait_until(&state, now) {
                if state.status != NotificationStatus::Scheduled
                    || state.schedule_at != Some(wait_until)
                {
                    if state.retry_at.is_none_or(|retry_at| retry_at <= now) {
                        decide(
                            &mut notification,
                            NotificationCommand::Schedule {
                                schedule_at: wait_until,
                                reason: "scheduled send time".into(),
                            },
                        )?;
                    }
                }
            } else {
                match next_route(&state, &self.inner.routing, |provider, channel| {
                    self.availability(provider, channel)
                }) {
                    RouteDecision::Use(chosen) => {
                        decide(
                            &mut notification,
                            NotificationCommand::AttemptDelivery {
                                channel: chosen.channel,
                                provider: chosen.provider.clone(),
                            },
                        )?;
                        route = Some(chosen);
                    }
                    RouteDecision::Blocked => {
                        decide(
                            &mut notification,
                            NotificationCommand::Schedule {
                                schedule_at: now + BUSY_RECHECK,
                                reason:
                                    "every provider that can carry it is unavailable (circuit open)"
                                        .into(),
                            },
                        )?;
                    }
                    RouteDecision::Exhausted(reason) => {
                        let command = if state.status == NotificationStatus::RetryPending {
                            NotificationCommand::DeadLetter { reason }
                        } else {
                            NotificationCommand::Reject { reason }
                        };
                        decide(&mut notification, command)?;
                    }
                }
            }
        }
        let state = notification
            .state()
            .ok_or(DomainError::NotRequested)?
            .clone();
        Ok((
            Change {
                state,
                expected_version: version,
                events,
            },
            route,
        ))
    }

    /// A future moment the notification must wait for (its schedule, the
    /// ranker's `send_after`, a retry), if any.
    fn wait_until(&self, state: &NotificationState, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        [state.schedule_at, state.send_after, state.retry_at]
            .into_iter()
            .flatten()
            .filter(|at| *at > now)
            .max()
    }

    fn availability(
        &self,
        provider: &str,
        channel: crate::domain::values::Channel,
    ) -> Availability {
        match self.inner.providers.get(provider) {
            Some(p) if p.supports(channel) => Availability::Ready,
            _ => Availability::Missing,
        }
    }

    async fn start_send(&self, change: Change, route: Route, outcomes: mpsc::Sender<Outcome>) {
        let inner = self.inner.clone();
        let Ok(permit) = inner.in_flight.clone().acquire_owned().await else {
            return;
        };
        tokio::spawn(async move {
            let _permit = permit;
            let state = change.state;
            let version = change.expected_version + change.events.len() as i64;
            let result = call_provider(&inner, &state, &route).await;
            let outcome = Outcome {
                state,
                version,
                route,
                result,
            };
            if outcomes.send(outcome).await.is_err() {
                tracing::error!(
                    "the outcome writer stopped; this send's outcome is recorded when its lease runs out"
                );
            }
        });
    }

    /// Collects provider outcomes and appends them in batches.
    async fn write_outcomes(self, mut received: mpsc::Receiver<Outcome>) {
        let mut batch = Vec::with_capacity(OUTCOME_BATCH);
        while received.recv_many(&mut batch, OUTCOME_BATCH).await > 0 {
            let now = Utc::now();
            let mut changes = Vec::with_capacity(batch.len());
            for outcome in batch.drain(..) {
                match self.record_outcome(outcome, now) {
                    Ok(change) => changes.push(change),
                    Err(error) => {
                        tracing::error!(%error, "a provider outcome could not be recorded")
                    }
                }
            }
            if let Err(error) = append_changes(&self.inner.store, &changes, &self.inner.actor).await
            {
                tracing::warn!(%error, count = changes.len(), "recording outcomes together failed; recording them one by one");
                for change in &changes {
                    if let Err(error) = append_changes(
                        &self.inner.store,
                        std::slice::from_ref(change),
                        &self.inner.actor,
                    )
                    .await
                    {
                        tracing::error!(%error, notification_id = %change.state.notification_id, "an outcome was lost; the notification is attempted again when its lease runs out");
                    }
                }
            }
        }
    }

    /// The events that record one provider outcome.
    fn record_outcome(&self, outcome: Outcome, now: DateTime<Utc>) -> Result<Change, DomainError> {
        let Outcome {
            state,
            version,
            route,
            result,
        } = outcome;
        let attempt = state.attempts;
        let command = match result {
            Ok(receipt) => {
                metrics::counter!("notifications_sent_total", "channel" => route.channel.as_str(), "provider" => route.provider.clone()).increment(1);
                let latency = (now - state.requested_at).to_std().unwrap_or_default();
                metrics::histogram!("notification_delivery_latency_seconds", "channel" => route.channel.as_str(), "provider" => route.provider.clone()).record(latency.as_secs_f64());
                NotificationCommand::RecordSent {
                    attempt,
                    provider: route.provider.clone(),
                    provider_message_id: receipt.provider_message_id,
                }
            }
            Err(error) => {
                let permanent = error.is_permanent();
                metrics::counter!("notifications_failed_total", "channel" => route.channel.as_str(), "provider" => route.provider.clone(), "class" => if permanent { "permanent" } else { "transient" }).increment(1);
                let retry_at = self.retry_at(&state, &route, &error, now);
                if retry_at.is_some() {
                    metrics::counter!("notifications_retried_total", "channel" => route.channel.as_str(), "provider" => route.provider.clone()).increment(1);
                }
                NotificationCommand::RecordFailure {
                    attempt,
                    provider: route.provider.clone(),
                    error: error.to_string(),
                    permanent,
                    retry_at,
                }
            }
        };
        let mut notification = Notification::from_state(state);
        let events = notification.decide(command, now)?;
        for event in &events {
            notification.apply(event);
            if let NotificationEvent::DeadLettered { .. } = event {
                metrics::counter!("notifications_dead_lettered_total", "channel" => route.channel.as_str()).increment(1);
            }
        }
        Ok(Change {
            state: notification
                .state()
                .ok_or(DomainError::NotRequested)?
                .clone(),
            expected_version: version,
            events,
        })
    }

    /// When to try again after `error`, or `None` to dead-letter. A permanent
    /// error moves straight on to the next route if one is left; a transient
    /// one waits its turn in the retry schedule (or the provider's
    /// `Retry-After`), then goes to the next provider.
    fn retry_at(
        &self,
        state: &NotificationState,
        route: &Route,
        error: &SendError,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        match error {
            SendError::Permanent { .. } => {
                let mut after = state.clone();
                after
                    .failed_routes
                    .push((route.channel, route.provider.clone()));
                let left = next_route(&after, &self.inner.routing, |provider, channel| match self
                    .availability(provider, channel)
                {
                    Availability::Missing => Availability::Missing,
                    _ => Availability::Ready,
                });
                matches!(left, RouteDecision::Use(_)).then_some(now)
            }
            SendError::Transient { retry_after, .. } => {
                let delivery = &self.inner.delivery;
                let spread = rand::random_range(-1.0..=1.0);
                let delay = retry_delay(
                    delivery.retry_delays(route.channel),
                    delivery.retry_jitter,
                    state.transient_failures,
                    *retry_after,
                    spread,
                )?;
                now.checked_add_signed(TimeDelta::from_std(delay).ok()?)
            }
        }
    }
}

/// Renders the message and calls the provider, within its concurrency limit
/// and timeout.
async fn call_provider(
    inner: &Inner,
    state: &NotificationState,
    route: &Route,
) -> Result<Receipt, SendError> {
    let Some(provider) = inner.providers.get(&route.provider) else {
        return Err(SendError::permanent(format!(
            "provider {} is not configured",
            route.provider
        )));
    };
    let message = outbound_message(state, route)?;
    let _slot = match inner.provider_slots.get(&route.provider) {
        Some(slots) => Some(
            slots
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| SendError::transient("shutting down"))?,
        ),
        None => None,
    };
    let timeout = Duration::from_secs(inner.delivery.provider_timeout_seconds.max(1));
    match tokio::time::timeout(timeout, provider.send(&message)).await {
        Ok(result) => result,
        Err(_) => Err(SendError::transient(format!(
            "{} did not answer within {} s",
            route.provider,
            timeout.as_secs()
        ))),
    }
}

/// The message for this attempt from the notification's content.
fn outbound_message(
    state: &NotificationState,
    route: &Route,
) -> Result<OutboundMessage, SendError> {
    let request = &state.request;
    let Content::Inline(content) = &request.content else {
        return Err(SendError::permanent(
            "templated content cannot be rendered yet",
        ));
    };
    Ok(OutboundMessage {
        notification_id: state.notification_id,
        tenant_id: state.tenant_id.clone(),
        attempt: state.attempts,
        destination: route.destination.clone(),
        priority: request.priority,
        category: request.category.clone(),
        tags: request.tags.clone(),
        title: content.title.as_ref().map(|t| t.as_str().to_string()),
        text: content.text.as_ref().map(|t| t.as_str().to_string()),
        html: content.html.as_ref().map(|h| h.as_str().to_string()),
        cta_url: content.cta_url.clone(),
        data: content.data.clone(),
        headers: Vec::new(),
        signing_secrets: Vec::new(),
    })
}
