//! A tenant pointing Herald at the operator's network: loopback, the cloud
//! metadata service and names that resolve to loopback, on every path that
//! takes a URL; redirects into it from an allowed server; reading what an
//! internal server answered; oversize CSV records and bodies.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::response::Redirect;
use axum::routing::get;
use herald::config::Config;
use herald::domain::attachment::{AttachmentSpec, AttachmentsConfig};
use herald::domain::values::{HttpUrl, TenantId};
use herald::egress::{Egress, EgressConfig};
use herald::signing::{self, generate_secret};
use herald::workers::attachments::Attachments;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{TestApp, error_codes};

const INTERNAL_ANSWER: &str = "internal secret: db password hunter2";

/// An internal service: counts what reaches it and answers with a secret,
/// as a 500 on `/fail`; `/hop` redirects to `?to=`.
async fn internal_server(hits: Arc<AtomicUsize>) -> std::net::SocketAddr {
    let counted = move |status: StatusCode| {
        let hits = hits.clone();
        move || async move {
            hits.fetch_add(1, Ordering::SeqCst);
            (status, INTERNAL_ANSWER)
        }
    };
    let app = Router::new()
        .route(
            "/",
            get(counted(StatusCode::OK)).post(counted(StatusCode::OK)),
        )
        .route(
            "/fail",
            get(counted(StatusCode::INTERNAL_SERVER_ERROR))
                .post(counted(StatusCode::INTERNAL_SERVER_ERROR)),
        )
        .route(
            "/list.csv",
            get(|| async { "email,name\nada@example.com,Ada\n" }),
        )
        .route(
            "/hop",
            get(
                |axum::extract::Query(q): axum::extract::Query<
                    std::collections::HashMap<String, String>,
                >| async move { Redirect::temporary(&q["to"]) },
            ),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    address
}

fn allowing(rules: &[String]) -> Config {
    Config {
        egress: EgressConfig {
            allow: rules.iter().map(|rule| rule.parse().unwrap()).collect(),
        },
        ..Config::default()
    }
}

/// A tenant with a published template and a campaign to import into.
struct Tenant {
    app: TestApp,
    key: String,
    campaign: Uuid,
}

impl Tenant {
    async fn start(config: Config) -> Tenant {
        let app = TestApp::start_with(&config).await;
        let (_, key) = app.tenant().await;
        let published = app
            .graphql(
                Some(&key),
                "mutation($input: PublishTemplateInput!) { publishTemplate(input: $input) { number } }",
                json!({ "input": {
                    "key": "news", "defaultLocale": "en",
                    "variables": [{ "name": "name", "type": "STRING" }],
                    "locales": [{ "locale": "en", "email": { "subject": "Hi {{ name }}", "text": "Hi" } }]
                }}),
            )
            .await;
        assert!(published["errors"].is_null(), "{published}");
        let created = app
            .graphql(
                Some(&key),
                "mutation($input: CreateCampaignInput!) { createCampaign(input: $input) { campaign { id } } }",
                json!({ "input": { "name": "News", "template": { "key": "news" }, "channel": "email" } }),
            )
            .await;
        let campaign = created["data"]["createCampaign"]["campaign"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{created}"))
            .parse()
            .unwrap();
        Tenant { app, key, campaign }
    }

    async fn graphql(&self, query: &str, variables: Value) -> Value {
        self.app.graphql(Some(&self.key), query, variables).await
    }

    async fn import(&self, csv_url: &str) -> Value {
        self.graphql(
            "mutation($id: ID!, $url: String!) { importCampaignRecipients(id: $id, csvUrl: $url) { accepted stopped } }",
            json!({ "id": self.campaign, "url": csv_url }),
        )
        .await
    }
}

/// A `VALIDATION` refusal whose message names `field` and the way out.
fn assert_refused(response: &Value, field: &str, attack: &str) {
    assert_eq!(
        error_codes(response),
        ["VALIDATION"],
        "{attack}: {response}"
    );
    let message = response.to_string();
    assert!(message.contains(field), "{attack}: {response}");
    assert!(message.contains("[egress] allow"), "{attack}: {response}");
    assert!(!message.contains(INTERNAL_ANSWER), "{attack}: {response}");
}

#[tokio::test]
async fn every_path_that_takes_a_url_refuses_loopback_metadata_and_localhost() {
    let hits = Arc::new(AtomicUsize::new(0));
    let internal = internal_server(hits.clone()).await;
    let tenant = Tenant::start(Config::default()).await;
    let send = "mutation($input: SendNotificationInput!) { sendNotification(input: $input) { notification { id } } }";
    for target in [
        format!("http://{internal}/"),
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/".to_string(),
        format!("http://localhost:{}/", internal.port()),
        format!("http://[::ffff:127.0.0.1]:{}/", internal.port()),
    ] {
        let endpoint = tenant
            .graphql(
                "mutation($input: CreateWebhookEndpointInput!) { createWebhookEndpoint(input: $input) { secret } }",
                json!({ "input": { "url": target } }),
            )
            .await;
        assert_refused(&endpoint, "url", &target);

        let callback = tenant
            .graphql(
                send,
                json!({ "input": {
                    "recipient": { "email": "ada@example.com" }, "channels": ["EMAIL"],
                    "content": { "title": "Hi", "text": "Hi" }, "callbackUrl": target,
                }}),
            )
            .await;
        assert_refused(&callback, "callback_url", &target);

        let destination = tenant
            .graphql(
                send,
                json!({ "input": {
                    "recipient": { "webhookUrl": target }, "channels": ["WEBHOOK"],
                    "content": { "title": "Hi", "text": "Hi" },
                }}),
            )
            .await;
        assert_refused(&destination, "recipient.webhook_url", &target);

        let attachment = tenant
            .graphql(
                send,
                json!({ "input": {
                    "recipient": { "email": "ada@example.com" }, "channels": ["EMAIL"],
                    "content": { "title": "Hi", "text": "Hi" },
                    "attachments": [{ "filename": "a.pdf", "url": target }],
                }}),
            )
            .await;
        assert_refused(&attachment, "attachments[0].source.url", &target);

        let campaign = tenant
            .graphql(
                "mutation($input: CreateCampaignInput!) { createCampaign(input: $input) { campaign { id } } }",
                json!({ "input": {
                    "name": "Leak", "template": { "key": "news" }, "channel": "email",
                    "callbackUrl": target,
                }}),
            )
            .await;
        assert_refused(&campaign, "callbackUrl", &target);

        assert_refused(&tenant.import(&target).await, "csvUrl", &target);
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "nothing reached the internal server"
    );
}

#[tokio::test]
async fn a_redirect_from_an_allowed_server_into_loopback_is_refused() {
    let hits = Arc::new(AtomicUsize::new(0));
    let allowed = internal_server(Arc::default()).await;
    let internal = internal_server(hits.clone()).await;
    let tenant = Tenant::start(allowing(&[allowed.to_string()])).await;
    let into = |to: &str| format!("http://{allowed}/hop?to={to}");

    for to in [
        format!("http://{internal}/"),
        format!("http://localhost:{}/", internal.port()),
        "http://169.254.169.254/latest/meta-data/".to_string(),
    ] {
        let import = tenant.import(&into(&to)).await;
        assert_eq!(error_codes(&import), ["VALIDATION"], "{to}: {import}");
        let message = import.to_string();
        assert!(message.contains("refused"), "{to}: {import}");
        assert!(!message.contains(INTERNAL_ANSWER), "{to}: {import}");

        let spec: AttachmentSpec =
            serde_json::from_value(json!({"filename": "a.pdf", "source": {"url": into(&to)}}))
                .unwrap();
        let egress = Egress::new(&allowing(&[allowed.to_string()]).egress);
        let error = Attachments::new(&AttachmentsConfig::default(), &egress)
            .load(&TenantId::parse("t_001").unwrap(), &[spec])
            .await
            .unwrap_err();
        assert!(error.is_permanent(), "{to}: {error:?}");
        assert!(error.to_string().contains("refused"), "{to}: {error}");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_allowed_ip_and_port_works_while_another_port_of_the_same_ip_is_refused() {
    let allowed = internal_server(Arc::default()).await;
    let hits = Arc::new(AtomicUsize::new(0));
    let other = internal_server(hits.clone()).await;
    let tenant = Tenant::start(allowing(&[allowed.to_string()])).await;

    let import = tenant.import(&format!("http://{allowed}/list.csv")).await;
    assert!(import["errors"].is_null(), "{import}");
    assert_eq!(import["data"]["importCampaignRecipients"]["accepted"], 1);

    let refused = tenant.import(&format!("http://{other}/list.csv")).await;
    assert_refused(&refused, "csvUrl", "another port");
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn what_an_internal_server_answered_never_reaches_the_tenant() {
    let hits = Arc::new(AtomicUsize::new(0));
    let internal = internal_server(hits.clone()).await;
    // Even where the operator allows the server, its answer stays inside.
    let tenant = Tenant::start(allowing(&[internal.to_string()])).await;
    let import = tenant.import(&format!("http://{internal}/fail")).await;
    assert_eq!(error_codes(&import), ["VALIDATION"], "{import}");
    assert!(import.to_string().contains("HTTP 500"), "{import}");
    assert!(!import.to_string().contains("hunter2"), "{import}");

    // A status callback or campaign callback to it: status and class only.
    let egress = Egress::new(&allowing(&[internal.to_string()]).egress);
    let client = signing::client(&egress, 5).unwrap();
    let url = HttpUrl::parse(&format!("http://{internal}/fail")).unwrap();
    let error = signing::post_signed(
        &client,
        &url,
        &[generate_secret()],
        "id",
        b"{}".to_vec(),
        signing::CALLBACK,
    )
    .await
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "callback answered HTTP 500 (server error)"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 2);

    // Refused outright when the operator has not allowed it.
    let guarded = signing::client(&Egress::default(), 5).unwrap();
    let refused = signing::post_signed(
        &guarded,
        &url,
        &[generate_secret()],
        "id",
        b"{}".to_vec(),
        signing::CALLBACK,
    )
    .await
    .unwrap_err();
    assert!(refused.is_permanent(), "{refused:?}");
    assert!(
        refused.to_string().contains("loopback address"),
        "{refused}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

/// POSTs, chunk by chunk, a CSV whose third line opens a quoted field that
/// never closes, `body_bytes` long, while reading the answer; returns the
/// status, the answer's JSON and how much of the body was written by then.
async fn upload_unterminated(
    tenant: &Tenant,
    campaign: Uuid,
    body_bytes: usize,
) -> (u16, Value, usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = tenant.app.base.trim_start_matches("http://").to_string();
    let socket = tokio::net::TcpStream::connect(&address).await.unwrap();
    let (mut from_server, mut to_server) = socket.into_split();
    let head = format!(
        "POST /api/campaigns/{campaign}/recipients HTTP/1.1\r\nHost: {address}\r\n\
         Authorization: Bearer {}\r\nContent-Type: text/csv\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        tenant.key
    );
    let written = Arc::new(AtomicUsize::new(0));
    let counter = written.clone();
    let writer = tokio::spawn(async move {
        to_server.write_all(head.as_bytes()).await?;
        let start = "email,name\nada@example.com,Ada\n\"x";
        to_server
            .write_all(format!("{:x}\r\n{start}\r\n", start.len()).as_bytes())
            .await?;
        let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "x".repeat(64 * 1024));
        while counter.load(Ordering::Relaxed) < body_bytes {
            to_server.write_all(chunk.as_bytes()).await?;
            counter.fetch_add(64 * 1024, Ordering::Relaxed);
        }
        to_server.write_all(b"0\r\n\r\n").await
    });
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    let mut written_at_answer = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while let Ok(Ok(read)) = tokio::time::timeout_at(deadline, from_server.read(&mut buffer)).await
    {
        if read == 0 {
            break;
        }
        written_at_answer.get_or_insert(written.load(Ordering::Relaxed));
        answer.extend_from_slice(&buffer[..read]);
    }
    writer.abort();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(answer.len() > 12, "no answer: {answer:?}");
    let status = answer[9..12].parse().unwrap();
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let json = &body[body.find('{').unwrap_or(0)..=body.rfind('}').unwrap_or(0)];
    (
        status,
        serde_json::from_str(json).unwrap_or(Value::Null),
        written_at_answer.unwrap_or_default(),
    )
}

#[tokio::test]
async fn an_oversize_csv_record_stops_the_import_at_its_line() {
    let tenant = Tenant::start(Config::default()).await;
    let (status, summary, written) =
        upload_unterminated(&tenant, tenant.campaign, 64 * 1024 * 1024).await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["accepted"], 1, "{summary}");
    let stopped = summary["stopped"].as_str().unwrap_or_default();
    assert!(stopped.starts_with("line 3:"), "{summary}");
    assert!(stopped.contains("longer than 1048576 bytes"), "{summary}");
    // Answered soon after the cap, not at the end of the body.
    assert!(written < 16 * 1024 * 1024, "{written} bytes written");
}

#[tokio::test]
async fn an_import_larger_than_the_operators_cap_stops_there() {
    let tenant = Tenant::start(Config {
        campaigns: herald::workers::campaigns::CampaignsConfig {
            max_import_bytes: 4096,
            ..Default::default()
        },
        ..Config::default()
    })
    .await;
    let mut csv = String::from("email,name\n");
    for i in 0..2_000 {
        csv.push_str(&format!("user{i}@example.com,User {i}\n"));
    }
    let response = tenant
        .app
        .http
        .post(format!(
            "{}/api/campaigns/{}/recipients",
            tenant.app.base, tenant.campaign
        ))
        .bearer_auth(&tenant.key)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), 200);
    let summary: Value = response.json().await.unwrap();
    let stopped = summary["stopped"].as_str().unwrap_or_default();
    assert!(stopped.contains("larger than 4096 bytes"), "{summary}");
    assert!(stopped.starts_with("line "), "{summary}");
    assert!(summary["accepted"].as_u64().unwrap() < 2_000, "{summary}");
}

#[tokio::test]
async fn a_big_body_to_an_unknown_campaign_is_answered_404_without_being_read() {
    let tenant = Tenant::start(Config::default()).await;
    let started = Instant::now();
    let (status, answer, written) =
        upload_unterminated(&tenant, Uuid::now_v7(), 400 * 1024 * 1024).await;
    assert_eq!(status, 404, "{answer}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(written < 16 * 1024 * 1024, "{written} bytes written");

    // The same through GraphQL: not found before anything is fetched.
    let hits = Arc::new(AtomicUsize::new(0));
    let internal = internal_server(hits.clone()).await;
    let import = tenant
        .graphql(
            "mutation($id: ID!, $url: String!) { importCampaignRecipients(id: $id, csvUrl: $url) { accepted } }",
            json!({ "id": Uuid::now_v7(), "url": format!("http://{internal}/") }),
        )
        .await;
    assert_eq!(error_codes(&import), ["NOT_FOUND"], "{import}");
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}
