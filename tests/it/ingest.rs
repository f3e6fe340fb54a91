//! Ingesting raw source events: the `ingestEvent` mutation, the streaming
//! NDJSON bulk endpoint, `herald ingest`, duplicates, tenant confinement and
//! the published JSON Schema.

use std::time::Instant;

use serde_json::{Value, json};
use sqlx::ConnectOptions;

use crate::support::{TestApp, error_codes, fresh_database, position};

const INGEST: &str = r#"mutation($input: IngestEventInput!) {
  ingestEvent(input: $input) { eventId position duplicate }
}"#;

fn event(source: &str, event_id: &str) -> Value {
    json!({
        "source": source,
        "entityType": "invoice",
        "entityId": "inv_42",
        "eventType": "invoice.paid",
        "occurredAt": "2025-10-29T19:59:00Z",
        "payload": { "amount": 1200, "currency": "EUR" },
        "eventId": event_id,
    })
}

/// The same event as one NDJSON line (the wire names are snake_case).
fn line(source: &str, event_id: &str, entity_id: &str) -> String {
    json!({
        "source": source,
        "entity_type": "order",
        "entity_id": entity_id,
        "event_type": "order.created",
        "occurred_at": "2025-10-29T19:59:00Z",
        "payload": { "total": 99 },
        "event_id": event_id,
    })
    .to_string()
}

async fn ingest(app: &TestApp, key: &str, input: Value) -> Value {
    let response = app
        .graphql(Some(key), INGEST, json!({ "input": input }))
        .await;
    assert!(response["errors"].is_null(), "{response}");
    response["data"]["ingestEvent"].clone()
}

async fn bulk(app: &TestApp, key: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let response = app
        .http
        .post(format!("{}/api/events/bulk", app.base))
        .bearer_auth(key)
        .header("Content-Type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .expect("bulk request sent");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON summary"))
}

/// (originals, duplicates) in the ingest table for a tenant.
async fn counts(app: &TestApp, tenant: &str) -> (i64, i64) {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE NOT duplicate), count(*) FILTER (WHERE duplicate) \
         FROM ingested_events WHERE tenant_id = $1",
    )
    .bind(tenant)
    .fetch_one(app.store.pool())
    .await
    .unwrap()
}

/// The stored log event with the given log event id: (stream, type, payload).
async fn stored(app: &TestApp, event_id: &str) -> (String, String, Value) {
    sqlx::query_as(
        "SELECT stream_id, event_type, payload FROM events WHERE event_id = $1::text::uuid",
    )
    .bind(event_id)
    .fetch_one(app.store.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn a_repeated_event_id_is_stored_as_a_flagged_duplicate() {
    let app = TestApp::start().await;
    let (tenant, key) = app.tenant().await;

    let first = ingest(&app, &key, event("billing", "evt-1")).await;
    assert_eq!(first["duplicate"], false);
    let again = ingest(&app, &key, event("billing", "evt-1")).await;
    assert_eq!(again["duplicate"], true);
    assert_ne!(again["eventId"], first["eventId"], "both are stored");
    assert!(position(&again["position"]) > position(&first["position"]));
    // The same id from another source is another event.
    let other = ingest(&app, &key, event("shop", "evt-1")).await;
    assert_eq!(other["duplicate"], false);

    let (stream, event_type, payload) = stored(&app, first["eventId"].as_str().unwrap()).await;
    assert_eq!(stream, format!("entity-{tenant}/invoice/inv_42"));
    assert_eq!(event_type, "SourceEventIngested");
    assert_eq!(payload["duplicate"], false);
    assert_eq!(payload["source_event"]["event_id"], "evt-1");
    assert_eq!(payload["source_event"]["payload"]["currency"], "EUR");
    let (_, _, payload) = stored(&app, again["eventId"].as_str().unwrap()).await;
    assert_eq!(payload["duplicate"], true);
    let versions: Vec<i32> = sqlx::query_scalar(
        "SELECT stream_version FROM events WHERE stream_id = $1 ORDER BY stream_version",
    )
    .bind(&stream)
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    assert_eq!(versions, [1, 2, 3], "one entity, one stream");
    assert_eq!(counts(&app, &tenant).await, (2, 1));
}

#[tokio::test]
async fn twenty_concurrent_identical_ingests_store_exactly_one_original() {
    let app = TestApp::start().await;
    let (tenant, key) = app.tenant().await;
    let ingests: Vec<_> = (0..20)
        .map(|_| {
            let (base, key) = (app.base.clone(), key.clone());
            tokio::spawn(async move {
                reqwest::Client::new()
                    .post(format!("{base}/graphql"))
                    .bearer_auth(key)
                    .json(&json!({ "query": INGEST, "variables": { "input": event("billing", "evt-race") } }))
                    .send()
                    .await
                    .unwrap()
                    .json::<Value>()
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut originals = 0;
    for ingest in ingests {
        let response = ingest.await.unwrap();
        assert!(response["errors"].is_null(), "{response}");
        if response["data"]["ingestEvent"]["duplicate"] == false {
            originals += 1;
        }
    }
    assert_eq!(originals, 1);
    assert_eq!(counts(&app, &tenant).await, (1, 19));
    let in_log: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE tenant_id = $1 AND event_type = 'SourceEventIngested'",
    )
    .bind(&tenant)
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!(in_log, 20);
    let flagged_originals: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE tenant_id = $1 AND NOT (payload->>'duplicate')::bool",
    )
    .bind(&tenant)
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!(flagged_originals, 1, "the log agrees with the table");
}

#[tokio::test]
async fn invalid_events_are_refused_field_by_field() {
    let app = TestApp::start().await;
    let (tenant, key) = app.tenant().await;
    let input = json!({
        "source": "Billing Service",
        "entityType": "Invoice",
        "entityId": "has space",
        "eventType": "invoice.paid",
        "occurredAt": "2999-01-01T00:00:00Z",
        "payload": [1, 2],
        "eventId": "evt-1",
    });
    let response = app
        .graphql(Some(&key), INGEST, json!({ "input": input }))
        .await;
    assert_eq!(error_codes(&response), vec!["VALIDATION"], "{response}");
    let fields: Vec<&str> = response["errors"][0]["extensions"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "source",
            "entity_type",
            "entity_id",
            "occurred_at",
            "payload"
        ]
    );
    assert_eq!(counts(&app, &tenant).await, (0, 0));

    // Every field is required by the schema itself, so a missing one is
    // refused before Herald reads the rest.
    let mut missing = event("billing", "evt-1");
    missing.as_object_mut().unwrap().remove("entityType");
    let response = app
        .graphql(Some(&key), INGEST, json!({ "input": missing }))
        .await;
    assert_eq!(error_codes(&response), vec!["VALIDATION"], "{response}");
    assert!(
        response["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("entityType"),
        "{response}"
    );
    assert_eq!(counts(&app, &tenant).await, (0, 0));

    let response = app
        .graphql(None, INGEST, json!({ "input": event("billing", "evt-1") }))
        .await;
    assert_eq!(error_codes(&response), vec!["UNAUTHENTICATED"]);
    let reader = app
        .graphql(
            Some(&key),
            "mutation { issueApiKey(name: \"reader\", scopes: [READ]) { apiKey } }",
            json!({}),
        )
        .await;
    let reader = reader["data"]["issueApiKey"]["apiKey"].as_str().unwrap();
    let response = app
        .graphql(
            Some(reader),
            INGEST,
            json!({ "input": event("billing", "evt-1") }),
        )
        .await;
    assert_eq!(error_codes(&response), vec!["FORBIDDEN"]);
    let (status, body) = bulk(&app, reader, line("billing", "evt-1", "o-1")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("FORBIDDEN"))
    );
}

#[tokio::test]
async fn bulk_ndjson_stores_the_good_lines_and_reports_the_rest() {
    let app = TestApp::start().await;
    let (tenant, key) = app.tenant().await;
    let lines = [
        line("shop", "e-1", "o-1"),                // 1 accepted
        line("shop", "e-2", "o-1"),                // 2 accepted
        String::new(),                             // 3 blank: skipped
        "{\"source\": \"shop\", oops".to_string(), // 4 not JSON
        line("shop", "e-1", "o-1"),                // 5 duplicate of 1
        line("Shop!", "e-9", "o 2").replace("\"occurred_at\":\"2025-10-29T19:59:00Z\",", ""), // 6 invalid fields
        r#"{"tenant_id": "someone-else"}"#.to_string(), // 7 unknown field
        format!("{}\r", line("shop", "e-3", "o-2")),    // 8 accepted (CRLF)
    ];
    let (status, summary) = bulk(&app, &key, lines.join("\n")).await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["lines"], 7, "{summary}");
    assert_eq!(summary["accepted"], 3);
    assert_eq!(summary["duplicates"], 1);
    assert_eq!(summary["rejected_count"], 3);
    let rejected = summary["rejected"].as_array().unwrap();
    let numbers: Vec<i64> = rejected
        .iter()
        .map(|r| r["line"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, [4, 6, 7]);
    assert_eq!(rejected[0]["errors"][0]["path"], "");
    let paths: Vec<&str> = rejected[1]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["source", "entity_id", "occurred_at"]);
    assert_eq!(rejected[2]["errors"][0]["path"], "tenant_id");

    // The good lines are in the log, on their entities' streams, in file order.
    let logged: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT stream_id, payload->'source_event'->>'event_id', (payload->>'duplicate')::bool \
         FROM events WHERE tenant_id = $1 AND event_type = 'SourceEventIngested' \
         ORDER BY stream_id, stream_version",
    )
    .bind(&tenant)
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    let o1 = format!("entity-{tenant}/order/o-1");
    let o2 = format!("entity-{tenant}/order/o-2");
    assert_eq!(
        logged,
        [
            (o1.clone(), "e-1".to_string(), false),
            (o1.clone(), "e-2".to_string(), false),
            (o1, "e-1".to_string(), true),
            (o2, "e-3".to_string(), false),
        ]
    );
    assert_eq!(counts(&app, &tenant).await, (3, 1));

    // Sending the same file again stores every line as a duplicate.
    let (_, again) = bulk(&app, &key, lines.join("\n")).await;
    assert_eq!(
        (again["accepted"].as_i64(), again["duplicates"].as_i64()),
        (Some(0), Some(4))
    );

    // Only NDJSON, and only with a key.
    let wrong_type = app
        .http
        .post(format!("{}/api/events/bulk", app.base))
        .bearer_auth(&key)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_type.status(), 415);
    let anonymous = app
        .http
        .post(format!("{}/api/events/bulk", app.base))
        .header("Content-Type", "application/x-ndjson")
        .body(line("shop", "e-4", "o-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn a_bulk_body_larger_than_the_request_limit_streams_through() {
    let app = TestApp::start().await;
    let (tenant, key) = app.tenant().await;
    const LINES: usize = 20_000;
    let padding = "x".repeat(900);
    let mut body = String::with_capacity(LINES * 1_200);
    for i in 0..LINES {
        let mut line: Value = serde_json::from_str(&line(
            "s3.orders",
            &format!("evt-{i}"),
            &format!("o-{}", i % 250),
        ))
        .unwrap();
        line["payload"]["padding"] = json!(padding);
        body.push_str(&line.to_string());
        body.push('\n');
    }
    let limit = herald::config::Config::default().max_request_bytes;
    assert!(
        body.len() > limit,
        "the body must exceed the router-wide limit"
    );

    let started = Instant::now();
    let (status, summary) = bulk(&app, &key, body).await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["accepted"], LINES);
    assert_eq!(summary["rejected_count"], 0);
    eprintln!("bulk ingest of {LINES} lines took {:?}", started.elapsed());
    assert_eq!(counts(&app, &tenant).await, (LINES as i64, 0));

    // Other routes keep their limit.
    let oversized = app
        .http
        .post(format!("{}/api/notifications", app.base))
        .bearer_auth(&key)
        .header("Content-Type", "application/json")
        .body(vec![b' '; limit + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(oversized.status(), 413);
}

#[tokio::test]
async fn duplicates_are_decided_per_tenant() {
    let app = TestApp::start().await;
    let (tenant_a, key_a) = app.tenant().await;
    let (tenant_b, key_b) = app.tenant().await;

    let a = ingest(&app, &key_a, event("billing", "evt-1")).await;
    assert_eq!(a["duplicate"], false);
    // B's first delivery of the same id is B's original.
    let b = ingest(&app, &key_b, event("billing", "evt-1")).await;
    assert_eq!(b["duplicate"], false);
    let b_again = ingest(&app, &key_b, event("billing", "evt-1")).await;
    assert_eq!(b_again["duplicate"], true);
    let (_, bulk_b) = bulk(&app, &key_b, line("billing", "evt-2", "o-1")).await;
    assert_eq!(bulk_b["accepted"], 1);
    let (_, bulk_a) = bulk(&app, &key_a, line("billing", "evt-2", "o-1")).await;
    assert_eq!(bulk_a["accepted"], 1, "B's event is not A's duplicate");

    assert_eq!(counts(&app, &tenant_a).await, (2, 0));
    assert_eq!(counts(&app, &tenant_b).await, (2, 1));
    // Same entity ids, different tenants: different streams.
    let (stream_a, _, _) = stored(&app, a["eventId"].as_str().unwrap()).await;
    let (stream_b, _, _) = stored(&app, b["eventId"].as_str().unwrap()).await;
    assert_ne!(stream_a, stream_b);
    let tenants: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT tenant_id FROM events WHERE stream_id = $1")
            .bind(&stream_b)
            .fetch_all(app.store.pool())
            .await
            .unwrap();
    assert_eq!(tenants, [tenant_b]);
}

#[tokio::test]
async fn the_event_schema_is_published_without_a_key() {
    let app = TestApp::start().await;
    let response = app
        .http
        .get(format!("{}/schemas/event.json", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/schema+json"
    );
    let schema: Value = response.json().await.unwrap();
    assert!(
        schema["$schema"]
            .as_str()
            .is_some_and(|s| s.contains("json-schema.org")),
        "{schema}"
    );
    let mut required: Vec<&str> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    required.sort();
    assert_eq!(
        required,
        [
            "entity_id",
            "entity_type",
            "event_id",
            "event_type",
            "occurred_at",
            "payload",
            "source"
        ]
    );
    assert_eq!(schema["additionalProperties"], false);
    assert_eq!(schema["properties"]["event_id"]["maxLength"], 255);
}

#[tokio::test]
async fn herald_ingest_stores_a_file_and_prints_the_summary() {
    let db = fresh_database().await;
    let store = herald::eventstore::EventStore::new(db.pool.clone());
    let tenant = herald::commands::tenants::create_tenant(
        &store,
        "CLI tenant",
        &herald::commands::Actor::new("test"),
    )
    .await
    .unwrap()
    .tenant_id
    .to_string();
    let dir = std::env::temp_dir().join(format!("herald-ingest-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("drop.ndjson");
    let mut contents: String = (0..1_200)
        .map(|i| line("s3.orders", &format!("evt-{i}"), &format!("o-{}", i % 7)) + "\n")
        .collect();
    contents.push_str("not json\n");
    contents.push_str(&line("s3.orders", "evt-0", "o-0"));
    std::fs::write(&file, contents).unwrap();

    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("ingest")
        .arg(&file)
        .args(["--tenant", &tenant])
        .current_dir(&dir)
        .env("DATABASE_URL", db.options.to_url_lossy().as_str())
        .env("HERALD_DATA_DIR", &dir)
        .env("HERALD_LOG_FILTER", "warn")
        .env_remove("HERALD_CONFIG")
        .output()
        .await
        .expect("herald runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let summary: Value = serde_json::from_slice(&output.stdout).expect("a JSON summary");
    assert_eq!(summary["lines"], 1_202, "{summary}");
    assert_eq!(summary["accepted"], 1_200);
    assert_eq!(summary["duplicates"], 1);
    assert_eq!(summary["rejected_count"], 1);
    assert_eq!(summary["rejected"][0]["line"], 1_201);
    assert!(stderr.contains("1202 lines read"), "{stderr}");
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM ingested_events WHERE tenant_id = $1")
            .bind(&tenant)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(stored, 1_201);

    let unknown = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("ingest")
        .arg(&file)
        .args(["--tenant", "t_nobody"])
        .current_dir(&dir)
        .env("DATABASE_URL", db.options.to_url_lossy().as_str())
        .env("HERALD_DATA_DIR", &dir)
        .output()
        .await
        .unwrap();
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no tenant t_nobody"));
    std::fs::remove_dir_all(&dir).ok();
}

/// Sends a chunked NDJSON upload, each chunk after its pause; returns the
/// status code and body of the answer.
async fn slow_upload(
    address: std::net::SocketAddr,
    key: &str,
    chunks: &[(std::time::Duration, String)],
) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST /api/events/bulk HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    for (pause, chunk) in chunks {
        tokio::time::sleep(*pause).await;
        let framed = format!("{:x}\r\n{chunk}\r\n", chunk.len());
        if socket.write_all(framed.as_bytes()).await.is_err() {
            break; // the server answered and closed early
        }
    }
    let _ = socket.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    socket.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    let status = answer[9..12].parse().unwrap();
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    // A small JSON answer may still come chunked: keep the object only.
    let json = &body[body.find('{').unwrap_or(0)..=body.rfind('}').unwrap_or(0)];
    (status, serde_json::from_str(json).unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_bulk_route_outlives_the_request_timeout_but_not_an_idle_body() {
    let db = fresh_database().await;
    let store = herald::eventstore::EventStore::new(db.pool.clone());
    let created = herald::commands::tenants::create_tenant(
        &store,
        "Slow uploader",
        &herald::commands::Actor::new("test"),
    )
    .await
    .unwrap();
    let mut options = herald::config::Config::default().api_options();
    options.request_timeout = std::time::Duration::from_millis(600);
    let app = herald::api::router(
        herald::api::ApiState::new(store, &options).await.unwrap(),
        &options,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    // Five chunks 300 ms apart: 1.5 s in all, well past the 600 ms timeout,
    // but never idle for that long. A line may span chunks.
    let whole = (0..4)
        .map(|i| line("shop", &format!("slow-{i}"), "o-1") + "\n")
        .collect::<String>();
    let chunks: Vec<_> = whole
        .as_bytes()
        .chunks(whole.len() / 5 + 1)
        .map(|c| {
            (
                std::time::Duration::from_millis(300),
                String::from_utf8(c.to_vec()).unwrap(),
            )
        })
        .collect();
    let (status, summary) = slow_upload(address, &created.api_key, &chunks).await;
    assert_eq!(
        (status, summary["accepted"].as_i64()),
        (200, Some(4)),
        "{summary}"
    );

    // A body that stalls longer than the timeout is cut off; what was
    // complete before the stall is stored and reported.
    let stalled = [
        (
            std::time::Duration::ZERO,
            line("shop", "stall-1", "o-2") + "\n" + &line("shop", "stall-2", "o-2") + "\n",
        ),
        (
            std::time::Duration::from_millis(1_500),
            line("shop", "stall-3", "o-2") + "\n",
        ),
    ];
    let (status, answer) = slow_upload(address, &created.api_key, &stalled).await;
    assert_eq!(status, 408, "{answer}");
    assert_eq!(answer["error"]["code"], "TIMEOUT");
    assert_eq!(answer["committed"]["accepted"], 2);
}
