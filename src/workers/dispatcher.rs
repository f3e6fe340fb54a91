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
//!
//! A campaign message takes a last look at its campaign once it holds every
//! permit for its call ([`super::stop_gate`]): if the campaign was paused or
//! cancelled since the claim, the attempt is withdrawn or the message
//! cancelled instead, and the provider is never called.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::audience::{AudienceGate, BatchAudience, Reach};
use super::breaker::{BreakerState, Breakers, endpoint_key, split_endpoint_key};
use super::compose::Composer;
use super::lanes::{AnswerTimes, LanePermit, Lanes, share_of};
use super::ranker::Ranker;
use super::retry::retry_delay;
use super::routing::{Availability, Route, RouteDecision, next_route};
use super::stop_gate::{CampaignGate, Stop};
use super::{DeliveryConfig, RoutingConfig, throttle};
use crate::commands::limits::Limits;
use crate::commands::notifications::{Change, Loaded, append_changes, load_many};
use crate::commands::webhook_endpoints;
use crate::commands::{Actor, CommandError};
use crate::domain::delivery_plan::{self, DeliveryFacts, Occasion, Planned, Throttled};
use crate::domain::ranking::Ranking;
use crate::domain::values::NotificationId;
use crate::domain::values::{Channel, Locale, Priority};
use crate::domain::values::{HttpUrl, TenantId};
use crate::domain::{
    Aggregate, Content, DeliveredContent, DomainError, Notification, NotificationCommand,
    NotificationEvent, NotificationState,
};
use crate::egress::SendError;
use crate::eventstore::EventStore;
use crate::projections::delivery_queue;
use crate::providers::{Destination, Providers, Receipt};
use crate::signing::WebhookSecret;
use crate::telemetry::trace::TracePoint;
use crate::ttl_cache::TtlCache;
use tracing::Instrument;

/// The longest idle sleep; wake-ups from appends usually come much sooner.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// How often each process publishes its provider health and queue depth.
const HEALTH_EVERY: Duration = Duration::from_secs(2);
/// LOW rows take at most this fraction (1/n) of a claim: a claim of bulk
/// work is then quick to dispatch, and the next claim, where a HIGH send
/// that arrived meanwhile goes first, comes soon.
const LOW_CLAIM_SHARE: u32 = 4;
/// How long past a refused HIGH or NORMAL attempt's return its bucket stays
/// held from LOW ones at least (see `throttle`): time for a busy worker to
/// claim it.
const URGENT_HOLD_GRACE: TimeDelta = TimeDelta::milliseconds(500);
/// Outcomes appended together at most.
const OUTCOME_BATCH: usize = 256;

/// After a claim that left full tenants out found nobody else's rows due,
/// claims within this time go straight to those tenants' rows when they
/// answer fast. Looking for others' rows first walks past every due row of
/// the tenants left out: under a lone tenant's backlog that walk cost more
/// than the claim, and grew with the backlog it was slowing down. Another
/// tenant's row that falls due meanwhile waits at most this long.
const NOBODY_ELSE_DUE_FOR: Duration = Duration::from_millis(100);

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
    breakers: Breakers,
    ranker: Ranker,
    limits: Arc<Limits>,
    webhook_secrets: WebhookSecrets,
    audience: AudienceGate,
    composer: Composer,
    /// Calls in flight per provider instance.
    provider_slots: HashMap<String, Arc<Semaphore>>,
    /// What LOW-priority calls take first, per provider instance: their
    /// share of its slots (`low_priority_share`).
    low_priority_lanes: Lanes,
    /// What each tenant's calls take first, per provider instance and tenant
    /// (`tenant_share` of its slots), the same way.
    tenant_lanes: Lanes,
    /// Per webhook endpoint origin and per host, taken before anything
    /// else, so a slow endpoint's messages wait holding no provider slot.
    endpoint_lanes: Lanes,
    host_lanes: Lanes,
    /// Which destinations answer fast enough to go past those caps.
    answer_times: AnswerTimes,
    /// Breakers per tenant and webhook endpoint origin: an endpoint's
    /// failures pass over that endpoint, never the provider.
    endpoint_breakers: Breakers,
    /// Sends in flight, so claims never outrun the sends.
    in_flight: Arc<Semaphore>,
    /// Each tenant's claimed rows until their send ends, per priority band
    /// ([`claim_band`]): at most its share of `in_flight`; a tenant holding
    /// that many is left out of that band's claims, so its own LOW backlog
    /// never keeps its HIGH and NORMAL rows from being claimed.
    tenant_claims: Lanes,
    /// When a claim last found no due rows but those of the tenants it left
    /// out (see [`NOBODY_ELSE_DUE_FOR`]).
    nobody_else_due: std::sync::Mutex<Option<tokio::time::Instant>>,
    /// The last look at a campaign message's campaign before its call.
    campaign_gate: CampaignGate,
    actor: Actor,
}

/// How long a looked-up endpoint's secrets are reused: a rotation or a new
/// endpoint takes effect within this time.
const SECRETS_TTL: Duration = Duration::from_secs(5);

/// The signing secrets of the tenants' registered webhook endpoints, by URL
/// (`None`: not registered), looked up once per `SECRETS_TTL` rather than
/// once per message.
struct WebhookSecrets {
    cache: TtlCache<(TenantId, String), Option<Vec<WebhookSecret>>>,
}

impl Default for WebhookSecrets {
    fn default() -> Self {
        WebhookSecrets {
            cache: TtlCache::new(SECRETS_TTL),
        }
    }
}

impl WebhookSecrets {
    /// The secrets for `url`; an unregistered URL is a permanent failure, as
    /// Herald posts only to endpoints a tenant registered (and signs them).
    async fn get(
        &self,
        pool: &sqlx::PgPool,
        tenant_id: &TenantId,
        url: &HttpUrl,
    ) -> Result<Vec<WebhookSecret>, SendError> {
        let key = (tenant_id.clone(), url.as_str().to_string());
        let secrets = match self.cache.get(&key) {
            Some(secrets) => secrets,
            None => {
                let secrets = webhook_endpoints::signing_secrets(pool, tenant_id, url)
                    .await
                    .map_err(|e| {
                        SendError::transient(format!(
                            "looking up the endpoint's secrets failed: {e}"
                        ))
                    })?;
                self.cache.insert(key, secrets.clone());
                secrets
            }
        };
        secrets.ok_or_else(|| {
            SendError::permanent(
                "the webhook URL is not a registered endpoint of this tenant; register it with createWebhookEndpoint",
            )
        })
    }
}

/// The kind of bucket a key names (its first segment), for metrics.
fn bucket_kind(key: &str) -> String {
    key.split(':').next().unwrap_or("bucket").to_string()
}

/// The place each claimed row holds in its tenant's share, until its send
/// ends (or, for a row not sent now, until its claim is dealt with).
type Shares = HashMap<NotificationId, LanePermit>;

/// A provider call that finished, waiting to be recorded.
struct Outcome {
    state: NotificationState,
    version: i64,
    route: Route,
    /// Where else the recipient can be reached, should this route fail.
    reach: Vec<(Channel, Destination)>,
    result: Result<Delivered, Unsent>,
    /// The provider call's place in the notification's trace, else the dispatch's.
    trace: Option<TracePoint>,
}

/// Why a message did not go out.
enum Unsent {
    /// Its call failed, or could not be made.
    Failed(SendError),
    /// Its campaign stopped it at the last look, before any call.
    Withheld(Stop),
}

impl From<SendError> for Unsent {
    fn from(error: SendError) -> Unsent {
        Unsent::Failed(error)
    }
}

type Next = delivery_plan::Next<Destination>;

/// What a plan learns from the batch: the recipients' reach and quiet
/// hours, and the providers' and endpoints' circuits.
struct BatchFacts<'a> {
    dispatcher: &'a Dispatcher,
    audience: &'a BatchAudience,
}

impl DeliveryFacts for BatchFacts<'_> {
    type Destination = Destination;

    fn reach(&self, state: &NotificationState) -> Reach {
        self.audience.reach(state)
    }

    fn quiet_until(&self, state: &NotificationState, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.audience.quiet_until(state, now)
    }

    fn next_route(
        &self,
        state: &NotificationState,
        routes: &[(Channel, Destination)],
    ) -> RouteDecision {
        next_route(
            state,
            routes,
            &self.dispatcher.inner.routing,
            |provider, destination| {
                self.dispatcher
                    .availability(&state.tenant_id, provider, destination, true)
            },
        )
    }
}

/// A provider's acceptance, and the words to remember with it.
struct Delivered {
    receipt: Receipt,
    content: Option<DeliveredContent>,
}

/// What a dispatcher is built from (see `workers::spawn` for the real one).
pub struct DispatchSettings {
    pub providers: Providers,
    pub routing: RoutingConfig,
    pub delivery: DeliveryConfig,
    pub breakers: Breakers,
    pub ranker: Ranker,
    pub limits: Arc<Limits>,
    pub composer: Composer,
}

impl Dispatcher {
    pub fn new(store: EventStore, settings: DispatchSettings) -> Dispatcher {
        let DispatchSettings {
            providers,
            routing,
            delivery,
            breakers,
            ranker,
            limits,
            composer,
        } = settings;
        let slots = |size: usize| {
            providers
                .names()
                .map(|name| (name.to_string(), Arc::new(Semaphore::new(size.max(1)))))
                .collect::<HashMap<_, _>>()
        };
        let provider_slots = slots(delivery.provider_concurrency);
        crate::telemetry::metrics::zero_providers(providers.names().flat_map(|name| {
            Channel::ALL
                .into_iter()
                .filter(|channel| providers.get(name).is_some_and(|p| p.supports(*channel)))
                .map(move |channel| (channel, name))
        }));
        let share = |fraction| Lanes::new(share_of(delivery.provider_concurrency, fraction));
        let low_priority_lanes = share(delivery.low_priority_share);
        let tenant_lanes = share(delivery.tenant_share);
        let in_flight_size = (delivery.claim_batch as usize * 2).max(1);
        let in_flight = Arc::new(Semaphore::new(in_flight_size));
        let tenant_claims = Lanes::new(share_of(in_flight_size, delivery.tenant_share));
        let endpoint_lanes = Lanes::new(delivery.endpoint_concurrency);
        let host_lanes = Lanes::new(delivery.host_concurrency);
        let answer_times = AnswerTimes::new(Duration::from_millis(delivery.fast_answer_ms));
        let endpoint_breakers = Breakers::per_endpoint(&delivery.endpoint_breaker);
        Dispatcher {
            inner: Arc::new(Inner {
                store,
                providers,
                routing,
                delivery,
                breakers,
                ranker,
                limits,
                webhook_secrets: WebhookSecrets::default(),
                audience: AudienceGate::default(),
                composer,
                worker_id: Uuid::now_v7(),
                provider_slots,
                low_priority_lanes,
                tenant_lanes,
                endpoint_lanes,
                host_lanes,
                answer_times,
                endpoint_breakers,
                in_flight,
                tenant_claims,
                nobody_else_due: std::sync::Mutex::new(None),
                campaign_gate: CampaignGate::default(),
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
            let health = tokio::spawn(self.clone().report_health(shutdown.clone()));
            while loops.join_next().await.is_some() {}
            let _ = health.await;
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
            match self.claim(room).await {
                Ok((claims, mut held)) if !claims.is_empty() => {
                    // HIGH and NORMAL go out before the LOW rows of the same
                    // claim are even looked at.
                    let low = delivery_queue::rank(Priority::Low);
                    let (bulk, urgent): (Vec<_>, Vec<_>) =
                        claims.iter().partition(|c| c.priority >= low);
                    for part in [urgent, bulk] {
                        if part.is_empty() {
                            continue;
                        }
                        let ids: Vec<NotificationId> = part
                            .iter()
                            .map(|c| NotificationId::from(c.notification_id))
                            .collect();
                        if let Err(error) = self.dispatch_batch(&ids, &mut held, &outcomes).await {
                            tracing::warn!(%error, claimed = ids.len(), "a dispatch batch failed; its claims return when their lease runs out");
                        }
                    }
                }
                Ok(_) => {
                    let next_due = delivery_queue::next_due(inner.store.pool()).await;
                    if !super::wait_for_work(&mut appended, next_due, IDLE_POLL, &shutdown).await {
                        break;
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

    /// Claims up to `room` due rows, each holding a place in its tenant's
    /// share of claimed work. A tenant whose share is full is left out,
    /// unless everyone else's due rows fit in the room and its calls answer
    /// fast: then it takes the rest of the room without places (work
    /// conserving, as for provider slots), since fast calls give the room
    /// back before anyone waits long, and the next claim leaves it out again
    /// if another tenant's rows fall due. Having found nobody else's rows
    /// due, it does not look again for [`NOBODY_ELSE_DUE_FOR`], and keeps a
    /// fast tenant's rows past its share meanwhile.
    async fn claim(
        &self,
        room: usize,
    ) -> Result<(Vec<delivery_queue::Claim>, Shares), sqlx::Error> {
        let inner = &self.inner;
        let rows = |room: usize, excluded: delivery_queue::Excluded| async move {
            delivery_queue::claim(
                inner.store.pool(),
                inner.worker_id,
                room as u32,
                (room as u32 / LOW_CLAIM_SHARE).max(1),
                inner.delivery.lease_seconds,
                &excluded,
            )
            .await
        };
        let excluded = excluded(&inner.tenant_claims);
        let fast = |tenant: &str| inner.answer_times.is_fast(&tenant_destination(tenant));
        let slow = excluded.retaining(|tenant| !fast(tenant));
        let found_nobody_lately = inner
            .nobody_else_due
            .lock()
            .ok()
            .and_then(|at| *at)
            .is_some_and(|at| at.elapsed() < NOBODY_ELSE_DUE_FOR);
        if slow != excluded && found_nobody_lately {
            let claims = rows(room, slow).await?;
            return Ok(self.hold_shares(claims, fast).await);
        }
        let mut claims = rows(room, excluded.clone()).await?;
        let short = claims.len() < room;
        if short && slow != excluded {
            if let Ok(mut at) = inner.nobody_else_due.lock() {
                *at = Some(tokio::time::Instant::now());
            }
            claims.extend(rows(room - claims.len(), slow).await?);
        }
        // Rows past a fast tenant's share that nobody else is waiting for
        // are kept: handed back, they were claimed again at once (at 3,000/s
        // a lone tenant handed back and reclaimed 20,755 of 45,000 rows).
        let nobody_waits = short || found_nobody_lately;
        Ok(self
            .hold_shares(claims, |tenant| nobody_waits && fast(tenant))
            .await)
    }

    /// Takes a place in its tenant's share for each claimed row; rows of a
    /// tenant whose share is full go back to the queue for later, in claim
    /// order (the claim left out tenants already full, but one claim may
    /// hold more than a tenant's remaining share), unless `may_borrow` lets
    /// its tenant keep them without a place.
    async fn hold_shares(
        &self,
        claims: Vec<delivery_queue::Claim>,
        may_borrow: impl Fn(&str) -> bool,
    ) -> (Vec<delivery_queue::Claim>, Shares) {
        let inner = &self.inner;
        let mut kept = Vec::with_capacity(claims.len());
        let mut held = Shares::new();
        let mut over = Vec::new();
        for claim in claims {
            let id = NotificationId::from(claim.notification_id);
            match inner
                .tenant_claims
                .try_acquire(&claim_band(&claim.tenant_id, claim.priority))
            {
                Some(permit) => {
                    held.insert(id, permit);
                    kept.push(claim);
                }
                None if may_borrow(&claim.tenant_id) => kept.push(claim),
                None => over.push(id),
            }
        }
        if !over.is_empty() {
            metrics::counter!("delivery_claims_over_tenant_share_total")
                .increment(over.len() as u64);
            if let Err(error) = delivery_queue::release(inner.store.pool(), &over).await {
                tracing::warn!(%error, count = over.len(), "could not hand back rows over their tenant's share; they return when their lease runs out");
            }
        }
        (kept, held)
    }

    /// Publishes this process's view of each provider (breaker, calls in
    /// flight) to `provider_health` for the ops views, and the queue depth
    /// to metrics, every few seconds; withdraws it on shutdown.
    async fn report_health(self, shutdown: CancellationToken) {
        let inner = &self.inner;
        loop {
            if let Err(error) = self.publish_health().await {
                tracing::debug!(%error, "could not publish provider health");
            }
            tokio::select! {
                _ = tokio::time::sleep(HEALTH_EVERY) => {}
                _ = shutdown.cancelled() => break,
            }
        }
        let withdrawn = sqlx::query("DELETE FROM provider_health WHERE worker_id = $1")
            .bind(inner.worker_id)
            .execute(inner.store.pool())
            .await;
        if let Err(error) = withdrawn {
            tracing::debug!(%error, "could not withdraw provider health");
        }
    }

    async fn publish_health(&self) -> Result<(), sqlx::Error> {
        let inner = &self.inner;
        let snapshot = inner.breakers.snapshot();
        let endpoints: Vec<delivery_queue::EndpointHealth> = inner
            .endpoint_breakers
            .snapshot()
            .into_iter()
            .map(|breaker| {
                let (tenant_id, origin) = split_endpoint_key(&breaker.key);
                delivery_queue::EndpointHealth {
                    in_flight: inner.endpoint_lanes.in_use(origin) as i32,
                    tenant_id: tenant_id.to_string(),
                    origin: origin.to_string(),
                    state: breaker.state.as_str().to_string(),
                    recent_failures: breaker.recent_failures as i32,
                    opened_at: breaker.opened_at,
                }
            })
            .collect();
        let mut by_provider = Vec::new();
        let mut providers = Vec::new();
        let mut states = Vec::new();
        let mut failures = Vec::new();
        let mut opened = Vec::new();
        let mut in_flight = Vec::new();
        for name in inner.providers.names() {
            let breaker = snapshot.iter().find(|b| b.key == name);
            providers.push(name.to_string());
            states.push(breaker.map_or("closed", |b| b.state.as_str()));
            let open = breaker.is_some_and(|b| b.state == BreakerState::Open);
            metrics::gauge!("provider_circuit_open", "provider" => name.to_string())
                .set(f64::from(u8::from(open)));
            failures.push(breaker.map_or(0, |b| b.recent_failures as i32));
            opened.push(breaker.and_then(|b| b.opened_at));
            let slots = inner.provider_slots.get(name);
            in_flight.push(slots.map_or(0, |s| {
                (inner.delivery.provider_concurrency.max(1) - s.available_permits()) as i32
            }));
            let webhooks = inner
                .providers
                .get(name)
                .is_some_and(|p| p.supports(Channel::Webhook));
            by_provider.push(sqlx::types::Json(if webhooks {
                endpoints.as_slice()
            } else {
                &[]
            }));
        }
        sqlx::query(
            "INSERT INTO provider_health (worker_id, provider, state, recent_failures, opened_at, in_flight, endpoints, updated_at) \
             SELECT $1, * , now() FROM unnest($2::text[], $3::text[], $4::int4[], $5::timestamptz[], $6::int4[], $7::jsonb[]) \
             ON CONFLICT (worker_id, provider) DO UPDATE SET state = EXCLUDED.state, \
                 recent_failures = EXCLUDED.recent_failures, opened_at = EXCLUDED.opened_at, \
                 in_flight = EXCLUDED.in_flight, endpoints = EXCLUDED.endpoints, updated_at = now()",
        )
        .bind(inner.worker_id)
        .bind(&providers)
        .bind(&states)
        .bind(&failures)
        .bind(&opened)
        .bind(&in_flight)
        .bind(&by_provider)
        .execute(inner.store.pool())
        .await?;
        // Processes that stopped without withdrawing (SIGKILL) age out.
        sqlx::query("DELETE FROM provider_health WHERE updated_at < now() - interval '5 minutes'")
            .execute(inner.store.pool())
            .await?;
        let (oldest_due, dead_letters) = delivery_queue::waiting(inner.store.pool()).await?;
        metrics::gauge!("delivery_queue_oldest_due_seconds").set(oldest_due);
        metrics::gauge!("dead_letter_queue_depth").set(dead_letters as f64);
        for (priority, depth) in delivery_queue::depth_by_priority(inner.store.pool()).await? {
            let priority = match priority {
                0 => "high",
                1 => "normal",
                _ => "low",
            };
            metrics::gauge!("delivery_queue_depth", "priority" => priority).set(depth as f64);
        }
        Ok(())
    }

    /// Decides the next step of every claimed notification, records the
    /// decisions in one append, then starts the provider calls.
    async fn dispatch_batch(
        &self,
        ids: &[NotificationId],
        held: &mut Shares,
        outcomes: &mpsc::Sender<Outcome>,
    ) -> Result<(), CommandError> {
        let inner = &self.inner;
        let streams = load_many(&inner.store, ids).await?;
        if streams.len() < ids.len() {
            let found: Vec<NotificationId> = streams.iter().map(|(id, _)| *id).collect();
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
        let mut loaded = Vec::with_capacity(streams.len());
        for (id, stream) in streams {
            match stream {
                Ok(item) => loaded.push(item),
                // Set aside alone; the rest of the claim goes on. Not sent
                // from the readable rest: the unreadable event may be the
                // attempt or the send of a message already with its
                // provider, and a guess could send it twice. Not dead-lettered
                // either: no command is decided on a partial state. It stays
                // leased and returns when the lease runs out, so once an
                // operator repairs the event it goes on with nobody requeueing
                // it; until then each claim logs why.
                Err(unreadable) => {
                    metrics::counter!("dispatcher_unreadable_streams_total").increment(1);
                    tracing::error!(
                        notification_id = %id.as_uuid(),
                        position = unreadable.position,
                        event_type = %unreadable.event_type,
                        error = %unreadable.error,
                        "a claimed notification's stream has an unreadable event; it is not dispatched until the event is repaired"
                    );
                }
            }
        }
        let states: Vec<&NotificationState> = loaded
            .iter()
            .filter_map(|item| item.notification.state())
            .collect();
        let audience = inner.audience.look_up(inner.store.pool(), &states).await?;
        let now = Utc::now();
        let mut changes = Vec::with_capacity(loaded.len());
        let mut routes = Vec::with_capacity(loaded.len());
        let mut spans = Vec::with_capacity(loaded.len());
        let mut rechecks = Vec::new();
        // Rank what is new and due, concurrently: an LLM scorer may take a
        // while. A send for later stays SCHEDULED until its time.
        let rankings = futures::future::join_all(loaded.iter().map(|item| async move {
            match item.notification.state() {
                Some(state)
                    if state.awaits_ranking() && state.schedule_at.is_none_or(|at| at <= now) =>
                {
                    Some(inner.ranker.rank(state, now).await)
                }
                _ => None,
            }
        }))
        .await;
        let mut planned = Vec::with_capacity(loaded.len());
        for (item, ranking) in loaded.into_iter().zip(rankings) {
            match self.plan(item.clone(), ranking.clone(), &audience, now, None) {
                Ok((change, next)) => planned.push((item, ranking, change, next)),
                Err(error) => {
                    tracing::error!(%error, "a queued notification could not be planned; it stays leased until its lease runs out")
                }
            }
        }
        // Tokens go by priority, then by the ranker's score (highest first),
        // then to the oldest request.
        planned.sort_by(|(_, _, a, _), (_, _, b, _)| {
            let (a, b) = (&a.state, &b.state);
            let score = |s: &NotificationState| s.score.unwrap_or(f64::NEG_INFINITY);
            delivery_queue::rank(a.request.priority)
                .cmp(&delivery_queue::rank(b.request.priority))
                .then(score(b).total_cmp(&score(a)))
                .then(a.requested_at.cmp(&b.requested_at))
        });
        // The attempts must fit the token buckets; the others wait their turn.
        let waits = self.throttle(&planned).await?;
        for ((item, ranking, change, next), wait) in planned.into_iter().zip(waits) {
            let (mut change, next) = match wait {
                None => (change, next),
                Some(wait) => match self.plan(item, ranking, &audience, now, Some(wait)) {
                    Ok(replanned) => replanned,
                    Err(error) => {
                        tracing::error!(%error, "a throttled notification could not be rescheduled; it returns when its lease runs out");
                        continue;
                    }
                },
            };
            let route = match next {
                Next::Send(route) => Some(route),
                Next::Recheck(at) => {
                    rechecks.push((change.state.notification_id, at));
                    None
                }
                Next::Rest => None,
            };
            // This step of the notification's life, in its trace; its
            // events record the span, and its provider call runs in it.
            // A hold looked at again and left as it was is no step.
            let span = if change.events.is_empty() && route.is_none() {
                tracing::Span::none()
            } else {
                let span = tracing::info_span!(
                    "dispatch",
                    notification_id = %change.state.notification_id.as_uuid(),
                    tenant_id = %change.state.tenant_id,
                );
                if let Some(trace) = change.trace {
                    trace.adopt(&span);
                }
                change.trace = TracePoint::of_span(&span).or(change.trace);
                span
            };
            changes.push(change);
            routes.push(route);
            spans.push(span);
        }
        delivery_queue::recheck(inner.store.pool(), &rechecks).await?;
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
        for (((change, route), recorded), span) in
            changes.into_iter().zip(routes).zip(recorded).zip(spans)
        {
            if let (Some(route), true) = (route, recorded) {
                let share = held.remove(&change.state.notification_id);
                self.start_send(change, route, share, &audience, outcomes.clone(), span)
                    .await;
            }
        }
        Ok(())
    }

    /// The events that move one notification on, and what it does next.
    /// `throttled`: the attempt must wait until then, for that reason.
    fn plan(
        &self,
        loaded: Loaded,
        ranking: Option<Ranking>,
        audience: &BatchAudience,
        now: DateTime<Utc>,
        throttled: Option<Throttled>,
    ) -> Result<(Change, Next), DomainError> {
        let Loaded {
            notification,
            version,
            trace,
        } = loaded;
        let occasion = Occasion {
            now,
            ranking,
            throttled,
            recheck: self.inner.delivery.recheck(),
        };
        let facts = BatchFacts {
            dispatcher: self,
            audience,
        };
        let Planned {
            events,
            state,
            next,
        } = delivery_plan::plan(notification, occasion, &facts)?;
        Ok((
            Change {
                state,
                expected_version: version,
                events,
                trace,
            },
            next,
        ))
    }

    /// Takes one token per planned attempt from every bucket it falls under,
    /// HIGH and NORMAL attempts first, then LOW ones, which yield to any
    /// bucket held for refused HIGH and NORMAL attempts (refused ones hold
    /// it until a little after they come back); says for each attempt whether, and until when, it
    /// must wait instead. A refused attempt may have taken tokens from its
    /// other buckets: throttling errs on the slow side.
    async fn throttle(
        &self,
        planned: &[(Loaded, Option<Ranking>, Change, Next)],
    ) -> Result<Vec<Option<Throttled>>, CommandError> {
        let inner = &self.inner;
        // Per band (urgent, bulk): the bucket requests and whose they are.
        let mut bands: [(Vec<throttle::BucketRequest>, Vec<usize>); 2] = Default::default();
        let mut limits_by_tenant: HashMap<String, crate::commands::limits::EffectiveLimits> =
            HashMap::new();
        for (index, (_, _, change, next)) in planned.iter().enumerate() {
            let Next::Send(route) = next else { continue };
            let tenant = &change.state.tenant_id;
            if !limits_by_tenant.contains_key(tenant.as_str()) {
                let limits = inner.limits.effective(inner.store.pool(), tenant).await?;
                limits_by_tenant.insert(tenant.to_string(), limits);
            }
            let limits = &limits_by_tenant[tenant.as_str()];
            let request = &change.state.request;
            let dispatch = throttle::Dispatch {
                tenant_id: tenant,
                channel: route.channel,
                provider: &route.provider,
                recipient: request.recipient.id.as_ref(),
                category: request.category.as_ref(),
            };
            let band = &mut bands[usize::from(request.priority == Priority::Low)];
            for bucket in throttle::buckets(limits, &dispatch, 1) {
                band.0.push(bucket);
                band.1.push(index);
            }
        }
        let mut waits: Vec<Option<Throttled>> = vec![None; planned.len()];
        for (band, (requests, owners)) in bands.iter().enumerate() {
            if requests.is_empty() {
                continue;
            }
            let urgent = band == 0;
            let pool = inner.store.pool();
            let grants = if urgent {
                throttle::take(pool, requests).await?
            } else {
                throttle::take_bulk(pool, requests).await?
            };
            // Refused attempts of one bucket queue up behind each other, one
            // token apart, rather than all coming back at the next token.
            let mut refused: HashMap<&str, u32> = HashMap::new();
            // Refused urgent attempts hold their bucket from LOW ones until a
            // little past the last one's return, so it is claimed and takes
            // its token before the hold ends.
            let mut holds: HashMap<&str, DateTime<Utc>> = HashMap::new();
            for ((request, owner), grant) in requests.iter().zip(owners).zip(grants) {
                if grant.granted > 0 {
                    continue;
                }
                let ahead = refused.entry(request.key.as_str()).or_default();
                let spacing = TimeDelta::milliseconds(
                    (f64::from(*ahead) * 1000.0 / request.rate.per_second()) as i64,
                );
                *ahead += 1;
                let until = grant.next_token_at + spacing;
                if urgent {
                    let token =
                        TimeDelta::milliseconds((1000.0 / request.rate.per_second()) as i64);
                    let held_until = until + token.max(URGENT_HOLD_GRACE);
                    let held = holds.entry(request.key.as_str()).or_insert(held_until);
                    *held = (*held).max(held_until);
                }
                let later = waits[*owner].as_ref().is_none_or(|wait| wait.until < until);
                if later {
                    metrics::counter!("notifications_throttled_total", "bucket" => bucket_kind(&request.key)).increment(1);
                    waits[*owner] = Some(Throttled {
                        until,
                        bucket: request.key.clone(),
                    });
                }
            }
            let holds: Vec<(String, DateTime<Utc>)> = holds
                .into_iter()
                .map(|(key, until)| (key.to_string(), until))
                .collect();
            throttle::hold_for_urgent(pool, &holds).await?;
        }
        Ok(waits)
    }

    /// Whether `provider` can carry `destination`, and (when `take_probe`)
    /// whether the breakers let this call through: a webhook endpoint's
    /// first, then the provider's; a half-open breaker lets one.
    fn availability(
        &self,
        tenant_id: &TenantId,
        provider: &str,
        destination: &Destination,
        take_probe: bool,
    ) -> Availability {
        let inner = &self.inner;
        match inner.providers.get(provider) {
            Some(p) if p.supports(destination.channel()) => {
                let endpoint_ok = || match destination {
                    Destination::Webhook(url) => inner
                        .endpoint_breakers
                        .try_acquire(&endpoint_key(tenant_id.as_str(), url)),
                    _ => true,
                };
                if !take_probe || (endpoint_ok() && inner.breakers.try_acquire(provider)) {
                    Availability::Ready
                } else {
                    Availability::Busy
                }
            }
            _ => Availability::Missing,
        }
    }

    async fn start_send(
        &self,
        change: Change,
        route: Route,
        share: Option<LanePermit>,
        audience: &BatchAudience,
        outcomes: mpsc::Sender<Outcome>,
        span: tracing::Span,
    ) {
        let inner = self.inner.clone();
        let reach = audience.reach(&change.state).routes;
        let locale = audience.locale(&change.state);
        let Ok(permit) = inner.in_flight.clone().acquire_owned().await else {
            return;
        };
        tokio::spawn(async move {
            let _permits = (permit, share);
            let state = change.state;
            let version = change.expected_version + change.events.len() as i64;
            let mut trace = change.trace;
            let result = call_provider(&inner, &state, &route, locale.as_ref(), &mut trace).await;
            match &result {
                // Never called: says nothing of the provider's health.
                Err(Unsent::Withheld(_)) => {}
                // A permanent error is about this message (a bad address), not
                // the provider's health; anything else counts against its breaker.
                other => {
                    let healthy =
                        !matches!(other, Err(Unsent::Failed(SendError::Transient { .. })));
                    inner.record_health(&state.tenant_id, &route, healthy);
                }
            }
            let outcome = Outcome {
                state,
                version,
                route,
                reach,
                result,
                trace,
            };
            if outcomes.send(outcome).await.is_err() {
                tracing::error!(
                    "the outcome writer stopped; this send's outcome is recorded when its lease runs out"
                );
            }
        }.instrument(span));
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
            reach,
            result,
            trace,
        } = outcome;
        let attempt = state.attempts;
        let command = match result {
            Ok(Delivered { receipt, content }) => {
                metrics::counter!("notifications_sent_total", "channel" => route.channel.as_str(), "provider" => route.provider.clone(), "tenant" => state.tenant_id.to_string()).increment(1);
                let latency = (now - state.requested_at).to_std().unwrap_or_default();
                // From the request to the provider's acceptance.
                metrics::histogram!("delivery_latency_ms", "channel" => route.channel.as_str(), "provider" => route.provider.clone()).record(latency.as_secs_f64() * 1000.0);
                NotificationCommand::RecordSent {
                    attempt,
                    provider: route.provider.clone(),
                    provider_message_id: receipt.provider_message_id,
                    content,
                }
            }
            Err(Unsent::Withheld(stop)) => {
                metrics::counter!("notifications_withheld_total", "reason" => stop.label())
                    .increment(1);
                stop.command(attempt)
            }
            Err(Unsent::Failed(error)) => {
                let permanent = error.is_permanent();
                metrics::counter!("notifications_failed_total", "channel" => route.channel.as_str(), "provider" => route.provider.clone(), "reason" => if permanent { "permanent" } else { "transient" }).increment(1);
                let retry_at = self.retry_at(&state, &route, &reach, &error, now);
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
            trace,
        })
    }

    /// When to try again after `error`, or `None` to dead-letter. A permanent
    /// error moves straight on to the next route if one is left. A transient
    /// one moves at once to the channel's next provider, until each has
    /// failed in turn; then the round waits its turn in the retry schedule
    /// (or the provider's `Retry-After`) before starting again.
    fn retry_at(
        &self,
        state: &NotificationState,
        route: &Route,
        reach: &[(Channel, Destination)],
        error: &SendError,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        match error {
            SendError::Permanent { .. } => {
                let mut after = state.clone();
                after
                    .failed_routes
                    .push((route.channel, route.provider.clone()));
                let left = next_route(
                    &after,
                    reach,
                    &self.inner.routing,
                    |provider, destination| {
                        self.availability(&state.tenant_id, provider, destination, false)
                    },
                );
                matches!(left, RouteDecision::Use(_)).then_some(now)
            }
            SendError::Transient { retry_after, .. } => {
                let providers = self
                    .inner
                    .routing
                    .candidates(state, route.channel, &route.destination)
                    .into_iter()
                    .filter(|p| {
                        self.availability(&state.tenant_id, p, &route.destination, false)
                            != Availability::Missing
                    })
                    .count()
                    .max(1) as u32;
                let failures = state.transient_failures + 1;
                if !failures.is_multiple_of(providers) {
                    return Some(now);
                }
                let delivery = &self.inner.delivery;
                let spread = rand::random_range(-1.0..=1.0);
                let delay = retry_delay(
                    delivery.retry_delays(route.channel),
                    delivery.retry_jitter,
                    failures / providers - 1,
                    *retry_after,
                    spread,
                )?;
                now.checked_add_signed(TimeDelta::from_std(delay).ok()?)
            }
        }
    }
}

impl Inner {
    /// The breaker a call's outcome counts against: its webhook endpoint's,
    /// or its provider's.
    fn record_health(&self, tenant_id: &TenantId, route: &Route, healthy: bool) {
        match &route.destination {
            Destination::Webhook(url) => self
                .endpoint_breakers
                .record(&endpoint_key(tenant_id.as_str(), url), healthy),
            _ => self.breakers.record(&route.provider, healthy),
        }
    }

    /// Places in the lanes of a webhook's endpoint and host, waited for at
    /// most half a lease: a message still waiting then fails as transient
    /// (and counts against the endpoint) rather than outliving its claim.
    /// A fast endpoint takes the places that are free and waits for none.
    async fn endpoint_places(
        &self,
        url: &HttpUrl,
        origin: &str,
    ) -> Result<Vec<LanePermit>, SendError> {
        let wait = Duration::from_secs(self.delivery.lease_seconds / 2);
        let times = &self.answer_times;
        let places = async {
            let endpoint = times.place(&self.endpoint_lanes, origin, origin).await;
            let host = times.place(&self.host_lanes, url.host(), origin).await;
            [endpoint, host].into_iter().flatten().collect()
        };
        tokio::time::timeout(wait, places).await.map_err(|_| {
            SendError::transient(format!(
                "{origin} already had {} calls in flight for {} s",
                self.endpoint_lanes.in_use(origin),
                wait.as_secs()
            ))
        })
    }

    /// A place in the tenant's share of `provider` and a slot of it. A fast
    /// destination whose tenant's share is full takes a slot nobody waits
    /// for (the slots are handed out in order, so a waiting tenant's call
    /// is served first); failing that, it waits for its share like the rest.
    async fn provider_places(
        &self,
        provider: &str,
        tenant_id: &TenantId,
        destination: &str,
    ) -> Result<(Option<LanePermit>, Option<OwnedSemaphorePermit>), SendError> {
        let share_key = format!("{provider}\n{tenant_id}");
        let share = self
            .answer_times
            .place(&self.tenant_lanes, &share_key, destination)
            .await;
        let Some(slots) = self.provider_slots.get(provider).cloned() else {
            return Ok((share, None));
        };
        let (share, slot) = match share {
            Some(share) => (Some(share), slots.acquire_owned().await),
            None => match slots.clone().try_acquire_owned() {
                Ok(slot) => (None, Ok(slot)),
                Err(_) => (
                    Some(self.tenant_lanes.acquire(&share_key).await),
                    slots.acquire_owned().await,
                ),
            },
        };
        let slot = slot.map_err(|_| SendError::transient("shutting down"))?;
        Ok((share, Some(slot)))
    }
}

/// Renders the message and calls the provider, within its concurrency limits
/// and timeout, unless its campaign stops it at the last moment. The call
/// has a span of its own; `trace` becomes its place in the trace.
async fn call_provider(
    inner: &Inner,
    state: &NotificationState,
    route: &Route,
    profile_locale: Option<&Locale>,
    trace: &mut Option<TracePoint>,
) -> Result<Delivered, Unsent> {
    let Some(provider) = inner.providers.get(&route.provider) else {
        return Err(
            SendError::permanent(format!("provider {} is not configured", route.provider)).into(),
        );
    };
    let mut message = inner
        .composer
        .compose(inner.store.pool(), state, route, profile_locale)
        .await?;
    if let Destination::Webhook(url) = &route.destination {
        message.signing_secrets = inner
            .webhook_secrets
            .get(inner.store.pool(), &state.tenant_id, url)
            .await?;
    }
    // Held until the call ends, and taken narrowest first: a message waits
    // for its endpoint, its priority's and its tenant's lanes, not in the
    // provider's own queue, so others claimed later still find a slot.
    let destination = match &route.destination {
        Destination::Webhook(url) => url.origin(),
        _ => route.provider.clone(),
    };
    let _endpoint = match &route.destination {
        Destination::Webhook(url) => inner.endpoint_places(url, &destination).await?,
        _ => Vec::new(),
    };
    let _low = match state.request.priority {
        Priority::Low => Some(inner.low_priority_lanes.acquire(&route.provider).await),
        _ => None,
    };
    let _places = inner
        .provider_places(&route.provider, &state.tenant_id, &destination)
        .await?;
    let timeout = Duration::from_secs(inner.delivery.provider_timeout_seconds.max(1));
    // The in-app feed is folded from the log, which holds a template's name
    // and variables but not its rendered words.
    let content = (route.channel == Channel::InApp
        && matches!(state.request.content, Content::Template(_)))
    .then(|| DeliveredContent {
        title: message.title.clone(),
        text: message.text.clone(),
        data: message.data.clone(),
    });
    // Last, with every permit held: a pause or cancel committed while the
    // message waited for them stops it here.
    if let Some(campaign_id) = state.request.campaign_id
        && let Some(stop) = inner
            .campaign_gate
            .check(inner.store.pool(), campaign_id)
            .await?
    {
        return Err(Unsent::Withheld(stop));
    }
    let call = tracing::info_span!(
        "provider_call",
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        provider = %route.provider,
        channel = route.channel.as_str(),
    );
    *trace = TracePoint::of_span(&call).or(*trace);
    let started = Instant::now();
    let sent = tokio::time::timeout(timeout, provider.send(&message))
        .instrument(call.clone())
        .await;
    let took = started.elapsed();
    inner.answer_times.record(&destination, took);
    inner
        .answer_times
        .record(&tenant_destination(state.tenant_id.as_str()), took);
    let sent = match sent {
        Ok(result) => result.map(|receipt| Delivered { receipt, content }),
        Err(_) => Err(SendError::transient(format!(
            "{} did not answer within {} s",
            route.provider,
            timeout.as_secs()
        ))),
    };
    call.record(
        "otel.status_code",
        if sent.is_ok() { "OK" } else { "ERROR" },
    );
    Ok(sent?)
}

/// The key of a tenant's claim share for rows of `priority`: LOW rows
/// ("bulk") and HIGH or NORMAL rows ("urgent") have a share each.
fn claim_band(tenant_id: &str, priority: i16) -> String {
    let band = if priority >= delivery_queue::rank(Priority::Low) {
        "bulk"
    } else {
        "urgent"
    };
    format!("{tenant_id}\n{band}")
}

/// The key of a tenant's answer times among the destinations': how fast its
/// calls answer, whatever their destination.
fn tenant_destination(tenant_id: &str) -> String {
    format!("tenant\n{tenant_id}")
}

/// The tenants left out of each band's claims: those whose share of the
/// band is full, and for LOW rows also those whose HIGH and NORMAL share is
/// full, so a tenant's LOW row is never claimed ahead of its own due HIGH.
fn excluded(tenant_claims: &Lanes) -> delivery_queue::Excluded {
    let mut excluded = delivery_queue::Excluded::default();
    for key in tenant_claims.full() {
        match key.rsplit_once('\n') {
            Some((tenant, "bulk")) => excluded.bulk.push(tenant.to_string()),
            Some((tenant, _)) => {
                excluded.urgent.push(tenant.to_string());
                excluded.bulk.push(tenant.to_string());
            }
            None => {}
        }
    }
    excluded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_full_of_low_rows_is_still_claimed_for_high_and_normal() {
        let shares = Lanes::new(1);
        let low = delivery_queue::rank(Priority::Low);
        let high = delivery_queue::rank(Priority::High);
        let _bulk = shares.try_acquire(&claim_band("acme", low)).unwrap();
        let excluded = excluded(&shares);
        assert_eq!(excluded.bulk, ["acme"]);
        assert!(excluded.urgent.is_empty());
        let _urgent = shares.try_acquire(&claim_band("acme", high)).unwrap();
        assert!(shares.try_acquire(&claim_band("acme", low)).is_none());
    }

    #[test]
    fn a_tenant_full_of_high_rows_gets_no_low_rows_claimed_ahead_of_them() {
        let shares = Lanes::new(1);
        let _urgent = shares
            .try_acquire(&claim_band("acme", delivery_queue::rank(Priority::High)))
            .unwrap();
        let excluded = excluded(&shares);
        assert_eq!(excluded.urgent, ["acme"]);
        assert_eq!(excluded.bulk, ["acme"]);
    }
}
