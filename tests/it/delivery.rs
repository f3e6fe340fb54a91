//! The dispatcher end to end on a real database: priority order, schedules
//! and expiry, the retry schedule, error classes, failover and dead letters.
//!
//! The provider here is scripted (it answers what each test tells it to), so
//! the dispatcher's decisions can be checked exactly; the drivers themselves
//! are tested against real peers in the `providers_*` modules.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use herald::commands::limits::{Limits, LimitsConfig};
use herald::commands::notifications::{self, NotificationDetails};
use herald::commands::{Actor, tenants};
use herald::config::Config;
use herald::domain::values::{Channel, NotificationId, TenantId};
use herald::domain::{NotificationStatus, SendNotification};
use herald::egress::SendError;
use herald::eventstore::EventStore;
use herald::providers::{OutboundMessage, Provider, Providers, Receipt};
use herald::workers::breaker::{BreakerConfig, BreakerState, Breakers};
use herald::workers::compose::Composer;
use herald::workers::dispatcher::{DispatchSettings, Dispatcher};
use herald::workers::ranker::{Ranker, RankingConfig};
use herald::workers::{DeliveryConfig, RoutingConfig};

use crate::support::{TestDatabase, append_raw, eventually, fresh_database};

/// A provider that answers from a script (then succeeds) and records calls.
#[derive(Clone)]
struct Scripted {
    name: String,
    script: Arc<Mutex<VecDeque<Result<(), SendError>>>>,
    calls: Arc<Mutex<Vec<Call>>>,
}

#[derive(Debug, Clone)]
struct Call {
    notification_id: NotificationId,
    attempt: u32,
    title: Option<String>,
    at: DateTime<Utc>,
}

impl Scripted {
    fn new(name: &str) -> Scripted {
        Scripted {
            name: name.to_string(),
            script: Arc::default(),
            calls: Arc::default(),
        }
    }

    fn then(&self, answer: Result<(), SendError>) -> &Self {
        self.script.lock().unwrap().push_back(answer);
        self
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

impl Provider for Scripted {
    fn name(&self) -> &str {
        &self.name
    }

    fn supports(&self, channel: Channel) -> bool {
        channel == Channel::Email
    }

    fn send<'a>(
        &'a self,
        message: &'a OutboundMessage,
    ) -> BoxFuture<'a, Result<Receipt, SendError>> {
        Box::pin(async move {
            self.calls.lock().unwrap().push(Call {
                notification_id: message.notification_id,
                attempt: message.attempt,
                title: message.title.clone(),
                at: Utc::now(),
            });
            let answer = self.script.lock().unwrap().pop_front().unwrap_or(Ok(()));
            answer.map(|()| Receipt {
                provider_message_id: Some(format!("{}-{}", self.name, message.attempt)),
            })
        })
    }
}

struct Harness {
    _db: TestDatabase,
    store: EventStore,
    tenant: TenantId,
    shutdown: CancellationToken,
}

impl Harness {
    async fn new() -> Harness {
        let db = fresh_database().await;
        herald::database::MIGRATOR
            .run(&db.pool)
            .await
            .expect("migrated");
        let store = EventStore::new(db.pool.clone());
        let created = tenants::create_tenant(&store, "Delivery", &Actor::new("test"))
            .await
            .expect("tenant");
        Harness {
            _db: db,
            store,
            tenant: created.tenant_id,
            shutdown: CancellationToken::new(),
        }
    }

    fn start(
        &self,
        providers: &[&Scripted],
        delivery: DeliveryConfig,
    ) -> tokio::task::JoinHandle<()> {
        self.start_with(
            providers,
            delivery,
            Breakers::new(&BreakerConfig::default()),
        )
    }

    fn start_with(
        &self,
        providers: &[&Scripted],
        delivery: DeliveryConfig,
        breakers: Breakers,
    ) -> tokio::task::JoinHandle<()> {
        let setup = Setup {
            breakers,
            ..Setup::new(delivery)
        };
        dispatch(&self.store, providers, setup, &self.shutdown)
    }

    fn start_set_up(&self, providers: &[&Scripted], setup: Setup) -> tokio::task::JoinHandle<()> {
        dispatch(&self.store, providers, setup, &self.shutdown)
    }

    async fn send(&self, input: serde_json::Value) -> NotificationId {
        let mut input = input;
        let base = json!({
            "recipient": { "email": "ada@example.com" },
            "channels": ["email"],
            "content": { "title": "Hello", "text": "Your code is 123456" },
        });
        for (key, value) in base.as_object().unwrap() {
            input
                .as_object_mut()
                .unwrap()
                .entry(key)
                .or_insert(value.clone());
        }
        let input: SendNotification = serde_json::from_value(input).expect("valid input");
        notifications::send(
            &self.store,
            &self.tenant,
            input,
            &notifications::SendPolicy::unlimited(Duration::from_secs(3600)),
            &Actor::new("test"),
        )
        .await
        .expect("sent")
        .notification
        .notification_id
    }

    async fn details(&self, id: &NotificationId) -> NotificationDetails {
        notifications::get(&self.store, &self.tenant, id)
            .await
            .expect("read")
            .expect("exists")
    }

    /// Waits until the notification reaches `status`.
    async fn wait_for(
        &self,
        id: &NotificationId,
        status: NotificationStatus,
        within: Duration,
    ) -> NotificationDetails {
        eventually(within, async || {
            let details = self.details(id).await;
            if details.state.status == status {
                Ok(details)
            } else {
                Err(format!(
                    "still {}, waiting for {status}: {:?}",
                    details.state.status,
                    types(&details)
                ))
            }
        })
        .await
    }

    async fn queue_len(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM delivery_queue")
            .fetch_one(self.store.pool())
            .await
            .unwrap()
    }
}

fn types(details: &NotificationDetails) -> Vec<String> {
    details
        .timeline
        .iter()
        .map(|e| e.event_type.clone())
        .collect()
}

/// What a test dispatcher runs with besides its providers.
struct Setup {
    delivery: DeliveryConfig,
    breakers: Breakers,
    limits: LimitsConfig,
    ranking: RankingConfig,
}

impl Setup {
    fn new(delivery: DeliveryConfig) -> Setup {
        Setup {
            delivery,
            breakers: Breakers::new(&BreakerConfig::default()),
            limits: LimitsConfig::default(),
            ranking: RankingConfig::default(),
        }
    }

    /// Email throttled to `per_second`, one token of burst.
    fn throttled(per_second: f64) -> Setup {
        let mut setup = Setup::new(quick());
        setup.limits.channel_rates.insert(
            Channel::Email,
            herald::domain::RateLimit::new(per_second, 1.0).unwrap(),
        );
        setup
    }
}

/// A dispatcher routing email to `providers`, in that order.
fn dispatch(
    store: &EventStore,
    providers: &[&Scripted],
    setup: Setup,
    shutdown: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let Setup {
        delivery,
        breakers,
        limits,
        ranking,
    } = setup;
    let mut registry = Providers::default();
    for provider in providers {
        registry.insert(Arc::new((*provider).clone()));
    }
    let mut routing = RoutingConfig::default();
    routing.channels.insert(
        Channel::Email,
        providers.iter().map(|p| p.name.clone()).collect(),
    );
    let store = store.clone();
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        let composer = Composer::new(store.pool(), &Config::default().worker_options())
            .await
            .expect("composer");
        let dispatcher = Dispatcher::new(
            store,
            DispatchSettings {
                providers: registry,
                routing,
                delivery,
                breakers,
                ranker: Ranker::new(&ranking).expect("ranking"),
                limits: Arc::new(Limits::new(limits)),
                composer,
            },
        );
        let _ = dispatcher.spawn(shutdown).await;
    })
}

/// Fast retries so the schedule can be watched in a test.
fn quick() -> DeliveryConfig {
    DeliveryConfig {
        retry_delays_seconds: vec![0.3, 0.6, 0.9],
        retry_jitter: 0.0,
        lease_seconds: 5,
        ..DeliveryConfig::default()
    }
}

#[tokio::test]
async fn a_send_is_attempted_and_recorded_as_sent_then_leaves_the_queue() {
    let h = Harness::new().await;
    let provider = Scripted::new("mail-a");
    let worker = h.start(&[&provider], quick());
    let id = h.send(json!({})).await;
    let details = h
        .wait_for(&id, NotificationStatus::Sent, Duration::from_secs(10))
        .await;
    assert_eq!(
        types(&details),
        [
            "NotificationRequested",
            "NotificationRanked",
            "DeliveryAttempted",
            "NotificationSent"
        ]
    );
    assert_eq!(
        details.state.provider_message_id.as_deref(),
        Some("mail-a-1")
    );
    // The rules ranked it, with the breakdown of its score.
    let ranked = &details.timeline[1].payload;
    assert_eq!(ranked["scorer"], "rules");
    assert!(ranked["breakdown"]["priority"].is_number(), "{ranked}");
    assert_eq!(provider.calls().len(), 1);
    assert_eq!(h.queue_len().await, 0, "done rows leave the queue");
    h.shutdown.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn a_claim_with_an_unreadable_stream_still_delivers_the_others() {
    let h = Harness::new().await;
    let provider = Scripted::new("mail-a");
    let broken = h.send(json!({})).await;
    let healthy = h.send(json!({})).await;
    let position = append_raw(
        &h.store,
        &notifications::stream_id(&broken),
        h.tenant.as_str(),
        "NotificationScheduled",
        1,
        json!({ "schedule_at": "yesterday" }),
    )
    .await;
    // Both are due before the dispatcher starts: one claim takes them.
    let worker = h.start(&[&provider], quick());
    h.wait_for(&healthy, NotificationStatus::Sent, Duration::from_secs(10))
        .await;
    let called: Vec<NotificationId> = provider.calls().iter().map(|c| c.notification_id).collect();
    assert_eq!(called, [healthy]);
    // The broken one is set aside, still queued (leased) for when it is repaired.
    let details = h.details(&broken).await;
    assert_eq!(details.state.status, NotificationStatus::Requested);
    assert_eq!(details.unreadable.len(), 1);
    assert_eq!(details.unreadable[0].position, position);
    assert_eq!(h.queue_len().await, 1);
    h.shutdown.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn high_is_claimed_before_normal_before_low_when_all_are_due() {
    let h = Harness::new().await;
    let provider = Scripted::new("mail-a");
    let mut ids = Vec::new();
    for (priority, title) in [("LOW", "low"), ("NORMAL", "normal"), ("HIGH", "high")] {
        for n in 0..3 {
            ids.push(h.send(json!({ "priority": priority, "content": { "title": format!("{title}-{n}"), "text": "x" } })).await);
        }
    }
    // One at a time, so the order of calls is the order of claims.
    let delivery = DeliveryConfig {
        claim_batch: 1,
        dispatchers: 1,
        provider_concurrency: 1,
        ..quick()
    };
    let worker = h.start(&[&provider], delivery);
    for id in &ids {
        h.wait_for(id, NotificationStatus::Sent, Duration::from_secs(10))
            .await;
    }
    let order: Vec<String> = provider
        .calls()
        .iter()
        .map(|c| {
            c.title
                .clone()
                .unwrap()
                .split('-')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        order,
        [
            "high", "high", "high", "normal", "normal", "normal", "low", "low", "low"
        ]
    );
    h.shutdown.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn a_notification_not_sent_in_time_expires_on_time() {
    let h = Harness::new().await;
    let provider = Scripted::new("mail-a");
    // The retry would come after the expiry: the notification must end
    // EXPIRED at its expiry, not linger until the retry.
    provider.then(Err(SendError::Transient {
        message: "429".into(),
        retry_after: Some(Duration::from_secs(30)),
    }));
    let worker = h.start(&[&provider], quick());
    let sent_at = Utc::now();
    let id = h.send(json!({ "ttl_seconds": 1 })).await;
    let details = h
        .wait_for(&id, NotificationStatus::Expired, Duration::from_secs(5))
        .await;
    let expired_at = details.timeline.last().unwrap().recorded_at;
    assert!(
        expired_at - sent_at < chrono::TimeDelta::milliseconds(1800),
        "expired at {expired_at}"
    );
    assert_eq!(provider.calls().len(), 1);
    h.shutdown.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn a_scheduled_send_waits_for_its_second() {
    let h = Harness::new().await;
    let provider = Scripted::new("mail-a");
    let worker = h.start(&[&provider], quick());
    let schedule_at = Utc::now() + chrono::TimeDelta::seconds(2);
    let scheduled = h.send(json!({ "schedule_at": schedule_at })).await;
    h.wait_for(
        &scheduled,
        NotificationStatus::Sent,
        Duration::from_secs(10),
    )
    .await;
    let call = &provider.calls()[0];
    assert_eq!(call.notification_id, scheduled);
    assert!(
        call.at >= schedule_at,
        "sent at {} before {schedule_at}",
        call.at
    );
    assert!(
        call.at < schedule_at + chrono::TimeDelta::seconds(1),
        "sent at {}, more than a second late",
        call.at
    );
    // Scheduled once, at acceptance; falling due adds no second one.
    let details = h.details(&scheduled).await;
    let types: Vec<&str> = details
        .timeline
        .iter()
        .map(|e| e.event_type.as_str())
        .collect();
    assert_eq!(
        types
            .iter()
            .filter(|t| **t == "NotificationScheduled")
            .count(),
        1,
        "{types:?}"
    );
    assert_eq!(
        types[..2],
        ["NotificationRequested", "NotificationScheduled"]
    );
    h.shutdown.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn a_send_for_later_shows_as_scheduled_at_once() {
    let app = crate::support::TestApp::start().await;
    let (_, key) = app.tenant().await;
    let later = Utc::now() + chrono::TimeDelta::hours(1);
    let sent = app
        .graphql(
            Some(&key),
            "mutation($input: SendNotificationInput!) { sendNotification(input: $input) { notification { id status } } }",
            json!({ "input": { "recipient": { "email": "ada@example.com" }, "channels": ["EMAIL"],
                               "scheduleAt": later, "content": { "title": "Later", "text": "x" } } }),
        )
        .await;
    assert!(sent["errors"].is_null(), "{sent}");
    let notification = &sent["data"]["sendNotification"]["notification"];
    assert_eq!(notification["status"], "SCHEDULED", "{sent}");
    let id = notification["id"].clone();

    let read = app
        .graphql(
            Some(&key),
            "query($id: ID!) { notification(id: $id) { status timeline { type data } } }",
            json!({ "id": id }),
        )
        .await;
    let read = &read["data"]["notification"];
    assert_eq!(read["status"], "SCHEDULED", "{read}");
    let scheduled: Vec<&serde_json::Value> = read["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "NotificationScheduled")
        .collect();
    assert_eq!(scheduled.len(), 1, "{read}");
    assert_eq!(scheduled[0]["data"]["reason"], "schedule_at");
    let at: chrono::DateTime<Utc> = scheduled[0]["data"]["schedule_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((at - later).num_milliseconds().abs() < 1, "{at} vs {later}");

    let listed = app
        .graphql(
            Some(&key),
            "query { notifications(filter: { status: [SCHEDULED] }) { edges { node { id status } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        listed["data"]["notifications"]["edges"],
        json!([{ "node": { "id": id, "status": "SCHEDULED" } }]),
        "{listed}"
    );
}

#[tokio::test]
async fn transient_failures_follow_the_retry_schedule_then_dead_letter() {
    let h = Harness::new().await;
    let provider = Scripted::new("mail-a");
    for _ in 0..4 {
        provider.then(Err(SendError::transient("451 try later")));
    }
    let worker = h.start(&[&provider], quick());
    let id = h.send(json!({})).await;
    let details = h
        .wait_for(
            &id,
            NotificationStatus::DeadLettered,
            Duration::from_secs(15),
        )
        .await;
    let calls = provider.calls();
    assert_eq!(
        calls.iter().map(|c| c.attempt).collect::<Vec<_>>(),
        [1, 2, 3, 4],
        "the first attempt and three retries"
    );
    let gaps: Vec<f64> = calls
        .windows(2)
        .map(|w| (w[1].at - w[0].at).as_seconds_f64())
        .collect();
    for (gap, scheduled) in gaps.iter().zip([0.3, 0.6, 0.9]) {
        assert!(
            *gap >= scheduled - 0.01 && *gap < scheduled + 0.5,
            "gaps {gaps:?}"
        );
    }
    assert_eq!(
        types(&details)
            .iter()
            .filter(|t| *t == "DeliveryFailed")
            .count(),
        4
    );
    assert_eq!(types(&details).last().unwrap(), "NotificationDeadLettered");
    assert_eq!(h.queue_len().await, 0);
    h.shutdown.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn retry_after_from_the_provider_sets_the_pause() {
    let h = Harness::new().await;
    let provider = Scripted::new("mail-a");
    provider.then(Err(SendError::Transient {
        message: "429 slow down".into(),
        retry_after: Some(Duration::from_secs(2)),
    }));
    let worker = h.start(&[&provider], quick());
    let id = h.send(json!({})).await;
    h.wait_for(&id, NotificationStatus::Sent, Duration::from_secs(10))
        .await;
    let calls = provider.calls();
    let gap = (calls[1].at - calls[0].at).as_seconds_f64();
    assert!(
        (2.0..2.6).contains(&gap),
        "retried after {gap} s, not the 2 s asked for"
    );
    h.shutdown.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn a_permanent_failure_fails_over_at_once_and_is_never_retried_on_that_provider() {
    let h = Harness::new().await;
    let first = Scripted::new("mail-a");
    let second = Scripted::new("mail-b");
    first.then(Err(SendError::permanent("550 mailbox unavailable")));
    let worker = h.start(&[&first, &second], quick());
    let id = h.send(json!({})).await;
    let details = h
        .wait_for(&id, NotificationStatus::Sent, Duration::from_secs(10))
        .await;
    assert_eq!(first.calls().len(), 1);
    assert_eq!(second.calls().len(), 1);
    assert!(
        second.calls()[0].at - first.calls()[0].at < chrono::TimeDelta::milliseconds(300),
        "failover waited"
    );
    assert_eq!(details.state.provider.as_deref(), Some("mail-b"));
    h.shutdown.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn a_permanent_failure_with_nowhere_left_dead_letters_after_one_attempt() {
    let h = Harness::new().await;
    let provider = Scripted::new("mail-a");
    provider.then(Err(SendError::permanent("550 no such user")));
    let worker = h.start(&[&provider], quick());
    let id = h.send(json!({})).await;
    let details = h
        .wait_for(
            &id,
            NotificationStatus::DeadLettered,
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(provider.calls().len(), 1);
    assert_eq!(
        types(&details),
        [
            "NotificationRequested",
            "NotificationRanked",
            "DeliveryAttempted",
            "DeliveryFailed",
            "NotificationDeadLettered"
        ]
    );
    h.shutdown.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn a_transient_failure_fails_over_to_the_next_provider_at_once() {
    let h = Harness::new().await;
    let first = Scripted::new("mail-a");
    let second = Scripted::new("mail-b");
    first.then(Err(SendError::transient("connection refused")));
    // A retry would wait 30 s: the failover must not.
    let delivery = DeliveryConfig {
        retry_delays_seconds: vec![30.0],
        ..quick()
    };
    let worker = h.start(&[&first, &second], delivery);
    let id = h.send(json!({ "priority": "HIGH" })).await;
    let details = h
        .wait_for(&id, NotificationStatus::Sent, Duration::from_secs(5))
        .await;
    assert_eq!((first.calls().len(), second.calls().len()), (1, 1));
    assert_eq!(details.state.provider.as_deref(), Some("mail-b"));
    assert!(
        second.calls()[0].at - first.calls()[0].at < chrono::TimeDelta::milliseconds(500),
        "the failover waited"
    );
    h.shutdown.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn the_retry_schedule_starts_once_every_provider_has_failed_in_turn() {
    let h = Harness::new().await;
    let first = Scripted::new("mail-a");
    let second = Scripted::new("mail-b");
    first.then(Err(SendError::transient("connection refused")));
    second.then(Err(SendError::transient("451 try later")));
    let delivery = DeliveryConfig {
        retry_delays_seconds: vec![1.0],
        ..quick()
    };
    let worker = h.start(&[&first, &second], delivery);
    let id = h.send(json!({})).await;
    let details = h
        .wait_for(&id, NotificationStatus::Sent, Duration::from_secs(10))
        .await;
    let (a, b) = (first.calls(), second.calls());
    assert_eq!((a.len(), b.len()), (2, 1), "a, b at once, then a again");
    let failover = (b[0].at - a[0].at).as_seconds_f64();
    let retry = (a[1].at - b[0].at).as_seconds_f64();
    assert!(failover < 0.5, "failover after {failover} s");
    assert!(
        (1.0..1.6).contains(&retry),
        "the round's retry came after {retry} s, not the scheduled 1 s"
    );
    assert_eq!(details.state.provider.as_deref(), Some("mail-a"));
    h.shutdown.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn a_cancelled_notification_is_never_attempted() {
    let h = Harness::new().await;
    let provider = Scripted::new("mail-a");
    let due = Utc::now() + chrono::TimeDelta::seconds(1);
    let id = h.send(json!({ "schedule_at": due })).await;
    notifications::cancel(&h.store, &h.tenant, &id, None, &Actor::new("test"))
        .await
        .expect("cancelled");
    assert_eq!(
        h.queue_len().await,
        0,
        "a cancel takes the row out of the queue"
    );
    // Another falls due at the same second: once it is sent, the cancelled
    // one has had its chance.
    let kept = h.send(json!({ "schedule_at": due })).await;
    let worker = h.start(&[&provider], quick());
    h.wait_for(&kept, NotificationStatus::Sent, Duration::from_secs(10))
        .await;
    let attempted: Vec<NotificationId> = provider
        .calls()
        .iter()
        .map(|call| call.notification_id)
        .collect();
    assert_eq!(attempted, [kept]);
    h.shutdown.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn dead_letters_are_listed_and_replayed_through_graphql() {
    let app = crate::support::TestApp::start().await;
    let (tenant, key) = app.tenant().await;
    let shutdown = CancellationToken::new();
    let runner = herald::projections::spawn(
        app.store.clone(),
        Arc::new(herald::projections::dead_letters::DeadLettersProjection),
        herald::projections::RunnerOptions::default(),
        shutdown.clone(),
    );
    let provider = Scripted::new("mail-a");
    provider.then(Err(SendError::permanent("550 mailbox disabled")));
    provider.then(Err(SendError::permanent("550 mailbox disabled")));
    let worker = dispatch(&app.store, &[&provider], Setup::new(quick()), &shutdown);

    let send = |title: &'static str| {
        let app = &app;
        let key = key.clone();
        async move {
            let sent = app
                .graphql(
                    Some(&key),
                    "mutation($input: SendNotificationInput!) { sendNotification(input: $input) { notification { id } } }",
                    json!({ "input": { "recipient": { "email": "ada@example.com" }, "channels": ["EMAIL"], "content": { "title": title, "text": "x" } } }),
                )
                .await;
            sent["data"]["sendNotification"]["notification"]["id"]
                .as_str()
                .expect("sent")
                .to_string()
        }
    };
    let first = send("one").await;
    let second = send("two").await;

    let list = "query { deadLetters(first: 10) { edges { node { id reason notification { status attempts } } } pageInfo { hasNextPage } } }";
    let listed = eventually(Duration::from_secs(10), async || {
        let listed = app.graphql(Some(&key), list, json!({})).await;
        if listed["data"]["deadLetters"]["edges"]
            .as_array()
            .is_some_and(|e| e.len() == 2)
        {
            Ok(listed)
        } else {
            Err(format!("the dead letters are not listed: {listed}"))
        }
    })
    .await;
    let edge = &listed["data"]["deadLetters"]["edges"][0]["node"];
    assert!(
        edge["reason"]
            .as_str()
            .unwrap()
            .contains("550 mailbox disabled"),
        "{edge}"
    );
    assert_eq!(edge["notification"]["status"], "DEAD_LETTERED");

    // One by id, then the rest by filter; the provider now takes them.
    let replayed = app
        .graphql(
            Some(&key),
            "mutation($id: ID!) { replayDeadLetter(id: $id) { status } }",
            json!({ "id": first }),
        )
        .await;
    // Requeued; the dispatcher may already be sending it by the time it is read back.
    let status = replayed["data"]["replayDeadLetter"]["status"].as_str();
    assert!(
        matches!(status, Some("RETRY_PENDING" | "SENDING" | "SENT")),
        "{replayed}"
    );
    let tenant_id = TenantId::parse(&tenant).unwrap();
    let h = |id: &str| NotificationId::parse(id).unwrap();
    let sent = async |id: &str, what: &str| {
        eventually(Duration::from_secs(10), async || {
            let status = notifications::get(&app.store, &tenant_id, &h(id))
                .await
                .unwrap()
                .unwrap()
                .state
                .status;
            if status == NotificationStatus::Sent {
                Ok(())
            } else {
                Err(format!("{what} is not sent: {status}"))
            }
        })
        .await
    };
    sent(&first, "the replayed dead letter").await;
    let bulk = eventually(Duration::from_secs(10), async || {
        let bulk = app
            .graphql(
                Some(&key),
                "mutation { replayDeadLetters(filter: { channel: EMAIL }) }",
                json!({}),
            )
            .await;
        // The projection may still list the first one for a moment; it is skipped.
        if bulk["data"]["replayDeadLetters"].as_i64() == Some(1) {
            Ok(bulk)
        } else {
            Err(format!("bulk replay: {bulk}"))
        }
    })
    .await;
    assert_eq!(bulk["data"]["replayDeadLetters"], 1);
    sent(&second, "the bulk-replayed dead letter").await;
    // Without the ops scope, the dead-letter queue is not visible.
    let read_key = app
        .graphql(
            Some(&key),
            "mutation { issueApiKey(name: \"reader\", scopes: [READ]) { apiKey } }",
            json!({}),
        )
        .await;
    let read_key = read_key["data"]["issueApiKey"]["apiKey"]
        .as_str()
        .expect("key")
        .to_string();
    let refused = app.graphql(Some(&read_key), list, json!({})).await;
    assert_eq!(crate::support::error_codes(&refused), ["FORBIDDEN"]);

    shutdown.cancel();
    worker.await.unwrap();
    runner.task.await.unwrap();
}

/// REST `POST /admin/dlq/replay` runs the same requeue as GraphQL's
/// `replayDeadLetter` and `replayDeadLetters`.
#[tokio::test]
async fn dead_letters_are_replayed_through_the_rest_twin() {
    let app = crate::support::TestApp::start().await;
    let (tenant, key) = app.tenant().await;
    let shutdown = CancellationToken::new();
    let runner = herald::projections::spawn(
        app.store.clone(),
        Arc::new(herald::projections::dead_letters::DeadLettersProjection),
        herald::projections::RunnerOptions::default(),
        shutdown.clone(),
    );
    let provider = Scripted::new("mail-a");
    for _ in 0..3 {
        provider.then(Err(SendError::permanent("550 mailbox disabled")));
    }
    let worker = dispatch(&app.store, &[&provider], Setup::new(quick()), &shutdown);
    let replay = |body: serde_json::Value| {
        let request = app
            .http
            .post(format!("{}/admin/dlq/replay", app.base))
            .bearer_auth(&key)
            .json(&body);
        async move {
            let response = request.send().await.expect("sent");
            let status = response.status().as_u16();
            (
                status,
                response.json::<serde_json::Value>().await.expect("JSON"),
            )
        }
    };
    let mut ids = Vec::new();
    for title in ["one", "two", "three"] {
        let sent: serde_json::Value = app
            .http
            .post(format!("{}/api/notifications", app.base))
            .bearer_auth(&key)
            .json(&json!({ "recipient": { "email": "ada@example.com" }, "channels": ["email"], "content": { "title": title, "text": "x" } }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(NotificationId::parse(sent["notification_id"].as_str().unwrap()).unwrap());
    }
    let tenant_id = TenantId::parse(&tenant).unwrap();
    let status_of = |id: NotificationId| {
        let store = app.store.clone();
        let tenant_id = tenant_id.clone();
        async move {
            notifications::get(&store, &tenant_id, &id)
                .await
                .unwrap()
                .unwrap()
                .state
                .status
        }
    };
    let wait_for = |id: NotificationId, wanted: NotificationStatus| {
        let status_of = &status_of;
        async move {
            eventually(Duration::from_secs(10), async || {
                let status = status_of(id).await;
                if status == wanted {
                    Ok(())
                } else {
                    Err(format!("{id}: {status}, not {wanted}"))
                }
            })
            .await
        }
    };
    for id in &ids {
        wait_for(*id, NotificationStatus::DeadLettered).await;
    }

    // One by id; again, it is no longer dead-lettered: a conflict, as for GraphQL.
    let (status, replayed) = replay(json!({ "id": ids[0].as_uuid() })).await;
    assert_eq!(status, 200, "{replayed}");
    assert_eq!(replayed, json!({ "replayed": 1 }));
    wait_for(ids[0], NotificationStatus::Sent).await;
    let (status, refused) = replay(json!({ "id": ids[0].as_uuid() })).await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "CONFLICT");

    // The rest by filter, as the read model lists them (it may still list
    // the first, which is passed over, or not yet the others).
    let mut total = 0;
    eventually(Duration::from_secs(10), async || {
        let (status, replayed) = replay(json!({ "channel": "email" })).await;
        assert_eq!(status, 200, "{replayed}");
        total += replayed["replayed"].as_u64().unwrap();
        if total >= 2 {
            Ok(())
        } else {
            Err(format!("{total} replayed"))
        }
    })
    .await;
    assert_eq!(total, 2);
    for id in &ids[1..] {
        wait_for(*id, NotificationStatus::Sent).await;
    }

    shutdown.cancel();
    worker.await.unwrap();
    runner.task.await.unwrap();
}

#[tokio::test]
async fn the_breaker_opens_fails_over_half_opens_and_closes() {
    let h = Harness::new().await;
    let first = Scripted::new("mail-a");
    let second = Scripted::new("mail-b");
    for _ in 0..3 {
        first.then(Err(SendError::transient("connection reset")));
    }
    let config = BreakerConfig {
        failures: 3,
        window_seconds: 60,
        open_seconds: 1,
    };
    let breakers = Breakers::new(&config);
    let state = |breakers: &Breakers| {
        breakers
            .snapshot()
            .into_iter()
            .find(|b| b.key == "mail-a")
            .map(|b| b.state)
    };
    let worker = h.start_with(&[&first, &second], quick(), breakers.clone());
    // Each fails on the first provider and fails over to the second at once.
    for _ in 0..3 {
        let id = h.send(json!({})).await;
        h.wait_for(&id, NotificationStatus::Sent, Duration::from_secs(5))
            .await;
    }
    assert_eq!(
        state(&breakers),
        Some(BreakerState::Open),
        "three failures in a minute open it"
    );

    // Open: the next notification goes straight to the second provider.
    let id = h.send(json!({})).await;
    let details = h
        .wait_for(&id, NotificationStatus::Sent, Duration::from_secs(5))
        .await;
    assert_eq!(details.state.provider.as_deref(), Some("mail-b"));
    assert_eq!(
        (first.calls().len(), second.calls().len()),
        (3, 4),
        "an open breaker lets nothing through"
    );

    // After open_seconds one probe goes to the first provider; it succeeds
    // and closes it. It opened before it was seen open, so its open_seconds
    // are over once as many have passed from here: a wait on the breaker's
    // own clock, nothing to poll for.
    tokio::time::sleep(Duration::from_secs(config.open_seconds)).await;
    let id = h.send(json!({})).await;
    let details = h
        .wait_for(&id, NotificationStatus::Sent, Duration::from_secs(5))
        .await;
    assert_eq!(
        details.state.provider.as_deref(),
        Some("mail-a"),
        "the half-open probe"
    );
    assert_eq!(state(&breakers), Some(BreakerState::Closed));
    h.shutdown.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn a_hold_behind_an_open_breaker_records_one_event_however_often_it_is_rechecked() {
    let h = Harness::new().await;
    let provider = Scripted::new("mail-a");
    for _ in 0..2 {
        provider.then(Err(SendError::transient("connection refused")));
    }
    let breakers = Breakers::new(&BreakerConfig {
        failures: 2,
        window_seconds: 60,
        open_seconds: 3,
    });
    // Rechecked every 25 ms for the 3 s the breaker stays open: 120 looks,
    // as many as a 10-minute outage gets at the default 5 s.
    let delivery = DeliveryConfig {
        retry_delays_seconds: vec![60.0],
        recheck_seconds: 0.025,
        ..quick()
    };
    let worker = h.start_with(&[&provider], delivery, breakers);
    for _ in 0..2 {
        let failing = h.send(json!({})).await;
        h.wait_for(
            &failing,
            NotificationStatus::RetryPending,
            Duration::from_secs(5),
        )
        .await;
    }
    let held = h.send(json!({})).await;
    h.wait_for(&held, NotificationStatus::Scheduled, Duration::from_secs(5))
        .await;
    let rechecks = || async {
        sqlx::query_scalar::<_, i32>(
            "SELECT rechecks FROM delivery_queue WHERE notification_id = $1",
        )
        .bind(held.as_uuid())
        .fetch_optional(h.store.pool())
        .await
        .unwrap()
    };
    eventually(Duration::from_secs(3), async || match rechecks().await {
        Some(rechecks) if rechecks >= 40 => Ok(()),
        rechecks => Err(format!("rechecked {rechecks:?} times")),
    })
    .await;
    let details = h
        .wait_for(&held, NotificationStatus::Sent, Duration::from_secs(10))
        .await;
    assert_eq!(
        types(&details),
        [
            "NotificationRequested",
            "NotificationRanked",
            "NotificationScheduled",
            "DeliveryAttempted",
            "NotificationSent"
        ],
        "the hold is one event, its rechecks none"
    );
    h.shutdown.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn a_due_high_never_waits_behind_a_low_under_a_throttle() {
    let h = Harness::new().await;
    let provider = Scripted::new("mail-a");
    let mut ids = Vec::new();
    for n in 0..12 {
        ids.push(h.send(json!({ "priority": "LOW", "content": { "title": format!("low-{n}"), "text": "x" } })).await);
    }
    for n in 0..4 {
        ids.push(h.send(json!({ "priority": "HIGH", "content": { "title": format!("high-{n}"), "text": "x" } })).await);
    }
    let worker = h.start_set_up(&[&provider], Setup::throttled(2.0));
    for id in &ids[12..] {
        h.wait_for(id, NotificationStatus::Sent, Duration::from_secs(10))
            .await;
    }
    let order: Vec<String> = provider
        .calls()
        .iter()
        .map(|c| c.title.clone().unwrap())
        .collect();
    assert!(
        order.len() >= 4 && order[..4].iter().all(|t| t.starts_with("high")),
        "a LOW went before a due HIGH: {order:?}"
    );
    h.shutdown.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn a_throttled_message_that_fails_over_and_retries_twice_stays_under_20_events() {
    let h = Harness::new().await;
    let first = Scripted::new("mail-a");
    let second = Scripted::new("mail-b");
    // Others ahead of it use the tokens, so it is throttled too.
    let ahead: Vec<NotificationId> =
        futures::future::join_all((0..3).map(|_| h.send(json!({})))).await;
    // Each of the ahead messages goes first; then ours fails a, b, a.
    for _ in 0..3 {
        first.then(Ok(()));
    }
    first.then(Err(SendError::transient("connection refused")));
    second.then(Err(SendError::transient("451 try later")));
    first.then(Err(SendError::transient("connection refused")));
    let id = h.send(json!({})).await;
    let worker = h.start_set_up(&[&first, &second], Setup::throttled(4.0));
    for id in ahead.iter().chain([&id]) {
        h.wait_for(id, NotificationStatus::Sent, Duration::from_secs(15))
            .await;
    }
    let details = h.details(&id).await;
    let events = types(&details);
    let count = |name: &str| events.iter().filter(|t| *t == name).count();
    assert!(count("DeliveryFailed") == 3, "{events:?}");
    assert!(
        count("NotificationScheduled") >= 1,
        "never throttled: {events:?}"
    );
    assert!(events.len() < 20, "{} events: {events:?}", events.len());
    h.shutdown.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn within_a_priority_the_higher_score_takes_the_token_first() {
    let h = Harness::new().await;
    let provider = Scripted::new("mail-a");
    let mut ids = Vec::new();
    // Scored by category: no category scores lowest.
    for (n, category) in ["", "security", "", "billing", "security"]
        .iter()
        .enumerate()
    {
        let mut input = json!({ "content": { "title": format!("{n}-{category}"), "text": "x" } });
        if !category.is_empty() {
            input["category"] = json!(category);
        }
        ids.push(h.send(input).await);
    }
    let mut setup = Setup::throttled(4.0);
    setup.ranking.rules.categories = [("security", 0.3), ("billing", 0.1)]
        .into_iter()
        .map(|(category, weight)| {
            (
                herald::domain::values::Category::parse(category).unwrap(),
                weight,
            )
        })
        .collect();
    let worker = h.start_set_up(&[&provider], setup);
    for id in &ids {
        h.wait_for(id, NotificationStatus::Sent, Duration::from_secs(10))
            .await;
    }
    let mut scores = Vec::new();
    for call in provider.calls() {
        scores.push(h.details(&call.notification_id).await.state.score.unwrap());
    }
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "sent out of score order: {scores:?}"
    );
    h.shutdown.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn ops_views_show_the_queue_and_provider_health() {
    let app = crate::support::TestApp::start().await;
    let (_, key) = app.tenant().await;
    let shutdown = CancellationToken::new();
    let provider = Scripted::new("mail-a");
    let worker = dispatch(&app.store, &[&provider], Setup::new(quick()), &shutdown);
    let later = Utc::now() + chrono::TimeDelta::hours(1);
    for priority in ["HIGH", "LOW", "LOW"] {
        let sent = app
            .graphql(
                Some(&key),
                "mutation($input: SendNotificationInput!) { sendNotification(input: $input) { notification { id } } }",
                json!({ "input": { "recipient": { "email": "ada@example.com" }, "channels": ["EMAIL"], "priority": priority,
                                   "scheduleAt": later, "content": { "title": "Later", "text": "x" } } }),
            )
            .await;
        assert!(sent["errors"].is_null(), "{sent}");
    }
    let queue = app
        .graphql(
            Some(&key),
            "query { deliveryQueue { priority channel depth due leased } }",
            json!({}),
        )
        .await;
    assert_eq!(
        queue["data"]["deliveryQueue"],
        json!([
            { "priority": "HIGH", "channel": "email", "depth": 1, "due": 0, "leased": 0 },
            { "priority": "LOW", "channel": "email", "depth": 2, "due": 0, "leased": 0 },
        ]),
        "{queue}"
    );
    eventually(Duration::from_secs(10), async || {
        let health = app
            .graphql(
                Some(&key),
                "query { providerHealth { provider breaker recentFailures inFlight } }",
                json!({}),
            )
            .await;
        if health["data"]["providerHealth"]
            == json!([{ "provider": "mail-a", "breaker": "closed", "recentFailures": 0, "inFlight": 0 }])
        {
            Ok(())
        } else {
            Err(format!("provider health is not published: {health}"))
        }
    })
    .await;
    shutdown.cancel();
    worker.await.unwrap();
}
