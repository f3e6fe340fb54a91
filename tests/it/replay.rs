//! Replay: an entity's events in a time window, in log order, with
//! and without duplicates, paged by limit and cursor; and `herald replay`.

use serde_json::{Value, json};

use crate::support::{TestApp, error_codes, eventually};

const INGEST: &str =
    "mutation($input: IngestEventInput!) { ingestEvent(input: $input) { position duplicate } }";
const REPLAY: &str = r#"query($entity: String!, $from: DateTime, $to: DateTime, $dups: Boolean! = false, $limit: Int! = 100, $after: String) {
  replay(entityType: "order", entityId: $entity, from: $from, to: $to, includeDuplicates: $dups, limit: $limit, after: $after) {
    events { position type duplicate data } hasMore nextCursor
  }
}"#;

async fn ingest(app: &TestApp, key: &str, event_id: &str, entity: &str, minute: u32) -> Value {
    let response = app
        .graphql(
            Some(key),
            INGEST,
            json!({ "input": {
                "source": "shop", "entityType": "order", "entityId": entity, "eventType": "order.updated",
                "occurredAt": format!("2026-01-01T10:{minute:02}:00Z"), "payload": { "minute": minute }, "eventId": event_id,
            }}),
        )
        .await;
    assert!(response["errors"].is_null(), "{response}");
    response["data"]["ingestEvent"].clone()
}

fn minutes(page: &Value) -> Vec<i64> {
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            e["data"]["source_event"]["payload"]["minute"]
                .as_i64()
                .unwrap()
        })
        .collect()
}

#[tokio::test]
async fn replay_returns_an_entitys_window_with_and_without_duplicates() {
    let app = TestApp::start().await;
    let (tenant, key) = app.tenant().await;
    for minute in 0..10 {
        ingest(&app, &key, &format!("e-{minute}"), "o-1", minute).await;
    }
    // A repeat of e-3, and another entity's events that must not appear.
    assert_eq!(ingest(&app, &key, "e-3", "o-1", 3).await["duplicate"], true);
    ingest(&app, &key, "other-1", "o-2", 5).await;

    let window =
        json!({ "entity": "o-1", "from": "2026-01-01T10:02:00Z", "to": "2026-01-01T10:06:00Z" });
    let mut with = window.clone();
    with["dups"] = json!(true);
    // The replay index is a projection: wait until it has seen the repeat.
    let with = eventually(std::time::Duration::from_secs(15), async || {
        let answer = app.graphql(Some(&key), REPLAY, with.clone()).await;
        if minutes(&answer["data"]["replay"]).len() == 5 {
            Ok(answer)
        } else {
            Err(format!("the repeat is not replayed yet: {answer}"))
        }
    })
    .await;
    let without = app.graphql(Some(&key), REPLAY, window.clone()).await;
    assert!(without["errors"].is_null(), "{without}");
    assert_eq!(minutes(&without["data"]["replay"]), vec![2, 3, 4, 5]);
    let replay = &with["data"]["replay"];
    assert_eq!(minutes(replay), vec![2, 3, 4, 5, 3]);
    assert_eq!(replay["events"][4]["duplicate"], true);

    // Pages of 3 with a cursor give the same sequence, each event once.
    let mut all = Vec::new();
    let mut after = Value::Null;
    loop {
        let page = app
            .graphql(
                Some(&key),
                REPLAY,
                json!({ "entity": "o-1", "limit": 3, "after": after }),
            )
            .await;
        let page = &page["data"]["replay"];
        all.extend(minutes(page));
        if page["hasMore"] == false {
            break;
        }
        after = page["nextCursor"].clone();
    }
    assert_eq!(all, (0..10).collect::<Vec<_>>());

    // Another tenant replays nothing of this one's.
    let (_, other_key) = app.tenant().await;
    let other = app
        .graphql(Some(&other_key), REPLAY, json!({ "entity": "o-1" }))
        .await;
    assert_eq!(other["data"]["replay"]["events"], json!([]));
    let bad = app
        .graphql(Some(&key), REPLAY, json!({ "entity": "o-1", "limit": 0 }))
        .await;
    assert_eq!(error_codes(&bad), vec!["VALIDATION"]);

    // The CLI writes the same events as NDJSON.
    let url = app.database_url();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "replay",
            "--tenant",
            &tenant,
            "--entity",
            "order:o-1",
            "--include-duplicates",
        ])
        .env("DATABASE_URL", &url)
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
    let lines: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 11);
    assert!(
        lines
            .windows(2)
            .all(|w| w[0]["position"].as_i64() < w[1]["position"].as_i64())
    );
    assert_eq!(lines.iter().filter(|l| l["duplicate"] == true).count(), 1);

    let first = lines[0]["position"].as_i64().unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "replay",
            "--tenant",
            &tenant,
            "--positions",
            &format!("{first}..{}", first + 2),
        ])
        .env("DATABASE_URL", &url)
        .env("HERALD_LOG_FILTER", "warn")
        .env_remove("HERALD_CONFIG")
        .output()
        .await
        .expect("herald runs");
    assert!(output.status.success());
    assert_eq!(String::from_utf8(output.stdout).unwrap().lines().count(), 3);
}
