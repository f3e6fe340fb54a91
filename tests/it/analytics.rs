//! The analyst queries over the analytics projection, fed by a running projector.

use std::sync::Arc;
use std::time::Duration;

use herald::commands::notifications;
use herald::domain::values::{Channel, NotificationId, TenantId};
use herald::domain::{NotificationEvent, SendNotification};
use herald::eventstore::{Checkpoint, EventStore, ExpectedVersion, NewEvent, StreamAppend};
use herald::projections::analytics::AnalyticsProjection;
use herald::projections::{self, Projection, RunnerOptions};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::support::{TestApp, error_codes};

#[tokio::test]
async fn analytics_counts_statuses_per_channel_with_rates() {
    let app = TestApp::start().await;
    let (_, key) = app.tenant().await;
    let stop = CancellationToken::new();
    let projector = herald::projections::runner::spawn_all(app.store.clone(), stop.clone());
    let send = "mutation($input: SendNotificationInput!) { sendNotification(input: $input) { notification { id } } }";
    let mut ids = Vec::new();
    for channel in ["EMAIL", "EMAIL", "EMAIL", "SMS"] {
        let input = json!({
            "recipient": { "email": "ada@example.com", "phone": "+447700900123" },
            "channels": [channel],
            "content": { "text": "hi" },
        });
        let sent = app
            .graphql(Some(&key), send, json!({ "input": input }))
            .await;
        ids.push(sent["data"]["sendNotification"]["notification"]["id"].clone());
    }
    app.graphql(
        Some(&key),
        "mutation($id: ID!) { cancelNotification(id: $id) { status } }",
        json!({ "id": ids[0] }),
    )
    .await;

    let query = r#"query($from: DateTime!, $to: DateTime!) {
      analytics(from: $from, to: $to, groupBy: [CHANNEL, STATUS]) { channel status count rate }
    }"#;
    let window = json!({
        "from": (chrono::Utc::now() - chrono::Duration::hours(2)).to_rfc3339(),
        "to": (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339(),
    });
    let expected = json!([
        { "channel": "email", "status": "CANCELLED", "count": 1, "rate": 1.0 / 3.0 },
        { "channel": "email", "status": "REQUESTED", "count": 3, "rate": 1.0 },
        { "channel": "sms", "status": "REQUESTED", "count": 1, "rate": 1.0 },
    ]);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut rows: Value;
    loop {
        let response = app.graphql(Some(&key), query, window.clone()).await;
        assert!(response["errors"].is_null(), "{response}");
        rows = response["data"]["analytics"].clone();
        if rows == expected || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(rows, expected);

    let backwards = json!({ "from": window["to"], "to": window["from"] });
    let response = app.graphql(Some(&key), query, backwards).await;
    assert_eq!(error_codes(&response), vec!["VALIDATION"]);
    stop.cancel();
    projector.await.unwrap();
}

/// A notification's stream, appended to as the commands and workers would.
struct Stream {
    id: String,
    version: i64,
    tenant: String,
}

impl Stream {
    /// Requested `ago` before now through `channel`, with a template or inline content.
    async fn requested(
        store: &EventStore,
        tenant: &str,
        channel: &str,
        template: Option<&str>,
        ago: chrono::TimeDelta,
    ) -> Stream {
        let requested_at = chrono::Utc::now() - ago;
        let mut request = serde_json::from_value::<SendNotification>(json!({
            "recipient": { "email": "ada@example.com", "phone": "+447700900123" },
            "channels": [channel],
            "content": { "text": "hi" },
        }))
        .unwrap()
        .parse(requested_at)
        .unwrap();
        // The API refuses template sends today; the log may hold them all the same.
        if let Some(key) = template {
            request.content =
                serde_json::from_value(json!({ "template": { "key": key } })).unwrap();
        }
        let notification_id = NotificationId::new();
        let mut stream = Stream {
            id: notifications::stream_id(&notification_id),
            version: 0,
            tenant: tenant.to_owned(),
        };
        stream
            .append(
                store,
                vec![NotificationEvent::Requested {
                    tenant_id: TenantId::parse(tenant).unwrap(),
                    notification_id,
                    request,
                    requested_at,
                }],
            )
            .await;
        stream
    }

    async fn append(&mut self, store: &EventStore, events: Vec<NotificationEvent>) {
        let count = events.len() as i64;
        let events = events
            .into_iter()
            .map(|event| NewEvent {
                event_id: uuid::Uuid::now_v7(),
                event_type: event.event_type().into(),
                schema_version: NotificationEvent::SCHEMA_VERSION,
                tenant_id: self.tenant.clone(),
                payload: serde_json::to_value(&event).unwrap(),
                metadata: json!({ "actor": "test" }),
            })
            .collect();
        let expected = match self.version {
            0 => ExpectedVersion::NoStream,
            version => ExpectedVersion::Exact(version),
        };
        store
            .append(&[StreamAppend {
                stream_id: self.id.clone(),
                expected,
                events,
            }])
            .await
            .unwrap();
        self.version += count;
    }
}

fn attempted(attempt: u32, channel: Channel, provider: &str) -> NotificationEvent {
    NotificationEvent::DeliveryAttempted {
        attempt,
        channel,
        provider: provider.into(),
    }
}

fn sent(attempt: u32, provider: &str) -> NotificationEvent {
    NotificationEvent::Sent {
        attempt,
        provider: provider.into(),
        provider_message_id: Some("m-1".into()),
        content: None,
    }
}

/// Polls `query` until its one field equals `expected` (the projection runs
/// beside), then asserts it.
async fn eventually(app: &TestApp, key: &str, query: &str, variables: Value, expected: Value) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let response = app.graphql(Some(key), query, variables.clone()).await;
        assert!(response["errors"].is_null(), "{response}");
        let rows = response["data"]
            .as_object()
            .unwrap()
            .values()
            .next()
            .unwrap();
        if *rows == expected || std::time::Instant::now() > deadline {
            assert_eq!(*rows, expected, "{query}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The analytics tables, every row, in a stable order.
async fn tables(pool: &PgPool) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for table in AnalyticsProjection::new().tables() {
        rows.push(
            sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(format!(
                "SELECT t::text FROM {table} t ORDER BY 1"
            )))
            .fetch_all(pool)
            .await
            .unwrap(),
        );
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_version_rebuilds_with_providers_templates_and_latency() {
    let app = TestApp::start().await;
    let (tenant, key) = app.tenant().await;
    let store = &app.store;
    let pool = store.pool();
    let ms = chrono::TimeDelta::milliseconds;

    // Latencies well inside their buckets: appends take a few ms.
    let mut welcome = Stream::requested(store, &tenant, "email", Some("welcome"), ms(7_000)).await;
    welcome
        .append(
            store,
            vec![attempted(1, Channel::Email, "ses"), sent(1, "ses")],
        )
        .await;
    let mut retried = Stream::requested(store, &tenant, "email", Some("welcome"), ms(40_000)).await;
    retried
        .append(
            store,
            vec![
                attempted(1, Channel::Email, "ses"),
                NotificationEvent::DeliveryFailed {
                    attempt: 1,
                    provider: "ses".into(),
                    error: "451 try again later".into(),
                    permanent: false,
                    retry_at: None,
                },
            ],
        )
        .await;
    let mut sms = Stream::requested(store, &tenant, "sms", None, ms(3_000)).await;
    sms.append(
        store,
        vec![attempted(1, Channel::Sms, "twilio"), sent(1, "twilio")],
    )
    .await;
    Stream::requested(store, &tenant, "email", None, ms(0)).await;
    let mut receipt = Stream::requested(store, &tenant, "email", Some("receipt"), ms(1_200)).await;
    receipt
        .append(
            store,
            vec![
                attempted(1, Channel::Email, "ses"),
                sent(1, "ses"),
                NotificationEvent::Delivered {
                    at: chrono::Utc::now(),
                },
            ],
        )
        .await;

    // Version 1 served so far: its checkpoint row and its table (a count it
    // made up, to tell it apart).
    sqlx::query("INSERT INTO projection_checkpoints (name, version) VALUES ('analytics', 1)")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO analytics_counts (tenant_id, hour, channel, status, count) \
         VALUES ($1, date_trunc('hour', now()), 'email', 'REQUESTED', 42)",
    )
    .bind(&tenant)
    .execute(pool)
    .await
    .unwrap();
    let window = json!({
        "from": (chrono::Utc::now() - chrono::Duration::hours(2)).to_rfc3339(),
        "to": (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339(),
    });
    let by_channel = r#"query($from: DateTime!, $to: DateTime!) {
      analytics(from: $from, to: $to, groupBy: [CHANNEL]) { channel count }
    }"#;
    let by_provider = r#"query($from: DateTime!, $to: DateTime!) {
      analytics(from: $from, to: $to, groupBy: [PROVIDER, STATUS]) { provider status count rate }
    }"#;
    let old = app.graphql(Some(&key), by_channel, window.clone()).await;
    assert_eq!(
        old["data"]["analytics"],
        json!([{ "channel": "email", "count": 42 }]),
        "the old version's table serves until the swap: {old}"
    );
    let detailed = app.graphql(Some(&key), by_provider, window.clone()).await;
    assert_eq!(detailed["data"]["analytics"], json!([]), "{detailed}");

    // Version 2 rebuilds beside it, swaps in and follows the log.
    let stop = CancellationToken::new();
    let runner = projections::spawn(
        store.clone(),
        Arc::new(AnalyticsProjection::new()),
        RunnerOptions::default(),
        stop.clone(),
    );
    eventually(
        &app,
        &key,
        by_channel,
        window.clone(),
        json!([
            { "channel": "email", "count": 4 },
            { "channel": "sms", "count": 1 },
        ]),
    )
    .await;
    let states: Vec<(i32, String)> = sqlx::query_as(
        "SELECT version, state FROM projection_checkpoints WHERE name = 'analytics' ORDER BY version",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(states, [(1, "retired".into()), (2, "running".into())]);
    // The retried notification goes out through another provider, after the swap.
    retried
        .append(
            store,
            vec![attempted(2, Channel::Email, "smtp"), sent(2, "smtp")],
        )
        .await;

    // Requests have no provider yet: rates by provider have no base.
    eventually(
        &app,
        &key,
        by_provider,
        window.clone(),
        json!([
            { "provider": "none", "status": "REQUESTED", "count": 5, "rate": 1.0 },
            { "provider": "ses", "status": "DELIVERED", "count": 1, "rate": null },
            { "provider": "ses", "status": "RETRY_PENDING", "count": 1, "rate": null },
            { "provider": "ses", "status": "SENDING", "count": 3, "rate": null },
            { "provider": "ses", "status": "SENT", "count": 2, "rate": null },
            { "provider": "smtp", "status": "SENDING", "count": 1, "rate": null },
            { "provider": "smtp", "status": "SENT", "count": 1, "rate": null },
            { "provider": "twilio", "status": "SENDING", "count": 1, "rate": null },
            { "provider": "twilio", "status": "SENT", "count": 1, "rate": null },
        ]),
    )
    .await;
    let by_template = r#"query($from: DateTime!, $to: DateTime!) {
      analytics(from: $from, to: $to, groupBy: [TEMPLATE], filter: { status: SENT }) { template count rate }
    }"#;
    eventually(
        &app,
        &key,
        by_template,
        window.clone(),
        json!([
            { "template": "none", "count": 1, "rate": 0.5 },
            { "template": "receipt", "count": 1, "rate": 1.0 },
            { "template": "welcome", "count": 2, "rate": 1.0 },
        ]),
    )
    .await;
    let sms_only = r#"query($from: DateTime!, $to: DateTime!) {
      analytics(from: $from, to: $to, groupBy: [STATUS], filter: { channel: SMS, provider: "twilio" }) { status count }
    }"#;
    eventually(
        &app,
        &key,
        sms_only,
        window.clone(),
        json!([
            { "status": "SENDING", "count": 1 },
            { "status": "SENT", "count": 1 },
        ]),
    )
    .await;

    // Sends at 1.2 s (ses), 3 s (twilio), 7 s (ses) and 40 s (smtp): buckets
    // (1000, 2500], (2500, 5000], (5000, 10000] and (30000, 60000] ms.
    let latency = r#"query($from: DateTime!, $to: DateTime!, $by: [LatencyDimension!]!) {
      deliveryLatency(from: $from, to: $to, groupBy: $by) { provider template count p50Ms p90Ms p99Ms }
    }"#;
    let with = |by: Value| {
        let mut variables = window.clone();
        variables["by"] = by;
        variables
    };
    eventually(
        &app,
        &key,
        latency,
        with(json!([])),
        json!([{ "provider": null, "template": null, "count": 4,
                 "p50Ms": 5000.0, "p90Ms": 48000.0, "p99Ms": 58800.0 }]),
    )
    .await;
    eventually(
        &app,
        &key,
        latency,
        with(json!(["PROVIDER"])),
        json!([
            { "provider": "ses", "template": null, "count": 2,
              "p50Ms": 2500.0, "p90Ms": 9000.0, "p99Ms": 9900.0 },
            { "provider": "smtp", "template": null, "count": 1,
              "p50Ms": 45000.0, "p90Ms": 57000.0, "p99Ms": 59700.0 },
            { "provider": "twilio", "template": null, "count": 1,
              "p50Ms": 3750.0, "p90Ms": 4750.0, "p99Ms": 4975.0 },
        ]),
    )
    .await;
    let by_template = app
        .graphql(Some(&key), latency, with(json!(["TEMPLATE"])))
        .await;
    let counts: Vec<(&str, i64)> = by_template["data"]["deliveryLatency"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["template"].as_str().unwrap(),
                r["count"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(counts, [("none", 1), ("receipt", 1), ("welcome", 2)]);
    stop.cancel();
    runner.task.await.unwrap();

    // What the rebuild and the runner after it made equals a fresh build,
    // whatever the batches (each stream's context then comes from the log).
    let rebuilt = tables(pool).await;
    assert!(rebuilt.iter().all(|rows| !rows.is_empty()));
    let log = store
        .read_all(
            Checkpoint::ORIGIN,
            1_000,
            &AnalyticsProjection::new().filter(),
        )
        .await
        .unwrap()
        .events;
    for size in [1, 3, log.len()] {
        sqlx::query("TRUNCATE analytics_counts, analytics_counts_detailed, analytics_latency")
            .execute(pool)
            .await
            .unwrap();
        let fresh = AnalyticsProjection::new();
        for batch in log.chunks(size) {
            let mut tx = pool.begin().await.unwrap();
            fresh.handle_batch(&mut tx, batch).await.unwrap();
            tx.commit().await.unwrap();
        }
        assert_eq!(tables(pool).await, rebuilt, "batches of {size}");
    }
}
