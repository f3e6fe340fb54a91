//! Herald while its database is down, and the administration commands when
//! they cannot find the service's database: answers that say what happened.

use std::time::Duration;

use herald::database::{EmbeddedOptions, EmbeddedPostgres};
use serde_json::{Value, json};
use sqlx::postgres::PgPoolOptions;
use tokio::time::Instant;

use crate::served::{Served, serve_on};
use crate::support::{error_codes, eventually};

const SEND: &str = "mutation($input: SendNotificationInput!) { sendNotification(input: $input) { notification { id } } }";

/// A send's input; `channel` as the surface spells it (`EMAIL` in GraphQL).
fn message(text: &str, channel: &str) -> Value {
    json!({ "recipient": { "email": "ada@example.com" }, "channels": [channel], "content": { "title": "Outage", "text": text } })
}

/// A GraphQL send: its status, `Retry-After`, body and how long it took.
async fn graphql_send(served: &Served, text: &str) -> (u16, Option<String>, Value, Duration) {
    let started = Instant::now();
    let answer = served
        .http
        .post(format!("{}/graphql", served.base))
        .bearer_auth(&served.key)
        .json(&json!({ "query": SEND, "variables": { "input": message(text, "EMAIL") } }))
        .send()
        .await
        .expect("an answer");
    answered(answer, started).await
}

/// A REST send: its status, `Retry-After`, body and how long it took.
async fn rest_send(served: &Served, text: &str) -> (u16, Option<String>, Value, Duration) {
    let started = Instant::now();
    let answer = served
        .http
        .post(format!("{}/api/notifications", served.base))
        .bearer_auth(&served.key)
        .header("Idempotency-Key", text)
        .json(&message(text, "email"))
        .send()
        .await
        .expect("an answer");
    answered(answer, started).await
}

async fn answered(
    answer: reqwest::Response,
    started: Instant,
) -> (u16, Option<String>, Value, Duration) {
    let status = answer.status().as_u16();
    let retry_after = answer
        .headers()
        .get("retry-after")
        .map(|value| value.to_str().unwrap().to_string());
    let body = answer.json().await.expect("a JSON body");
    (status, retry_after, body, started.elapsed())
}

/// `/ready`'s status and how long it took.
async fn ready(served: &Served) -> (u16, Duration) {
    let started = Instant::now();
    let answer = served
        .http
        .get(format!("{}/ready", served.base))
        .send()
        .await
        .expect("an answer");
    (answer.status().as_u16(), started.elapsed())
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    // Short: the embedded cluster's socket path must stay under 104 bytes.
    let dir = std::env::temp_dir().join(format!("herald-{name}-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn start_cluster(pg_dir: &std::path::Path) -> EmbeddedPostgres {
    EmbeddedPostgres::start(
        pg_dir,
        EmbeddedOptions {
            max_connections: 100,
            fast_unsafe: true,
        },
    )
    .await
    .expect("the test's own PostgreSQL starts")
}

/// A GraphQL and a REST send each answer 503 `UNAVAILABLE` with
/// `Retry-After` within 2 s.
async fn assert_both_sends_unavailable(served: &Served, when: &str) {
    let (status, retry_after, body, took) = graphql_send(served, when).await;
    eprintln!("GraphQL send with PostgreSQL down ({when}): {status} in {took:?}: {body}");
    assert_eq!(status, 503, "{body}");
    assert_eq!(error_codes(&body), ["UNAVAILABLE"], "{body}");
    assert!(retry_after.is_some(), "a Retry-After header");
    assert!(took < Duration::from_secs(2), "answered in {took:?}");
    let (status, retry_after, body, took) = rest_send(served, when).await;
    eprintln!("REST send with PostgreSQL down ({when}): {status} in {took:?}: {body}");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "UNAVAILABLE", "{body}");
    assert!(retry_after.is_some(), "a Retry-After header");
    assert!(took < Duration::from_secs(2), "answered in {took:?}");
}

/// Reads that reach the database answer `UNAVAILABLE` as the sends do,
/// never an error without a code or with the driver's message.
async fn assert_reads_unavailable(served: &Served) {
    for query in [
        r#"{ analytics(from: "2026-01-01T00:00:00Z", to: "2026-01-02T00:00:00Z", groupBy: [CHANNEL]) { count } }"#,
        r#"{ deliveryLatency(from: "2026-01-01T00:00:00Z", to: "2026-01-02T00:00:00Z", groupBy: []) { count } }"#,
        r#"{ inappFeed(recipientId: "ada") { unreadCount } }"#,
        "{ apiKeys { id } }",
    ] {
        let body: Value = served
            .http
            .post(format!("{}/graphql", served.base))
            .bearer_auth(&served.key)
            .json(&json!({ "query": query }))
            .send()
            .await
            .expect("an answer")
            .json()
            .await
            .expect("a JSON body");
        assert_eq!(error_codes(&body), ["UNAVAILABLE"], "{query}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgresql_down_sends_answer_503_unavailable_at_once_and_work_again_after() {
    let dir = temp_dir("outage");
    let pg_dir = dir.join("pg");
    let cluster = start_cluster(&pg_dir).await;
    cluster.ensure_database("herald").await.unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(cluster.connect_options("herald"))
        .await
        .unwrap();
    let served = serve_on(&pool, &dir, "Outage", "", None).await;
    pool.close().await;
    let (status, _, body, _) = graphql_send(&served, "before").await;
    assert!(status == 200 && body["errors"].is_null(), "{status} {body}");

    cluster.stop().await.expect("PostgreSQL stops");
    let stopped = Instant::now();
    // At once, the sends fail on the pool's dead connections.
    assert_both_sends_unavailable(&served, "at-once").await;
    // Reads too, from their resolvers if the probe has not noticed yet.
    assert_reads_unavailable(&served).await;
    // The health probe notices within half a second; every answer is quick.
    loop {
        let (status, took) = ready(&served).await;
        assert!(took < Duration::from_secs(1), "/ready answered in {took:?}");
        if status == 503 {
            eprintln!(
                "/ready 503 in {took:?}, {:?} after the stop",
                stopped.elapsed()
            );
            break;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(2),
            "/ready still {status} 2 s after the stop"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Now the probe's finding refuses them before they reach the pool.
    assert_both_sends_unavailable(&served, "probe-noticed").await;

    let cluster = start_cluster(&pg_dir).await;
    let restarted = Instant::now();
    eventually(Duration::from_secs(30), async || {
        match ready(&served).await.0 {
            200 => Ok(()),
            status => Err(format!("/ready answers {status}")),
        }
    })
    .await;
    let (status, _, body, _) = graphql_send(&served, "after").await;
    assert!(status == 200 && body["errors"].is_null(), "{status} {body}");
    let (status, _, body, _) = rest_send(&served, "after").await;
    assert_eq!(status, 202, "{body}");
    eprintln!(
        "ready and sending again {:?} after PostgreSQL restarted",
        restarted.elapsed()
    );
    drop(served);
    cluster.stop().await.unwrap();
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn a_command_run_away_from_the_data_dir_refuses_to_create_a_second_cluster() {
    let dir = temp_dir("elsewhere");
    // The built binary, run in `dir` with nothing pointing it at a database.
    let herald = |args: &'static [&'static str]| {
        let dir = &dir;
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
                .args(args)
                .current_dir(dir)
                .env_remove("DATABASE_URL")
                .env_remove("HERALD_DATABASE_URL")
                .env_remove("HERALD_DATA_DIR")
                .env_remove("HERALD_CONFIG")
                .output()
                .await
        }
    };
    let output = herald(&["tenants", "create", "--name", "Acme"])
        .await
        .expect("herald runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    let looked_in = std::fs::canonicalize(&dir).unwrap().join(".herald");
    for needed in [
        looked_in.to_str().unwrap(),
        "--data-dir",
        "HERALD_DATA_DIR",
        "DATABASE_URL",
    ] {
        assert!(stderr.contains(needed), "{needed:?} missing from: {stderr}");
    }
    assert!(
        !looked_in.exists(),
        "a data dir was created: {:?}",
        std::fs::read_dir(&dir).unwrap().collect::<Vec<_>>()
    );

    // Pointed at a data dir that holds no cluster either, it says so too.
    let output = herald(&["tenants", "list", "--data-dir", "service-data"])
        .await
        .expect("herald runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("service-data"), "{stderr}");
    assert!(!dir.join("service-data").exists());
    std::fs::remove_dir_all(dir).ok();
}
