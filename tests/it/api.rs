//! The GraphQL and REST API: authentication, scopes, tenant confinement,
//! idempotency, validation, pagination, read-your-writes, and the schema file.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::support::{TestApp, error_codes};

const SEND: &str = r#"mutation($input: SendNotificationInput!) {
  sendNotification(input: $input) { duplicate notification { id status channels timeline { type position } } }
}"#;

const GET: &str = r#"query($id: ID!) {
  notification(id: $id) { id status priority tags timeline { type version data } }
}"#;

fn email_input(to: &str) -> Value {
    json!({
        "recipient": { "id": "user-1", "email": to },
        "channels": ["EMAIL"],
        "content": { "title": "Hello", "text": "Your code is 123456" },
        "tags": ["otp"],
    })
}

/// `sendNotification` over HTTP on a task of its own, so many run at once.
fn spawn_send(app: &TestApp, key: &str, input: Value) -> tokio::task::JoinHandle<Value> {
    let (base, key) = (app.base.clone(), key.to_string());
    tokio::spawn(async move {
        reqwest::Client::new()
            .post(format!("{base}/graphql"))
            .bearer_auth(key)
            .json(&json!({ "query": SEND, "variables": { "input": input } }))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    })
}

async fn issue_key(app: &TestApp, admin: &str, scopes: &[&str]) -> String {
    let response = app
        .graphql(
            Some(admin),
            "mutation($scopes: [Scope!]!) { issueApiKey(name: \"limited\", scopes: $scopes) { apiKey } }",
            json!({ "scopes": scopes }),
        )
        .await;
    response["data"]["issueApiKey"]["apiKey"]
        .as_str()
        .expect("key issued")
        .to_string()
}

#[tokio::test]
async fn sends_and_reads_back_at_once_with_the_timeline() {
    let app = TestApp::start().await;
    let (_, key) = app.tenant().await;
    let sent = app
        .graphql(
            Some(&key),
            SEND,
            json!({ "input": email_input("ada@example.com") }),
        )
        .await;
    assert!(sent["errors"].is_null(), "{sent}");
    let notification = &sent["data"]["sendNotification"]["notification"];
    assert_eq!(notification["status"], "REQUESTED");
    assert_eq!(sent["data"]["sendNotification"]["duplicate"], false);

    let read = app
        .graphql(Some(&key), GET, json!({ "id": notification["id"] }))
        .await;
    let read = &read["data"]["notification"];
    assert_eq!(read["id"], notification["id"]);
    assert_eq!(read["priority"], "NORMAL");
    assert_eq!(read["tags"], json!(["otp"]));
    assert_eq!(read["timeline"][0]["type"], "NotificationRequested");
    assert_eq!(read["timeline"][0]["version"], 1);
}

#[tokio::test]
async fn unauthenticated_and_wrong_scope_calls_are_refused() {
    let app = TestApp::start().await;
    let (_, admin) = app.tenant().await;
    let input = json!({ "input": email_input("ada@example.com") });

    for key in [None, Some("hk_not-a-real-key")] {
        let response = app.graphql(key, SEND, input.clone()).await;
        assert_eq!(
            error_codes(&response),
            vec!["UNAUTHENTICATED"],
            "{response}"
        );
    }
    let reader = issue_key(&app, &admin, &["READ"]).await;
    let response = app.graphql(Some(&reader), SEND, input.clone()).await;
    assert_eq!(error_codes(&response), vec!["FORBIDDEN"]);
    let sender = issue_key(&app, &admin, &["SEND"]).await;
    let response = app
        .graphql(Some(&sender), "{ apiKeys { id } }", json!({}))
        .await;
    assert_eq!(error_codes(&response), vec!["FORBIDDEN"]);
    let response = app
        .graphql(
            Some(&sender),
            "{ notifications { edges { cursor } } }",
            json!({}),
        )
        .await;
    assert_eq!(error_codes(&response), vec!["FORBIDDEN"]);

    // A revoked key stops working at once.
    let keys = app
        .graphql(Some(&admin), "{ apiKeys { id prefix } }", json!({}))
        .await;
    let sender_id = keys["data"]["apiKeys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| sender.starts_with(k["prefix"].as_str().unwrap()))
        .unwrap()["id"]
        .clone();
    let revoked = app
        .graphql(
            Some(&admin),
            "mutation($id: ID!) { revokeApiKey(id: $id) }",
            json!({ "id": sender_id }),
        )
        .await;
    assert_eq!(revoked["data"]["revokeApiKey"], true, "{revoked}");
    let response = app.graphql(Some(&sender), SEND, input).await;
    assert_eq!(error_codes(&response), vec!["UNAUTHENTICATED"]);

    // The REST twin answers with HTTP statuses and the same codes.
    let rest = app
        .http
        .get(format!(
            "{}/api/notifications/00000000-0000-0000-0000-000000000000",
            app.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status(), 401);
    let body: Value = rest.json().await.unwrap();
    assert_eq!(body["error"]["code"], "UNAUTHENTICATED");
}

#[tokio::test]
async fn one_tenant_cannot_see_or_touch_another_tenants_data() {
    let app = TestApp::start().await;
    let (_, key_a) = app.tenant().await;
    let (_, key_b) = app.tenant().await;
    let sent = app
        .graphql(
            Some(&key_a),
            SEND,
            json!({ "input": email_input("ada@example.com") }),
        )
        .await;
    let id = sent["data"]["sendNotification"]["notification"]["id"].clone();

    let read = app.graphql(Some(&key_b), GET, json!({ "id": id })).await;
    assert_eq!(error_codes(&read), vec!["NOT_FOUND"]);
    let cancel = app
        .graphql(
            Some(&key_b),
            "mutation($id: ID!) { cancelNotification(id: $id) { status } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(error_codes(&cancel), vec!["NOT_FOUND"]);
    let list = app
        .graphql(
            Some(&key_b),
            "{ notifications { edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(list["data"]["notifications"]["edges"], json!([]));
    let rest = app
        .http
        .get(format!(
            "{}/api/notifications/{}",
            app.base,
            id.as_str().unwrap()
        ))
        .bearer_auth(&key_b)
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status(), 404);

    // B cannot revoke A's keys, nor list them.
    let keys_a = app
        .graphql(Some(&key_a), "{ apiKeys { id } }", json!({}))
        .await;
    let a_key_id = keys_a["data"]["apiKeys"][0]["id"].clone();
    let revoke = app
        .graphql(
            Some(&key_b),
            "mutation($id: ID!) { revokeApiKey(id: $id) }",
            json!({ "id": a_key_id }),
        )
        .await;
    assert_eq!(error_codes(&revoke), vec!["NOT_FOUND"]);
    let keys_b = app
        .graphql(Some(&key_b), "{ apiKeys { id } }", json!({}))
        .await;
    assert_eq!(keys_b["data"]["apiKeys"].as_array().unwrap().len(), 1);
    assert_ne!(keys_b["data"]["apiKeys"][0]["id"], a_key_id);

    // A still owns and can cancel its notification.
    let cancel = app
        .graphql(
            Some(&key_a),
            "mutation($id: ID!) { cancelNotification(id: $id) { status } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(
        cancel["data"]["cancelNotification"]["status"], "CANCELLED",
        "{cancel}"
    );
}

/// Concurrent single sends share transactions (group commit), yet each
/// gets its own answer: a bad one fails alone, a repeated key finds its
/// original, the same key with another request is a conflict.
#[tokio::test]
async fn concurrent_sends_of_every_kind_each_get_their_own_answer() {
    let app = TestApp::start().await;
    let (tenant, key) = app.tenant().await;
    let mut inputs = Vec::new();
    for i in 0..30 {
        inputs.push(("new", email_input(&format!("user{i}@example.com"))));
    }
    for _ in 0..5 {
        inputs.push(("invalid", email_input("not an address")));
    }
    let mut keyed = email_input("keyed@example.com");
    keyed["idempotencyKey"] = json!("invoice-7");
    for _ in 0..10 {
        inputs.push(("keyed", keyed.clone()));
    }
    let sends: Vec<_> = inputs
        .into_iter()
        .map(|(kind, input)| {
            let send = spawn_send(&app, &key, input);
            async move { (kind, send.await.unwrap()) }
        })
        .collect();
    let mut new_ids = HashSet::new();
    let mut keyed_ids = HashSet::new();
    let mut keyed_originals = 0;
    for send in sends {
        let (kind, response) = send.await;
        let payload = &response["data"]["sendNotification"];
        match kind {
            "invalid" => assert_eq!(error_codes(&response), vec!["VALIDATION"], "{response}"),
            "new" => {
                assert!(response["errors"].is_null(), "{response}");
                assert_eq!(payload["duplicate"], false);
                assert_eq!(payload["notification"]["status"], "REQUESTED", "{response}");
                new_ids.insert(payload["notification"]["id"].as_str().unwrap().to_string());
            }
            _ => {
                assert!(response["errors"].is_null(), "{response}");
                keyed_ids.insert(payload["notification"]["id"].as_str().unwrap().to_string());
                keyed_originals += usize::from(payload["duplicate"] == false);
            }
        }
    }
    assert_eq!(new_ids.len(), 30);
    assert_eq!((keyed_ids.len(), keyed_originals), (1, 1));
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM notification_status WHERE tenant_id = $1")
            .bind(&tenant)
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    assert_eq!(stored, 31);
    // Each notification's events name the request's caller.
    let actors: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT metadata ->> 'correlation_id') FROM events \
         WHERE tenant_id = $1 AND event_type = 'NotificationRequested'",
    )
    .bind(&tenant)
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!(actors, 31);
}

#[tokio::test]
async fn fifty_concurrent_identical_sends_create_one_notification() {
    let app = TestApp::start().await;
    let (tenant, key) = app.tenant().await;
    let mut input = email_input("ada@example.com");
    input["idempotencyKey"] = json!("order-42-shipped");
    let sends: Vec<_> = (0..50)
        .map(|_| spawn_send(&app, &key, input.clone()))
        .collect();
    let mut ids = HashSet::new();
    let mut originals = 0;
    for send in sends {
        let response = send.await.unwrap();
        assert!(response["errors"].is_null(), "{response}");
        let payload = &response["data"]["sendNotification"];
        ids.insert(payload["notification"]["id"].as_str().unwrap().to_string());
        if payload["duplicate"] == false {
            originals += 1;
        }
    }
    assert_eq!(ids.len(), 1);
    assert_eq!(originals, 1);
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM notification_status WHERE tenant_id = $1")
            .bind(&tenant)
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    assert_eq!(stored, 1);

    // The same key with a different request is a conflict, not a duplicate.
    let mut changed = input.clone();
    changed["content"]["text"] = json!("something else");
    let response = app
        .graphql(Some(&key), SEND, json!({ "input": changed }))
        .await;
    assert_eq!(error_codes(&response), vec!["IDEMPOTENCY_CONFLICT"]);
}

#[tokio::test]
async fn validation_errors_name_each_field() {
    let app = TestApp::start().await;
    let (_, key) = app.tenant().await;
    let input = json!({
        "recipient": { "email": "not-an-email", "phone": "12345", "timezone": "Mars/Base" },
        "channels": ["EMAIL", "SMS"],
        "content": { "title": "Hi", "html": "x".repeat(300 * 1024) },
    });
    let response = app
        .graphql(Some(&key), SEND, json!({ "input": input }))
        .await;
    assert_eq!(error_codes(&response), vec!["VALIDATION"]);
    let fields: Vec<&str> = response["errors"][0]["extensions"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    for path in [
        "recipient.email",
        "recipient.phone",
        "recipient.timezone",
        "content.html",
    ] {
        assert!(fields.contains(&path), "{path} missing from {fields:?}");
    }

    let template = json!({
        "recipient": { "email": "ada@example.com" },
        "channels": ["EMAIL"],
        "template": { "key": "welcome", "version": 7 },
    });
    let response = app
        .graphql(Some(&key), SEND, json!({ "input": template }))
        .await;
    assert_eq!(error_codes(&response), vec!["VALIDATION"]);
    assert_eq!(
        response["errors"][0]["extensions"]["fields"][0]["path"],
        "template.key"
    );

    // Errors from the GraphQL layer itself carry a code too.
    let response = app
        .graphql(Some(&key), "{ notifications { nope } }", json!({}))
        .await;
    assert_eq!(error_codes(&response), vec!["VALIDATION"]);
    let response = app
        .graphql(Some(&key), GET, json!({ "id": "not-a-uuid" }))
        .await;
    assert_eq!(error_codes(&response), vec!["VALIDATION"]);
}

#[tokio::test]
async fn batch_sends_accept_the_valid_items_and_report_the_rest() {
    let app = TestApp::start().await;
    let (_, key) = app.tenant().await;
    let inputs = json!([
        email_input("a@example.com"),
        email_input("broken"),
        email_input("c@example.com")
    ]);
    let response = app
        .graphql(
            Some(&key),
            "mutation($inputs: [SendNotificationInput!]!) { sendNotifications(inputs: $inputs) { index notification { id } error { code fields { path } } } }",
            json!({ "inputs": inputs }),
        )
        .await;
    let results = response["data"]["sendNotifications"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert!(results[0]["notification"]["id"].is_string());
    assert_eq!(results[1]["error"]["code"], "VALIDATION");
    assert_eq!(results[1]["error"]["fields"][0]["path"], "recipient.email");
    assert!(results[2]["notification"]["id"].is_string());
}

#[tokio::test]
async fn pages_return_every_row_once_while_rows_arrive() {
    let app = TestApp::start().await;
    let (_, key) = app.tenant().await;
    let mut existing = HashSet::new();
    for i in 0..45 {
        let sent = app
            .graphql(
                Some(&key),
                SEND,
                json!({ "input": email_input(&format!("u{i}@example.com")) }),
            )
            .await;
        existing.insert(
            sent["data"]["sendNotification"]["notification"]["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let writer = {
        let (base, key) = (app.base.clone(), key.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            for i in 0..30 {
                client
                    .post(format!("{base}/graphql"))
                    .bearer_auth(&key)
                    .json(&json!({ "query": SEND, "variables": { "input": email_input(&format!("new{i}@example.com")) } }))
                    .send()
                    .await
                    .unwrap();
            }
        })
    };
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = app
            .graphql(
                Some(&key),
                "query($after: String) { notifications(first: 7, after: $after) { edges { cursor node { id } } pageInfo { hasNextPage endCursor } } }",
                json!({ "after": after }),
            )
            .await;
        let connection = &page["data"]["notifications"];
        for edge in connection["edges"].as_array().unwrap() {
            seen.push(edge["node"]["id"].as_str().unwrap().to_string());
        }
        if connection["pageInfo"]["hasNextPage"] == false {
            break;
        }
        after = connection["pageInfo"]["endCursor"]
            .as_str()
            .map(String::from);
    }
    writer.await.unwrap();
    let unique: HashSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no row twice");
    assert!(
        existing.is_subset(&unique),
        "every row that existed is returned"
    );

    let filtered = app
        .graphql(Some(&key), "{ notifications(first: 100, filter: { status: [CANCELLED] }) { edges { node { id } } } }", json!({}))
        .await;
    assert_eq!(filtered["data"]["notifications"]["edges"], json!([]));
    let by_tag = app
        .graphql(Some(&key), "{ notifications(first: 100, filter: { tag: \"otp\", channel: EMAIL }) { edges { node { id } } } }", json!({}))
        .await;
    assert_eq!(
        by_tag["data"]["notifications"]["edges"]
            .as_array()
            .unwrap()
            .len(),
        75
    );
}

#[tokio::test]
async fn the_rest_twin_sends_with_an_idempotency_header_and_reads_back() {
    let app = TestApp::start().await;
    let (_, key) = app.tenant().await;
    let body = json!({
        "recipient": { "email": "ada@example.com" },
        "channels": ["email"],
        "content": { "title": "Hi", "text": "Hello" },
    });
    let send = || {
        app.http
            .post(format!("{}/api/notifications", app.base))
            .bearer_auth(&key)
            .header("Idempotency-Key", "rest-1")
            .json(&body)
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    let second = send().await.unwrap();
    assert_eq!(second.status(), 200);
    let second: Value = second.json().await.unwrap();
    assert_eq!(second["duplicate"], true);
    assert_eq!(first["notification_id"], second["notification_id"]);

    let read: Value = app
        .http
        .get(format!(
            "{}/api/notifications/{}",
            app.base,
            first["notification_id"].as_str().unwrap()
        ))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read["status"], "REQUESTED");
    assert_eq!(read["events"][0]["type"], "NotificationRequested");

    let bad = app
        .http
        .post(format!("{}/api/notifications", app.base))
        .bearer_auth(&key)
        .json(&json!({ "recipient": { "email": "nope" }, "channels": ["email"], "content": { "text": "x" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let bad: Value = bad.json().await.unwrap();
    assert_eq!(bad["error"]["code"], "VALIDATION");
    assert_eq!(bad["error"]["fields"][0]["path"], "recipient.email");
}

#[test]
fn schema_graphql_matches_the_code() {
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql"))
        .expect("schema.graphql at the repository root");
    let generated = herald::api::graphql::sdl();
    assert!(
        committed == generated,
        "schema.graphql is out of date: run `cargo run -- schema > schema.graphql`"
    );
}

#[tokio::test]
async fn oversized_graphql_bodies_are_refused() {
    let app = TestApp::start().await;
    let (_, key) = app.tenant().await;
    let padding = "x".repeat(17 * 1024 * 1024);
    let response = app
        .http
        .post(format!("{}/graphql", app.base))
        .bearer_auth(&key)
        .json(&json!({ "query": "{ viewer { tenantId } }", "variables": { "padding": padding } }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
}

/// POSTs `body` as `content_type`; the status and the JSON answer.
async fn post_raw(
    app: &TestApp,
    key: &str,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let answer = app
        .http
        .post(format!("{}{path}", app.base))
        .bearer_auth(key)
        .header("Content-Type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    (status, answer.json().await.expect("a JSON answer"))
}

#[tokio::test]
async fn unreadable_oversized_and_mistyped_bodies_answer_json_in_the_routes_shape() {
    let app = TestApp::start_with(&herald::config::Config {
        max_request_bytes: 4096,
        ..herald::config::Config::default()
    })
    .await;
    let (_, key) = app.tenant().await;
    let json = "application/json";
    for (body, what) in [
        (b"[1,2,3]".to_vec(), "an array of numbers"),
        (br#"{"query": "{ viewer"#.to_vec(), "truncated JSON"),
        (b"{\"query\": \"\xff\xfe\"}".to_vec(), "invalid UTF-8"),
    ] {
        let (status, answer) = post_raw(&app, &key, "/graphql", json, body).await;
        assert_eq!(status, 400, "{what}: {answer}");
        assert_eq!(error_codes(&answer), ["BAD_REQUEST"], "{what}: {answer}");
        assert!(answer["errors"][0]["message"].is_string(), "{answer}");
    }

    let oversized = vec![b' '; 5000];
    let (status, answer) = post_raw(&app, &key, "/graphql", json, oversized.clone()).await;
    assert_eq!(status, 413);
    assert_eq!(error_codes(&answer), ["PAYLOAD_TOO_LARGE"], "{answer}");
    let (status, answer) = post_raw(&app, &key, "/api/notifications", json, oversized).await;
    assert_eq!(status, 413);
    assert_eq!(answer["error"]["code"], "PAYLOAD_TOO_LARGE", "{answer}");

    // Without a Content-Length the limit cuts the body while GraphQL reads it.
    let (head, answer) = chunked_graphql_post(&app, &key, &vec![b' '; 5000]).await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head} {answer:?}");
    assert!(answer.contains("PAYLOAD_TOO_LARGE"), "{answer}");

    let query = br#"{"query": "{ viewer { tenantId } }"}"#.to_vec();
    for content_type in ["text/plain", "application/x-www-form-urlencoded"] {
        let (status, answer) = post_raw(&app, &key, "/graphql", content_type, query.clone()).await;
        assert_eq!(status, 415);
        assert_eq!(error_codes(&answer), ["UNSUPPORTED_MEDIA_TYPE"], "{answer}");
        let send = json!({ "recipient": { "email": "ada@example.com" }, "channels": ["email"], "content": { "text": "hi" } });
        let (status, answer) = post_raw(
            &app,
            &key,
            "/api/notifications",
            content_type,
            send.to_string().into_bytes(),
        )
        .await;
        assert_eq!(status, 415);
        assert_eq!(
            answer["error"]["code"], "UNSUPPORTED_MEDIA_TYPE",
            "{answer}"
        );
    }
}

/// POSTs `body` to `/graphql` in one chunk of a chunked request (reqwest
/// always sends a length); the status line and the rest of the answer.
async fn chunked_graphql_post(app: &TestApp, key: &str, body: &[u8]) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = app.base.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST /graphql HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n",
        body.len()
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    // The server may answer and close before it has read everything.
    let _ = socket.write_all(body).await;
    let _ = socket.write_all(b"\r\n0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = socket.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, rest) = answer.split_once("\r\n").unwrap_or((&answer, ""));
    (head.to_string(), rest.to_string())
}
