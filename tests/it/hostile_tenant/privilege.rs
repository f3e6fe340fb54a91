//! Least privilege (issue 14, items 7 and 8): a `send` key reads nothing
//! back from what it sends, metrics stay off the API port, an emailed
//! unsubscribe link does not carry its address, and a browser's feed token
//! reads and marks one recipient's feed, nothing else, until it expires;
//! browsers of other origins get no CORS grant.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::inapp_feed::{FEED, Feed, log_end, next, open_socket, subscribe, update};
use crate::journey::{Service, unsubscribe_link};
use crate::served::serve;
use crate::support::{TestApp, error_codes, eventually};

const SEND: &str = "mutation($input: SendNotificationInput!) { \
    sendNotification(input: $input) { notification { id timeline { type data } } } }";
const ISSUE: &str = "mutation($r: String!, $ttl: Int) { \
    issueFeedToken(recipientId: $r, ttlSeconds: $ttl) { token expiresAt } }";

/// A new key of the tenant of `admin` with only `scope`.
async fn key_with(app: &TestApp, admin: &str, scope: &str) -> String {
    let issued = app
        .graphql(
            Some(admin),
            &format!(
                "mutation {{ issueApiKey(name: \"narrow\", scopes: [{scope}]) {{ apiKey }} }}"
            ),
            json!({}),
        )
        .await;
    issued["data"]["issueApiKey"]["apiKey"]
        .as_str()
        .unwrap_or_else(|| panic!("{issued}"))
        .to_string()
}

#[tokio::test]
async fn a_send_only_key_reads_nothing_back_through_what_it_sends() {
    let app = TestApp::start().await;
    let (_, admin) = app.tenant().await;
    let sender = key_with(&app, &admin, "SEND").await;
    let input = json!({ "input": {
        "recipient": { "email": "ada@example.com" },
        "channels": ["EMAIL"],
        "content": { "title": "Hi", "text": "hello" },
    }});

    // The timeline holds the whole request, addresses included.
    let sent = app.graphql(Some(&sender), SEND, input.clone()).await;
    assert_eq!(error_codes(&sent), ["FORBIDDEN"], "{sent}");
    assert!(!sent.to_string().contains("ada@example.com"), "{sent}");
    let sent = app.graphql(Some(&admin), SEND, input).await;
    assert!(sent["errors"].is_null(), "{sent}");
    let timeline = &sent["data"]["sendNotification"]["notification"]["timeline"];
    assert!(
        timeline.to_string().contains("ada@example.com"),
        "{timeline}"
    );

    // setPreferences answers with the recipient: not its addresses.
    app.graphql(
        Some(&admin),
        "mutation { upsertRecipient(input: { id: \"victim\", email: \"victim@example.com\", phone: \"+33612345678\" }) { id } }",
        json!({}),
    )
    .await;
    let probed = app
        .graphql(
            Some(&sender),
            "mutation { setPreferences(recipientId: \"victim\", changes: [{ category: \"news\", optedIn: true }]) { id email phone attributes } }",
            json!({}),
        )
        .await;
    assert!(
        error_codes(&probed).iter().all(|c| c == "FORBIDDEN"),
        "{probed}"
    );
    assert!(
        !probed.to_string().contains("victim@example.com"),
        "{probed}"
    );
    assert!(!probed.to_string().contains("+33612345678"), "{probed}");
    // What it may see still answers.
    let allowed = app
        .graphql(
            Some(&sender),
            "mutation { setPreferences(recipientId: \"victim\", changes: [{ category: \"news\", optedIn: true }]) { id hasProfile } }",
            json!({}),
        )
        .await;
    assert_eq!(
        allowed["data"]["setPreferences"]["hasProfile"], true,
        "{allowed}"
    );
}

#[tokio::test]
async fn metrics_are_not_on_the_api_port() {
    let dir = std::env::temp_dir().join(format!("herald-metrics-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let served = serve(&dir, "Metrics", "").await;
    let on_api = served
        .http
        .get(format!("{}/metrics", served.base))
        .send()
        .await
        .unwrap();
    assert_eq!(on_api.status(), 404);
    let apart = served
        .http
        .get(format!("{}/metrics", served.metrics_base))
        .send()
        .await
        .unwrap();
    assert!(apart.status().is_success(), "{}", apart.status());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_emailed_unsubscribe_link_does_not_carry_the_address() {
    let service = Service::start().await;
    let id = service
        .send(json!({
            "recipient": { "email": "ada.lovelace@example.com" },
            "channels": ["EMAIL"],
            "content": { "title": "Hi", "text": "hello" }
        }))
        .await;
    service.wait_for_status(&id, "SENT").await;
    let email = service.email_to("ada.lovelace@example.com").await;
    let link = unsubscribe_link(&email);
    let token = link.rsplit('/').next().unwrap();
    for part in token.split('.') {
        let decoded = URL_SAFE_NO_PAD.decode(part).unwrap_or_default();
        let decoded = String::from_utf8_lossy(&decoded);
        for secret in ["ada.lovelace", "example.com", &id] {
            assert!(
                !decoded.contains(secret),
                "{secret} readable in {decoded:?}"
            );
        }
    }
    // The link still works: one click suppresses the address.
    let clicked = service
        .served
        .http
        .post(&link)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert!(clicked.status().is_success(), "{}", clicked.status());
    let listed = service
        .served
        .graphql("{ suppressions { edges { node { address } } } }", json!({}))
        .await;
    assert!(
        listed.to_string().contains("ada.lovelace@example.com"),
        "{listed}"
    );
}

async fn feed_token(f: &Feed, key: &str, recipient: &str, ttl: Option<i32>) -> Value {
    f.app
        .graphql(Some(key), ISSUE, json!({ "r": recipient, "ttl": ttl }))
        .await
}

fn token_of(issued: &Value) -> String {
    issued["data"]["issueFeedToken"]["token"]
        .as_str()
        .unwrap_or_else(|| panic!("{issued}"))
        .to_string()
}

#[tokio::test]
async fn a_feed_token_reads_and_marks_its_one_recipient_and_nothing_else() {
    let f = Feed::start().await;
    let mine = f.send("user-a", "For A").await;
    let theirs = f.send("user-b", "For B").await;
    f.feed_until("user-b", |feed| feed["unreadCount"] == 1)
        .await;
    f.feed_until("user-a", |feed| feed["unreadCount"] == 1)
        .await;
    let token = token_of(&feed_token(&f, &f.key, "user-a", None).await);

    // Its own recipient: read and mark.
    let feed = f.feed(&token, "user-a", None).await;
    assert_eq!(feed["edges"][0]["node"]["id"], mine.as_str(), "{feed}");
    let marked = f.mark(&token, "user-a", &[&mine], "READ").await;
    assert!(marked["errors"].is_null(), "{marked}");

    // Another recipient of the same tenant: refused, read or mark.
    let other = f
        .app
        .graphql(Some(&token), FEED, json!({ "r": "user-b" }))
        .await;
    assert_eq!(error_codes(&other), ["FORBIDDEN"], "{other}");
    assert!(!other.to_string().contains("For B"), "{other}");
    let marked = f.mark(&token, "user-b", &[&theirs], "READ").await;
    assert_eq!(error_codes(&marked), ["FORBIDDEN"], "{marked}");
    let all = f
        .app
        .graphql(
            Some(&token),
            "mutation { markAllInAppRead(recipientId: \"user-b\") { ids } }",
            json!({}),
        )
        .await;
    assert_eq!(error_codes(&all), ["FORBIDDEN"], "{all}");

    // Every other field: the tenant's notifications, a send, a new token, the viewer.
    for operation in [
        "{ notifications { edges { node { id } } } }",
        "{ notification(id: \"00000000-0000-0000-0000-000000000000\") { id } }",
        "mutation { sendNotification(input: { recipient: { id: \"user-a\" }, channels: [IN_APP], content: { title: \"x\" } }) { duplicate } }",
        "mutation { issueFeedToken(recipientId: \"user-b\") { token } }",
        "{ apiKeys { id } }",
    ] {
        let refused = f.app.graphql(Some(&token), operation, json!({})).await;
        assert_eq!(
            error_codes(&refused),
            ["FORBIDDEN"],
            "{operation}: {refused}"
        );
    }

    // Altered: no credential at all.
    let mut altered = token.clone();
    let last = altered.pop().unwrap();
    altered.push(if last == 'A' { 'B' } else { 'A' });
    let refused = f
        .app
        .graphql(Some(&altered), FEED, json!({ "r": "user-a" }))
        .await;
    assert_eq!(error_codes(&refused), ["UNAUTHENTICATED"], "{refused}");
}

#[tokio::test]
async fn feed_tokens_are_short_lived_and_issued_by_send_keys_only() {
    let f = Feed::start().await;
    // Lifetimes outside 1 s .. the configured maximum (a day) are refused.
    for ttl in [0, 86_401] {
        let refused = feed_token(&f, &f.key, "user-a", Some(ttl)).await;
        assert_eq!(error_codes(&refused), ["VALIDATION"], "{ttl}: {refused}");
    }
    let reader = key_with(&f.app, &f.key, "READ").await;
    let refused = feed_token(&f, &reader, "user-a", None).await;
    assert_eq!(error_codes(&refused), ["FORBIDDEN"], "{refused}");
    let default = feed_token(&f, &f.key, "user-a", None).await;
    let expires_at: chrono::DateTime<chrono::Utc> = default["data"]["issueFeedToken"]["expiresAt"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let hour = expires_at - chrono::Utc::now();
    assert!(hour <= chrono::TimeDelta::hours(1) && hour > chrono::TimeDelta::minutes(59));

    // A short-lived token stops working once it expires, and so does a
    // subscription opened with it.
    let token = token_of(&feed_token(&f, &f.key, "user-a", Some(2)).await);
    let mut socket = open_socket(&f.app, json!({ "feedToken": token })).await;
    let ack = next(&mut socket, Duration::from_secs(10)).await.unwrap();
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    subscribe(&mut socket, "a", "recipientId: \"user-a\"").await;
    eventually(Duration::from_secs(10), async || {
        let answer = f
            .app
            .graphql(Some(&token), FEED, json!({ "r": "user-a" }))
            .await;
        if error_codes(&answer) == ["UNAUTHENTICATED"] {
            return Ok(());
        }
        assert!(answer["errors"].is_null(), "{answer}");
        Err("the token has not expired")
    })
    .await;
    let ended = next(&mut socket, Duration::from_secs(10)).await.unwrap();
    assert_eq!(ended["type"], "complete", "{ended}");
}

/// A subscription refused at its start: a `next` carrying only a
/// FORBIDDEN error, then `complete`.
async fn refused_then_complete(socket: &mut crate::inapp_feed::Socket) {
    let refused = next(socket, Duration::from_secs(10)).await.unwrap();
    assert_eq!(refused["type"], "next", "{refused}");
    assert!(refused["payload"]["data"].is_null(), "{refused}");
    assert_eq!(
        refused["payload"]["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{refused}"
    );
    let done = next(socket, Duration::from_secs(10)).await.unwrap();
    assert_eq!(done["type"], "complete", "{done}");
}

#[tokio::test]
async fn a_feed_token_socket_follows_only_its_recipient() {
    let f = Feed::start().await;
    let token = token_of(&feed_token(&f, &f.key, "user-a", None).await);
    let mut socket = open_socket(&f.app, json!({ "feedToken": token })).await;
    let ack = next(&mut socket, Duration::from_secs(10)).await.unwrap();
    assert_eq!(ack["type"], "connection_ack", "{ack}");

    // Another recipient's feed, or the tenant's log: an error, no stream.
    subscribe(&mut socket, "b", "recipientId: \"user-b\", after: \"0\"").await;
    refused_then_complete(&mut socket).await;
    crate::inapp_feed::send(
        &mut socket,
        json!({ "id": "e", "type": "subscribe", "payload": { "query": "subscription { events(after: \"0\") { type data } }" } }),
    )
    .await;
    refused_then_complete(&mut socket).await;

    let end = log_end(&f.app).await;
    subscribe(
        &mut socket,
        "a",
        &format!("recipientId: \"user-a\", after: \"{end}\""),
    )
    .await;
    f.send("user-b", "Not yours").await;
    let id = f.send("user-a", "Yours").await;
    let delivered = update(&mut socket).await;
    assert_eq!(delivered["ids"], json!([id]), "{delivered}");
    assert_eq!(delivered["item"]["recipientId"], "user-a");

    // A tampered token opens no socket.
    let mut refused = open_socket(&f.app, json!({ "feedToken": "hf_2.AAAA" })).await;
    let answer = next(&mut refused, Duration::from_secs(10)).await;
    assert!(
        answer
            .as_ref()
            .is_none_or(|a| a["type"] != "connection_ack"),
        "{answer:?}"
    );
}

#[tokio::test]
async fn cors_answers_configured_origins_only() {
    let config = herald::config::Config {
        cors_origins: vec![herald::api::CorsOrigin::parse("https://app.example.com").unwrap()],
        ..Default::default()
    };
    let app = TestApp::start_with(&config).await;
    let preflight = |origin: &'static str, path: &'static str| {
        app.http
            .request(reqwest::Method::OPTIONS, format!("{}{path}", app.base))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    let allowed = preflight("https://app.example.com", "/graphql")
        .await
        .unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    for (origin, path) in [
        ("https://evil.example", "/graphql"),
        ("https://app.example.com.evil.example", "/graphql"),
        ("https://app.example.com", "/api/notifications"),
    ] {
        let refused = preflight(origin, path).await.unwrap();
        assert!(
            !refused
                .headers()
                .contains_key("access-control-allow-origin"),
            "{origin} {path}: {:?}",
            refused.headers()
        );
    }
    // By default no origin is allowed.
    let closed = TestApp::start().await;
    let answer = closed
        .http
        .request(reqwest::Method::OPTIONS, format!("{}/graphql", closed.base))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(!answer.headers().contains_key("access-control-allow-origin"));
    // A malformed origin is refused when the configuration is read.
    for bad in [
        "https://app.example.com/",
        "app.example.com",
        "ftp://x.example",
    ] {
        assert!(herald::api::CorsOrigin::parse(bad).is_err(), "{bad}");
    }
}
