//! No noisy neighbours in delivery (issue 14, item 3). Tenant A points its
//! webhooks at an endpoint that fails or crawls; tenant B's endpoint must
//! get every message and callback within its normal latency. Breakers are
//! set as in the report (three failures open one for a minute), for the
//! provider and for endpoints alike, so a failure counted against the
//! provider would hold B for that minute.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use herald::commands::limits::{Limits, LimitsConfig};
use herald::commands::notifications;
use herald::config::Config;
use herald::domain::NotificationStatus;
use herald::domain::values::{NotificationId, TenantId};
use herald::providers::Providers;
use herald::providers::webhook::{WebhookConfig, WebhookProvider};
use herald::signing::WebhookSecret;
use herald::workers::breaker::{BreakerConfig, Breakers};
use herald::workers::compose::Composer;
use herald::workers::dispatcher::{DispatchSettings, Dispatcher};
use herald::workers::ranker::{Ranker, RankingConfig};
use herald::workers::{DeliveryConfig, RoutingConfig};

use crate::callbacks::run_callbacks;
use crate::peers::{Peer, free_port, webhook_answer_next, webhook_receiver, webhook_requests};
use crate::support::{TestApp, eventually};

const CREATE: &str = r#"mutation($input: CreateWebhookEndpointInput!) {
  createWebhookEndpoint(input: $input) { secret }
}"#;
const SEND_MANY: &str = r#"mutation($inputs: [SendNotificationInput!]!) {
  sendNotifications(inputs: $inputs) { notification { id } error { code message } }
}"#;

/// Three failures within a minute open a breaker for a minute.
fn breaker() -> BreakerConfig {
    BreakerConfig {
        failures: 3,
        window_seconds: 60,
        open_seconds: 60,
    }
}

/// Quick retries, so a failing endpoint is tried again while B sends.
fn delivery() -> DeliveryConfig {
    DeliveryConfig {
        retry_delays_seconds: vec![0.2; 10],
        retry_jitter: 0.0,
        endpoint_breaker: breaker(),
        ..DeliveryConfig::default()
    }
}

/// One tenant with a webhook endpoint on its own receiver.
struct Tenant {
    id: TenantId,
    key: String,
    url: String,
    peer: Peer,
}

struct Neighbours {
    app: TestApp,
    a: Tenant,
    b: Tenant,
    stop: CancellationToken,
}

impl Neighbours {
    /// Two tenants, each with an endpoint subscribed to `event_types`.
    async fn start(event_types: Value) -> Neighbours {
        let app = TestApp::start().await;
        let a = tenant(&app, &event_types).await;
        let b = tenant(&app, &event_types).await;
        Neighbours {
            app,
            a,
            b,
            stop: CancellationToken::new(),
        }
    }

    /// The dispatcher with the webhook provider, as `herald serve` has it.
    async fn dispatch(&self) {
        self.dispatch_with(delivery()).await;
    }

    async fn dispatch_with(&self, delivery: DeliveryConfig) {
        let mut providers = Providers::default();
        providers.insert(Arc::new(
            WebhookProvider::new(
                "webhook",
                &WebhookConfig::default(),
                &herald::egress::Egress::new(&crate::support::loopback_egress()),
            )
            .expect("a provider"),
        ));
        let composer = Composer::new(self.app.store.pool(), &Config::default().worker_options())
            .await
            .expect("composer");
        Dispatcher::new(
            self.app.store.clone(),
            DispatchSettings {
                providers,
                routing: RoutingConfig::default(),
                delivery,
                breakers: Breakers::new(&breaker()),
                ranker: Ranker::new(&RankingConfig::default()).expect("default ranking"),
                limits: Arc::new(Limits::new(LimitsConfig::default())),
                composer,
            },
        )
        .spawn(self.stop.clone());
    }

    /// Sends `count` notifications for `tenant` in one call: to its endpoint
    /// on the webhook channel, or (`webhook` false) by email, which only
    /// queues status callbacks while no dispatcher runs.
    async fn send(&self, tenant: &Tenant, count: usize, webhook: bool) -> Vec<NotificationId> {
        let inputs: Vec<Value> = (0..count)
            .map(|n| {
                if webhook {
                    json!({
                        "recipient": { "webhookUrl": tenant.url },
                        "channels": ["WEBHOOK"],
                        "content": { "title": "Order", "text": format!("order {n} shipped") },
                    })
                } else {
                    json!({
                        "recipient": { "email": "ada@example.com" },
                        "channels": ["EMAIL"],
                        "content": { "text": format!("order {n} shipped") },
                    })
                }
            })
            .collect();
        let sent = self
            .app
            .graphql(Some(&tenant.key), SEND_MANY, json!({ "inputs": inputs }))
            .await;
        let results = sent["data"]["sendNotifications"]
            .as_array()
            .unwrap_or_else(|| panic!("{sent}"));
        results
            .iter()
            .map(|result| {
                let id = result["notification"]["id"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{result}"));
                NotificationId::parse(id).expect("an id")
            })
            .collect()
    }

    /// B's messages, one by one a little apart (a steady flow, not a burst),
    /// while A's endpoint misbehaves.
    async fn trickle(
        &self,
        tenant: &Tenant,
        count: usize,
        webhook: bool,
    ) -> Vec<(NotificationId, DateTime<Utc>)> {
        let mut sent = Vec::with_capacity(count);
        for _ in 0..count {
            let at = Utc::now();
            sent.push((self.send(tenant, 1, webhook).await[0], at));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        sent
    }

    async fn status(
        &self,
        tenant: &Tenant,
        id: &NotificationId,
    ) -> notifications::NotificationDetails {
        notifications::get(&self.app.store, &tenant.id, id)
            .await
            .expect("read")
            .expect("exists")
    }

    /// From request to the endpoint's acceptance, of each of `ids`, once all
    /// are sent (within `within`).
    async fn delivery_latencies(
        &self,
        tenant: &Tenant,
        ids: &[NotificationId],
        within: Duration,
    ) -> Vec<Duration> {
        let mut latencies = Vec::with_capacity(ids.len());
        eventually(within, async || {
            for id in &ids[latencies.len()..] {
                let details = self.status(tenant, id).await;
                if details.state.status != NotificationStatus::Sent {
                    return Err(format!("{id} is still {}", details.state.status));
                }
                let at = |kind: &str| -> DateTime<Utc> {
                    details
                        .timeline
                        .iter()
                        .find(|event| event.event_type == kind)
                        .map(|event| event.recorded_at)
                        .unwrap_or_else(|| panic!("no {kind} in {:?}", details.timeline))
                };
                let latency = at("NotificationSent") - at("NotificationRequested");
                latencies.push(latency.to_std().unwrap_or_default());
            }
            Ok(())
        })
        .await;
        latencies
    }
}

impl Neighbours {
    /// The `webhook` provider's health as `tenant` sees it, once `ready`
    /// holds for it (the dispatcher publishes every few seconds).
    async fn provider_health(&self, tenant: &Tenant, ready: impl Fn(&Value) -> bool) -> Value {
        let query = "{ providerHealth { provider breaker endpoints { origin breaker recentFailures openedAt inFlight } } }";
        eventually(Duration::from_secs(20), async || {
            let answer = self.app.graphql(Some(&tenant.key), query, json!({})).await;
            let webhook = answer["data"]["providerHealth"]
                .as_array()
                .unwrap_or_else(|| panic!("{answer}"))
                .iter()
                .find(|provider| provider["provider"] == "webhook")
                .cloned();
            webhook
                .filter(&ready)
                .ok_or_else(|| format!("providerHealth does not show it: {answer}"))
        })
        .await
    }
}

/// `http://127.0.0.1:<port>` of an endpoint URL.
fn origin(url: &str) -> String {
    url.trim_end_matches("/hooks/herald").to_string()
}

impl Drop for Neighbours {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn tenant(app: &TestApp, event_types: &Value) -> Tenant {
    let (id, key) = app.tenant().await;
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/hooks/herald");
    let input = json!({ "url": url, "eventTypes": event_types });
    let created = app
        .graphql(Some(&key), CREATE, json!({ "input": input }))
        .await;
    let secret = created["data"]["createWebhookEndpoint"]["secret"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"));
    let peer = webhook_receiver(port, &WebhookSecret::new(secret)).await;
    Tenant {
        id: TenantId::parse(&id).expect("a tenant id"),
        key,
        url,
        peer,
    }
}

/// Every request the receiver answers from now on gets `answer`.
async fn answer_always(peer: &Peer, answer: Value) {
    webhook_answer_next(peer, Value::Array(vec![answer; 2_000])).await;
}

/// Waits until the receiver has had at least `count` requests.
async fn requested(peer: &Peer, count: usize) {
    eventually(Duration::from_secs(30), async || {
        match webhook_requests(peer).await.len() {
            had if had >= count => Ok(()),
            had => Err(format!("the receiver has had {had} of {count} requests")),
        }
    })
    .await;
}

/// The notification ids the receiver got (verified), with when it first got
/// each, polling until all of `wanted` are in (within `within`).
async fn arrivals(
    peer: &Peer,
    wanted: &[NotificationId],
    within: Duration,
) -> HashMap<String, DateTime<Utc>> {
    let mut seen = HashMap::new();
    eventually(within, async || {
        for request in webhook_requests(peer).await {
            assert_eq!(request["verified"], true, "{request:#}");
            let body: Value = serde_json::from_str(request["body"].as_str().unwrap()).unwrap();
            let at = request["at"].as_f64().expect("the receiver's clock");
            let at = DateTime::from_timestamp_micros((at * 1e6) as i64).expect("a time");
            if let Some(id) = body["notification_id"].as_str() {
                let first = seen.entry(id.to_string()).or_insert(at);
                *first = (*first).min(at);
            }
        }
        let missing = wanted
            .iter()
            .filter(|id| !seen.contains_key(&id.to_string()))
            .count();
        if missing == 0 {
            Ok(())
        } else {
            Err(format!("{missing} of {} have not arrived", wanted.len()))
        }
    })
    .await;
    seen
}

/// The 99th percentile (nearest rank).
fn p99(latencies: &[Duration]) -> Duration {
    let mut sorted = latencies.to_vec();
    sorted.sort();
    let rank = (sorted.len() * 99).div_ceil(100).max(1);
    sorted[rank - 1]
}

#[tokio::test]
async fn a_failing_endpoint_does_not_hold_another_tenants_deliveries() {
    let n = Neighbours::start(json!(["NotificationDeadLettered"])).await;
    answer_always(&n.a.peer, json!({ "status": 500, "body": "down" })).await;
    n.dispatch().await;

    // A's endpoint fails past the breaker's threshold.
    let a_ids = n.send(&n.a, 10, true).await;
    requested(&n.a.peer, breaker().failures as usize).await;
    let b_sent = n.trickle(&n.b, 20, true).await;

    let b_ids: Vec<NotificationId> = b_sent.iter().map(|(id, _)| *id).collect();
    // Well inside the minute a breaker stays open.
    let latencies = n
        .delivery_latencies(&n.b, &b_ids, Duration::from_secs(30))
        .await;
    let bound = Duration::from_secs(breaker().open_seconds / 12);
    assert!(
        p99(&latencies) < bound,
        "B's p99 {:?} is not under {bound:?}: {latencies:?}",
        p99(&latencies)
    );
    let received = arrivals(&n.b.peer, &b_ids, Duration::from_secs(5)).await;
    assert_eq!(received.len(), b_ids.len());
    // The provider stays closed; A sees its endpoint's breaker open, B
    // sees none (nor A's endpoint).
    let health = n
        .provider_health(&n.a, |webhook| webhook["endpoints"][0]["breaker"] == "open")
        .await;
    assert_eq!(health["breaker"], "closed", "{health}");
    assert_eq!(
        health["endpoints"][0]["origin"],
        origin(&n.a.url),
        "{health}"
    );
    let health = n.provider_health(&n.b, |_| true).await;
    assert_eq!(health["breaker"], "closed", "{health}");
    assert_eq!(health["endpoints"], json!([]), "{health}");
    // A's messages wait for their endpoint: none is sent, none given up.
    for id in &a_ids {
        let status = n.status(&n.a, id).await.state.status;
        assert!(
            status.is_pending() || status == NotificationStatus::Sending,
            "{id} is {status}"
        );
    }
}

#[tokio::test]
async fn a_tenant_flooding_a_slow_endpoint_does_not_delay_another_tenants_deliveries() {
    let n = Neighbours::start(json!(["NotificationDeadLettered"])).await;
    let slow = Duration::from_secs(4);
    answer_always(
        &n.a.peer,
        json!({ "status": 204, "delay_seconds": slow.as_secs() }),
    )
    .await;
    n.dispatch().await;

    n.send(&n.a, 300, true).await;
    requested(&n.a.peer, 1).await;
    let flood_started = Instant::now();
    let b_sent = n.trickle(&n.b, 20, true).await;

    let b_ids: Vec<NotificationId> = b_sent.iter().map(|(id, _)| *id).collect();
    let latencies = n
        .delivery_latencies(&n.b, &b_ids, Duration::from_secs(30))
        .await;
    // B never waited behind one of A's calls.
    let bound = slow / 2;
    assert!(
        p99(&latencies) < bound,
        "B's p99 {:?} is not under {bound:?}: {latencies:?}",
        p99(&latencies)
    );
    // A's endpoint had at most its share of calls at once.
    let a_calls = webhook_requests(&n.a.peer).await.len();
    let rounds = (flood_started.elapsed().as_secs_f64() / slow.as_secs_f64()).ceil() as usize + 1;
    assert!(
        a_calls <= delivery().endpoint_concurrency * rounds,
        "A's endpoint got {a_calls} calls in {rounds} slow answers' time"
    );
}

#[tokio::test]
async fn a_failing_slow_endpoint_does_not_delay_another_tenants_callbacks() {
    let n = Neighbours::start(json!(["NotificationRequested"])).await;
    let slow = Duration::from_secs(4);
    answer_always(
        &n.a.peer,
        json!({ "status": 500, "delay_seconds": slow.as_secs() }),
    )
    .await;
    run_callbacks(&n.app.store, delivery(), &n.stop);

    // With no dispatcher, each send queues one callback: NotificationRequested.
    n.send(&n.a, 200, false).await;
    requested(&n.a.peer, 1).await;
    let b_sent = n.trickle(&n.b, 20, false).await;

    let b_ids: Vec<NotificationId> = b_sent.iter().map(|(id, _)| *id).collect();
    let seen = arrivals(&n.b.peer, &b_ids, Duration::from_secs(30)).await;
    let latencies: Vec<Duration> = b_sent
        .iter()
        .map(|(id, at)| (seen[&id.to_string()] - *at).to_std().unwrap_or_default())
        .collect();
    let bound = slow / 2;
    assert!(
        p99(&latencies) < bound,
        "B's callback p99 {:?} is not under {bound:?}: {latencies:?}",
        p99(&latencies)
    );
    // A's endpoint got at most its share at once, and its breaker stopped
    // the rest: far fewer calls than callbacks queued.
    let a_calls = webhook_requests(&n.a.peer).await.len();
    assert!(
        a_calls <= delivery().endpoint_concurrency * 2,
        "A's endpoint got {a_calls} calls"
    );
}

/// Answers within half a second count as fast here, whatever the machine's
/// load does to them.
fn delivery_with_fast_half_seconds() -> DeliveryConfig {
    DeliveryConfig {
        fast_answer_ms: 2_000,
        ..delivery()
    }
}

/// The most requests that reached `peer` within any `window`: the calls
/// it had in flight at once when each answer takes that long.
async fn most_at_once(peer: &Peer, window: Duration) -> usize {
    let mut at: Vec<f64> = webhook_requests(peer)
        .await
        .iter()
        .map(|request| request["at"].as_f64().expect("the receiver's clock"))
        .collect();
    at.sort_by(f64::total_cmp);
    let window = window.as_secs_f64();
    (0..at.len())
        .map(|first| at[first..].partition_point(|t| *t < at[first] + window))
        .max()
        .unwrap_or(0)
}

/// The most calls A's endpoint had at once when, alone, it answered 200
/// messages in half a second each under `delivery`.
async fn most_at_once_alone(delivery: DeliveryConfig) -> usize {
    let n = Neighbours::start(json!(["NotificationDeadLettered"])).await;
    let answer = Duration::from_millis(500);
    answer_always(
        &n.a.peer,
        json!({ "status": 204, "delay_seconds": answer.as_secs_f64() }),
    )
    .await;
    n.dispatch_with(delivery).await;

    let ids = n.send(&n.a, 200, true).await;
    arrivals(&n.a.peer, &ids, Duration::from_secs(60)).await;
    most_at_once(&n.a.peer, answer).await
}

#[tokio::test]
async fn a_fast_endpoint_alone_is_not_held_to_the_caps_made_for_slow_ones() {
    let delivery = delivery_with_fast_half_seconds();
    let at_once = most_at_once_alone(delivery.clone()).await;
    // Past the endpoint's and host's caps, and past the tenant's share of
    // the provider's slots: nobody else was waiting for them.
    let share = (delivery.provider_concurrency as f64 * delivery.tenant_share) as usize;
    assert!(
        at_once > share.max(delivery.host_concurrency),
        "A's fast endpoint had at most {at_once} calls at once"
    );
    assert!(
        at_once <= delivery.provider_concurrency,
        "{at_once} calls at once"
    );
}

#[tokio::test]
async fn a_fast_tenant_alone_is_not_held_to_its_share_of_claimed_work() {
    // 20 rows in flight per process, of which a tenant's share is 10.
    let delivery = DeliveryConfig {
        claim_batch: 10,
        ..delivery_with_fast_half_seconds()
    };
    let in_flight = delivery.claim_batch as usize * 2;
    let share = (in_flight as f64 * delivery.tenant_share) as usize;
    let at_once = most_at_once_alone(delivery).await;
    assert!(
        at_once > share,
        "A had at most {at_once} calls at once, held to its share of {share}"
    );
    assert!(at_once <= in_flight, "{at_once} calls at once");
}

#[tokio::test]
async fn a_tenant_past_its_share_gives_way_to_another_that_waits() {
    let n = Neighbours::start(json!(["NotificationDeadLettered"])).await;
    let answer = Duration::from_millis(500);
    for tenant in [&n.a, &n.b] {
        answer_always(
            &tenant.peer,
            json!({ "status": 204, "delay_seconds": answer.as_secs_f64() }),
        )
        .await;
    }
    n.dispatch_with(delivery_with_fast_half_seconds()).await;

    n.send(&n.a, 400, true).await;
    requested(&n.a.peer, 1).await;
    let b_sent = n.trickle(&n.b, 20, true).await;

    let b_ids: Vec<NotificationId> = b_sent.iter().map(|(id, _)| *id).collect();
    let latencies = n
        .delivery_latencies(&n.b, &b_ids, Duration::from_secs(30))
        .await;
    // B's own answer time, at most one of A's calls giving back a slot it
    // had taken past its share, and room for a loaded machine; waiting for
    // A's backlog would take several seconds.
    let bound = answer * 4;
    assert!(
        p99(&latencies) < bound,
        "B's p99 {:?} is not under {bound:?}: {latencies:?}",
        p99(&latencies)
    );
}
