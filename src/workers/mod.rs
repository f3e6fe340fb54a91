//! Loops that move notifications along (docs/architecture.md): rank, schedule,
//! throttle, dispatch with retries and failover, expire.

pub mod attachments;
pub mod audience;
pub mod breaker;
pub mod callbacks;
pub mod campaigns;
pub mod compose;
pub mod dispatcher;
pub mod email_links;
pub mod lanes;
pub mod ranker;
pub mod retry;
pub mod routing;
pub mod scheduler;
pub mod stop_gate;
pub mod throttle;
pub mod workflows;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::TimeDelta;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::commands::limits::{Limits, LimitsConfig};
use crate::commands::links::LinksConfig;
use crate::commands::notifications::SendPolicy;
use crate::domain::attachment::AttachmentsConfig;
use crate::domain::values::Channel;
use crate::egress::{Egress, EgressConfig};
use crate::eventstore::EventStore;
use crate::providers::Providers;
use breaker::BreakerConfig;

/// The sections of the configuration the workers read (`Config::worker_options`).
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub idempotency_window: Duration,
    pub ranking: ranker::RankingConfig,
    pub routing: RoutingConfig,
    pub delivery: DeliveryConfig,
    pub breaker: BreakerConfig,
    pub limits: LimitsConfig,
    /// See `Config::operator_tenants`.
    pub operator_tenants: Vec<String>,
    pub campaigns: campaigns::CampaignsConfig,
    pub scheduler: scheduler::SchedulerConfig,
    /// `[links]` with its public URL resolved (`Config::links`).
    pub links: LinksConfig,
    pub attachments: AttachmentsConfig,
    pub egress: EgressConfig,
    /// `[workflows]`: the workflow worker's timers and time scale.
    pub workflows: crate::commands::workflows::WorkflowsConfig,
}

/// Starts the worker loops of a `--roles workers` process (the dispatcher,
/// the status-callback sender, the campaign worker, the scheduler and the
/// workflow worker); the
/// handle ends when they have stopped after `shutdown`.
pub async fn spawn(
    store: EventStore,
    providers: Providers,
    options: WorkerOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let ranker = ranker::Ranker::new(&options.ranking).context("configuring the ranker")?;
    let composer = compose::Composer::new(store.pool(), &options).await?;
    let egress = Egress::new(&options.egress);
    let send_policy = SendPolicy {
        idempotency_window: options.idempotency_window,
        limits: Arc::new(Limits::new(options.limits).with_operators(&options.operator_tenants)),
        attachments: Arc::new(options.attachments),
        egress: egress.clone(),
    };
    let settings = dispatcher::DispatchSettings {
        providers,
        routing: options.routing,
        delivery: options.delivery.clone(),
        breakers: breaker::Breakers::new(&options.breaker),
        ranker,
        limits: send_policy.limits.clone(),
        composer,
    };
    let callbacks = callbacks::spawn(
        store.clone(),
        options.delivery,
        egress.clone(),
        shutdown.clone(),
    );
    let campaigns = campaigns::spawn(
        store.clone(),
        send_policy.clone(),
        options.campaigns,
        egress,
        shutdown.clone(),
    );
    let workflows = workflows::spawn(
        store.clone(),
        crate::commands::workflows::WorkflowSettings {
            policy: send_policy.clone(),
            config: options.workflows,
        },
        shutdown.clone(),
    );
    let scheduler = scheduler::spawn(
        store.clone(),
        send_policy,
        options.scheduler,
        shutdown.clone(),
    );
    let dispatcher = dispatcher::Dispatcher::new(store, settings).spawn(shutdown);
    Ok(tokio::spawn(async move {
        let _ = tokio::join!(dispatcher, callbacks, campaigns, scheduler, workflows);
    }))
}

/// An idle claim loop's wait: until something is appended (here or, through
/// NOTIFY, in another process), the next row falls due (`next_due`, at most
/// `poll` away), or shutdown. `false` on shutdown.
async fn wait_for_work<E>(
    appended: &mut tokio::sync::watch::Receiver<u64>,
    next_due: Result<Option<chrono::DateTime<chrono::Utc>>, E>,
    poll: Duration,
    shutdown: &CancellationToken,
) -> bool {
    let sleep = match next_due {
        Ok(Some(due)) => (due - chrono::Utc::now())
            .to_std()
            .unwrap_or_default()
            .min(poll),
        _ => poll,
    };
    tokio::select! {
        _ = appended.changed() => true,
        _ = tokio::time::sleep(sleep) => true,
        _ = shutdown.cancelled() => false,
    }
}

/// How the dispatcher claims, paces and retries work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Pauses before each retry, for channels not named in `retry_delays_by_channel`.
    pub retry_delays_seconds: Vec<f64>,
    /// Per-channel schedules, e.g. `ntfy = [1, 2, 4]` (a quick notice that is
    /// worthless late).
    pub retry_delays_by_channel: BTreeMap<Channel, Vec<f64>>,
    /// Each pause is moved by up to this fraction either way, so retries of
    /// a burst do not arrive together.
    pub retry_jitter: f64,
    /// A claim not finished within this time returns to the queue.
    pub lease_seconds: u64,
    /// Rows claimed per round trip.
    pub claim_batch: u32,
    /// Messages in flight per provider instance in one process.
    pub provider_concurrency: usize,
    /// The part of each provider's concurrency that LOW-priority messages
    /// (campaigns) may take, so HIGH and NORMAL ones never queue behind a
    /// bulk send for a provider slot.
    pub low_priority_share: f64,
    /// The part of each provider's concurrency (and of a process's claimed
    /// work and callbacks in flight) one tenant may hold, so one tenant's
    /// backlog leaves room for everyone else's; its rows over that wait in
    /// the queue.
    pub tenant_share: f64,
    /// Calls in flight to one webhook endpoint origin (scheme, host, port),
    /// so a slow endpoint holds at most this many of a provider's slots.
    pub endpoint_concurrency: usize,
    /// Calls in flight to one host, whatever the scheme and port.
    pub host_concurrency: usize,
    /// A destination (webhook endpoint origin, or provider) whose calls
    /// have answered within this many milliseconds on average is fast: it
    /// is not held to `endpoint_concurrency` and `host_concurrency`, and
    /// its tenant may go past `tenant_share` into provider slots and claimed
    /// rows nobody is waiting for. Caps are for what answers slowly; a fast call gives its
    /// slot back before anyone waits long. A destination not called in the
    /// last minute counts as slow until it answers.
    pub fast_answer_ms: u64,
    /// The breaker of each webhook endpoint origin (deliveries and status
    /// callbacks); an endpoint's failures never open its provider's breaker.
    pub endpoint_breaker: BreakerConfig,
    /// A provider call taking longer fails as transient.
    pub provider_timeout_seconds: u64,
    /// How often a held notification (every route's breaker open, a
    /// throttle) is looked at again. Held again for the same reason within
    /// this time, it records no new event; its queue row alone moves.
    pub recheck_seconds: f64,
    /// Concurrent dispatch loops in one process.
    pub dispatchers: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            retry_delays_seconds: vec![10.0, 60.0, 300.0],
            retry_delays_by_channel: BTreeMap::new(),
            retry_jitter: 0.2,
            lease_seconds: 60,
            claim_batch: 200,
            provider_concurrency: 64,
            low_priority_share: 0.25,
            tenant_share: 0.5,
            endpoint_concurrency: 8,
            host_concurrency: 32,
            fast_answer_ms: 250,
            endpoint_breaker: BreakerConfig::default(),
            provider_timeout_seconds: 10,
            recheck_seconds: 5.0,
            dispatchers: 2,
        }
    }
}

impl DeliveryConfig {
    /// `recheck_seconds` as a delay, between a millisecond and an hour.
    pub fn recheck(&self) -> TimeDelta {
        let millis = (self.recheck_seconds * 1000.0).clamp(1.0, 3_600_000.0);
        TimeDelta::milliseconds(if millis.is_nan() {
            5_000
        } else {
            millis as i64
        })
    }

    pub fn retry_delays(&self, channel: Channel) -> &[f64] {
        self.retry_delays_by_channel
            .get(&channel)
            .unwrap_or(&self.retry_delays_seconds)
    }
}

/// Which provider instances carry each channel, and in what order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// Ordered provider names per channel: the first healthy one is tried,
    /// a transient failure or an open breaker moves to the next.
    pub channels: BTreeMap<Channel, Vec<String>>,
    /// Categories that take the reliability-first order (the configured one).
    pub transactional_categories: Vec<String>,
    /// Categories that take the cheapest healthy provider first.
    pub marketing_categories: Vec<String>,
    /// Cost per message by provider, by destination country (ISO 3166
    /// alpha-2) with a `default` entry; used by cost-aware routing and budgets.
    pub costs: BTreeMap<String, BTreeMap<String, f64>>,
    /// Per tenant id, the only provider instances its messages may use
    /// (an allow-list); a tenant not named may use every one.
    pub tenant_providers: BTreeMap<String, Vec<String>>,
}

impl RoutingConfig {
    /// The prices a send is charged against the budget with: each channel's
    /// first provider's.
    pub fn cost_table(&self) -> crate::commands::limits::CostTable {
        crate::commands::limits::CostTable {
            by_channel: self
                .channels
                .iter()
                .filter_map(|(channel, providers)| {
                    let prices = self.costs.get(providers.first()?)?;
                    Some((*channel, prices.clone()))
                })
                .collect(),
        }
    }
}

impl Default for RoutingConfig {
    fn default() -> Self {
        let console = || vec!["console".to_string()];
        RoutingConfig {
            channels: BTreeMap::from([
                (Channel::Email, console()),
                (Channel::Sms, console()),
                (Channel::Push, console()),
                (Channel::Ntfy, console()),
                (Channel::Webhook, vec!["webhook".to_string()]),
                (Channel::InApp, vec!["inapp".to_string()]),
            ]),
            transactional_categories: vec!["transactional".into(), "security".into()],
            marketing_categories: vec!["marketing".into()],
            costs: BTreeMap::new(),
            tenant_providers: BTreeMap::new(),
        }
    }
}
