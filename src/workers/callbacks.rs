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

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use futures::StreamExt;
use reqwest::Method;
use reqwest::header::CONTENT_TYPE;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::DeliveryConfig;
use super::retry::retry_delay;
use crate::commands::webhook_endpoints::signing_target;
use crate::domain::values::{Channel, HttpUrl};
use crate::egress::{ClientOptions, Egress, EgressClient, EgressError};
use crate::eventstore::EventStore;
use crate::projections::webhook_outbox::{self, ClaimedDelivery, Outcome};
use crate::providers::webhook::{
    WebhookConfig, read_capped, send_error, signature_headers, status_error,
};
use crate::providers::{SendError, WebhookSecret};

/// The longest idle sleep: the outbox is filled by the projection runner,
/// whose writes wake nobody, so an idle sender looks again this often.
const IDLE_POLL: Duration = Duration::from_millis(500);
/// How much of a receiver's answer is read (and dropped).
const MAX_ANSWER_BYTES: usize = 4 * 1024;

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
        let sender = Sender {
            store,
            delivery,
            client,
            worker_id: Uuid::now_v7(),
        };
        sender.run(shutdown).await;
        tracing::info!("callback sender stopped");
    })
}

/// A guarded client for callbacks: a whole call longer than
/// `timeout_seconds` fails as transient, and redirects are not followed.
pub fn client(egress: &Egress, timeout_seconds: u64) -> Result<EgressClient, EgressError> {
    egress.client(&ClientOptions {
        timeout: Duration::from_secs(timeout_seconds.max(1)),
        user_agent: WebhookConfig::default().user_agent,
        max_redirects: 0,
    })
}

/// POSTs `body` as JSON to `url`, signed with every secret, with `webhook_id`
/// as the `webhook-id`. Errors are classified like the webhook provider's:
/// network failures, 408, 429 and 5xx are transient, any other answer permanent.
pub async fn post_signed(
    client: &EgressClient,
    url: &HttpUrl,
    secrets: &[WebhookSecret],
    webhook_id: &str,
    body: &str,
) -> Result<(), SendError> {
    let headers = signature_headers(secrets, webhook_id, Utc::now().timestamp(), body.as_bytes())
        .map_err(|error| SendError::permanent(error.to_string()))?;
    let request = client
        .request(Method::POST, url.as_str())
        .headers(headers)
        .header(CONTENT_TYPE, "application/json")
        .body(body.to_string());
    let response = client
        .send(request)
        .await
        .map_err(|error| send_error("callback", error))?;
    let status = response.status();
    let answer_headers = response.headers().clone();
    read_capped(response, MAX_ANSWER_BYTES).await;
    if status.is_success() {
        return Ok(());
    }
    Err(status_error("callback", status, &answer_headers))
}

struct Sender {
    store: EventStore,
    delivery: DeliveryConfig,
    client: EgressClient,
    /// Identifies this process's claims.
    worker_id: Uuid,
}

impl Sender {
    async fn run(&self, shutdown: CancellationToken) {
        let pool = self.store.pool();
        let mut appended = self.store.appended();
        while !shutdown.is_cancelled() {
            let claimed = webhook_outbox::claim(
                pool,
                self.worker_id,
                self.delivery.claim_batch.max(1),
                self.delivery.lease_seconds,
            )
            .await;
            match claimed {
                // A claimed batch is finished even during shutdown: each call
                // is bounded by the client's timeout.
                Ok(rows) if !rows.is_empty() => {
                    futures::stream::iter(rows)
                        .for_each_concurrent(self.delivery.provider_concurrency.max(1), |row| {
                            self.deliver(row)
                        })
                        .await;
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
        let sent = post_signed(
            &self.client,
            &target.url,
            &target.secrets,
            &row.event_id.to_string(),
            &row.body,
        )
        .await;
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
