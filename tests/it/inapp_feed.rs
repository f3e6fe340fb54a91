//! The in-app feed end to end: notifications sent on the in-app channel go
//! through the real dispatcher and `inapp` provider into the `inapp_feed`
//! read model, are marked through GraphQL, reach a graphql-transport-ws
//! subscriber live, stay within their tenant, and rebuild from the log to
//! the same table.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use herald::commands::limits::{Limits, LimitsConfig};
use herald::config::Config;
use herald::eventstore::{Checkpoint, ReadFilter};
use herald::projections::inapp_feed::InAppFeedProjection;
use herald::projections::{self, Projection, RunnerOptions};
use herald::providers::Providers;
use herald::providers::inapp::{InAppConfig, InAppProvider};
use herald::workers::breaker::{BreakerConfig, Breakers};
use herald::workers::compose::Composer;
use herald::workers::dispatcher::{DispatchSettings, Dispatcher};
use herald::workers::ranker::{Ranker, RankingConfig};
use herald::workers::{DeliveryConfig, RoutingConfig};

use crate::support::{TestApp, error_codes, eventually, position};

pub(crate) const FEED: &str = "query($r: String!, $s: [InAppItemState!]) { inappFeed(recipientId: $r, states: $s) { \
    unreadCount edges { cursor node { id recipientId title text ctaUrl data category state deliveredAt readAt archivedAt position } } \
    pageInfo { hasNextPage endCursor } } }";
const MARK: &str = "mutation($r: String!, $ids: [ID!]!, $s: InAppItemState!) { \
    markInAppItems(recipientId: $r, ids: $ids, state: $s) { state ids position } }";

/// The service with a dispatcher delivering in-app through the `inapp`
/// provider (the default routing) and the feed's projection running.
pub(crate) struct Feed {
    pub(crate) app: TestApp,
    pub(crate) key: String,
    tenant: String,
    shutdown: CancellationToken,
}

impl Feed {
    pub(crate) async fn start() -> Feed {
        let app = TestApp::start().await;
        let (tenant, key) = app.tenant().await;
        let shutdown = CancellationToken::new();
        let mut providers = Providers::default();
        providers.insert(Arc::new(InAppProvider::new(
            "inapp",
            &InAppConfig::default(),
        )));
        let composer = Composer::new(app.store.pool(), &Config::default().worker_options())
            .await
            .expect("composer");
        Dispatcher::new(
            app.store.clone(),
            DispatchSettings {
                providers,
                routing: RoutingConfig::default(),
                delivery: DeliveryConfig::default(),
                breakers: Breakers::new(&BreakerConfig::default()),
                ranker: Ranker::new(&RankingConfig::default()).expect("default ranking"),
                limits: Arc::new(Limits::new(LimitsConfig::default())),
                composer,
            },
        )
        .spawn(shutdown.clone());
        projections::spawn(
            app.store.clone(),
            Arc::new(InAppFeedProjection::new()),
            RunnerOptions::default(),
            shutdown.clone(),
        );
        Feed {
            app,
            key,
            tenant,
            shutdown,
        }
    }

    pub(crate) async fn send(&self, recipient: &str, title: &str) -> String {
        let sent = self
            .app
            .graphql(
                Some(&self.key),
                "mutation($input: SendNotificationInput!) { sendNotification(input: $input) { notification { id } } }",
                json!({ "input": {
                    "recipient": { "id": recipient },
                    "channels": ["IN_APP"],
                    "category": "billing.invoice",
                    "content": {
                        "title": title,
                        "text": format!("{title}, in full"),
                        "ctaUrl": "https://app.example.com/invoices/7",
                        "data": { "invoice": 7 },
                    },
                }}),
            )
            .await;
        sent["data"]["sendNotification"]["notification"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("sent: {sent}"))
            .to_string()
    }

    pub(crate) async fn feed(&self, key: &str, recipient: &str, states: Option<&[&str]>) -> Value {
        let response = self
            .app
            .graphql(Some(key), FEED, json!({ "r": recipient, "s": states }))
            .await;
        assert!(response["errors"].is_null(), "{response}");
        response["data"]["inappFeed"].clone()
    }

    /// Polls the feed until `ready` holds (the projection follows the log).
    pub(crate) async fn feed_until(
        &self,
        recipient: &str,
        ready: impl Fn(&Value) -> bool,
    ) -> Value {
        eventually(Duration::from_secs(15), async || {
            let feed = self.feed(&self.key, recipient, None).await;
            if ready(&feed) {
                Ok(feed)
            } else {
                Err(format!("the feed is not there yet: {feed}"))
            }
        })
        .await
    }

    pub(crate) async fn mark(
        &self,
        key: &str,
        recipient: &str,
        ids: &[&str],
        state: &str,
    ) -> Value {
        self.app
            .graphql(
                Some(key),
                MARK,
                json!({ "r": recipient, "ids": ids, "s": state }),
            )
            .await
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn state_of(feed: &Value, id: &str) -> String {
    feed["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["node"]["id"] == id)
        .map(|e| e["node"]["state"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("{id} not in {feed}"))
}

async fn feed_rows(feed: &Feed) -> Vec<Value> {
    sqlx::query_scalar("SELECT to_jsonb(f) FROM inapp_feed f ORDER BY notification_id")
        .fetch_all(feed.app.store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn in_app_sends_reach_the_feed_unread_and_marks_move_them() {
    let f = Feed::start().await;
    let first = f.send("user-1", "Invoice ready").await;
    let second = f.send("user-1", "Payment due").await;
    let third = f.send("user-1", "Receipt").await;
    f.send("user-2", "Someone else's").await;
    let feed = f
        .feed_until("user-1", |feed| {
            feed["edges"].as_array().unwrap().len() == 3
        })
        .await;
    assert_eq!(feed["unreadCount"], 3);
    // Newest delivery first (the dispatcher may deliver them in any order).
    let edges = feed["edges"].as_array().unwrap();
    let order: Vec<&str> = edges
        .iter()
        .map(|e| e["node"]["id"].as_str().unwrap())
        .collect();
    let positions: Vec<i64> = edges
        .iter()
        .map(|e| position(&e["node"]["position"]))
        .collect();
    assert!(positions.windows(2).all(|w| w[0] > w[1]), "{feed}");
    let receipt = &edges
        .iter()
        .find(|e| e["node"]["id"] == third.as_str())
        .unwrap()["node"];
    assert_eq!(receipt["recipientId"], "user-1");
    assert_eq!(receipt["title"], "Receipt");
    assert_eq!(receipt["text"], "Receipt, in full");
    assert_eq!(receipt["ctaUrl"], "https://app.example.com/invoices/7");
    assert_eq!(receipt["data"], json!({ "invoice": 7 }));
    assert_eq!(receipt["category"], "billing.invoice");
    assert_eq!(receipt["state"], "UNREAD");
    assert!(receipt["readAt"].is_null() && receipt["deliveredAt"].is_string());

    // Pages follow the cursor.
    let page = |after: Value| {
        f.app.graphql(
            Some(&f.key),
            "query($after: String) { inappFeed(recipientId: \"user-1\", first: 2, after: $after) { edges { node { id } } pageInfo { hasNextPage endCursor } } }",
            json!({ "after": after }),
        )
    };
    let ids = |page: &Value| -> Vec<String> {
        page["data"]["inappFeed"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"]["id"].as_str().unwrap().to_string())
            .collect()
    };
    let front = page(Value::Null).await;
    assert_eq!(front["data"]["inappFeed"]["pageInfo"]["hasNextPage"], true);
    let rest = page(front["data"]["inappFeed"]["pageInfo"]["endCursor"].clone()).await;
    assert_eq!(rest["data"]["inappFeed"]["pageInfo"]["hasNextPage"], false);
    assert_eq!([ids(&front), ids(&rest)].concat(), order);

    let read = f.mark(&f.key, "user-1", &[&first], "READ").await;
    assert_eq!(read["data"]["markInAppItems"]["state"], "READ", "{read}");
    assert_eq!(read["data"]["markInAppItems"]["ids"], json!([first]));
    position(&read["data"]["markInAppItems"]["position"]);
    let archived = f.mark(&f.key, "user-1", &[&second], "ARCHIVED").await;
    assert_eq!(archived["data"]["markInAppItems"]["state"], "ARCHIVED");
    let feed = f
        .feed_until("user-1", |feed| feed["unreadCount"] == 1)
        .await;
    assert_eq!(state_of(&feed, &first), "READ");
    assert_eq!(state_of(&feed, &second), "ARCHIVED");
    assert_eq!(state_of(&feed, &third), "UNREAD");
    let only_archived = f.feed(&f.key, "user-1", Some(&["ARCHIVED"])).await;
    assert_eq!(only_archived["edges"].as_array().unwrap().len(), 1);
    assert!(only_archived["edges"][0]["node"]["archivedAt"].is_string());

    // Mark all read takes the unread one, and leaves the archived one archived.
    let all = f
        .app
        .graphql(
            Some(&f.key),
            "mutation { markAllInAppRead(recipientId: \"user-1\") { state ids position } }",
            json!({}),
        )
        .await;
    assert_eq!(
        all["data"]["markAllInAppRead"]["ids"],
        json!([third]),
        "{all}"
    );
    let feed = f
        .feed_until("user-1", |feed| feed["unreadCount"] == 0)
        .await;
    assert_eq!(state_of(&feed, &third), "READ");
    assert_eq!(state_of(&feed, &second), "ARCHIVED");
    // Unread again clears the read time.
    f.mark(&f.key, "user-1", &[&first], "UNREAD").await;
    let feed = f
        .feed_until("user-1", |feed| feed["unreadCount"] == 1)
        .await;
    let item = feed["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["node"]["id"] == first.as_str())
        .unwrap();
    assert!(item["node"]["readAt"].is_null(), "{item}");

    // Every step is in the log, on the recipient's feed stream.
    let marks: Vec<(String, String)> = sqlx::query_as(
        "SELECT stream_id, payload->>'state' FROM events WHERE event_type = 'InAppItemsMarked' ORDER BY global_position",
    )
    .fetch_all(f.app.store.pool())
    .await
    .unwrap();
    let stream = format!("inapp-feed-{}/user-1", f.tenant);
    assert_eq!(
        marks,
        ["read", "archived", "read", "unread"].map(|s| (stream.clone(), s.to_string()))
    );

    // An id that is not an item of this feed marks nothing.
    let stranger = f.mark(&f.key, "user-2", &[&first], "READ").await;
    assert_eq!(error_codes(&stranger), ["VALIDATION"], "{stranger}");
    assert_eq!(
        stranger["errors"][0]["extensions"]["fields"][0]["path"],
        "ids[0]"
    );

    // Rebuilt from the log, the read model is the same table.
    let live = feed_rows(&f).await;
    let done = projections::rebuild::rebuild(&f.app.store, &InAppFeedProjection::new(), |_| {})
        .await
        .expect("rebuilt");
    assert!(done.swapped, "{done:?}");
    assert_eq!(feed_rows(&f).await, live);
}

#[tokio::test]
async fn another_tenant_sees_and_marks_nothing_and_scopes_hold() {
    let f = Feed::start().await;
    let (_, other_key) = f.app.tenant().await;
    let id = f.send("user-1", "Mine").await;
    f.feed_until("user-1", |feed| feed["unreadCount"] == 1)
        .await;

    let theirs = f.feed(&other_key, "user-1", None).await;
    assert_eq!(theirs["unreadCount"], 0);
    assert_eq!(theirs["edges"], json!([]));
    let marked = f.mark(&other_key, "user-1", &[&id], "READ").await;
    assert_eq!(error_codes(&marked), ["VALIDATION"], "{marked}");

    // Reading takes `read`, marking takes `send`.
    let issued = f
        .app
        .graphql(
            Some(&f.key),
            "mutation { issueApiKey(name: \"reader\", scopes: [READ]) { apiKey } }",
            json!({}),
        )
        .await;
    let reader = issued["data"]["issueApiKey"]["apiKey"].as_str().unwrap();
    assert_eq!(f.feed(reader, "user-1", None).await["unreadCount"], 1);
    let refused = f.mark(reader, "user-1", &[&id], "READ").await;
    assert_eq!(error_codes(&refused), ["FORBIDDEN"], "{refused}");
    let anonymous = f.app.graphql(None, FEED, json!({ "r": "user-1" })).await;
    assert_eq!(error_codes(&anonymous), ["UNAUTHENTICATED"]);
}

#[tokio::test]
async fn a_projection_that_saw_only_the_deliveries_reads_the_rest_from_the_log() {
    let f = Feed::start().await;
    f.send("user-1", "One").await;
    f.send("user-2", "Two").await;
    f.feed_until("user-2", |feed| feed["unreadCount"] == 1)
        .await;
    f.feed_until("user-1", |feed| feed["unreadCount"] == 1)
        .await;
    let live = feed_rows(&f).await;
    let sent = f
        .app
        .store
        .read_all(
            Checkpoint::ORIGIN,
            100,
            &ReadFilter {
                tenant_id: None,
                event_types: Some(vec!["NotificationSent".into()]),
                ..ReadFilter::default()
            },
        )
        .await
        .unwrap()
        .events;
    assert_eq!(sent.len(), 2);
    let mut tx = f.app.store.pool().begin().await.unwrap();
    sqlx::query("DELETE FROM inapp_feed")
        .execute(&mut *tx)
        .await
        .unwrap();
    // No request or attempt in hand: the projection must look them up.
    InAppFeedProjection::new()
        .handle_batch(&mut tx, &sent)
        .await
        .expect("handled");
    let rebuilt: Vec<Value> =
        sqlx::query_scalar("SELECT to_jsonb(f) FROM inapp_feed f ORDER BY notification_id")
            .fetch_all(&mut *tx)
            .await
            .unwrap();
    assert_eq!(rebuilt, live);
}

pub(crate) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A graphql-transport-ws connection, acknowledged.
async fn connect(app: &TestApp, key: &str) -> Socket {
    let mut socket = open_socket(app, json!({ "apiKey": key })).await;
    let ack = next(&mut socket, Duration::from_secs(10)).await.unwrap();
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    socket
}

/// A graphql-transport-ws connection that sent `connection_init` with
/// `payload`, before any answer.
pub(crate) async fn open_socket(app: &TestApp, payload: Value) -> Socket {
    let url = format!("{}/graphql/ws", app.base.replacen("http://", "ws://", 1));
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    send(
        &mut socket,
        json!({ "type": "connection_init", "payload": payload }),
    )
    .await;
    socket
}

pub(crate) async fn send(socket: &mut Socket, message: Value) {
    socket
        .send(Message::text(message.to_string()))
        .await
        .unwrap();
}

/// The position of the log's last event, for a subscription from here on:
/// subscriptions start asynchronously, and a live-only one misses what is
/// sent before it has started, while one from a position misses nothing.
pub(crate) async fn log_end(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT COALESCE(max(global_position), 0) FROM events")
        .fetch_one(app.store.pool())
        .await
        .expect("the log's end")
}

pub(crate) async fn subscribe(socket: &mut Socket, id: &str, arguments: &str) {
    let query = format!(
        "subscription {{ inappFeed({arguments}) {{ position change ids state at item {{ id title state recipientId }} }} }}"
    );
    send(
        socket,
        json!({ "id": id, "type": "subscribe", "payload": { "query": query } }),
    )
    .await;
}

/// The next JSON message within `within`, or `None`.
pub(crate) async fn next(socket: &mut Socket, within: Duration) -> Option<Value> {
    loop {
        let message = tokio::time::timeout(within, socket.next()).await.ok()??;
        if let Message::Text(text) = message.unwrap() {
            return Some(serde_json::from_str(&text).unwrap());
        }
    }
}

/// The next feed update; panics on anything else.
pub(crate) async fn update(socket: &mut Socket) -> Value {
    let message = next(socket, Duration::from_secs(15))
        .await
        .expect("an update in time");
    assert_eq!(message["type"], "next", "{message}");
    message["payload"]["data"]["inappFeed"].clone()
}

#[tokio::test]
async fn a_subscriber_gets_its_recipients_items_live_and_can_resume() {
    let f = Feed::start().await;
    let (_, other_key) = f.app.tenant().await;
    let mut mine = connect(&f.app, &f.key).await;
    let end = log_end(&f.app).await;
    subscribe(
        &mut mine,
        "1",
        &format!("recipientId: \"user-1\", after: \"{end}\""),
    )
    .await;
    // Another tenant following a recipient of the same name, from the start of the log.
    let mut theirs = connect(&f.app, &other_key).await;
    subscribe(&mut theirs, "1", "recipientId: \"user-1\", after: \"0\"").await;
    f.send("user-2", "Not for this feed").await;
    let id = f.send("user-1", "Hello live").await;
    let delivered = update(&mut mine).await;
    assert_eq!(delivered["change"], "DELIVERED", "{delivered}");
    assert_eq!(delivered["ids"], json!([id]));
    assert_eq!(delivered["state"], "UNREAD");
    assert_eq!(delivered["item"]["id"], id.as_str());
    assert_eq!(delivered["item"]["title"], "Hello live");
    assert_eq!(delivered["item"]["recipientId"], "user-1");

    // Marked before the read model may have caught up: the log says it was delivered.
    let read = f.mark(&f.key, "user-1", &[&id], "READ").await;
    assert!(read["errors"].is_null(), "{read}");
    let marked = update(&mut mine).await;
    assert_eq!(marked["change"], "MARKED");
    assert_eq!(marked["ids"], json!([id]));
    assert_eq!(marked["state"], "READ");
    assert!(marked["item"].is_null());
    assert_eq!(
        marked["position"],
        read["data"]["markInAppItems"]["position"]
    );

    // Resuming after the delivery gives the mark, and not the delivery again.
    let mut resumed = connect(&f.app, &f.key).await;
    subscribe(
        &mut resumed,
        "1",
        &format!("recipientId: \"user-1\", after: {}", delivered["position"]),
    )
    .await;
    let again = update(&mut resumed).await;
    assert_eq!(again["change"], "MARKED", "{again}");
    assert_eq!(again["position"], marked["position"]);
    // And from the start of the log, the whole story in order (an Int
    // position is still accepted, for clients written before the scalar).
    subscribe(&mut resumed, "2", "recipientId: \"user-1\", after: 0").await;
    let story = [update(&mut resumed).await, update(&mut resumed).await];
    assert_eq!(
        story.map(|u| u["change"].clone()),
        [json!("DELIVERED"), json!("MARKED")]
    );

    let leaked = next(&mut theirs, Duration::from_millis(1500)).await;
    assert!(leaked.is_none(), "another tenant saw {leaked:?}");
}

#[tokio::test]
async fn a_templated_in_app_message_shows_its_rendered_words_in_the_feed() {
    let f = Feed::start().await;
    let published = f
        .app
        .graphql(
            Some(&f.key),
            "mutation($input: PublishTemplateInput!) { publishTemplate(input: $input) { number } }",
            json!({ "input": {
                "key": "invoice.ready",
                "defaultLocale": "en",
                "variables": [{ "name": "number", "type": "NUMBER" }],
                "locales": [{ "locale": "en", "inApp": {
                    "title": "Invoice {{ number }} is ready",
                    "body": "Open it to pay invoice {{ number }}." } }]
            }}),
        )
        .await;
    assert!(published["errors"].is_null(), "{published}");
    let sent = f
        .app
        .graphql(
            Some(&f.key),
            "mutation($input: SendNotificationInput!) { sendNotification(input: $input) { notification { id } } }",
            json!({ "input": {
                "recipient": { "id": "user-9" },
                "channels": ["IN_APP"],
                "template": { "key": "invoice.ready", "variables": { "number": 42 } },
            }}),
        )
        .await;
    assert!(sent["errors"].is_null(), "{sent}");
    let feed = f
        .feed_until("user-9", |feed| feed["unreadCount"] == 1)
        .await;
    let item = &feed["edges"][0]["node"];
    assert_eq!(item["title"], "Invoice 42 is ready");
    assert_eq!(item["text"], "Open it to pay invoice 42.");
}
