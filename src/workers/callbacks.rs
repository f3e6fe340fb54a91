//! The callback sender: claims due rows of `webhook_deliveries` (queued by
//! the `webhook_outbox` projection), POSTs each body signed per Standard
//! Webhooks with the endpoint's current secrets, and records the outcome.
//!
//! Any number of processes may run it: claims use `FOR UPDATE SKIP LOCKED`
//! and a lease, so a sender that dies hands its rows back when the lease runs
//! out. Delivery is at least once; `webhook-id` is the notification event's
//! id, the same on every attempt and from every sender, so receivers can
//! drop repeats. Callbacks may arrive out of order (retries, concurrency):
//! the body's `position` orders them.
//!
//! Like the dispatcher's webhook deliveries, callbacks keep a breaker and a
//! concurrency limit per endpoint origin (and host), and each tenant may
//! hold only its share of the sender: a callback whose endpoint or tenant is
//! at its limit goes back to the outbox for later, with no attempt counted.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::DeliveryConfig;
use super::breaker::{Breakers, endpoint_key};
use super::lanes::{Lanes, share_of};
use super::retry::retry_delay;
use crate::commands::webhook_endpoints::signing_target;
use crate::domain::values::Channel;
use crate::egress::{Egress, EgressClient, SendError};
use crate::eventstore::EventStore;
use crate::projections::webhook_outbox::{self, ClaimedDelivery, Outcome};
use crate::signing::{CALLBACK, client, post_signed};

/// The longest idle sleep: the outbox is filled by the projection runner,
/// whose writes wake nobody, so an idle sender looks again this often.
const IDLE_POLL: Duration = Duration::from_millis(500);
/// When a callback whose endpoint or tenant is at its limit is looked at again.
const BUSY_RECHECK: TimeDelta = TimeDelta::seconds(1);
/// When a callback whose endpoint's breaker is open is looked at again:
/// soon enough to catch a half-open probe soon after it is due.
const OPEN_RECHECK: TimeDelta = TimeDelta::seconds(5);

/// Starts the sender loop; the handle ends after `shutdown`, once the
/// callbacks in flight are recorded.
pub fn spawn(
    store: EventStore,
    delivery: DeliveryConfig,
    egress: Egress,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = match client(&egress, delivery.provider_timeout_seconds) {
            Ok(client) => client,
            Err(error) => {
                tracing::error!(%error, "the callback sender cannot build its HTTP client");
                return;
            }
        };
        let concurrency = delivery.provider_concurrency.max(1);
        let sender = Arc::new(Sender {
            store,
            client,
            worker_id: Uuid::now_v7(),
            in_flight: Arc::new(Semaphore::new(concurrency)),
            tenant_lanes: Lanes::new(share_of(concurrency, delivery.tenant_share)),
            endpoint_lanes: Lanes::new(delivery.endpoint_concurrency),
            host_lanes: Lanes::new(delivery.host_concurrency),
            breakers: Breakers::per_endpoint(&delivery.endpoint_breaker),
            delivery,
        });
        sender.run(shutdown).await;
        tracing::info!("callback sender stopped");
    })
}

struct Sender {
    store: EventStore,
    delivery: DeliveryConfig,
    client: EgressClient,
    /// Identifies this process's claims.
    worker_id: Uuid,
    /// Callbacks in flight (`provider_concurrency`); claims take only room.
    in_flight: Arc<Semaphore>,
    /// Each tenant's callbacks in flight: at most its share of `in_flight`.
    tenant_lanes: Lanes,
    /// Per endpoint origin and per host.
    endpoint_lanes: Lanes,
    host_lanes: Lanes,
    breakers: Breakers,
}

impl Sender {
    async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let pool = self.store.pool();
        let mut appended = self.store.appended();
        while !shutdown.is_cancelled() {
            let room = self
                .in_flight
                .available_permits()
                .min(self.delivery.claim_batch.max(1) as usize);
            if room == 0 {
                tokio::select! {
                    _ = self.in_flight.acquire() => {}
                    _ = shutdown.cancelled() => break,
                }
                continue;
            }
            let claimed = webhook_outbox::claim(
                pool,
                self.worker_id,
                room as u32,
                self.delivery.lease_seconds,
                &self.tenant_lanes.full(),
            )
            .await;
            match claimed {
                Ok(rows) if !rows.is_empty() => {
                    let mut over = Vec::new();
                    for row in rows {
                        let share = self.tenant_lanes.try_acquire(&row.tenant_id);
                        let slot = self.in_flight.clone().try_acquire_owned().ok();
                        let (Some(share), Some(slot)) = (share, slot) else {
                            over.push(row.delivery_id);
                            continue;
                        };
                        let sender = self.clone();
                        tokio::spawn(async move {
                            let _held = (share, slot);
                            sender.deliver(row).await;
                        });
                    }
                    let later = Utc::now() + BUSY_RECHECK;
                    if let Err(error) =
                        webhook_outbox::defer(pool, self.worker_id, &over, later).await
                    {
                        tracing::warn!(%error, "could not hand back callbacks over their tenant's share; they return when their lease runs out");
                    }
                }
                Ok(_) => {
                    let next_due = webhook_outbox::next_due(pool).await;
                    if !super::wait_for_work(&mut appended, next_due, IDLE_POLL, &shutdown).await {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "claiming callbacks failed");
                    tokio::select! {
                        _ = tokio::time::sleep(IDLE_POLL) => {}
                        _ = shutdown.cancelled() => break,
                    }
                }
            }
        }
        // Callbacks in flight are recorded even during shutdown: each call is
        // bounded by the client's timeout.
        let all = self.delivery.provider_concurrency.max(1) as u32;
        let _ = self.in_flight.acquire_many(all).await;
    }

    async fn deliver(&self, row: ClaimedDelivery) {
        let outcome = self.attempt(&row).await;
        if let Outcome::Failed { error, .. } = &outcome {
            tracing::warn!(delivery_id = %row.delivery_id, tenant_id = %row.tenant_id, %error, "a callback failed for good");
        }
        let recorded =
            webhook_outbox::record(self.store.pool(), self.worker_id, row.delivery_id, &outcome)
                .await;
        if let Err(error) = recorded {
            // The lease brings the row back; the receiver dedupes by webhook-id.
            tracing::warn!(delivery_id = %row.delivery_id, %error, "recording a callback outcome failed");
        }
    }

    async fn attempt(&self, row: &ClaimedDelivery) -> Outcome {
        let gone = |error: &str| Outcome::Failed {
            error: error.to_string(),
            attempted: false,
        };
        let Some(endpoint_id) = row.endpoint_id else {
            return gone("no webhook endpoint to sign with");
        };
        let target = match signing_target(self.store.pool(), &row.tenant_id, endpoint_id).await {
            Ok(Some(target)) => target,
            Ok(None) => return gone("the webhook endpoint was deleted"),
            Err(error) => {
                return self.retry_or_give_up(
                    row,
                    SendError::transient(format!("looking up the endpoint failed: {error}")),
                );
            }
        };
        // Lanes before the breaker, so a half-open probe is not spent on a
        // callback that would then wait.
        let origin = target.url.origin();
        let places = (
            self.endpoint_lanes.try_acquire(&origin),
            self.host_lanes.try_acquire(target.url.host()),
        );
        let (Some(_endpoint), Some(_host)) = places else {
            return Outcome::Deferred {
                at: Utc::now() + BUSY_RECHECK,
            };
        };
        let breaker = endpoint_key(&row.tenant_id, &target.url);
        if !self.breakers.try_acquire(&breaker) {
            return Outcome::Deferred {
                at: Utc::now() + OPEN_RECHECK,
            };
        }
        let sent = post_signed(
            &self.client,
            &target.url,
            &target.secrets,
            &row.event_id.to_string(),
            row.body.clone().into_bytes(),
            CALLBACK,
        )
        .await;
        // A refusal is about this callback, not the endpoint's health.
        self.breakers
            .record(&breaker, !matches!(sent, Err(SendError::Transient { .. })));
        match sent {
            Ok(()) => Outcome::Delivered,
            Err(SendError::Permanent { message }) => Outcome::Failed {
                error: message,
                attempted: true,
            },
            Err(error) => self.retry_or_give_up(row, error),
        }
    }

    /// The notification retry schedule for the webhook channel, with jitter
    /// and the receiver's `Retry-After`; failed once it is used up.
    fn retry_or_give_up(&self, row: &ClaimedDelivery, error: SendError) -> Outcome {
        let retry_after = match &error {
            SendError::Transient { retry_after, .. } => *retry_after,
            SendError::Permanent { .. } => None,
        };
        let delay = retry_delay(
            self.delivery.retry_delays(Channel::Webhook),
            self.delivery.retry_jitter,
            row.attempts.max(0) as u32,
            retry_after,
            rand::random_range(-1.0..=1.0),
        );
        let at = delay
            .and_then(|delay| TimeDelta::from_std(delay).ok())
            .and_then(|delay| Utc::now().checked_add_signed(delay));
        match at {
            Some(at) => Outcome::Retry {
                at,
                error: error.to_string(),
            },
            None => Outcome::Failed {
                error: format!("gave up after {} attempts: {error}", row.attempts + 1),
                attempted: true,
            },
        }
    }
}
