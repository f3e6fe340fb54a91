//! The campaign worker: starts campaigns at their `schedule_at`, releases
//! their batches into notifications, reports progress and completion, and
//! sends the signed callbacks.
//!
//! Pacing: a campaign keeps at most `queued_batches` batches of its
//! notifications in the delivery queue; the next batch is released when the
//! dispatcher has taken them. Campaign notifications are LOW priority, so
//! the dispatcher claims the tenant's HIGH and NORMAL sends first, and they
//! pass the tenant's token buckets like any send. A campaign therefore
//! never fills the queue ahead of transactional traffic.
//!
//! Several processes may run it: releases are keyed per message, so a
//! batch released twice finds the first notifications; a callback is
//! claimed with `FOR UPDATE SKIP LOCKED` and a lease.

use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::commands::campaigns::{self, CallbackOutcome, CallbackRow};
use crate::commands::notifications::SendPolicy;
use crate::commands::{Actor, CommandError};
use crate::domain::values::{HttpUrl, TenantId};
use crate::egress::{Egress, EgressClient};
use crate::eventstore::EventStore;
use crate::signing::{CALLBACK, client, post_signed};

/// `[campaigns]` in the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CampaignsConfig {
    /// Pauses before each callback retry; failed once used up.
    pub callback_retry_seconds: Vec<f64>,
    /// Batches of one campaign allowed in the delivery queue at once.
    pub queued_batches: u32,
    /// The longest idle wait between rounds.
    pub poll_millis: u64,
    /// Progress and completion are computed at most this often per campaign.
    pub progress_every_millis: u64,
    /// A callback POST taking longer fails as transient.
    pub callback_timeout_seconds: u64,
    /// The largest CSV one import reads (an upload or a `csvUrl`).
    pub max_import_bytes: u64,
}

impl Default for CampaignsConfig {
    fn default() -> Self {
        CampaignsConfig {
            callback_retry_seconds: vec![1.0, 5.0, 30.0, 120.0, 600.0],
            queued_batches: 2,
            poll_millis: 500,
            progress_every_millis: 1_000,
            callback_timeout_seconds: 10,
            max_import_bytes: 1 << 30,
        }
    }
}

/// A callback claimed is leased this long; a sender that dies hands it back.
const CALLBACK_LEASE: TimeDelta = TimeDelta::seconds(60);
const CALLBACK_CLAIM: i64 = 50;
const CALLBACK_CONCURRENCY: usize = 8;

/// Starts the worker loop; the handle ends after `shutdown`.
pub fn spawn(
    store: EventStore,
    policy: SendPolicy,
    config: CampaignsConfig,
    egress: Egress,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = match client(&egress, config.callback_timeout_seconds) {
            Ok(client) => client,
            Err(error) => {
                tracing::error!(%error, "the campaign worker cannot build its HTTP client");
                return;
            }
        };
        let worker = Worker {
            store,
            policy,
            config,
            client,
            actor: Actor::new("campaign-worker"),
            last_progress: Default::default(),
        };
        worker.run(shutdown).await;
        tracing::info!("campaign worker stopped");
    })
}

struct Worker {
    store: EventStore,
    policy: SendPolicy,
    config: CampaignsConfig,
    client: EgressClient,
    actor: Actor,
    /// When each campaign was last counted, and how long that took.
    last_progress: std::collections::HashMap<Uuid, (Instant, Duration)>,
}

impl Worker {
    async fn run(mut self, shutdown: CancellationToken) {
        let mut appended = self.store.appended();
        let poll = Duration::from_millis(self.config.poll_millis.max(10));
        while !shutdown.is_cancelled() {
            let busy = match self.round().await {
                Ok(busy) => busy,
                Err(error) => {
                    tracing::warn!(%error, "a campaign round failed");
                    false
                }
            };
            if busy {
                continue;
            }
            let next_due = campaigns::next_due(self.store.pool()).await;
            if !super::wait_for_work(&mut appended, next_due, poll, &shutdown).await {
                break;
            }
        }
    }

    /// One pass over every active campaign; `true` when it did something
    /// that may have more to do at once.
    async fn round(&mut self) -> Result<bool, CommandError> {
        let mut busy = false;
        let active: Vec<(Uuid, String, String)> = sqlx::query_as(
            "SELECT campaign_id, tenant_id, status FROM campaigns \
             WHERE status IN ('SCHEDULED', 'SENDING', 'SENT') \
               AND (status <> 'SCHEDULED' OR schedule_at IS NULL OR schedule_at <= now()) \
             ORDER BY campaign_id",
        )
        .fetch_all(self.store.pool())
        .await?;
        self.last_progress
            .retain(|id, _| active.iter().any(|(active, _, _)| active == id));
        for (id, tenant, status) in active {
            let Ok(tenant_id) = TenantId::parse(&tenant) else {
                continue;
            };
            let outcome = self.advance(id, &tenant_id, &status).await;
            match outcome {
                Ok(did) => busy |= did,
                Err(error) => {
                    tracing::warn!(campaign_id = %id, %error, "advancing a campaign failed")
                }
            }
        }
        busy |= self.send_callbacks().await?;
        Ok(busy)
    }

    async fn advance(
        &mut self,
        id: Uuid,
        tenant_id: &TenantId,
        status: &str,
    ) -> Result<bool, CommandError> {
        let store = &self.store;
        match status {
            "SCHEDULED" => campaigns::start(store, tenant_id, id, &self.actor).await,
            "SENDING" if self.has_room(id).await? => {
                let released =
                    campaigns::release_next_batch(store, tenant_id, id, &self.policy, &self.actor)
                        .await?;
                self.progress(id, tenant_id).await?;
                Ok(released.batch_done)
            }
            _ => {
                self.progress(id, tenant_id).await?;
                Ok(false)
            }
        }
    }

    /// Fewer than `queued_batches` batches of the campaign wait in the
    /// delivery queue.
    async fn has_room(&self, id: Uuid) -> Result<bool, sqlx::Error> {
        let size: Option<i32> = sqlx::query_scalar(
            "SELECT (spec ->> 'batch_size')::int FROM campaigns WHERE campaign_id = $1",
        )
        .bind(id)
        .fetch_optional(self.store.pool())
        .await?;
        let limit =
            i64::from(size.unwrap_or(1_000).max(1)) * i64::from(self.config.queued_batches.max(1));
        let queued: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT 1 FROM delivery_queue q \
                 JOIN campaign_messages m ON m.notification_id = q.notification_id \
                 WHERE m.campaign_id = $1 LIMIT $2) queued",
        )
        .bind(id)
        .bind(limit)
        .fetch_one(self.store.pool())
        .await?;
        Ok(queued < limit)
    }

    /// Recounts the campaign's messages, at most every
    /// `progress_every_millis` and never more than a tenth of the time: a
    /// campaign of a million messages takes a while to count.
    async fn progress(&mut self, id: Uuid, tenant_id: &TenantId) -> Result<(), CommandError> {
        let every = Duration::from_millis(self.config.progress_every_millis);
        if let Some((at, took)) = self.last_progress.get(&id)
            && at.elapsed() < every.max(*took * 10)
        {
            return Ok(());
        }
        let started = Instant::now();
        let outcome = campaigns::check_progress(&self.store, tenant_id, id, &self.actor).await;
        self.last_progress.insert(id, (started, started.elapsed()));
        outcome.map(|_| ())
    }

    async fn send_callbacks(&self) -> Result<bool, CommandError> {
        let due = campaigns::claim_due(self.store.pool(), CALLBACK_CLAIM, CALLBACK_LEASE).await?;
        let busy = !due.is_empty();
        for wave in due.chunks(CALLBACK_CONCURRENCY) {
            let mut calls = Vec::with_capacity(wave.len());
            for row in wave {
                calls.push(self.deliver(row));
            }
            futures::future::join_all(calls).await;
        }
        Ok(busy)
    }

    async fn deliver(&self, row: &CallbackRow) {
        let outcome = self.attempt(row).await;
        if let CallbackOutcome::Failed { error } = &outcome {
            tracing::warn!(callback_id = %row.callback_id, campaign_id = %row.campaign_id, %error, "a campaign callback failed for good");
        }
        if let Err(error) = campaigns::record(self.store.pool(), row.callback_id, &outcome).await {
            // The lease brings it back; receivers dedupe by webhook-id.
            tracing::warn!(callback_id = %row.callback_id, %error, "recording a callback failed");
        }
    }

    async fn attempt(&self, row: &CallbackRow) -> CallbackOutcome {
        let (Ok(tenant_id), Ok(url)) = (TenantId::parse(&row.tenant_id), HttpUrl::parse(&row.url))
        else {
            return CallbackOutcome::Failed {
                error: "the stored callback is unreadable".into(),
            };
        };
        let secrets = match campaigns::signing_secrets(self.store.pool(), &tenant_id, &url).await {
            Ok(secrets) if !secrets.is_empty() => secrets,
            Ok(_) => {
                return CallbackOutcome::Failed {
                    error: "no secret to sign with".into(),
                };
            }
            Err(error) => return self.retry(row, format!("looking up the secret failed: {error}")),
        };
        match post_signed(
            &self.client,
            &url,
            &secrets,
            &row.callback_id.to_string(),
            row.body.clone().into_bytes(),
            CALLBACK,
        )
        .await
        {
            Ok(()) => CallbackOutcome::Delivered,
            Err(error) => self.retry(row, error.to_string()),
        }
    }

    /// The next attempt after the schedule's pause, or failed once the
    /// schedule is used up. A receiver's 4xx is retried too: it is the
    /// customer's endpoint, often fixed in minutes.
    fn retry(&self, row: &CallbackRow, error: String) -> CallbackOutcome {
        let pause = self
            .config
            .callback_retry_seconds
            .get(row.attempts.max(0) as usize)
            .and_then(|seconds| TimeDelta::try_milliseconds((seconds * 1000.0) as i64));
        match pause.and_then(|pause| Utc::now().checked_add_signed(pause)) {
            Some(at) => CallbackOutcome::Retry { at, error },
            None => CallbackOutcome::Failed {
                error: format!("gave up after {} attempts: {error}", row.attempts + 1),
            },
        }
    }
}
