//! Webhook endpoints and signed status callbacks, end to end: endpoints made
//! through GraphQL, the `webhook_outbox` projection and the callback sender
//! running, and a receiver that verifies with the Standard Webhooks
//! reference library (tests/peers/webhook_receiver.py).

use std::sync::Arc;
use std::time::{Duration, Instant};

use herald::eventstore::EventStore;
use herald::projections::webhook_outbox::WebhookOutboxProjection;
use herald::projections::{RunnerOptions, spawn};
use herald::signing::{WebhookSecret, sign};
use herald::workers::DeliveryConfig;
use herald::workers::callbacks;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::peers::{Peer, free_port, webhook_answer_next, webhook_receiver, webhook_requests};
use crate::support::{TestApp, data, error_codes, eventually, position};

const CREATE: &str = r#"mutation($input: CreateWebhookEndpointInput!) {
  createWebhookEndpoint(input: $input) { secret endpoint { id url description eventTypes } }
}"#;
const SEND: &str = "mutation($input: SendNotificationInput!) { sendNotification(input: $input) { notification { id } } }";
const CANCEL: &str = "mutation($id: ID!) { cancelNotification(id: $id) { status } }";
const DELIVERIES: &str = r#"query($endpointId: ID, $status: WebhookDeliveryStatus) {
  webhookDeliveries(endpointId: $endpointId, status: $status, first: 50) {
    edges { node { endpointId url eventId eventType notificationId status attempts lastError nextAttemptAt } }
  }
}"#;

/// The API plus what `herald serve` runs for callbacks: the outbox projection
/// and the sender, with a fast retry schedule.
struct Callbacks {
    app: TestApp,
    key: String,
    tenant: String,
    stop: CancellationToken,
}

impl Callbacks {
    async fn start() -> Callbacks {
        let app = TestApp::start().await;
        let (tenant, key) = app.tenant().await;
        let stop = CancellationToken::new();
        let delivery = DeliveryConfig {
            retry_delays_seconds: vec![0.2, 0.2],
            retry_jitter: 0.0,
            ..DeliveryConfig::default()
        };
        run_callbacks(&app.store, delivery, &stop);
        Callbacks {
            app,
            key,
            tenant,
            stop,
        }
    }

    async fn graphql(&self, query: &str, variables: Value) -> Value {
        data(self.app.graphql(Some(&self.key), query, variables).await)
    }

    /// A new endpoint at `url`; returns its id and secret.
    async fn endpoint(&self, url: &str, event_types: Value) -> (String, WebhookSecret) {
        let input = json!({ "url": url, "description": "status feed", "eventTypes": event_types });
        let created = self.graphql(CREATE, json!({ "input": input })).await;
        let created = &created["createWebhookEndpoint"];
        (
            created["endpoint"]["id"].as_str().unwrap().to_string(),
            WebhookSecret::new(created["secret"].as_str().unwrap()),
        )
    }

    async fn send(&self, callback_url: Option<&str>) -> String {
        let input = json!({
            "recipient": { "email": "ada@example.com" },
            "channels": ["EMAIL"],
            "content": { "text": "hi" },
            "callbackUrl": callback_url,
        });
        let sent = self.graphql(SEND, json!({ "input": input })).await;
        sent["sendNotification"]["notification"]["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn cancel(&self, id: &str) {
        self.graphql(CANCEL, json!({ "id": id })).await;
    }

    /// The notification's event ids, by type.
    async fn event_ids(&self, id: &str) -> Vec<(String, String)> {
        let stream = format!("notification-{id}");
        let events = self.app.store.read_stream(&stream, 1).await.unwrap();
        events
            .into_iter()
            .map(|e| (e.event_type, e.event_id.to_string()))
            .collect()
    }

    async fn deliveries(&self, variables: Value) -> Vec<Value> {
        let data = self.graphql(DELIVERIES, variables).await;
        data["webhookDeliveries"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|edge| edge["node"].clone())
            .collect()
    }
}

/// What `herald serve` runs for callbacks: the outbox projection and the
/// sender, until `stop`.
pub fn run_callbacks(store: &EventStore, delivery: DeliveryConfig, stop: &CancellationToken) {
    spawn(
        store.clone(),
        Arc::new(WebhookOutboxProjection),
        RunnerOptions {
            standby_retry: Duration::from_millis(100),
            ..RunnerOptions::default()
        },
        stop.clone(),
    );
    callbacks::spawn(
        store.clone(),
        delivery,
        herald::egress::Egress::new(&crate::support::loopback_egress()),
        stop.clone(),
    );
}

impl Drop for Callbacks {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Waits until `done` holds for what the receiver recorded.
async fn received(peer: &Peer, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    eventually(Duration::from_secs(20), async || {
        let requests = webhook_requests(peer).await;
        if done(&requests) {
            Ok(requests)
        } else {
            Err(format!("the receiver got only {requests:#?}"))
        }
    })
    .await
}

fn body(request: &Value) -> Value {
    serde_json::from_str(request["body"].as_str().unwrap()).unwrap()
}

fn assert_verified(requests: &[Value]) {
    for request in requests {
        assert_eq!(request["verified"], true, "{request:#}");
        assert_eq!(request["tampered_verified"], false, "{request:#}");
    }
}

#[tokio::test]
async fn endpoints_are_managed_through_graphql_and_never_list_their_secret() {
    let cb = Callbacks::start().await;
    let input = json!({ "url": "https://hooks.example.com/a", "eventTypes": ["NotificationSent"] });
    let created = cb.graphql(CREATE, json!({ "input": input })).await;
    let secret = created["createWebhookEndpoint"]["secret"].as_str().unwrap();
    assert!(
        secret.starts_with("whsec_") && secret.len() > 40,
        "{secret}"
    );
    let id = created["createWebhookEndpoint"]["endpoint"]["id"].clone();

    let listed = cb
        .graphql(
            "{ webhookEndpoints { id url description eventTypes createdAt } }",
            json!({}),
        )
        .await;
    assert_eq!(
        listed["webhookEndpoints"],
        json!([{
            "id": id,
            "url": "https://hooks.example.com/a",
            "description": "",
            "eventTypes": ["NotificationSent"],
            "createdAt": listed["webhookEndpoints"][0]["createdAt"],
        }])
    );
    // The secret is in the log (its source of truth), never in an answer again.
    assert!(!listed.to_string().contains(&secret[6..]));

    // Clear validation errors, each on its field.
    let bad = cb
        .app
        .graphql(
            Some(&cb.key),
            CREATE,
            json!({ "input": { "url": "ftp://x", "eventTypes": ["NotificationSent", "Teleported"] } }),
        )
        .await;
    assert_eq!(error_codes(&bad), ["VALIDATION"]);
    let fields = &bad["errors"][0]["extensions"]["fields"];
    assert_eq!(fields[0]["path"], "url");
    assert_eq!(fields[1]["path"], "event_types[1]");
    assert!(
        fields[1]["message"]
            .as_str()
            .unwrap()
            .contains("NotificationDelivered"),
        "{fields}"
    );
    let taken = cb
        .app
        .graphql(
            Some(&cb.key),
            CREATE,
            json!({ "input": { "url": "https://hooks.example.com/a" } }),
        )
        .await;
    assert_eq!(error_codes(&taken), ["VALIDATION"], "{taken}");

    // Changes need admin; listing needs read.
    let issued = cb
        .graphql(
            r#"mutation { issueApiKey(name: "reader", scopes: [READ]) { apiKey } }"#,
            json!({}),
        )
        .await;
    let reader = issued["issueApiKey"]["apiKey"].as_str().unwrap();
    let forbidden = cb
        .app
        .graphql(
            Some(reader),
            CREATE,
            json!({ "input": { "url": "https://hooks.example.com/b" } }),
        )
        .await;
    assert_eq!(error_codes(&forbidden), ["FORBIDDEN"]);
    let listed = cb
        .app
        .graphql(Some(reader), "{ webhookEndpoints { id } }", json!({}))
        .await;
    assert_eq!(listed["data"]["webhookEndpoints"][0]["id"], id);

    // Another tenant cannot touch it; deleting it frees its URL.
    let (_, other) = cb.app.tenant().await;
    let rotate = "mutation($id: ID!) { rotateWebhookEndpointSecret(id: $id) { secret } }";
    let delete = "mutation($id: ID!) { deleteWebhookEndpoint(id: $id) }";
    let foreign = cb
        .app
        .graphql(Some(&other), delete, json!({ "id": id }))
        .await;
    assert_eq!(error_codes(&foreign), ["NOT_FOUND"]);
    cb.graphql(delete, json!({ "id": id })).await;
    let again = cb
        .app
        .graphql(Some(&cb.key), rotate, json!({ "id": id }))
        .await;
    assert_eq!(error_codes(&again), ["NOT_FOUND"]);
    let listed = cb.graphql("{ webhookEndpoints { id } }", json!({})).await;
    assert_eq!(listed["webhookEndpoints"], json!([]));
    cb.graphql(
        CREATE,
        json!({ "input": { "url": "https://hooks.example.com/a" } }),
    )
    .await;
}

#[tokio::test]
async fn status_changes_arrive_signed_once_each_and_a_failure_is_retried() {
    let cb = Callbacks::start().await;
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/hooks/herald");
    let (_, secret) = cb.endpoint(&url, json!([])).await;
    let peer = webhook_receiver(port, &secret).await;
    webhook_answer_next(&peer, json!([{ "status": 500, "body": "try later" }])).await;

    // Subscribed to everything and named as callback_url: still one per event.
    let id = cb.send(Some(&url)).await;
    received(&peer, |r| r.len() == 2).await;
    cb.cancel(&id).await;
    let requests = received(&peer, |r| r.len() == 3).await;
    assert_verified(&requests);

    let events = cb.event_ids(&id).await;
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(types, ["NotificationRequested", "NotificationCancelled"]);
    // The first answer was a 500: the retry carries the same webhook-id.
    let ids: Vec<&str> = requests
        .iter()
        .map(|r| r["headers"]["webhook-id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [&events[0].1, &events[0].1, &events[1].1]);

    let cancelled = body(&requests[2]);
    assert_eq!(cancelled["type"], "NotificationCancelled");
    assert_eq!(cancelled["notification_id"], id);
    assert_eq!(cancelled["tenant_id"], cb.tenant);
    assert_eq!(cancelled["status"], "CANCELLED");
    assert!(cancelled["position"].as_i64().unwrap() > 0);
    assert!(cancelled["recorded_at"].is_string());
    assert_eq!(cancelled["data"]["type"], "NotificationCancelled");
    let requested = body(&requests[1]);
    assert_eq!(requested["status"], "REQUESTED");
    assert_eq!(requested["data"]["request"]["callback_url"], url);

    // Delivered rows leave the table.
    eventually(Duration::from_secs(10), async || {
        let rows = cb.deliveries(json!({})).await;
        if rows.is_empty() {
            Ok(())
        } else {
            Err(format!("delivered rows stay: {rows:#?}"))
        }
    })
    .await;
}

#[tokio::test]
async fn after_a_rotation_a_receiver_knowing_only_the_new_secret_verifies() {
    let cb = Callbacks::start().await;
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let (id, old) = cb.endpoint(&url, json!(["NotificationRequested"])).await;
    let rotated = cb
        .graphql(
            "mutation($id: ID!) { rotateWebhookEndpointSecret(id: $id) { secret previousSecretValidUntil } }",
            json!({ "id": id }),
        )
        .await;
    let new = WebhookSecret::new(
        rotated["rotateWebhookEndpointSecret"]["secret"]
            .as_str()
            .unwrap(),
    );
    assert_ne!(new, old);
    let until: chrono::DateTime<chrono::Utc> =
        rotated["rotateWebhookEndpointSecret"]["previousSecretValidUntil"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
    let grace = until - chrono::Utc::now();
    assert!(grace > chrono::Duration::hours(23) && grace <= chrono::Duration::hours(24));

    let peer = webhook_receiver(port, &new).await;
    cb.send(None).await;
    let requests = received(&peer, |r| r.len() == 1).await;
    assert_verified(&requests);
    // Within the grace the old secret signs too, so its receivers still verify.
    let headers = &requests[0]["headers"];
    let old_signature = sign(
        &[old],
        headers["webhook-id"].as_str().unwrap(),
        headers["webhook-timestamp"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap(),
        requests[0]["body"].as_str().unwrap().as_bytes(),
    )
    .unwrap();
    let signatures: Vec<&str> = headers["webhook-signature"]
        .as_str()
        .unwrap()
        .split(' ')
        .collect();
    assert_eq!(signatures.len(), 2);
    assert_eq!(signatures[1], old_signature);
}

#[tokio::test]
async fn failures_stay_visible_in_webhook_deliveries() {
    let cb = Callbacks::start().await;
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/cancelled-only");
    let (endpoint_id, secret) = cb.endpoint(&url, json!(["NotificationCancelled"])).await;
    let peer = webhook_receiver(port, &secret).await;
    webhook_answer_next(&peer, json!([{ "status": 410, "body": "gone" }])).await;

    // A callback_url no endpoint registers is never sent unsigned.
    let unregistered = "http://127.0.0.1:9/not-registered";
    let id = cb.send(Some(unregistered)).await;
    cb.cancel(&id).await;

    let failed = eventually(Duration::from_secs(20), async || {
        let failed = cb.deliveries(json!({ "status": "FAILED" })).await;
        if failed.len() == 3 {
            Ok(failed)
        } else {
            Err(format!("failed deliveries: {failed:#?}"))
        }
    })
    .await;
    let unsigned: Vec<&Value> = failed
        .iter()
        .filter(|d| d["endpointId"].is_null())
        .collect();
    assert_eq!(unsigned.len(), 2, "one per event: {failed:#?}");
    for delivery in &unsigned {
        assert_eq!(delivery["url"], unregistered);
        assert_eq!(delivery["attempts"], 0);
        assert_eq!(delivery["notificationId"], id);
        assert!(
            delivery["lastError"]
                .as_str()
                .unwrap()
                .contains("not a registered webhook endpoint")
        );
    }

    // The endpoint took only the type it subscribed to, and its 410 is final.
    let of_endpoint = cb
        .deliveries(json!({ "endpointId": endpoint_id, "status": "FAILED" }))
        .await;
    assert_eq!(of_endpoint.len(), 1);
    assert_eq!(of_endpoint[0]["eventType"], "NotificationCancelled");
    assert_eq!(of_endpoint[0]["attempts"], 1);
    assert_eq!(of_endpoint[0]["nextAttemptAt"], Value::Null);
    assert!(
        of_endpoint[0]["lastError"]
            .as_str()
            .unwrap()
            .starts_with("callback answered HTTP 410 (client error)"),
        "{of_endpoint:#?}"
    );
    let requests = webhook_requests(&peer).await;
    assert_eq!(requests.len(), 1);
    assert_verified(&requests);
}

#[tokio::test]
async fn replay_to_an_endpoint_sends_the_range_signed_and_stops_on_a_permanent_failure() {
    // No outbox here: only the replay sends.
    let app = TestApp::start().await;
    let (tenant, key) = app.tenant().await;
    let port = free_port();
    let input = json!({ "url": format!("http://127.0.0.1:{port}/replay") });
    let created = app
        .graphql(Some(&key), CREATE, json!({ "input": input }))
        .await;
    let endpoint_id = created["data"]["createWebhookEndpoint"]["endpoint"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let secret = WebhookSecret::new(
        created["data"]["createWebhookEndpoint"]["secret"]
            .as_str()
            .unwrap(),
    );
    let peer = webhook_receiver(port, &secret).await;
    let mut positions = Vec::new();
    for _ in 0..2 {
        let input = json!({ "recipient": { "email": "ada@example.com" }, "channels": ["EMAIL"], "content": { "text": "hi" } });
        let sent = app
            .graphql(Some(&key), SEND, json!({ "input": input }))
            .await;
        let id = sent["data"]["sendNotification"]["notification"]["id"].clone();
        let cancelled = app
            .graphql(
                Some(&key),
                "mutation($id: ID!) { cancelNotification(id: $id) { timeline { position } } }",
                json!({ "id": id }),
            )
            .await;
        for event in cancelled["data"]["cancelNotification"]["timeline"]
            .as_array()
            .unwrap()
        {
            positions.push(position(&event["position"]));
        }
    }
    let range = format!("{}..{}", positions[0], positions[3]);
    let replay = |rate: &str| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"));
        command
            .args([
                "replay",
                "--tenant",
                &tenant,
                "--positions",
                &range,
                "--to-endpoint",
                &endpoint_id,
                "--rate",
                rate,
            ])
            .env("DATABASE_URL", app.database_url())
            .env("HERALD_LOG_FILTER", "warn")
            // The receiver listens on loopback.
            .env("HERALD_EGRESS", r#"{allow=["127.0.0.0/8"]}"#)
            .env_remove("HERALD_CONFIG");
        command
    };

    // A transient failure is retried (Retry-After: 0), then the rest follows.
    webhook_answer_next(
        &peer,
        json!([{ "status": 503, "headers": { "Retry-After": "0" } }]),
    )
    .await;
    let started = Instant::now();
    let output = replay("20").output().await.expect("herald runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("replayed 4 events to webhook endpoint"),
        "{stderr}"
    );
    assert!(stderr.contains("retry 1 of"), "{stderr}");
    // Four sends at 20/s are spread over at least three intervals.
    assert!(started.elapsed() >= Duration::from_millis(150));
    let requests = webhook_requests(&peer).await;
    assert_eq!(requests.len(), 5);
    assert_verified(&requests);
    let sent: Vec<i64> = requests[1..]
        .iter()
        .map(|r| body(r)["position"].as_i64().unwrap())
        .collect();
    assert_eq!(sent, positions);
    for request in &requests[1..] {
        assert_eq!(
            request["headers"]["webhook-id"],
            body(request)["event_id"],
            "webhook-id is the event id"
        );
    }

    // A permanent answer stops the replay with a clear error.
    webhook_answer_next(
        &peer,
        json!([{ "status": 204 }, { "status": 400, "body": "no" }]),
    )
    .await;
    let output = replay("100").output().await.expect("herald runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!("stopped at position {}", positions[1]))
            && stderr.contains("after 1 events were sent")
            && stderr.contains("HTTP 400 (client error)"),
        "{stderr}"
    );
    assert_eq!(webhook_requests(&peer).await.len(), 7);
}
