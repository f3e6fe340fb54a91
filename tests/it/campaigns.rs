//! Campaigns end to end: CSV imports over HTTP with bad rows reported by
//! line, control (pause, resume, cancel), release into notifications that a
//! provider sends, and signed progress callbacks verified by the Standard
//! Webhooks reference library, with a retry after a failure.

use std::time::Duration;

use chrono::{DateTime, Utc};

use futures::{SinkExt, StreamExt};
use herald::commands::Actor;
use herald::commands::campaigns;
use herald::commands::notifications::SendPolicy;
use herald::config::{Config, DatabaseUrl};
use herald::domain::NotificationCommand;
use herald::domain::values::NotificationId;
use herald::domain::values::{Priority, TenantId};
use herald::projections::delivery_queue;
use herald::workers::campaigns::CampaignsConfig;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::peers::{free_port, webhook_answer_next, webhook_receiver, webhook_requests};
use crate::support::{TestApp, data, error_codes, eventually};

const PUBLISH: &str =
    r#"mutation($input: PublishTemplateInput!) { publishTemplate(input: $input) { key number } }"#;
const CREATE: &str = r#"mutation($input: CreateCampaignInput!) {
  createCampaign(input: $input) { signingSecret campaign { id status template { key version } } }
}"#;
const ADD: &str = r#"mutation($id: ID!, $recipients: [CampaignRecipientInput!]!) {
  addCampaignRecipients(id: $id, recipients: $recipients) { accepted rejected errors { line reason } }
}"#;
const CAMPAIGN: &str = r#"query($id: ID!) {
  campaign(id: $id) {
    id status totalMessages rejectedRows batches releasedBatches
    counts { status count }
    summary { totalMessages pending sent cancelled percentDone }
    callbacks { event status attempts lastError deliveredAt body }
    importErrors { line reason }
  }
}"#;
const ENDPOINT: &str = r#"mutation($input: CreateWebhookEndpointInput!) {
  createWebhookEndpoint(input: $input) { secret }
}"#;

struct Campaigns {
    app: TestApp,
    key: String,
    tenant: TenantId,
    stop: CancellationToken,
}

impl Drop for Campaigns {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Campaigns {
    async fn start() -> Campaigns {
        let app = TestApp::start().await;
        let (tenant, key) = app.tenant().await;
        let c = Campaigns {
            app,
            key,
            tenant: TenantId::parse(&tenant).expect("tenant id"),
            stop: CancellationToken::new(),
        };
        let template = json!({
            "key": "spring_sale",
            "defaultLocale": "en",
            "variables": [
                { "name": "name", "type": "STRING" },
                { "name": "points", "type": "NUMBER", "required": false }
            ],
            "locales": [{
                "locale": "en",
                "email": {
                    "subject": "Hello {{ name }}",
                    "html": "<p>Hello {{ name }}, {{ points }} points</p>",
                    "text": "Hello {{ name }}, {{ points }} points"
                }
            }]
        });
        c.graphql(PUBLISH, json!({ "input": template })).await;
        c
    }

    /// The dispatcher, the callback sender, the campaign worker and the
    /// `notification_status` projection (which campaign counts read), as
    /// `herald serve` runs them, with fast campaign rounds and retries.
    async fn run_workers(&self) {
        herald::projections::spawn(
            self.app.store.clone(),
            std::sync::Arc::new(
                herald::projections::notification_status::NotificationStatusProjection,
            ),
            herald::projections::RunnerOptions {
                standby_retry: Duration::from_millis(100),
                ..herald::projections::RunnerOptions::default()
            },
            self.stop.clone(),
        );
        let config = Config {
            campaigns: CampaignsConfig {
                callback_retry_seconds: vec![0.5, 0.5, 0.5],
                poll_millis: 50,
                progress_every_millis: 50,
                ..CampaignsConfig::default()
            },
            egress: crate::support::loopback_egress(),
            ..Config::default()
        };
        let providers = herald::providers::build(
            &config.providers,
            &herald::egress::Egress::new(&config.egress),
        )
        .await
        .expect("providers");
        herald::workers::spawn(
            self.app.store.clone(),
            providers,
            config.worker_options(),
            self.stop.clone(),
        )
        .await
        .expect("workers");
    }

    async fn graphql(&self, query: &str, variables: Value) -> Value {
        data(self.app.graphql(Some(&self.key), query, variables).await)
    }

    async fn create(&self, input: Value) -> (Uuid, Value) {
        let mut full = json!({
            "name": "Spring sale",
            "template": { "key": "spring_sale" },
            "channel": "email",
        });
        for (k, v) in input.as_object().expect("object") {
            full[k] = v.clone();
        }
        let created =
            self.graphql(CREATE, json!({ "input": full })).await["createCampaign"].clone();
        let id = created["campaign"]["id"]
            .as_str()
            .expect("id")
            .parse()
            .expect("uuid");
        (id, created)
    }

    async fn add(&self, id: Uuid, count: usize) -> Value {
        let recipients: Vec<Value> = (0..count)
            .map(|i| json!({ "address": format!("user{i}@example.com"), "variables": { "name": format!("User {i}") } }))
            .collect();
        self.graphql(ADD, json!({ "id": id, "recipients": recipients }))
            .await["addCampaignRecipients"]
            .clone()
    }

    async fn campaign(&self, id: Uuid) -> Value {
        self.graphql(CAMPAIGN, json!({ "id": id })).await["campaign"].clone()
    }

    async fn wait_for_status(&self, id: Uuid, status: &str, within: Duration) -> Value {
        eventually(within, async || {
            let campaign = self.campaign(id).await;
            if campaign["status"] == status {
                Ok(campaign)
            } else {
                Err(format!("not {status}: {campaign:#}"))
            }
        })
        .await
    }
}

fn count(campaign: &Value, status: &str) -> i64 {
    campaign["counts"]
        .as_array()
        .expect("counts")
        .iter()
        .find(|c| c["status"] == status)
        .and_then(|c| c["count"].as_i64())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_csv_with_bad_rows_reports_them_by_line_and_keeps_the_good_ones() {
    let c = Campaigns::start().await;
    let (id, created) = c.create(json!({ "batchSize": 2 })).await;
    assert_eq!(created["campaign"]["status"], "ACCEPTED");
    assert_eq!(created["campaign"]["template"]["version"], 1, "pinned");
    let csv = "email,name,points,city\n\
               ada@example.com,Ada,12,London\n\
               not-an-email,Bob,1,Paris\n\
               cy@example.com,Cy\n\
               dee@example.com,Dee,lots,Rome\n\
               eve@example.com,Eve,,Oslo\n\
               fay@example.com,\"Fay, Jr.\",3,\"New\nYork\"\n";
    let response = c
        .app
        .http
        .post(format!("{}/api/campaigns/{id}/recipients", c.app.base))
        .bearer_auth(&c.key)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let summary: Value = response.json().await.expect("JSON");
    assert_eq!(summary["accepted"], 3, "{summary:#}");
    assert_eq!(summary["rejected"], 3, "{summary:#}");
    let errors = summary["errors"].as_array().expect("errors");
    let lines: Vec<i64> = errors.iter().map(|e| e["line"].as_i64().unwrap()).collect();
    assert_eq!(lines, [3, 4, 5]);
    let reason = |i: usize| errors[i]["reason"].as_str().unwrap().to_string();
    assert!(reason(0).contains("invalid address"), "{}", reason(0));
    assert!(reason(1).contains("missing column"), "{}", reason(1));
    assert!(reason(2).contains("points: type mismatch"), "{}", reason(2));

    let campaign = c.campaign(id).await;
    assert_eq!(campaign["status"], "SCHEDULED");
    assert_eq!(campaign["totalMessages"], 3);
    assert_eq!(campaign["rejectedRows"], 3);
    assert_eq!(campaign["batches"], 2, "3 rows in batches of 2");
    assert_eq!(count(&campaign, "CREATED"), 3);
    assert_eq!(campaign["importErrors"].as_array().unwrap().len(), 3);

    // A quoted multi-line field is one row: the variables are as written.
    let variables: Value = sqlx::query_scalar(
        "SELECT variables FROM campaign_messages WHERE campaign_id = $1 AND address = 'fay@example.com'",
    )
    .bind(id)
    .fetch_one(c.app.store.pool())
    .await
    .unwrap();
    assert_eq!(
        variables,
        json!({ "name": "Fay, Jr.", "points": 3, "city": "New\nYork" })
    );

    // A header without the address column refuses the body whole.
    let refused = c
        .app
        .http
        .post(format!("{}/api/campaigns/{id}/recipients", c.app.base))
        .bearer_auth(&c.key)
        .header("content-type", "text/csv")
        .body("mail,name\nx@example.com,X\n")
        .send()
        .await
        .expect("sent");
    assert_eq!(refused.status(), 400);
}

#[tokio::test]
async fn bad_rows_are_numbered_by_file_line_after_crlf_and_blank_lines() {
    let c = Campaigns::start().await;
    let (id, _) = c.create(json!({})).await;
    // Header on line 1, a blank line 3, a quoted break over lines 5-6; the
    // bad address is on line 9.
    let csv = "email,name\r\n\
               a@example.com,A\r\n\
               \r\n\
               b@example.com,B\r\n\
               c@example.com,\"C\r\nJr.\"\r\n\
               d@example.com,D\r\n\
               e@example.com,E\r\n\
               not-an-email,F\r\n";
    let response = c
        .app
        .http
        .post(format!("{}/api/campaigns/{id}/recipients", c.app.base))
        .bearer_auth(&c.key)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .expect("sent");
    let summary: Value = response.json().await.expect("JSON");
    assert_eq!(summary["accepted"], 5, "{summary:#}");
    assert_eq!(summary["errors"][0]["line"], 9, "{summary:#}");
    assert_eq!(c.campaign(id).await["importErrors"][0]["line"], 9);
}

#[tokio::test]
async fn every_progress_step_crossed_while_paused_is_reported_in_order_and_cancel_sums_up() {
    let c = Campaigns::start().await;
    let (id, _) = c
        .create(json!({
            "batchSize": 1,
            "callbackUrl": "http://127.0.0.1:9/callbacks",
            "progressSteps": [25, 50, 75],
        }))
        .await;
    c.add(id, 4).await;
    let store = &c.app.store;
    let actor = Actor::new("test");
    let policy = SendPolicy::unlimited(Duration::from_secs(3600));
    assert!(
        campaigns::start(store, &c.tenant, id, &actor)
            .await
            .unwrap()
    );
    for _ in 0..3 {
        campaigns::release_next_batch(store, &c.tenant, id, &policy, &actor)
            .await
            .unwrap();
    }
    c.graphql(
        "mutation($id: ID!) { pauseCampaign(id: $id) { status } }",
        json!({ "id": id }),
    )
    .await;
    // The three released go out while the campaign is paused (as the
    // dispatcher records them), carrying it past 25, 50 and 75 at once.
    sqlx::query(
        "UPDATE notification_status SET status = 'SENT' WHERE notification_id IN \
             (SELECT notification_id FROM campaign_messages WHERE campaign_id = $1)",
    )
    .bind(id)
    .execute(store.pool())
    .await
    .unwrap();
    campaigns::check_progress(store, &c.tenant, id, &actor)
        .await
        .unwrap();
    c.graphql(
        "mutation($id: ID!) { resumeCampaign(id: $id) { status } }",
        json!({ "id": id }),
    )
    .await;
    campaigns::release_next_batch(store, &c.tenant, id, &policy, &actor)
        .await
        .unwrap();
    campaigns::check_progress(store, &c.tenant, id, &actor)
        .await
        .unwrap();
    campaigns::check_progress(store, &c.tenant, id, &actor)
        .await
        .unwrap();

    let bodies = |campaign: &Value, event: &str| -> Vec<Value> {
        campaign["callbacks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|cb| cb["event"] == event)
            .map(|cb| serde_json::from_str(cb["body"].as_str().unwrap()).unwrap())
            .collect()
    };
    let campaign = c.campaign(id).await;
    let steps: Vec<Value> = bodies(&campaign, "campaign.progress")
        .iter()
        .map(|body| body["progress_step"].clone())
        .collect();
    assert_eq!(steps, [25, 50, 75], "{campaign:#}");

    // Cancelled with one released message not yet sent: the callback
    // says three went out and one was cancelled.
    c.graphql(
        "mutation($id: ID!) { cancelCampaign(id: $id) { status } }",
        json!({ "id": id }),
    )
    .await;
    c.graphql(
        "mutation($id: ID!) { cancelCampaign(id: $id) { status } }",
        json!({ "id": id }),
    )
    .await;
    let cancelled = bodies(&c.campaign(id).await, "campaign.cancelled");
    assert_eq!(cancelled.len(), 1, "once: {cancelled:#?}");
    assert_eq!(cancelled[0]["status"], "CANCELLED");
    let summary = &cancelled[0]["summary"];
    assert_eq!(summary["total_messages"], 4, "{summary:#}");
    assert_eq!(summary["sent"], 3, "{summary:#}");
    assert_eq!(summary["cancelled"], 1, "{summary:#}");
    assert_eq!(summary["pending"], 0, "{summary:#}");
}

#[tokio::test]
async fn create_campaign_refuses_an_unknown_template_by_field() {
    let c = Campaigns::start().await;
    let response = c
        .app
        .graphql(
            Some(&c.key),
            CREATE,
            json!({ "input": { "name": "X", "template": { "key": "nope" }, "channel": "email" } }),
        )
        .await;
    assert_eq!(error_codes(&response), ["VALIDATION"], "{response}");
    assert_eq!(
        response["errors"][0]["extensions"]["fields"][0]["path"],
        "template.key"
    );
}

#[tokio::test]
async fn pause_holds_batches_resume_releases_them_and_cancel_stops_the_rest() {
    let c = Campaigns::start().await;
    let (id, _) = c.create(json!({ "batchSize": 2 })).await;
    c.add(id, 6).await;
    let store = &c.app.store;
    let actor = Actor::new("test");
    let policy = SendPolicy::unlimited(Duration::from_secs(3600));
    assert!(
        campaigns::start(store, &c.tenant, id, &actor)
            .await
            .unwrap()
    );
    let first = campaigns::release_next_batch(store, &c.tenant, id, &policy, &actor)
        .await
        .unwrap();
    assert_eq!((first.sent, first.batch_done), (2, true));

    let paused = c
        .graphql(
            "mutation($id: ID!) { pauseCampaign(id: $id) { status } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(paused["pauseCampaign"]["status"], "PAUSED");
    let held = campaigns::release_next_batch(store, &c.tenant, id, &policy, &actor)
        .await
        .unwrap();
    assert_eq!(held.sent, 0, "a paused campaign releases nothing");

    let resumed = c
        .graphql(
            "mutation($id: ID!) { resumeCampaign(id: $id) { status } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(resumed["resumeCampaign"]["status"], "SENDING");
    let second = campaigns::release_next_batch(store, &c.tenant, id, &policy, &actor)
        .await
        .unwrap();
    assert_eq!(second.sent, 2);
    let notifications: i64 =
        sqlx::query_scalar("SELECT count(*) FROM notification_status WHERE $1 = ANY(tags)")
            .bind(format!("campaign:{id}"))
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(notifications, 4);

    let cancelled = c
        .graphql(
            "mutation($id: ID!) { cancelCampaign(id: $id, reason: \"oops\") { status } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(cancelled["cancelCampaign"]["status"], "CANCELLED");
    let campaign = c.campaign(id).await;
    assert_eq!(count(&campaign, "CANCELLED"), 6, "{campaign:#}");
    assert_eq!(campaign["summary"]["pending"], 0);
    let statuses: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT status FROM notification_status WHERE $1 = ANY(tags)")
            .bind(format!("campaign:{id}"))
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(
        statuses,
        ["CANCELLED"],
        "released notifications are cancelled too"
    );
    let again = campaigns::release_next_batch(store, &c.tenant, id, &policy, &actor)
        .await
        .unwrap();
    assert_eq!(again.sent, 0);
}

/// The queue side of a pause: rows held out of every claim, a row written
/// meanwhile held too, each put back at its own due time on resume.
#[tokio::test]
async fn a_pause_holds_queued_messages_from_every_claim_and_resume_restores_their_due_times() {
    let c = Campaigns::start().await;
    let (id, _) = c.create(json!({ "batchSize": 2 })).await;
    c.add(id, 2).await;
    let store = &c.app.store;
    let actor = Actor::new("test");
    let policy = SendPolicy::unlimited(Duration::from_secs(3600));
    assert!(
        campaigns::start(store, &c.tenant, id, &actor)
            .await
            .unwrap()
    );
    campaigns::release_next_batch(store, &c.tenant, id, &policy, &actor)
        .await
        .unwrap();
    let queued = || async {
        sqlx::query_as::<_, (Uuid, DateTime<Utc>)>(
            "SELECT notification_id, due_at FROM delivery_queue WHERE campaign_id = $1 ORDER BY 1",
        )
        .bind(id)
        .fetch_all(store.pool())
        .await
        .unwrap()
    };
    let released = queued().await;
    assert_eq!(released.len(), 2);
    let nobody = delivery_queue::Excluded::default();
    let claim = || delivery_queue::claim(store.pool(), Uuid::now_v7(), 100, 100, 60, &nobody);

    c.graphql(
        "mutation($id: ID!) { pauseCampaign(id: $id) { status } }",
        json!({ "id": id }),
    )
    .await;
    assert!(
        claim().await.unwrap().is_empty(),
        "held rows are not claimed"
    );
    let written_while_paused = NotificationId::new();
    let mut conn = store.pool().acquire().await.unwrap();
    delivery_queue::put(
        &mut conn,
        &[delivery_queue::QueueEntry {
            notification_id: written_while_paused,
            tenant_id: c.tenant.clone(),
            priority: Priority::Low,
            due_at: Utc::now(),
            campaign_id: Some(id),
        }],
    )
    .await
    .unwrap();
    assert!(
        claim().await.unwrap().is_empty(),
        "a row written while paused is held"
    );

    c.graphql(
        "mutation($id: ID!) { resumeCampaign(id: $id) { status } }",
        json!({ "id": id }),
    )
    .await;
    let resumed = queued().await;
    for row in &released {
        assert!(
            resumed.contains(row),
            "{row:?} back at its own due time: {resumed:?}"
        );
    }
    let claimed = claim().await.unwrap();
    assert_eq!(claimed.len(), 3, "{claimed:?}");
    assert!(
        claimed
            .iter()
            .any(|c| c.notification_id == written_while_paused.as_uuid())
    );
}

#[tokio::test]
async fn a_campaign_reaches_the_provider_and_reports_signed_callbacks_with_a_retry() {
    let c = Campaigns::start().await;
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/campaigns");
    let secret = c
        .graphql(ENDPOINT, json!({ "input": { "url": url } }))
        .await["createWebhookEndpoint"]["secret"]
        .as_str()
        .expect("secret")
        .to_string();
    let peer = webhook_receiver(port, &herald::signing::WebhookSecret::new(secret)).await;
    webhook_answer_next(&peer, json!([{ "status": 500, "body": "down" }])).await;

    let (id, created) = c
        .create(json!({ "batchSize": 2, "callbackUrl": url, "progressSteps": [50] }))
        .await;
    assert!(
        created["signingSecret"].is_null(),
        "a registered endpoint signs with its own secret"
    );
    let added = c.add(id, 5).await;
    assert_eq!(added["accepted"], 5);
    c.run_workers().await;

    let campaign = c
        .wait_for_status(id, "COMPLETED", Duration::from_secs(30))
        .await;
    assert_eq!(count(&campaign, "SENT"), 5, "{campaign:#}");
    assert_eq!(campaign["releasedBatches"], 3);
    let provider: Vec<Option<String>> = sqlx::query_scalar(
        "SELECT e.payload ->> 'provider' FROM events e \
         WHERE e.event_type = 'NotificationSent' AND e.tenant_id = $1",
    )
    .bind(c.tenant.as_str())
    .fetch_all(c.app.store.pool())
    .await
    .unwrap();
    assert_eq!(provider.len(), 5);

    // Every callback delivered, the first after one failure.
    let callbacks = eventually(Duration::from_secs(15), async || {
        let campaign = c.campaign(id).await;
        let callbacks = campaign["callbacks"].as_array().unwrap().clone();
        if callbacks.iter().all(|cb| cb["status"] == "DELIVERED") && callbacks.len() >= 2 {
            Ok(callbacks)
        } else {
            Err(format!("{campaign:#}"))
        }
    })
    .await;
    let events: Vec<&str> = callbacks
        .iter()
        .map(|cb| cb["event"].as_str().unwrap())
        .collect();
    assert_eq!(events.first(), Some(&"campaign.started"));
    assert_eq!(events.last(), Some(&"campaign.completed"));
    assert_eq!(callbacks[0]["attempts"], 2, "{callbacks:#?}");
    assert!(callbacks[0]["lastError"].is_string(), "{callbacks:#?}");
    let completed: Value =
        serde_json::from_str(callbacks.last().unwrap()["body"].as_str().unwrap()).unwrap();
    assert_eq!(completed["summary"]["total_messages"], 5);
    assert_eq!(completed["summary"]["sent"], 5);
    assert_eq!(completed["transaction_id"], id.to_string());

    let requests = webhook_requests(&peer).await;
    assert_eq!(requests.len(), callbacks.len() + 1, "one retry");
    for request in &requests {
        assert_eq!(request["verified"], true, "{request:#}");
        assert_eq!(request["tampered_verified"], false, "{request:#}");
    }
    // The retry carries the same webhook-id, so the receiver can drop repeats.
    let first_id = &requests[0]["headers"]["webhook-id"];
    assert_eq!(
        requests
            .iter()
            .filter(|r| &r["headers"]["webhook-id"] == first_id)
            .count(),
        2
    );
}

#[tokio::test]
async fn the_cli_creates_a_campaign_from_a_csv_file() {
    let c = Campaigns::start().await;
    let file = std::env::temp_dir().join(format!("herald-cli-campaign-{}.csv", Uuid::now_v7()));
    // CRLF, as spreadsheets write it: the bad row is on line 3.
    std::fs::write(&file, "email,name\r\nada@example.com,Ada\r\nbad,Bob\r\n").unwrap();
    let config = Config {
        database_url: Some(DatabaseUrl::new(c.app.database_url())),
        ..Config::default()
    };
    let args = herald::cli::campaigns::ImportArgs {
        file: file.clone(),
        tenant: c.tenant.to_string(),
        campaign: None,
        template: Some("spring_sale".into()),
        template_version: None,
        channel: "email".into(),
        category: "marketing".into(),
        name: Some("From the shell".into()),
        schedule_at: None,
        callback_url: None,
        address_column: "email".into(),
        progress_steps: vec![50],
        batch_size: None,
    };
    herald::cli::campaigns::run(
        &config,
        herald::cli::campaigns::CampaignsCommand::Import(args),
    )
    .await
    .expect("imported");
    std::fs::remove_file(&file).ok();
    let listed = c
        .graphql(
            "{ campaigns(first: 5) { edges { node { id name status totalMessages rejectedRows } } } }",
            json!({}),
        )
        .await;
    let node = &listed["campaigns"]["edges"][0]["node"];
    assert_eq!(node["name"], "From the shell");
    assert_eq!(node["status"], "SCHEDULED");
    assert_eq!(node["totalMessages"], 1);
    assert_eq!(node["rejectedRows"], 1);
    let id: Uuid = node["id"].as_str().unwrap().parse().unwrap();
    let errors = c.campaign(id).await["importErrors"].clone();
    assert_eq!(errors[0]["line"], 3, "{errors:#}");
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A graphql-transport-ws connection, acknowledged.
async fn connect(app: &TestApp, key: &str) -> Socket {
    let url = format!("{}/graphql/ws", app.base.replacen("http://", "ws://", 1));
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let init = json!({ "type": "connection_init", "payload": { "apiKey": key } });
    socket.send(Message::text(init.to_string())).await.unwrap();
    let ack = next_message(&mut socket).await;
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    socket
}

async fn subscribe_progress(socket: &mut Socket, id: Uuid) {
    let query = format!(
        "subscription {{ campaignProgress(id: \"{id}\") {{ totalMessages pending sent cancelled percentDone }} }}"
    );
    let message = json!({ "id": "1", "type": "subscribe", "payload": { "query": query } });
    socket
        .send(Message::text(message.to_string()))
        .await
        .unwrap();
}

/// The next JSON message, within 30 s.
async fn next_message(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .expect("a message in time")
            .expect("the socket open")
            .unwrap();
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

#[tokio::test]
async fn campaign_progress_sends_the_counts_at_once_and_ends_with_the_final_ones() {
    let c = Campaigns::start().await;
    let (id, _) = c.create(json!({ "batchSize": 2 })).await;
    assert_eq!(c.add(id, 3).await["accepted"], 3);

    // Another tenant cannot watch it.
    let (_, other_key) = c.app.tenant().await;
    let mut other = connect(&c.app, &other_key).await;
    subscribe_progress(&mut other, id).await;
    let refused = next_message(&mut other).await;
    // async-graphql sends a failed subscribe as a `next` with errors.
    assert_eq!(refused["type"], "next", "{refused}");
    assert_eq!(
        refused["payload"]["errors"][0]["extensions"]["code"], "NOT_FOUND",
        "{refused}"
    );

    let mut socket = connect(&c.app, &c.key).await;
    subscribe_progress(&mut socket, id).await;
    let first = next_message(&mut socket).await;
    assert_eq!(first["type"], "next", "{first}");
    let first = &first["payload"]["data"]["campaignProgress"];
    assert_eq!(first["totalMessages"], 3, "{first}");
    assert_eq!(first["pending"], 3, "{first}");
    assert_eq!(first["percentDone"], 0, "{first}");

    c.run_workers().await;
    let mut items = Vec::new();
    loop {
        let message = next_message(&mut socket).await;
        match message["type"].as_str() {
            Some("next") => items.push(message["payload"]["data"]["campaignProgress"].clone()),
            Some("complete") => break,
            _ => panic!("unexpected {message}"),
        }
    }
    let last = items.last().expect("the final counts");
    assert_eq!(last["sent"], 3, "{items:#?}");
    assert_eq!(last["pending"], 0, "{items:#?}");
    assert_eq!(last["percentDone"], 100, "{items:#?}");
    // Only changes are sent.
    assert!(items.windows(2).all(|w| w[0] != w[1]), "{items:#?}");
    assert_eq!(c.campaign(id).await["status"], "COMPLETED");

    // A finished campaign: its counts, then the end.
    subscribe_progress(&mut socket, id).await;
    let again = next_message(&mut socket).await;
    assert_eq!(&again["payload"]["data"]["campaignProgress"], last);
    assert_eq!(next_message(&mut socket).await["type"], "complete");
}

const ANALYTICS: &str = r#"query($id: ID!) {
  campaign(id: $id) {
    analytics {
      sent delivered opened clicked bounced complained unsubscribed
      deliveryRate openRate clickRate bounceRate unsubscribeRate
    }
  }
}"#;

#[tokio::test]
async fn campaign_analytics_count_opens_bounces_and_unsubscribes_of_its_messages() {
    let c = Campaigns::start().await;
    let (id, _) = c.create(json!({})).await;
    assert_eq!(c.add(id, 4).await["accepted"], 4);
    c.run_workers().await;
    c.wait_for_status(id, "COMPLETED", Duration::from_secs(30))
        .await;

    let notifications: Vec<Uuid> = sqlx::query_scalar(
        "SELECT notification_id FROM campaign_messages WHERE campaign_id = $1 ORDER BY row_no",
    )
    .bind(id)
    .fetch_all(c.app.store.pool())
    .await
    .unwrap();
    assert_eq!(notifications.len(), 4);
    let ids: Vec<NotificationId> = notifications
        .iter()
        .map(|n| NotificationId::parse(&n.to_string()).expect("id"))
        .collect();
    let store = &c.app.store;
    let actor = Actor::new("test");
    // Two opens of the first message count once; one of the second.
    for id in [&ids[0], &ids[0], &ids[1]] {
        herald::commands::links::record_open(store, &c.tenant, id, Default::default(), &actor)
            .await
            .expect("open");
    }
    herald::commands::notifications::handle(
        store,
        &c.tenant,
        &ids[2],
        || NotificationCommand::RecordBounce {
            hard: true,
            reason: "550 no such user".to_string(),
            at: chrono::Utc::now(),
        },
        &actor,
    )
    .await
    .expect("bounce");
    herald::commands::suppressions::add(
        store,
        &c.tenant,
        herald::domain::suppression::SuppressedAddress::parse("User3@example.com", None)
            .expect("address"),
        herald::domain::suppression::SuppressionReason::Unsubscribe,
        None,
        &actor,
    )
    .await
    .expect("unsubscribe");

    // The bounce reaches `notification_status` through its projection.
    let analytics = eventually(Duration::from_secs(15), async || {
        let analytics =
            c.graphql(ANALYTICS, json!({ "id": id })).await["campaign"]["analytics"].clone();
        if analytics["bounced"] == 1 {
            Ok(analytics)
        } else {
            Err(format!("{analytics:#}"))
        }
    })
    .await;
    assert_eq!(
        analytics,
        json!({
            "sent": 4, "delivered": 0, "opened": 2, "clicked": 0, "bounced": 1,
            "complained": 0, "unsubscribed": 1,
            "deliveryRate": 0.0, "openRate": 0.5, "clickRate": 0.0,
            "bounceRate": 0.25, "unsubscribeRate": 0.25
        })
    );
}
