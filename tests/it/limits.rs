//! Per-tenant quotas and budgets (counted in the send's transaction) and the
//! dispatcher's token buckets, on a real PostgreSQL.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;

use herald::commands::limits::{
    Charge, EffectiveLimits, LimitsConfig, QuotaOutcome, consume_quota, usage,
};
use herald::commands::{Actor, CommandError, tenants};
use herald::domain::values::{Category, Channel, RecipientId, TenantId};
use herald::domain::{
    Budget, FrequencyCap, LimitAuthority, Quota, RateLimit, TenantEvent, TenantLimits,
};
use herald::eventstore::EventStore;
use herald::workers::throttle::{self, BucketRequest, Dispatch, Grant};

use crate::support::{TestApp, error_codes, fresh_database};

async fn store_with_tenant() -> (EventStore, TenantId) {
    let db = fresh_database().await;
    let store = EventStore::new(db.pool);
    let created = tenants::create_tenant(&store, "Quota test", &Actor::new("test"))
        .await
        .expect("tenant created");
    (store, created.tenant_id)
}

fn limits(config: LimitsConfig) -> EffectiveLimits {
    EffectiveLimits::new(&config, &TenantLimits::default(), LimitAuthority::Tenant)
}

fn at(text: &str) -> DateTime<Utc> {
    text.parse().expect("a timestamp")
}

/// One send's charge in its own transaction, committed when it passes.
async fn charge(
    store: &EventStore,
    tenant: &TenantId,
    limits: &EffectiveLimits,
    charge: Charge,
    now: DateTime<Utc>,
) -> Result<QuotaOutcome, CommandError> {
    let mut tx = store.begin().await.expect("begin");
    let outcome = consume_quota(&mut tx, tenant, limits, charge, now, &Actor::new("test")).await;
    match outcome {
        Ok(_) => tx.commit().await.expect("commit"),
        Err(_) => tx.rollback().await.expect("rollback"),
    }
    outcome
}

const ONE: Charge = Charge {
    messages: 1,
    estimated_cost: 0.0,
};

async fn soft_cap_events(store: &EventStore, tenant: &TenantId) -> Vec<TenantEvent> {
    store
        .read_stream(&format!("tenant-{tenant}"), 1)
        .await
        .expect("tenant stream")
        .into_iter()
        .filter(|e| e.event_type == "QuotaSoftCapReached")
        .map(|e| TenantEvent::upcast(&e.event_type, e.schema_version, e.payload).expect("decodes"))
        .collect()
}

#[tokio::test]
async fn concurrent_sends_never_both_take_the_last_unit() {
    let (store, tenant) = store_with_tenant().await;
    let limits = Arc::new(limits(LimitsConfig {
        messages_per_day: Some(10),
        ..LimitsConfig::default()
    }));
    let now = Utc::now();
    let tasks: Vec<_> = (0..25)
        .map(|_| {
            let (store, tenant, limits) = (store.clone(), tenant.clone(), limits.clone());
            tokio::spawn(async move { charge(&store, &tenant, &limits, ONE, now).await })
        })
        .collect();
    let mut passed = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(_) => passed += 1,
            Err(CommandError::QuotaExceeded { quota, limit, .. }) => {
                assert_eq!((quota, limit), (Quota::DailyMessages, 10.0));
            }
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!(passed, 10);
    let used = usage(store.pool(), &tenant, now).await.expect("usage");
    assert_eq!((used.day_messages, used.month_messages), (10, 10));
}

#[tokio::test]
async fn a_refused_or_rolled_back_charge_counts_nothing() {
    let (store, tenant) = store_with_tenant().await;
    let limits = limits(LimitsConfig {
        messages_per_month: Some(5),
        ..LimitsConfig::default()
    });
    let now = at("2026-03-10T12:00:00Z");
    let mut tx = store.begin().await.unwrap();
    consume_quota(&mut tx, &tenant, &limits, ONE, now, &Actor::new("test"))
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(
        usage(store.pool(), &tenant, now)
            .await
            .unwrap()
            .month_messages,
        0
    );

    let six = Charge {
        messages: 6,
        estimated_cost: 0.0,
    };
    let refused = charge(&store, &tenant, &limits, six, now)
        .await
        .unwrap_err();
    let CommandError::QuotaExceeded {
        quota,
        limit,
        resets_at,
    } = refused
    else {
        panic!("expected QuotaExceeded, got {refused}");
    };
    assert_eq!((quota, limit), (Quota::MonthlyMessages, 5.0));
    assert_eq!(resets_at, at("2026-04-01T00:00:00Z"));
    assert_eq!(
        usage(store.pool(), &tenant, now)
            .await
            .unwrap()
            .month_messages,
        0
    );

    let five = Charge {
        messages: 5,
        estimated_cost: 0.0,
    };
    charge(&store, &tenant, &limits, five, now).await.unwrap();
    assert!(charge(&store, &tenant, &limits, ONE, now).await.is_err());
    // A new month starts from nothing.
    charge(&store, &tenant, &limits, ONE, at("2026-04-01T00:00:00Z"))
        .await
        .unwrap();
}

#[tokio::test]
async fn the_daily_count_starts_again_each_utc_day_within_the_month() {
    let (store, tenant) = store_with_tenant().await;
    let limits = limits(LimitsConfig {
        messages_per_day: Some(2),
        messages_per_month: Some(5),
        ..LimitsConfig::default()
    });
    for day in ["2026-05-01", "2026-05-02"] {
        let now = at(&format!("{day}T08:00:00Z"));
        charge(&store, &tenant, &limits, ONE, now).await.unwrap();
        charge(&store, &tenant, &limits, ONE, now).await.unwrap();
        let refused = charge(&store, &tenant, &limits, ONE, now)
            .await
            .unwrap_err();
        assert!(
            matches!(
                refused,
                CommandError::QuotaExceeded {
                    quota: Quota::DailyMessages,
                    ..
                }
            ),
            "{refused}"
        );
    }
    let now = at("2026-05-03T08:00:00Z");
    charge(&store, &tenant, &limits, ONE, now).await.unwrap();
    let refused = charge(&store, &tenant, &limits, ONE, now)
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            CommandError::QuotaExceeded {
                quota: Quota::MonthlyMessages,
                ..
            }
        ),
        "{refused}"
    );
    let used = usage(store.pool(), &tenant, now).await.unwrap();
    assert_eq!((used.day_messages, used.month_messages), (1, 5));
}

#[tokio::test]
async fn a_soft_cap_is_reported_once_per_period_and_recorded_on_the_tenant_stream() {
    let (store, tenant) = store_with_tenant().await;
    let limits = Arc::new(limits(LimitsConfig {
        messages_per_day: Some(100),
        ..LimitsConfig::default()
    }));
    let now = at("2026-06-15T10:00:00Z");
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (store, tenant, limits) = (store.clone(), tenant.clone(), limits.clone());
            tokio::spawn(async move { charge(&store, &tenant, &limits, ONE, now).await })
        })
        .collect();
    let mut reached = Vec::new();
    for task in tasks {
        reached.extend(task.await.unwrap().unwrap().soft_caps_reached);
    }
    assert_eq!(reached.len(), 1, "{reached:?}");
    assert_eq!(reached[0].quota, Quota::DailyMessages);
    assert_eq!((reached[0].used, reached[0].soft_cap), (80.0, 80.0));
    assert_eq!(
        soft_cap_events(&store, &tenant).await,
        vec![TenantEvent::QuotaSoftCapReached {
            quota: Quota::DailyMessages,
            period_start: now.date_naive(),
            used: 80.0,
            soft_cap: 80.0,
            limit: Some(100.0),
        }]
    );

    // The next day warns again, once.
    let next_day = now + TimeDelta::days(1);
    let eighty = Charge {
        messages: 80,
        estimated_cost: 0.0,
    };
    let outcome = charge(&store, &tenant, &limits, eighty, next_day)
        .await
        .unwrap();
    assert_eq!(outcome.soft_caps_reached.len(), 1);
    let outcome = charge(&store, &tenant, &limits, ONE, next_day)
        .await
        .unwrap();
    assert!(outcome.soft_caps_reached.is_empty());
    assert_eq!(soft_cap_events(&store, &tenant).await.len(), 2);
}

#[tokio::test]
async fn the_monthly_budget_refuses_and_warns_by_estimated_cost() {
    let (store, tenant) = store_with_tenant().await;
    let limits = limits(LimitsConfig {
        monthly_budget: Some(Budget::try_from(1.0).unwrap()),
        monthly_soft_budget: Some(Budget::try_from(0.5).unwrap()),
        ..LimitsConfig::default()
    });
    let now = at("2026-07-01T00:00:00Z");
    let sms = Charge {
        messages: 1,
        estimated_cost: 0.3,
    };
    let crossed: Vec<usize> = [
        charge(&store, &tenant, &limits, sms, now).await.unwrap(),
        charge(&store, &tenant, &limits, sms, now).await.unwrap(),
        charge(&store, &tenant, &limits, sms, now).await.unwrap(),
    ]
    .iter()
    .map(|o| o.soft_caps_reached.len())
    .collect();
    assert_eq!(crossed, vec![0, 1, 0]);
    let refused = charge(&store, &tenant, &limits, sms, now)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, CommandError::QuotaExceeded { quota: Quota::MonthlyCost, limit, .. } if limit == 1.0),
        "{refused}"
    );
    let used = usage(store.pool(), &tenant, now).await.unwrap();
    assert!((used.month_cost - 0.9).abs() < 1e-9, "{}", used.month_cost);
}

#[tokio::test]
async fn quota_exceeded_is_429_with_its_own_code() {
    let error = herald::api::ApiError::from(CommandError::QuotaExceeded {
        quota: Quota::DailyMessages,
        limit: 10.0,
        resets_at: Utc::now() + TimeDelta::hours(1),
    });
    assert_eq!(error.code(), "QUOTA_EXCEEDED");
    assert_eq!(error.status(), axum::http::StatusCode::TOO_MANY_REQUESTS);
    let response = axum::response::IntoResponse::into_response(error);
    let retry_after: i64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((3500..=3600).contains(&retry_after), "{retry_after}");
}

const SET_LIMITS: &str = r#"mutation($limits: TenantLimitsInput!) {
  setTenantLimits(limits: $limits) {
    messagesPerDay messagesPerMonth softCapFraction monthlyBudget
    channelRates { channel perSecond burst } frequencyCaps { category count periodSeconds } overrides
  }
}"#;

#[tokio::test]
async fn an_admin_sets_the_tenants_limits_and_reads_its_usage() {
    let app = TestApp::start().await;
    let (_, admin) = app.tenant().await;
    let limits = json!({
        "messagesPerDay": 500,
        "messagesPerMonth": null,
        "softCapFraction": 0.9,
        "channelRates": [{ "channel": "SMS", "rate": { "perSecond": 2, "burst": 4 } }],
        "frequencyCaps": [{ "category": "marketing", "cap": { "count": 3, "periodSeconds": 86400 } }],
    });

    let sender = app
        .graphql(
            Some(&admin),
            r#"mutation { issueApiKey(name: "sender", scopes: [SEND, READ]) { apiKey } }"#,
            json!({}),
        )
        .await;
    let sender = sender["data"]["issueApiKey"]["apiKey"].as_str().unwrap();
    let refused = app
        .graphql(Some(sender), SET_LIMITS, json!({ "limits": limits }))
        .await;
    assert_eq!(error_codes(&refused), vec!["FORBIDDEN"], "{refused}");

    let set = app
        .graphql(Some(&admin), SET_LIMITS, json!({ "limits": limits }))
        .await;
    assert!(set["errors"].is_null(), "{set}");
    let set = &set["data"]["setTenantLimits"];
    assert_eq!(set["messagesPerDay"], 500);
    assert_eq!(set["messagesPerMonth"], json!(null));
    assert_eq!(set["softCapFraction"], 0.9);
    assert_eq!(
        set["channelRates"],
        json!([{ "channel": "SMS", "perSecond": 2.0, "burst": 4.0 }])
    );
    assert_eq!(
        set["frequencyCaps"],
        json!([{ "category": "marketing", "count": 3, "periodSeconds": 86400 }])
    );
    assert_eq!(set["overrides"]["messages_per_month"], json!(null));
    assert!(set["overrides"].get("monthly_budget").is_none());

    let read = app
        .graphql(
            Some(sender),
            "{ tenantLimits { messagesPerDay } usage { quota used limit softCap periodStart resetsAt } }",
            json!({}),
        )
        .await;
    assert!(read["errors"].is_null(), "{read}");
    assert_eq!(read["data"]["tenantLimits"]["messagesPerDay"], 500);
    let daily = &read["data"]["usage"][0];
    assert_eq!(daily["quota"], "DAILY_MESSAGES");
    assert_eq!(daily["used"], 0.0);
    assert_eq!(daily["limit"], 500.0);
    assert_eq!(daily["softCap"], 450.0);
    assert_eq!(read["data"]["usage"][1]["limit"], json!(null));

    let invalid = app
        .graphql(
            Some(&admin),
            SET_LIMITS,
            json!({ "limits": {
                "messagesPerDay": -1,
                "channelRates": [{ "channel": "EMAIL", "rate": { "perSecond": 0, "burst": 1 } }],
            } }),
        )
        .await;
    assert_eq!(error_codes(&invalid), vec!["VALIDATION"], "{invalid}");
    let paths: Vec<&str> = invalid["errors"][0]["extensions"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        vec!["limits.messagesPerDay", "limits.channelRates[0].rate"]
    );
}

fn request(key: &str, per_second: f64, burst: f64, wanted: u32) -> BucketRequest {
    let rate = RateLimit::new(per_second, burst).expect("a valid rate");
    BucketRequest::new(key.into(), rate, wanted)
}

async fn take_one(pool: &sqlx::PgPool, request: BucketRequest) -> Grant {
    throttle::take(pool, &[request]).await.expect("take")[0]
}

/// Moves a bucket's last take into the past, as if `seconds` had gone by.
async fn age(pool: &sqlx::PgPool, key: &str, seconds: f64) {
    sqlx::query(
        "UPDATE token_buckets SET updated_at = updated_at - make_interval(secs => $2) WHERE key = $1",
    )
    .bind(key)
    .bind(seconds)
    .execute(pool)
    .await
    .expect("aged");
}

async fn db_now(pool: &sqlx::PgPool) -> DateTime<Utc> {
    sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(pool)
        .await
        .expect("clock")
}

#[tokio::test]
async fn a_bucket_starts_full_refills_by_elapsed_time_and_never_beyond_its_burst() {
    let pool = fresh_database().await.pool;
    let r = |wanted| request("tenant:acme:channel:sms", 2.0, 5.0, wanted);
    assert_eq!(take_one(&pool, r(5)).await.granted, 5);
    let before = db_now(&pool).await;
    let empty = take_one(&pool, r(1)).await;
    assert_eq!(empty.granted, 0);
    // Two tokens a second: the next one is due about half a second on.
    let wait = (empty.next_token_at - before).num_milliseconds();
    assert!((100..=510).contains(&wait), "{wait} ms");

    age(&pool, "tenant:acme:channel:sms", 1.0).await;
    let partial = take_one(&pool, r(5)).await;
    assert_eq!(partial.granted, 2, "one second refills two tokens");
    assert!(partial.next_token_at > before);

    age(&pool, "tenant:acme:channel:sms", 100.0).await;
    let full = take_one(&pool, r(50)).await;
    assert_eq!(full.granted, 5, "refill stops at the burst");
}

#[tokio::test]
async fn one_statement_grants_each_key_and_shares_a_repeated_one() {
    let pool = fresh_database().await.pool;
    let grants = throttle::take(
        &pool,
        &[
            request("b", 1.0, 2.0, 1),
            request("a", 1.0, 3.0, 5),
            request("b", 1.0, 2.0, 2),
        ],
    )
    .await
    .unwrap();
    let granted: Vec<u32> = grants.iter().map(|g| g.granted).collect();
    assert_eq!(granted, vec![1, 3, 1]);
    assert!(throttle::take(&pool, &[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn concurrent_takes_never_exceed_burst_plus_rate_times_elapsed() {
    let db = fresh_database().await;
    let (rate, burst) = (50.0, 10.0);
    let start = db_now(&db.pool).await;
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let options = db.options.clone();
            tokio::spawn(async move {
                use sqlx::ConnectOptions;
                let mut conn = options.connect().await.expect("own connection");
                let mut granted = 0u64;
                let until = std::time::Instant::now() + std::time::Duration::from_millis(1500);
                while std::time::Instant::now() < until {
                    let grants =
                        throttle::take(&mut conn, &[request("provider:twilio", rate, burst, 2)])
                            .await
                            .expect("take");
                    granted += u64::from(grants[0].granted);
                }
                granted
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    let elapsed = (db_now(&db.pool).await - start).as_seconds_f64();
    let ceiling = burst + rate * elapsed;
    assert!(total as f64 <= ceiling, "{total} tokens > {ceiling}");
    // Not starved either: a good part of what the rate allows went out.
    assert!(
        total as f64 >= burst + rate * elapsed * 0.25,
        "only {total} in {elapsed} s"
    );
}

#[tokio::test]
async fn a_frequency_cap_limits_one_recipient_in_one_category() {
    let pool = fresh_database().await.pool;
    let marketing = Category::parse("marketing").unwrap();
    let limits = limits(LimitsConfig {
        frequency_caps: BTreeMap::from([(
            marketing.clone(),
            FrequencyCap::new(3, 86_400).unwrap(),
        )]),
        ..LimitsConfig::default()
    });
    let tenant = TenantId::parse("acme").unwrap();
    let (ada, bob) = (
        RecipientId::parse("ada").unwrap(),
        RecipientId::parse("bob").unwrap(),
    );
    let dispatch = |recipient| Dispatch {
        tenant_id: &tenant,
        channel: Channel::Email,
        provider: "ses",
        recipient: Some(recipient),
        category: Some(&marketing),
    };
    let mut granted = Vec::new();
    for _ in 0..4 {
        let buckets = throttle::buckets(&limits, &dispatch(&ada), 1);
        assert_eq!(buckets.len(), 1);
        granted.push(throttle::take(&pool, &buckets).await.unwrap()[0]);
    }
    assert_eq!(
        granted.iter().map(|g| g.granted).collect::<Vec<_>>(),
        vec![1, 1, 1, 0]
    );
    // Three a day refill one every eight hours.
    let wait = granted[3].next_token_at - db_now(&pool).await;
    assert!(
        wait > TimeDelta::hours(7) + TimeDelta::minutes(59) && wait <= TimeDelta::hours(8),
        "{wait}"
    );
    let other = throttle::take(&pool, &throttle::buckets(&limits, &dispatch(&bob), 1))
        .await
        .unwrap();
    assert_eq!(
        other[0].granted, 1,
        "another recipient has a bucket of its own"
    );
}

#[tokio::test]
async fn sends_past_the_daily_quota_are_refused_over_graphql_and_rest() {
    let app = TestApp::start().await;
    let (_, key) = app.tenant().await;
    let set = app
        .graphql(
            Some(&key),
            SET_LIMITS,
            json!({ "limits": { "messagesPerDay": 2 } }),
        )
        .await;
    assert!(set["errors"].is_null(), "{set}");
    let send = "mutation($input: SendNotificationInput!) { sendNotification(input: $input) { notification { id } } }";
    let input = json!({ "input": { "recipient": { "email": "ada@example.com" }, "channels": ["EMAIL"], "content": { "text": "hi" } } });
    for _ in 0..2 {
        let sent = app.graphql(Some(&key), send, input.clone()).await;
        assert!(sent["errors"].is_null(), "{sent}");
    }
    let refused = app.graphql(Some(&key), send, input).await;
    assert_eq!(
        crate::support::error_codes(&refused),
        ["QUOTA_EXCEEDED"],
        "{refused}"
    );
    let rest = app
        .http
        .post(format!("{}/api/notifications", app.base))
        .bearer_auth(&key)
        .json(&json!({ "recipient": { "email": "ada@example.com" }, "channels": ["email"], "content": { "text": "hi" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status(), 429);
    assert!(rest.headers().contains_key("retry-after"));
    // Refused sends were not accepted: two notifications exist.
    let listed = app
        .graphql(
            Some(&key),
            "query { notifications(first: 10) { edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        listed["data"]["notifications"]["edges"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}
