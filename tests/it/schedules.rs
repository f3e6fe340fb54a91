//! Recurring schedules: the GraphQL surface, pause/resume, missed-slot
//! policies, and exactly one notification per slot across two real
//! `herald serve --roles workers` processes and a restart.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};

use crate::crash::workers_process;
use crate::support::{TestApp, error_codes, eventually};
use herald::commands::Actor;
use herald::commands::notifications::SendPolicy;
use herald::commands::schedules::{self, FireOutcome};
use herald::domain::schedule::{CreateSchedule, MissedPolicy};
use herald::domain::values::TenantId;

const CREATE: &str = "mutation($input: CreateScheduleInput!) { createSchedule(input: $input) { \
    id name cron timezone missedPolicy paused lastFiredAt \
    nextFirings { at local } } }";

fn ntfy_notification() -> Value {
    json!({
        "recipient": { "ntfyTopic": "alerts" },
        "channels": ["NTFY"],
        "content": { "title": "Heartbeat", "text": "still here" },
    })
}

fn domain_notification() -> herald::domain::SendNotification {
    serde_json::from_value(json!({
        "recipient": { "ntfy_topic": "alerts" },
        "channels": ["ntfy"],
        "content": { "title": "Heartbeat", "text": "still here" },
    }))
    .unwrap()
}

async fn create(app: &TestApp, key: &str, cron: &str, policy: &str) -> Value {
    let response = app
        .graphql(
            Some(key),
            CREATE,
            json!({ "input": {
                "name": "heartbeat", "cron": cron, "timezone": "Europe/Paris",
                "missedPolicy": policy, "notification": ntfy_notification(),
            }}),
        )
        .await;
    assert!(response["errors"].is_null(), "{response}");
    response["data"]["createSchedule"].clone()
}

/// Slots of schedule `id` that made a notification, with how many each made.
async fn notifications_per_slot(app: &TestApp, id: &str) -> Vec<(String, i64)> {
    sqlx::query_as(
        "SELECT k.idempotency_key, count(e.*) FROM idempotency_keys k \
         JOIN events e ON e.stream_id = 'notification-' || k.notification_id::text \
             AND e.event_type = 'NotificationRequested' \
         WHERE k.idempotency_key LIKE $1 GROUP BY k.idempotency_key ORDER BY 1",
    )
    .bind(format!("schedule:{id}:%"))
    .fetch_all(app.store.pool())
    .await
    .unwrap()
}

async fn requested_total(app: &TestApp, tenant: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE event_type = 'NotificationRequested' AND tenant_id = $1",
    )
    .bind(tenant)
    .fetch_one(app.store.pool())
    .await
    .unwrap()
}

async fn stream_events(app: &TestApp, id: &str, event_type: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE stream_id = $1 AND event_type = $2")
        .bind(format!("schedule-{id}"))
        .bind(event_type)
        .fetch_one(app.store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn create_lists_the_next_firings_in_utc_and_local_time() {
    let app = TestApp::start().await;
    let (_, key) = app.tenant().await;
    let created = create(&app, &key, "30 2 * * *", "CATCH_UP_ONCE").await;
    assert_eq!(created["missedPolicy"], "CATCH_UP_ONCE");
    assert_eq!(created["paused"], false);
    let firings = created["nextFirings"].as_array().unwrap();
    assert_eq!(firings.len(), 5);
    for firing in firings {
        let at: DateTime<Utc> = firing["at"].as_str().unwrap().parse().unwrap();
        let local = DateTime::parse_from_rfc3339(firing["local"].as_str().unwrap()).unwrap();
        assert_eq!(local, at, "the same instant");
        assert!(
            local.format("%H:%M").to_string() == "02:30"
                || local.format("%H:%M").to_string() == "03:00"
        );
    }
    let id = created["id"].as_str().unwrap();
    let listed = app
        .graphql(
            Some(&key),
            "query($id: ID!) { schedules(first: 10) { edges { node { id } } } \
             schedule(id: $id) { id nextFirings(count: 2) { at } } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(listed["data"]["schedules"]["edges"][0]["node"]["id"], id);
    assert_eq!(
        listed["data"]["schedule"]["nextFirings"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn bad_input_is_a_validation_error_naming_each_field() {
    let app = TestApp::start().await;
    let (_, key) = app.tenant().await;
    let mut notification = ntfy_notification();
    notification["idempotencyKey"] = json!("mine");
    notification["recipient"] = json!({ "email": "not an address" });
    let response = app
        .graphql(
            Some(&key),
            CREATE,
            json!({ "input": {
                "name": "bad", "cron": "61 * * * *", "timezone": "Mars/Olympus",
                "notification": notification,
            }}),
        )
        .await;
    assert_eq!(error_codes(&response), ["VALIDATION"], "{response}");
    let paths: Vec<&str> = response["errors"][0]["extensions"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    for path in ["cron", "timezone", "notification.idempotency_key"] {
        assert!(paths.contains(&path), "{path} in {paths:?}");
    }
    assert!(
        paths
            .iter()
            .any(|p| p.starts_with("notification.recipient")
                || p.starts_with("notification.channels")),
        "{paths:?}"
    );
    // An unpublished template is refused at create time, under `notification.`.
    let templated = app
        .graphql(
            Some(&key),
            CREATE,
            json!({ "input": {
                "name": "digest", "cron": "0 9 * * *", "timezone": "UTC",
                "notification": {
                    "recipient": { "ntfyTopic": "alerts" }, "channels": ["NTFY"],
                    "template": { "key": "no-such-template" },
                },
            }}),
        )
        .await;
    assert_eq!(error_codes(&templated), ["VALIDATION"], "{templated}");
    assert_eq!(
        templated["errors"][0]["extensions"]["fields"][0]["path"],
        "notification.template.key"
    );
}

#[tokio::test]
async fn another_tenants_schedule_is_not_found() {
    let app = TestApp::start().await;
    let (_, owner) = app.tenant().await;
    let (_, other) = app.tenant().await;
    let id = create(&app, &owner, "0 9 * * *", "SKIP").await["id"].clone();
    let seen = app
        .graphql(
            Some(&other),
            "query($id: ID!) { schedule(id: $id) { id } schedules { edges { node { id } } } }",
            json!({ "id": id }),
        )
        .await;
    assert!(seen["data"]["schedule"].is_null(), "{seen}");
    assert_eq!(seen["data"]["schedules"]["edges"], json!([]));
    for mutation in ["pauseSchedule(id: $id) { id }", "deleteSchedule(id: $id)"] {
        let response = app
            .graphql(
                Some(&other),
                &format!("mutation($id: ID!) {{ {mutation} }}"),
                json!({ "id": id }),
            )
            .await;
        assert_eq!(error_codes(&response), ["NOT_FOUND"], "{response}");
    }
}

/// Creates a schedule through the command side (no API needed) for a tenant.
async fn command_schedule(
    app: &TestApp,
    tenant: &TenantId,
    cron: &str,
    policy: MissedPolicy,
) -> uuid::Uuid {
    schedules::create(
        &app.store,
        tenant,
        CreateSchedule {
            name: "heartbeat".into(),
            cron: cron.into(),
            timezone: "UTC".into(),
            missed_policy: policy,
            notification: domain_notification(),
        },
        &Actor::new("test"),
    )
    .await
    .unwrap()
    .schedule_id
}

fn policy() -> SendPolicy {
    SendPolicy::unlimited(Duration::from_secs(3600))
}

const GRACE: TimeDelta = TimeDelta::seconds(60);

#[tokio::test]
async fn missed_slots_follow_the_schedules_policy() {
    let app = TestApp::start().await;
    let (tenant, _) = app.tenant().await;
    let tenant = TenantId::parse(&tenant).unwrap();
    let actor = Actor::new("test");
    let skip = command_schedule(&app, &tenant, "* * * * *", MissedPolicy::Skip).await;
    let catch_up = command_schedule(&app, &tenant, "* * * * *", MissedPolicy::CatchUpOnce).await;
    // The scheduler comes back after ten minutes of downtime.
    let later = Utc::now() + TimeDelta::minutes(10);
    let skipped = schedules::fire(&app.store, skip, &policy(), GRACE, later, &actor)
        .await
        .unwrap();
    assert!(
        matches!(skipped, FireOutcome::Skipped { count } if count >= 8),
        "{skipped:?}"
    );
    let caught_up = schedules::fire(&app.store, catch_up, &policy(), GRACE, later, &actor)
        .await
        .unwrap();
    assert!(
        matches!(
            caught_up,
            FireOutcome::Fired {
                duplicate: false,
                ..
            }
        ),
        "{caught_up:?}"
    );
    assert_eq!(
        requested_total(&app, tenant.as_str()).await,
        1,
        "one catch-up send, none skipped"
    );
    // The slot within the grace is late, not missed: it fires for both; then
    // nothing is due at that moment.
    for id in [skip, catch_up] {
        let late = schedules::fire(&app.store, id, &policy(), GRACE, later, &actor)
            .await
            .unwrap();
        assert!(
            matches!(late, FireOutcome::Fired { slot, .. } if slot >= later - GRACE),
            "{late:?}"
        );
        assert_eq!(
            schedules::fire(&app.store, id, &policy(), GRACE, later, &actor)
                .await
                .unwrap(),
            FireOutcome::NotDue
        );
    }
    assert_eq!(requested_total(&app, tenant.as_str()).await, 3);
    let row = schedules::get(app.store.pool(), &tenant, catch_up)
        .await
        .unwrap()
        .unwrap();
    assert!(row.next_fire_at.unwrap() > later - GRACE);
    assert_eq!(
        stream_events(&app, &skip.to_string(), "ScheduleSlotsSkipped").await,
        1
    );
    assert_eq!(
        stream_events(&app, &catch_up.to_string(), "ScheduleFired").await,
        2,
        "the latest missed slot and the late one"
    );
}

#[tokio::test]
async fn a_repeated_step_for_one_slot_sends_once() {
    let app = TestApp::start().await;
    let (tenant, _) = app.tenant().await;
    let tenant = TenantId::parse(&tenant).unwrap();
    let actor = Actor::new("test");
    let id = command_schedule(&app, &tenant, "* * * * *", MissedPolicy::Skip).await;
    let due = schedules::get(app.store.pool(), &tenant, id)
        .await
        .unwrap()
        .unwrap()
        .next_fire_at
        .unwrap();
    // Two schedulers deciding from the same version: both send, one records.
    let now = due + TimeDelta::seconds(1);
    let policy = policy();
    let (first, second) = tokio::join!(
        schedules::fire(&app.store, id, &policy, GRACE, now, &actor),
        schedules::fire(&app.store, id, &policy, GRACE, now, &actor),
    );
    let outcomes = [first.unwrap(), second.unwrap()];
    assert!(
        outcomes
            .iter()
            .any(|o| matches!(o, FireOutcome::Fired { .. })),
        "{outcomes:?}"
    );
    assert_eq!(requested_total(&app, tenant.as_str()).await, 1);
    assert_eq!(
        stream_events(&app, &id.to_string(), "ScheduleFired").await,
        1
    );
}

#[tokio::test]
async fn pause_stops_firings_and_resume_skips_the_paused_slots() {
    let app = TestApp::start().await;
    let (tenant, key) = app.tenant().await;
    let id = create(&app, &key, "* * * * *", "CATCH_UP_ONCE").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let paused = app
        .graphql(
            Some(&key),
            "mutation($id: ID!) { pauseSchedule(id: $id) { paused nextFirings { at } } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(paused["data"]["pauseSchedule"]["paused"], true, "{paused}");
    assert_eq!(paused["data"]["pauseSchedule"]["nextFirings"], json!([]));
    let schedule_id: uuid::Uuid = id.parse().unwrap();
    let later = Utc::now() + TimeDelta::minutes(5);
    let actor = Actor::new("test");
    assert_eq!(
        schedules::fire(&app.store, schedule_id, &policy(), GRACE, later, &actor)
            .await
            .unwrap(),
        FireOutcome::NotDue
    );
    let resumed = app
        .graphql(Some(&key), "mutation($id: ID!) { resumeSchedule(id: $id) { paused nextFirings(count: 1) { at } } }", json!({ "id": id }))
        .await;
    assert_eq!(
        resumed["data"]["resumeSchedule"]["paused"], false,
        "{resumed}"
    );
    let next: DateTime<Utc> = resumed["data"]["resumeSchedule"]["nextFirings"][0]["at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        next > Utc::now() - TimeDelta::seconds(1),
        "resumes after now, not at a paused slot"
    );
    assert_eq!(requested_total(&app, &tenant).await, 0);
    let deleted = app
        .graphql(
            Some(&key),
            "mutation($id: ID!) { deleteSchedule(id: $id) }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(deleted["data"]["deleteSchedule"], true, "{deleted}");
    assert_eq!(
        schedules::fire(&app.store, schedule_id, &policy(), GRACE, later, &actor)
            .await
            .unwrap(),
        FireOutcome::NotDue
    );
}

fn config_file(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("herald.toml");
    std::fs::write(
        &path,
        "log_filter = \"warn\"\n[scheduler]\npoll_interval_ms = 200\n",
    )
    .unwrap();
    path
}

#[tokio::test]
async fn every_second_fires_exactly_once_per_slot_across_two_processes_and_a_restart() {
    let app = TestApp::start().await;
    let (tenant, key) = app.tenant().await;
    let id = create(&app, &key, "*/1 * * * * *", "SKIP").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let dir = std::env::temp_dir().join(format!("herald-schedules-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = config_file(&dir);
    let url = app.database_url();

    // Each stage lasts until the schedule has fired a few more slots.
    let fired_more = async |slots: i64| {
        let before = stream_events(&app, &id, "ScheduleFired").await;
        eventually(Duration::from_secs(30), async || {
            let fired = stream_events(&app, &id, "ScheduleFired").await - before;
            if fired >= slots {
                Ok(())
            } else {
                Err(format!("{fired} of {slots} more slots fired"))
            }
        })
        .await;
    };
    let mut first = workers_process(&url, &config);
    let second = workers_process(&url, &config);
    fired_more(3).await;
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    fired_more(2).await;
    let restarted = workers_process(&url, &config);
    fired_more(2).await;
    for mut child in [second, restarted] {
        child.start_kill().unwrap();
        child.wait().await.unwrap();
    }
    let per_slot = notifications_per_slot(&app, &id).await;
    assert!(
        per_slot.len() >= 5,
        "the schedule kept firing: {per_slot:?}"
    );
    assert!(
        per_slot.iter().all(|(_, count)| *count == 1),
        "{per_slot:?}"
    );
    assert_eq!(
        requested_total(&app, &tenant).await,
        per_slot.len() as i64,
        "every notification belongs to one slot"
    );
    assert_eq!(
        stream_events(&app, &id, "ScheduleFired").await,
        per_slot.len() as i64,
        "one firing recorded per slot"
    );
    // No gap: consecutive seconds from the first slot to the last.
    let slots: Vec<DateTime<Utc>> = per_slot
        .iter()
        .map(|(key, _)| key.splitn(3, ':').nth(2).unwrap().parse().unwrap())
        .collect();
    let span = (*slots.last().unwrap() - slots[0]).num_seconds() + 1;
    assert_eq!(span, slots.len() as i64, "no slot lost: {slots:?}");
    std::fs::remove_dir_all(dir).ok();
}
