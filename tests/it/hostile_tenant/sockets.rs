//! Sockets and subscriptions as a hostile tenant uses them: more sockets
//! than its share, more subscriptions than its share, a key that stays
//! subscribed after it was revoked, a catch-up that reads other tenants'
//! log. Driven by a raw graphql-transport-ws client (tokio-tungstenite),
//! which sees the close codes.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use herald::api::live::LiveHub;
use herald::domain::values::TenantId;
use herald::eventstore::{Checkpoint, ExpectedVersion, StreamAppend};

use crate::eventstore::event;
use crate::support::{TestApp, eventually, fresh_database};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What the server said next: a protocol message, or the close code.
#[derive(Debug)]
enum Heard {
    Message(Value),
    Closed(u16),
}

async fn app_with(sockets: usize, subscriptions: usize) -> TestApp {
    let mut config = herald::config::Config::default();
    config.limits.max_sockets_per_tenant = sockets;
    config.limits.max_subscriptions_per_tenant = subscriptions;
    TestApp::start_with(&config).await
}

/// A graphql-transport-ws socket that has sent nothing yet.
async fn connect(app: &TestApp) -> Socket {
    let url = format!("{}/graphql/ws", app.base.replacen("http://", "ws://", 1));
    let mut request = url.into_client_request().expect("a request");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("the upgrade succeeds");
    socket
}

/// A socket that sent its `connection_init` with `key`.
async fn open(app: &TestApp, key: &str) -> Socket {
    let mut socket = connect(app).await;
    send(
        &mut socket,
        json!({ "type": "connection_init", "payload": { "apiKey": key } }),
    )
    .await;
    socket
}

async fn send(socket: &mut Socket, message: Value) {
    socket
        .send(Message::text(message.to_string()))
        .await
        .expect("sent");
}

async fn hear(socket: &mut Socket) -> Heard {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .expect("the server says something within 30 s");
        match frame {
            Some(Ok(Message::Text(text))) => {
                return Heard::Message(serde_json::from_str(&text).expect("JSON"));
            }
            Some(Ok(Message::Close(Some(close)))) => return Heard::Closed(close.code.into()),
            Some(Ok(Message::Close(None))) | None | Some(Err(_)) => return Heard::Closed(1005),
            Some(Ok(_)) => {}
        }
    }
}

/// A socket the server acknowledged.
async fn admitted(app: &TestApp, key: &str) -> Socket {
    let mut socket = open(app, key).await;
    match hear(&mut socket).await {
        Heard::Message(message) if message["type"] == "connection_ack" => socket,
        other => panic!("expected connection_ack, heard {other:?}"),
    }
}

/// Subscribes `id` to the tenant's events from the beginning and waits for
/// the first (the tenant's own creation): the subscription is then live.
async fn subscribe(socket: &mut Socket, id: &str) -> Value {
    send(
        socket,
        json!({
            "type": "subscribe", "id": id,
            "payload": { "query": "subscription { events(after: \"0\") { position type streamId } }" }
        }),
    )
    .await;
    loop {
        match hear(socket).await {
            Heard::Message(message) if message["id"] == id => return message,
            Heard::Message(_) => {}
            Heard::Closed(code) => panic!("closed with {code} while subscribing {id}"),
        }
    }
}

#[tokio::test]
async fn sockets_past_the_tenants_cap_are_closed_with_4429_while_another_tenant_connects() {
    let app = app_with(2, 100).await;
    let (_, key_a) = app.tenant().await;
    let (_, key_b) = app.tenant().await;
    let first = admitted(&app, &key_a).await;
    let _second = admitted(&app, &key_a).await;

    let mut third = open(&app, &key_a).await;
    assert!(
        matches!(hear(&mut third).await, Heard::Closed(4429)),
        "the third socket of one tenant is refused"
    );
    let _other_tenant = admitted(&app, &key_b).await;

    // Closing a socket gives its slot back.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut again = open(&app, &key_a).await;
        match hear(&mut again).await {
            Heard::Message(message) if message["type"] == "connection_ack" => break,
            Heard::Closed(4429) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            other => panic!("the freed slot is never given back: {other:?}"),
        }
    }
}

#[tokio::test]
async fn subscriptions_past_the_tenants_cap_fail_with_limit_exceeded() {
    let app = app_with(10, 2).await;
    let (_, key_a) = app.tenant().await;
    let (_, key_b) = app.tenant().await;
    let mut socket = admitted(&app, &key_a).await;
    let mut another_socket = admitted(&app, &key_a).await;
    for id in ["1", "2"] {
        let first = subscribe(&mut socket, id).await;
        assert_eq!(first["type"], "next", "{first}");
        assert!(first["payload"]["errors"].is_null(), "{first}");
    }
    // The cap is the tenant's, over all its sockets.
    let refused = subscribe(&mut another_socket, "3").await;
    assert_eq!(
        refused["payload"]["errors"][0]["extensions"]["code"], "LIMIT_EXCEEDED",
        "{refused}"
    );
    let mut other_tenant = admitted(&app, &key_b).await;
    let theirs = subscribe(&mut other_tenant, "1").await;
    assert!(theirs["payload"]["errors"].is_null(), "{theirs}");

    // Ending one makes room for the next.
    send(&mut socket, json!({ "type": "complete", "id": "1" })).await;
    let mut attempt = 0;
    eventually(Duration::from_secs(5), async || {
        attempt += 1;
        let id = format!("again-{attempt}");
        let answer = subscribe(&mut another_socket, &id).await;
        if answer["payload"]["errors"].is_null() {
            Ok(())
        } else {
            Err(format!("the slot is not given back: {answer}"))
        }
    })
    .await;
}

/// Waits for the socket to close; answers its code and how long it took.
async fn closed_within(socket: &mut Socket, limit: Duration) -> (u16, Duration) {
    let started = Instant::now();
    let code = tokio::time::timeout(limit, async {
        loop {
            if let Heard::Closed(code) = hear(socket).await {
                return code;
            }
        }
    })
    .await
    .expect("the socket closes in time");
    (code, started.elapsed())
}

/// A second `read` key of the tenant whose admin key is `admin`: (id, secret).
async fn issue_read_key(app: &TestApp, admin: &str) -> (String, String) {
    let issued = app
        .graphql(
            Some(admin),
            "mutation { issueApiKey(name: \"dashboard\", scopes: [READ]) { id apiKey } }",
            json!({}),
        )
        .await;
    let key = &issued["data"]["issueApiKey"];
    (
        key["id"].as_str().expect("an id").to_string(),
        key["apiKey"].as_str().expect("a secret").to_string(),
    )
}

#[tokio::test]
async fn a_key_revoked_through_the_api_closes_its_live_socket_within_5_seconds() {
    let app = app_with(10, 10).await;
    let (_, admin) = app.tenant().await;
    let (key_id, key) = issue_read_key(&app, &admin).await;
    let mut socket = admitted(&app, &key).await;
    subscribe(&mut socket, "live").await;
    let revoked = app
        .graphql(
            Some(&admin),
            "mutation($id: ID!) { revokeApiKey(id: $id) }",
            json!({ "id": key_id }),
        )
        .await;
    assert_eq!(revoked["data"]["revokeApiKey"], true, "{revoked}");
    let (code, took) = closed_within(&mut socket, Duration::from_secs(5)).await;
    assert_eq!(code, 4403, "closed after {took:?}");
    // And it cannot come back.
    let mut again = open(&app, &key).await;
    assert!(matches!(hear(&mut again).await, Heard::Closed(4403)));
}

#[tokio::test]
async fn a_key_revoked_by_the_cli_in_another_process_closes_its_live_socket_within_5_seconds() {
    let app = app_with(10, 10).await;
    let (tenant, admin) = app.tenant().await;
    let (key_id, key) = issue_read_key(&app, &admin).await;
    let mut socket = admitted(&app, &key).await;
    subscribe(&mut socket, "live").await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "tenants",
            "revoke-key",
            "--tenant",
            &tenant,
            "--key",
            &key_id,
        ])
        .current_dir(std::env::temp_dir())
        .env("DATABASE_URL", app.database_url())
        .env("HERALD_LOG_FILTER", "warn")
        .env_remove("HERALD_CONFIG")
        .output()
        .await
        .expect("herald runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (code, took) = closed_within(&mut socket, Duration::from_secs(5)).await;
    assert_eq!(code, 4403, "closed after {took:?}");
}

#[tokio::test]
async fn a_socket_that_never_initialises_is_closed() {
    let app = app_with(10, 10).await;
    let mut socket = connect(&app).await;
    let (code, _) = closed_within(&mut socket, Duration::from_secs(15)).await;
    assert_eq!(code, 4408);
}

/// Every way graphql-transport-ws's PROTOCOL.md says a socket ends, with
/// its code: a message outside the protocol (4400), `subscribe` before
/// `connection_init` (4401), a refused credential (4403), an id already
/// subscribed (4409), a second `connection_init` (4429).
#[tokio::test]
async fn protocol_breaches_close_with_the_graphql_transport_ws_codes() {
    let app = app_with(10, 10).await;
    let (_, key) = app.tenant().await;

    for garbage in [
        Message::text("not json"),
        Message::text(json!({ "type": "shout" }).to_string()),
    ] {
        let mut socket = admitted(&app, &key).await;
        socket.send(garbage).await.unwrap();
        let (code, _) = closed_within(&mut socket, Duration::from_secs(5)).await;
        assert_eq!(code, 4400);
    }

    let mut socket = connect(&app).await;
    let subscribe_a = json!({
        "type": "subscribe", "id": "a",
        "payload": { "query": "subscription { events(after: 0) { position } }" }
    });
    send(&mut socket, subscribe_a.clone()).await;
    assert!(matches!(hear(&mut socket).await, Heard::Closed(4401)));

    let mut socket = open(&app, "hk_not_a_key").await;
    assert!(matches!(hear(&mut socket).await, Heard::Closed(4403)));

    let mut socket = admitted(&app, &key).await;
    subscribe(&mut socket, "a").await;
    send(&mut socket, subscribe_a).await;
    let (code, _) = closed_within(&mut socket, Duration::from_secs(5)).await;
    assert_eq!(code, 4409);

    let mut socket = admitted(&app, &key).await;
    send(
        &mut socket,
        json!({ "type": "connection_init", "payload": { "apiKey": key } }),
    )
    .await;
    let (code, _) = closed_within(&mut socket, Duration::from_secs(5)).await;
    assert_eq!(code, 4429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_from_zero_reads_only_the_callers_tenant_in_log_order() {
    let db = fresh_database().await;
    let store = herald::eventstore::EventStore::new(db.pool.clone());
    // Two tenants' events interleaved in the log.
    for i in 0..60 {
        let tenant = if i % 3 == 0 { "tenant-b" } else { "tenant-a" };
        store
            .append(&[StreamAppend {
                stream_id: format!("{tenant}-{}", i % 4),
                expected: ExpectedVersion::Any,
                events: vec![event("Step", tenant, json!({ "i": i }))],
            }])
            .await
            .unwrap();
    }
    let hub = LiveHub::start(store.clone()).await.unwrap();
    let b = TenantId::parse("tenant-b").unwrap();
    let mut events = Box::pin(hub.events(&b, Some(Checkpoint::ORIGIN)));
    let mut seen = Vec::new();
    while seen.len() < 20 {
        let event = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("the catch-up goes on")
            .unwrap()
            .unwrap();
        assert_eq!(
            event.tenant_id, "tenant-b",
            "another tenant's event: {event:?}"
        );
        seen.push(event.payload["i"].as_i64().unwrap());
    }
    assert_eq!(seen, (0..60).step_by(3).collect::<Vec<i64>>());
    // Live events of the other tenant never arrive either.
    store
        .append(&[StreamAppend {
            stream_id: "tenant-a-live".into(),
            expected: ExpectedVersion::Any,
            events: vec![event("Step", "tenant-a", json!({ "i": 60 }))],
        }])
        .await
        .unwrap();
    let extra = tokio::time::timeout(Duration::from_millis(1_500), events.next()).await;
    assert!(extra.is_err(), "nothing of tenant A's: {extra:?}");
}
