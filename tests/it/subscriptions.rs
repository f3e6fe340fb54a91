//! Live subscriptions: a real graphql-transport-ws client, the seam between
//! catch-up and live events, and tenant confinement.

use std::collections::HashSet;
use std::process::Stdio;
use std::time::Duration;

use futures::StreamExt;
use herald::api::graphql::Caller;
use herald::api::live::LiveHub;
use herald::commands::tenants;
use herald::eventstore::{EventStore, ExpectedVersion, ReadFilter, StreamAppend};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::eventstore::event;
use crate::peers::npm_peer;
use crate::support::{TestApp, fresh_database};

#[tokio::test]
async fn a_graphql_ws_client_follows_a_notification_sent_after_it_subscribed() {
    let app = TestApp::start().await;
    let (_, key) = app.tenant().await;
    let url = format!("{}/graphql/ws", app.base.replacen("http://", "ws://", 1));
    let mut client = tokio::process::Command::new("node")
        .arg(npm_peer("graphql-ws").join("subscribe.mjs"))
        .args([&url, &key])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs the graphql-ws client");
    let mut lines = BufReader::new(client.stdout.take().unwrap()).lines();
    let mut steps = Vec::new();
    let mut id = String::new();
    while let Ok(Some(line)) = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the client keeps talking")
    {
        let step: Value = serde_json::from_str(&line).expect("the client prints JSON lines");
        match step["step"].as_str().unwrap() {
            "listening" => {
                let sent = app
                    .graphql(
                        Some(&key),
                        "mutation($input: SendNotificationInput!) { sendNotification(input: $input) { notification { id } } }",
                        json!({ "input": {
                            "recipient": { "email": "ada@example.com" },
                            "channels": ["EMAIL"],
                            "content": { "text": "hello" },
                            "scheduleAt": (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339(),
                        }}),
                    )
                    .await;
                id = sent["data"]["sendNotification"]["notification"]["id"]
                    .as_str()
                    .unwrap()
                    .to_string();
            }
            "watching" => {
                assert_eq!(step["id"], id.as_str());
                let cancelled = app
                    .graphql(
                        Some(&key),
                        "mutation($id: ID!) { cancelNotification(id: $id) { status } }",
                        json!({ "id": id }),
                    )
                    .await;
                assert_eq!(
                    cancelled["data"]["cancelNotification"]["status"],
                    "CANCELLED"
                );
            }
            "error" => panic!("graphql-ws client failed: {line}"),
            _ => {}
        }
        steps.push(step);
    }
    let status = client.wait().await.unwrap();
    assert!(status.success(), "client exited with {status}: {steps:?}");
    let created = steps
        .iter()
        .find(|s| s["step"] == "created")
        .expect("saw the send");
    assert_eq!(created["notificationId"], id.as_str());
    assert_eq!(created["type"], "NotificationRequested");
    assert_eq!(created["status"], "REQUESTED");
    let updated = steps
        .iter()
        .find(|s| s["step"] == "updated")
        .expect("saw the cancel");
    assert_eq!(updated["type"], "NotificationCancelled");
    assert_eq!(updated["status"], "CANCELLED");
    assert_eq!(steps.last().unwrap()["step"], "done", "completed cleanly");
}

#[tokio::test]
async fn the_websocket_refuses_a_connection_without_a_valid_key() {
    let app = TestApp::start().await;
    let url = format!("{}/graphql/ws", app.base.replacen("http://", "ws://", 1));
    let output = tokio::process::Command::new("node")
        .arg(npm_peer("graphql-ws").join("subscribe.mjs"))
        .args([&url, "hk_wrong"])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("\"step\":\"error\""), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_from_a_position_has_no_gap_and_no_duplicate_at_the_seam() {
    let db = fresh_database().await;
    let store = EventStore::new(db.pool.clone());
    let append = |store: EventStore, n: usize| async move {
        for i in 0..n {
            store
                .append(&[StreamAppend {
                    stream_id: format!("seam-{}", i % 7),
                    expected: ExpectedVersion::Any,
                    events: vec![event("Seam", "t1", json!({ "i": i }))],
                }])
                .await
                .unwrap();
        }
    };
    append(store.clone(), 100).await;
    let hub = LiveHub::start(store.clone()).await.unwrap();
    // Events keep arriving while the subscriber catches up and joins the live feed.
    let writer = tokio::spawn(append(store.clone(), 300));
    let all = store
        .read_all(
            herald::eventstore::Checkpoint::ORIGIN,
            50,
            &ReadFilter::default(),
        )
        .await
        .unwrap();
    let resume_after = all.events[39].checkpoint();
    let tenant = herald::domain::values::TenantId::parse("t1").unwrap();
    let mut events = Box::pin(hub.events(&tenant, Some(resume_after)));
    writer.await.unwrap();
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(store.pool())
        .await
        .unwrap();
    let mut received = Vec::new();
    while (received.len() as i64) < total - 40 {
        let next = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("events keep coming")
            .unwrap()
            .unwrap();
        received.push(next);
    }
    let extra = tokio::time::timeout(Duration::from_millis(500), events.next()).await;
    assert!(
        extra.is_err(),
        "nothing beyond the log: {:?}",
        extra.map(|e| e.map(|e| e.map(|e| e.global_position)))
    );
    let positions: Vec<i64> = received.iter().map(|e| e.global_position).collect();
    let unique: HashSet<i64> = positions.iter().copied().collect();
    assert_eq!(unique.len(), positions.len(), "no duplicate");
    let expected: Vec<i64> = sqlx::query_scalar(
        "SELECT global_position FROM events WHERE (transaction_id::text::int8, global_position) > ($1, $2) \
         ORDER BY transaction_id, global_position",
    )
    .bind(resume_after.transaction_id)
    .bind(resume_after.global_position)
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(
        positions, expected,
        "every event after the resume point, in log order"
    );
}

#[tokio::test]
async fn subscriptions_only_see_the_callers_tenant() {
    let app = TestApp::start().await;
    let (tenant_a, key_a) = app.tenant().await;
    let (_, key_b) = app.tenant().await;
    let options = herald::config::Config::default().api_options();
    let state = herald::api::ApiState::new(app.store.clone(), &options)
        .await
        .unwrap();
    let principal_b = tenants::authenticate(app.store.pool(), &key_b)
        .await
        .unwrap()
        .unwrap();
    let mut b_events = state.schema.execute_stream(
        async_graphql::Request::new("subscription { events(after: \"0\") { type streamId data } }")
            .data(Caller(Some(principal_b))),
    );
    let send = |key: String| {
        let app = &app;
        async move {
            app.graphql(
                Some(&key),
                "mutation($input: SendNotificationInput!) { sendNotification(input: $input) { notification { id } } }",
                json!({ "input": { "recipient": { "email": "x@example.com" }, "channels": ["EMAIL"], "content": { "text": "hi" } } }),
            )
            .await
        }
    };
    send(key_a.clone()).await;
    let b_sent = send(key_b.clone()).await;
    let b_id = b_sent["data"]["sendNotification"]["notification"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut seen = Vec::new();
    // B's own tenant and key events, then its notification; never A's.
    while !seen
        .iter()
        .any(|e: &Value| e["streamId"].as_str() == Some(&format!("notification-{b_id}")))
    {
        let response = tokio::time::timeout(Duration::from_secs(10), b_events.next())
            .await
            .unwrap()
            .unwrap();
        assert!(response.errors.is_empty(), "{:?}", response.errors);
        seen.push(response.data.into_json().unwrap()["events"].clone());
    }
    for event in &seen {
        assert!(
            !event["data"].to_string().contains(&tenant_a),
            "tenant A leaked: {event}"
        );
    }
    let unauthenticated = state
        .schema
        .execute_stream(
            async_graphql::Request::new("subscription { events { type } }").data(Caller(None)),
        )
        .next()
        .await
        .unwrap();
    assert_eq!(
        unauthenticated.errors[0]
            .extensions
            .as_ref()
            .unwrap()
            .get("code")
            .unwrap()
            .to_string(),
        "\"UNAUTHENTICATED\""
    );
}
