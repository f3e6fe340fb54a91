//! The analyst queries over the analytics projection, fed by a running projector.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use herald::commands::notifications;
use herald::domain::values::{Channel, NotificationId, TenantId};
use herald::domain::{NotificationEvent, SendNotification};
use herald::eventstore::{Checkpoint, EventStore, ExpectedVersion, NewEvent, StreamAppend};
use herald::projections::analytics::{self, AnalyticsProjection};
use herald::projections::{self, Projection, RunnerOptions};
use herald::signing::WebhookSecret;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::journey::Service;
use crate::peers::{free_port, webhook_receiver};
use crate::support::{TestApp, data, error_codes, eventually};

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
    until_answered(&app, &key, query, window.clone(), expected).await;

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

/// Waits until `query`'s one field equals `expected` (the projection runs
/// beside).
async fn until_answered(app: &TestApp, key: &str, query: &str, variables: Value, expected: Value) {
    until_equal(
        async || data(app.graphql(Some(key), query, variables.clone()).await),
        query,
        expected,
    )
    .await;
}

/// Waits until the one field of the `data` that `ask` answers equals
/// `expected` (`what` names it).
async fn until_equal(ask: impl AsyncFn() -> Value, what: &str, expected: Value) {
    eventually(Duration::from_secs(30), async || {
        let data = ask().await;
        let rows = data.as_object().unwrap().values().next().unwrap();
        if *rows == expected {
            Ok(())
        } else {
            Err(format!("{what}: {rows:#}, not {expected:#}"))
        }
    })
    .await;
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

    // The new version rebuilds beside it, swaps in and follows the log.
    let stop = CancellationToken::new();
    let runner = projections::spawn(
        store.clone(),
        Arc::new(AnalyticsProjection::new()),
        RunnerOptions::default(),
        stop.clone(),
    );
    until_answered(
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
    assert_eq!(
        states,
        [
            (1, "retired".into()),
            (analytics::VERSION, "running".into())
        ]
    );
    // The retried notification goes out through another provider, after the swap.
    retried
        .append(
            store,
            vec![attempted(2, Channel::Email, "smtp"), sent(2, "smtp")],
        )
        .await;

    // Requests have no provider yet: rates by provider have no base.
    until_answered(
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
    until_answered(
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
    until_answered(
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
    until_answered(
        &app,
        &key,
        latency,
        with(json!([])),
        json!([{ "provider": null, "template": null, "count": 4,
                 "p50Ms": 5000.0, "p90Ms": 48000.0, "p99Ms": 58800.0 }]),
    )
    .await;
    until_answered(
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
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "TRUNCATE {}",
            AnalyticsProjection::new().tables().join(", ")
        )))
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

/// The Standard Webhooks secret of the receipts provider `acme`.
const ACME_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Every field of `engagement`.
const ENGAGEMENT: &str = "engagement { sent delivered opened clicked bounced complained \
                          deliveryRate openRate clickRate bounceRate complaintRate }";

/// A template whose email links to a shop, so that clicks can be tracked.
async fn publish_with_link(service: &Service, key: &str) {
    service
        .served
        .graphql(
            "mutation($input: PublishTemplateInput!) { publishTemplate(input: $input) { number } }",
            json!({ "input": {
                "key": key,
                "defaultLocale": "en",
                "variables": [],
                "locales": [{ "locale": "en", "email": {
                    "subject": key,
                    "html": "<p>See <a href=\"https://shop.example/sale\">the sale</a></p>",
                    "text": "See https://shop.example/sale" } }]
            } }),
        )
        .await;
}

/// Sends an email of `template` to `to` (or of content written out, without
/// a template); its id.
async fn send_email(service: &Service, template: Option<&str>, to: &str) -> String {
    let mut input = json!({
        "recipient": { "email": to },
        "channels": ["EMAIL"],
        "priority": "HIGH",
    });
    match template {
        Some(key) => input["template"] = json!({ "key": key }),
        None => input["content"] = json!({ "title": "Hi", "html": "<p>Hi</p>" }),
    }
    service.send(input).await
}

/// Loads the open pixel of the email to `to`, as a mail client showing
/// images does, `times` times.
async fn open(service: &Service, to: &str, times: usize) {
    follow(service, to, "/t/o/", times, 200).await;
}

/// Follows the tracked link of the email to `to` `times` times.
async fn click(service: &Service, to: &str, times: usize) {
    follow(service, to, "/t/c/", times, 302).await;
}

/// GETs the tracking URL holding `marker` in the email to `to` as received,
/// not following redirects.
async fn follow(service: &Service, to: &str, marker: &str, times: usize, status: u16) {
    let email = service.email_to(to).await;
    let html = email["html"].as_str().expect("an HTML part");
    let url = html
        .split('"')
        .find(|part| part.contains(marker))
        .unwrap_or_else(|| panic!("no {marker} URL in {html}"));
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for _ in 0..times {
        let answer = http.get(url).send().await.expect("GET");
        assert_eq!(answer.status(), status, "{url}");
    }
}

/// Posts a receipt about notification `id` from provider `acme`, signed as
/// Standard Webhooks sign.
async fn receipt(service: &Service, id: &str, status: &str) {
    let body = json!({ "notificationId": id, "status": status, "hard": true }).to_string();
    let headers = herald::signing::signature_headers(
        &[WebhookSecret::new(ACME_SECRET)],
        &format!("msg_{id}_{status}"),
        chrono::Utc::now().timestamp(),
        body.as_bytes(),
    )
    .unwrap();
    let answer = service
        .served
        .http
        .post(format!("{}/webhooks/acme", service.served.base))
        .headers(headers)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("POST");
    assert_eq!(answer.status(), 200, "{status} receipt for {id}");
}

/// The `engagement` of a group, every rate over `sent` (null without sends).
fn engaged(sent: i64, measures: [i64; 5]) -> Value {
    let [delivered, opened, clicked, bounced, complained] = measures;
    let rate = |n: i64| (sent > 0).then(|| n as f64 / sent as f64);
    json!({
        "sent": sent, "delivered": delivered, "opened": opened, "clicked": clicked,
        "bounced": bounced, "complained": complained,
        "deliveryRate": rate(delivered), "openRate": rate(opened), "clickRate": rate(clicked),
        "bounceRate": rate(bounced), "complaintRate": rate(complained),
    })
}

/// The `data` of `analytics` in `window` grouped by `dimension`, showing it
/// and the engagement.
async fn grouped_by(service: &Service, dimension: &str, window: &Value) -> Value {
    let field = dimension.to_lowercase();
    let query = format!(
        "query($from: DateTime!, $to: DateTime!) {{ \
           analytics(from: $from, to: $to, groupBy: [{dimension}]) {{ {field} {ENGAGEMENT} }} }}"
    );
    service.served.graphql(&query, window.clone()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn engagement_counts_real_opens_clicks_and_receipts_per_channel_template_provider_and_day() {
    let service = Service::start_with(&format!(
        "[receipts.providers.acme]\nsecret = \"{ACME_SECRET}\"\n"
    ))
    .await;
    service
        .served
        .graphql(
            "mutation { setTrackingSettings(opens: true, clicks: true) { opens } }",
            json!({}),
        )
        .await;
    publish_with_link(&service, "welcome").await;
    publish_with_link(&service, "digest").await;
    let port = free_port();
    let hook_url = format!("http://127.0.0.1:{port}/hooks");
    let secret = service
        .served.graphql(
            "mutation($input: CreateWebhookEndpointInput!) { createWebhookEndpoint(input: $input) { secret } }",
            json!({ "input": { "url": hook_url, "eventTypes": ["NotificationExpired"] } }),
        )
        .await["createWebhookEndpoint"]["secret"]
        .as_str()
        .expect("a secret")
        .to_string();
    let _receiver = webhook_receiver(port, &WebhookSecret::new(secret)).await;

    let ada = send_email(&service, Some("welcome"), "ada@example.com").await;
    let bob = send_email(&service, Some("welcome"), "bob@example.com").await;
    let cy = send_email(&service, Some("welcome"), "cy@example.com").await;
    let dee = send_email(&service, Some("digest"), "dee@example.com").await;
    let eve = send_email(&service, Some("digest"), "eve@example.com").await;
    let mut hooks = Vec::new();
    for _ in 0..2 {
        hooks.push(
            service
                .send(json!({
                    "recipient": { "webhookUrl": hook_url },
                    "channels": ["WEBHOOK"],
                    "content": { "title": "Order shipped", "text": "o-1" },
                }))
                .await,
        );
    }
    let mut send_days = BTreeMap::new();
    for id in [&ada, &bob, &cy, &dee, &eve, &hooks[0], &hooks[1]] {
        service.wait_for_status(id, "SENT").await;
        let timeline = service
            .served
            .graphql(
                "query($id: ID!) { notification(id: $id) { timeline { type recordedAt } } }",
                json!({ "id": id }),
            )
            .await;
        let at: chrono::DateTime<chrono::Utc> = timeline["notification"]["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["type"] == "NotificationSent")
            .and_then(|e| e["recordedAt"].as_str())
            .expect("a NotificationSent")
            .parse()
            .unwrap();
        *send_days.entry(at.date_naive()).or_insert(0) += 1;
    }

    // Ada opens three times and clicks twice, Bob opens, Dee opens and
    // clicks, then complains; Cy's address bounces; Eve's and one webhook's
    // deliveries are reported.
    open(&service, "ada@example.com", 3).await;
    click(&service, "ada@example.com", 2).await;
    open(&service, "bob@example.com", 1).await;
    open(&service, "dee@example.com", 1).await;
    click(&service, "dee@example.com", 1).await;
    receipt(&service, &cy, "bounced").await;
    receipt(&service, &dee, "complained").await;
    receipt(&service, &eve, "delivered").await;
    receipt(&service, &hooks[0], "delivered").await;

    let window = json!({
        "from": (chrono::Utc::now() - chrono::Duration::hours(2)).to_rfc3339(),
        "to": (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339(),
    });
    let email = engaged(5, [1, 3, 2, 1, 1]);
    let webhooks = engaged(2, [1, 0, 0, 0, 0]);
    let expected = [
        (
            "CHANNEL",
            json!([
                { "channel": "email", "engagement": email },
                { "channel": "webhook", "engagement": webhooks },
            ]),
        ),
        (
            "TEMPLATE",
            json!([
                { "template": "digest", "engagement": engaged(2, [1, 1, 1, 0, 1]) },
                { "template": "none", "engagement": webhooks },
                { "template": "welcome", "engagement": engaged(3, [0, 2, 1, 1, 0]) },
            ]),
        ),
        (
            // Requests are counted before any provider: a group without sends.
            "PROVIDER",
            json!([
                { "provider": "mail", "engagement": email },
                { "provider": "none", "engagement": engaged(0, [0; 5]) },
                { "provider": "webhook", "engagement": webhooks },
            ]),
        ),
    ];
    for (dimension, rows) in &expected {
        let ask = async || grouped_by(&service, dimension, &window).await;
        until_equal(ask, dimension, rows.clone()).await;
    }
    // By the day of the send: all of them, unless the sends straddled midnight.
    let by_day = grouped_by(&service, "DAY", &window).await;
    let days: BTreeMap<chrono::NaiveDate, i64> = by_day["analytics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| row["engagement"]["sent"] != 0)
        .map(|row| {
            let day: chrono::DateTime<chrono::Utc> = row["day"].as_str().unwrap().parse().unwrap();
            (
                day.date_naive(),
                row["engagement"]["sent"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(days, send_days, "{by_day}");

    // A rebuild from the log, beside the running service, counts the same.
    let pool = PgPool::connect(&service.served.database_url).await.unwrap();
    let before = tables(&pool).await;
    herald::projections::rebuild::rebuild(
        &EventStore::new(pool.clone()),
        &AnalyticsProjection::new(),
        |_| {},
    )
    .await
    .expect("rebuilt");
    assert_eq!(tables(&pool).await, before);
    for (dimension, rows) in &expected {
        let answer = grouped_by(&service, dimension, &window).await;
        assert_eq!(answer["analytics"], *rows, "{dimension} after the rebuild");
    }
    assert_eq!(grouped_by(&service, "DAY", &window).await, by_day);
}

/// The `open_rate` and `click_rate` samples of `tenant` in a scrape, by
/// "name template".
fn rate_gauges(scrape: &str, tenant: &str) -> Value {
    scrape
        .lines()
        .filter(|line| line.starts_with("open_rate{") || line.starts_with("click_rate{"))
        .filter(|line| line.contains(&format!("tenant=\"{tenant}\"")))
        .map(|line| {
            let (name, rest) = line.split_once('{').unwrap();
            let (labels, value) = rest.rsplit_once("} ").unwrap();
            let template = labels
                .split(',')
                .find_map(|label| label.strip_prefix("template_id=\""))
                .and_then(|t| t.strip_suffix('"'))
                .unwrap_or_else(|| panic!("no template_id in {line}"));
            let value: f64 = value.parse().unwrap();
            (format!("{name} {template}"), json!(value))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn open_and_click_rate_gauges_per_tenant_and_template_within_their_cap() {
    let service = Service::start_with(
        "[analytics]\ngauge_interval_seconds = 1\ngauge_window_hours = 1\ngauge_max_series = 2\n",
    )
    .await;
    let tenant = service
        .served
        .graphql("{ viewer { tenantId } }", json!({}))
        .await["viewer"]["tenantId"]
        .as_str()
        .unwrap()
        .to_string();
    service
        .served
        .graphql(
            "mutation { setTrackingSettings(opens: true, clicks: true) { opens } }",
            json!({}),
        )
        .await;
    publish_with_link(&service, "welcome").await;
    publish_with_link(&service, "digest").await;
    for (template, to) in [
        ("welcome", "ada@example.com"),
        ("welcome", "bob@example.com"),
        ("digest", "cy@example.com"),
        ("digest", "dee@example.com"),
    ] {
        let id = send_email(&service, Some(template), to).await;
        service.wait_for_status(&id, "SENT").await;
    }
    let scrape = async || {
        let text = service
            .served
            .http
            .get(format!("{}/metrics", service.served.metrics_base))
            .send()
            .await
            .expect("metrics answer")
            .text()
            .await
            .unwrap();
        json!({ "gauges": rate_gauges(&text, &tenant) })
    };
    let shown = json!({
        "click_rate digest": 0.0, "click_rate welcome": 0.0,
        "open_rate digest": 0.0, "open_rate welcome": 0.0,
    });
    until_equal(scrape, "the gauges", shown).await;

    // A third pair finds the two places taken: opened, it is not shown.
    let id = send_email(&service, None, "eve@example.com").await;
    service.wait_for_status(&id, "SENT").await;
    open(&service, "eve@example.com", 1).await;
    open(&service, "ada@example.com", 4).await;
    click(&service, "ada@example.com", 1).await;
    open(&service, "cy@example.com", 1).await;
    let shown = json!({
        "click_rate digest": 0.0, "click_rate welcome": 0.5,
        "open_rate digest": 0.5, "open_rate welcome": 0.5,
    });
    until_equal(scrape, "the gauges", shown).await;
}
