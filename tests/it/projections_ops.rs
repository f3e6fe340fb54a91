//! Projection operations through the API and `herald replay --into`: any ops
//! key sees every projection but another tenant's error text; only an
//! operator tenant's ops key retries, skips or rebuilds; a rebuild started
//! through GraphQL runs in the background and shows its progress; a position
//! range re-run through an idempotent projection repairs it and twice
//! changes nothing.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use herald::commands::{self, Actor};
use herald::domain::Scope;
use herald::domain::values::TenantId;
use herald::eventstore::{ExpectedVersion, ReadFilter, RecordedEvent, StreamAppend};
use herald::projections::notification_status::NotificationStatusProjection;
use herald::projections::{self, Projection, ProjectionError, RunnerOptions, rebuild};
use serde_json::{Value, json};
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;

use crate::eventstore::event;
use crate::support::{TestApp, error_codes, eventually, position};

const PROBE: &str = "OpsProbe";

const PROJECTIONS: &str = r#"{ projections { name version state checkpointTransactionId checkpointPosition lagEvents
  lagSeconds eventsProcessed updatedAt failedPosition error rebuild { events total startedAt } } }"#;
const RETRY: &str = r#"mutation($name: String!) { retryProjection(name: $name) { name state } }"#;
const SKIP: &str = r#"mutation($name: String!, $position: Position!, $reason: String!) {
  skipProjectionEvent(name: $name, position: $position, reason: $reason) {
    recordedPosition projection { name state failedPosition } } }"#;
const REBUILD: &str = r#"mutation($name: String!) { rebuildProjection(name: $name) {
  name state checkpointPosition rebuild { events total } } }"#;
const SEND: &str = r#"mutation($input: SendNotificationInput!) {
  sendNotification(input: $input) { notification { id } } }"#;
const CANCEL: &str = r#"mutation($id: ID!) { cancelNotification(id: $id) { status } }"#;

/// Refuses probes flagged poison, with an error that quotes the event's data.
struct Picky;

impl Projection for Picky {
    fn name(&self) -> &str {
        "ops_picky"
    }

    fn version(&self) -> i32 {
        1
    }

    fn filter(&self) -> ReadFilter {
        ReadFilter {
            tenant_id: None,
            event_types: Some(vec![PROBE.into()]),
            ..ReadFilter::default()
        }
    }

    fn handle_batch<'a>(
        &'a self,
        _conn: &'a mut PgConnection,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(async move {
            match events.iter().find(|e| e.payload["poison"] == true) {
                Some(event) => Err(ProjectionError::Refused(format!(
                    "cannot read order {}",
                    event.payload["order"]
                ))),
                None => Ok(()),
            }
        })
    }
}

/// The API over a fresh database, with `operators` operator tenants.
async fn start_app(operators: usize) -> (TestApp, Vec<TenantId>) {
    let (app, tenants) =
        TestApp::start_with_operators(&herald::config::Config::default(), operators).await;
    (app, tenants.into_iter().map(|t| t.tenant_id).collect())
}

/// A key of `tenant` with the ops scope alone.
async fn ops_key(app: &TestApp, tenant: &TenantId) -> String {
    commands::tenants::issue_api_key(
        &app.store,
        tenant,
        "ops",
        vec![Scope::Ops],
        &Actor::new("test"),
    )
    .await
    .unwrap()
    .api_key
}

/// The newest listed version of `name` that is not retired, as `key` sees it.
async fn listed(app: &TestApp, key: &str, name: &str) -> Option<Value> {
    let response = app.graphql(Some(key), PROJECTIONS, json!({})).await;
    assert!(response["errors"].is_null(), "{response}");
    response["data"]["projections"]
        .as_array()
        .unwrap()
        .iter()
        .rfind(|p| p["name"] == name && p["state"] != "RETIRED")
        .cloned()
}

async fn projection(app: &TestApp, key: &str, name: &str) -> Value {
    listed(app, key, name)
        .await
        .unwrap_or_else(|| panic!("{name} is not listed"))
}

/// Polls the `projections` query until `name` is listed and `done` holds for it.
async fn wait_for(app: &TestApp, key: &str, name: &str, done: impl Fn(&Value) -> bool) -> Value {
    eventually(Duration::from_secs(30), async || {
        match listed(app, key, name).await {
            Some(now) if done(&now) => Ok(now),
            now => Err(format!("{name} is not there: {now:?}")),
        }
    })
    .await
}

fn message(response: &Value) -> String {
    response["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn any_ops_key_sees_projections_and_only_an_operator_tenant_changes_them() {
    let (app, operators) = start_app(1).await;
    let operator = ops_key(&app, &operators[0]).await;
    let (owner_id, _) = app.tenant().await;
    let owner_id = TenantId::parse(&owner_id).unwrap();
    let owner = ops_key(&app, &owner_id).await;
    let (other_id, other_admin) = app.tenant().await;
    let other = ops_key(&app, &TenantId::parse(&other_id).unwrap()).await;

    let shutdown = CancellationToken::new();
    let runner = projections::spawn(
        app.store.clone(),
        Arc::new(Picky),
        RunnerOptions::default(),
        shutdown.clone(),
    );
    let positions = app
        .store
        .append(&[StreamAppend {
            stream_id: "probe-1".into(),
            expected: ExpectedVersion::Any,
            events: vec![
                event(PROBE, owner_id.as_str(), json!({ "order": "o-1" })),
                event(
                    PROBE,
                    owner_id.as_str(),
                    json!({ "order": "o-2", "poison": true }),
                ),
                event(PROBE, owner_id.as_str(), json!({ "order": "o-3" })),
            ],
        }])
        .await
        .unwrap();
    let failed = wait_for(&app, &owner, "ops_picky", |p| p["state"] == "FAILED").await;
    // The owner of the failing event reads its error, like an operator.
    assert_eq!(position(&failed["failedPosition"]), positions[1]);
    assert_eq!(failed["error"], "cannot read order \"o-2\"");
    assert_eq!(position(&failed["checkpointPosition"]), positions[0]);
    assert_eq!(failed["lagEvents"], 2);
    assert_eq!(
        projection(&app, &operator, "ops_picky").await["error"],
        "cannot read order \"o-2\""
    );
    // Another tenant sees that it failed and where, not the other's data.
    let seen = projection(&app, &other, "ops_picky").await;
    assert_eq!(seen["state"], "FAILED");
    assert_eq!(position(&seen["failedPosition"]), positions[1]);
    assert_eq!(seen["error"], "an event of another tenant failed");
    // The service's own projections are listed for every ops key.
    let standing = projection(&app, &other, "notification_status").await;
    assert_eq!(
        standing["state"], "STANDBY",
        "no process runs it: {standing}"
    );
    assert_eq!(standing["error"], Value::Null);
    // Without the ops scope: refused.
    let send_only = commands::tenants::issue_api_key(
        &app.store,
        &owner_id,
        "send",
        vec![Scope::Send],
        &Actor::new("test"),
    )
    .await
    .unwrap()
    .api_key;
    let refused = app.graphql(Some(&send_only), PROJECTIONS, json!({})).await;
    assert_eq!(error_codes(&refused), vec!["FORBIDDEN"]);

    // Changing a projection is for operator tenants, whatever the key's scopes.
    let name = json!({ "name": "ops_picky" });
    let skip =
        json!({ "name": "ops_picky", "position": positions[1].to_string(), "reason": "bad order" });
    for key in [&owner, &other, &other_admin] {
        for (mutation, variables) in [(RETRY, &name), (SKIP, &skip), (REBUILD, &name)] {
            let response = app.graphql(Some(key), mutation, variables.clone()).await;
            assert_eq!(error_codes(&response), vec!["FORBIDDEN"], "{response}");
            assert!(
                message(&response).contains("operator_tenants"),
                "{response}"
            );
        }
    }
    assert_eq!(
        projection(&app, &operator, "ops_picky").await["state"],
        "FAILED"
    );

    // An operator retries: the event fails again, at the same place.
    let before = projection(&app, &operator, "ops_picky").await;
    let retried = app.graphql(Some(&operator), RETRY, name.clone()).await;
    assert!(retried["errors"].is_null(), "{retried}");
    let again = wait_for(&app, &operator, "ops_picky", |p| {
        p["state"] == "FAILED" && p["updatedAt"] != before["updatedAt"]
    })
    .await;
    assert_eq!(position(&again["failedPosition"]), positions[1]);
    // A skip needs the failed position and a reason. (An Int position is
    // accepted too, for clients written before the `Position` scalar.)
    let wrong = app
        .graphql(
            Some(&operator),
            SKIP,
            json!({ "name": "ops_picky", "position": positions[2], "reason": "x" }),
        )
        .await;
    assert_eq!(error_codes(&wrong), vec!["CONFLICT"], "{wrong}");
    let no_reason = app
        .graphql(
            Some(&operator),
            SKIP,
            json!({ "name": "ops_picky", "position": positions[1].to_string(), "reason": " " }),
        )
        .await;
    assert_eq!(error_codes(&no_reason), vec!["VALIDATION"], "{no_reason}");
    // A NUL (as the schema fuzz sends) is refused before PostgreSQL sees it.
    let nul_reason = app
        .graphql(
            Some(&operator),
            SKIP,
            json!({ "name": "ops_picky", "position": positions[1].to_string(), "reason": "a\u{0}" }),
        )
        .await;
    assert_eq!(error_codes(&nul_reason), vec!["VALIDATION"], "{nul_reason}");
    let nul_name = app
        .graphql(Some(&operator), RETRY, json!({ "name": "ops\u{0}" }))
        .await;
    assert_eq!(error_codes(&nul_name), vec!["NOT_FOUND"], "{nul_name}");
    let skipped = app.graphql(Some(&operator), SKIP, skip).await;
    assert!(skipped["errors"].is_null(), "{skipped}");
    let recorded = position(&skipped["data"]["skipProjectionEvent"]["recordedPosition"]);
    assert_eq!(
        app.store
            .read_stream("projection-ops_picky", 1)
            .await
            .unwrap()[0]
            .global_position,
        recorded
    );
    // Its lag counts every event type: this binary does not know its filter.
    let running = wait_for(&app, &operator, "ops_picky", |p| {
        p["state"] == "RUNNING" && position(&p["checkpointPosition"]) == positions[2]
    })
    .await;
    assert_eq!(running["error"], Value::Null);
    // Nothing to retry now; an unknown projection cannot be rebuilt, nor one without tables.
    let nothing = app.graphql(Some(&operator), RETRY, name).await;
    assert_eq!(error_codes(&nothing), vec!["CONFLICT"]);
    let unknown = app
        .graphql(Some(&operator), REBUILD, json!({ "name": "nope" }))
        .await;
    assert_eq!(error_codes(&unknown), vec!["NOT_FOUND"]);
    let tableless = app
        .graphql(
            Some(&operator),
            REBUILD,
            json!({ "name": "webhook_outbox" }),
        )
        .await;
    assert_eq!(error_codes(&tableless), vec!["VALIDATION"], "{tableless}");

    shutdown.cancel();
    runner.task.await.unwrap();
}

/// The notification events of the log, as the status projection reads them.
async fn notification_events(app: &TestApp) -> (i64, i64) {
    sqlx::query_as(
        "SELECT count(*), max(global_position) FROM events WHERE stream_id LIKE 'notification-%'",
    )
    .fetch_one(app.store.pool())
    .await
    .unwrap()
}

/// Every row of `notification_status`, whole, and the transaction that wrote it.
async fn status_rows(app: &TestApp) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT to_jsonb(s)::text, xmin::text FROM notification_status s ORDER BY notification_id",
    )
    .fetch_all(app.store.pool())
    .await
    .unwrap()
}

/// Sends `count` notifications as `key` and cancels every other one, so
/// rows stand at different stream versions.
async fn send_some(app: &TestApp, key: &str, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for n in 0..count {
        let sent = app
            .graphql(
                Some(key),
                SEND,
                json!({ "input": {
                    "recipient": { "id": format!("user-{n}"), "email": "ada@example.com" },
                    "channels": ["EMAIL"],
                    "content": { "title": "Hello", "text": "Hi" },
                }}),
            )
            .await;
        assert!(sent["errors"].is_null(), "{sent}");
        let id = sent["data"]["sendNotification"]["notification"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        if n % 2 == 1 {
            let cancelled = app.graphql(Some(key), CANCEL, json!({ "id": id })).await;
            assert!(cancelled["errors"].is_null(), "{cancelled}");
        }
        ids.push(id);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_started_through_graphql_runs_in_the_background_one_at_a_time() {
    let (app, operators) = start_app(1).await;
    let operator = ops_key(&app, &operators[0]).await;
    let (_, key) = app.tenant().await;
    send_some(&app, &key, 6).await;
    let events = notification_events(&app).await.0;
    let rows = status_rows(&app).await;
    let name = json!({ "name": "notification_status" });

    // A rebuild held elsewhere (another process, as far as locks go) shows
    // to every process, and a second one is refused.
    let held = rebuild::start(&app.store, &NotificationStatusProjection)
        .await
        .unwrap();
    let shown = projection(&app, &key, "notification_status").await;
    assert_eq!(shown["state"], "REBUILDING");
    assert_eq!(shown["rebuild"]["events"], 0);
    assert_eq!(shown["rebuild"]["total"], events);
    let second = app.graphql(Some(&operator), REBUILD, name.clone()).await;
    assert_eq!(error_codes(&second), vec!["CONFLICT"], "{second}");
    assert!(message(&second).contains("already running"), "{second}");
    drop(held);
    wait_for(&app, &key, "notification_status", |p| {
        p["state"] != "REBUILDING"
    })
    .await;

    // Started through the API: it answers at once, rebuilding.
    crate::support::wait_until_readable(&app.store).await;
    let started = app.graphql(Some(&operator), REBUILD, name).await;
    assert!(started["errors"].is_null(), "{started}");
    let started = &started["data"]["rebuildProjection"];
    assert_eq!(started["state"], "REBUILDING");
    assert_eq!(started["rebuild"]["total"], events);
    // Then swaps in: the checkpoint past the log's end, the rows as they were.
    let done = wait_for(&app, &key, "notification_status", |p| {
        p["state"] != "REBUILDING"
    })
    .await;
    assert_eq!(done["state"], "STANDBY", "no runner in this test: {done}");
    assert_ne!(done["checkpointTransactionId"], 0, "{done}");
    assert_eq!(done["eventsProcessed"], events);
    assert_eq!(done["lagEvents"], 0);
    assert_eq!(done["rebuild"], Value::Null);
    let rebuilt: Vec<String> = status_rows(&app).await.into_iter().map(|r| r.0).collect();
    assert_eq!(rebuilt, rows.into_iter().map(|r| r.0).collect::<Vec<_>>());
}

async fn herald(app: &TestApp, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .env("DATABASE_URL", app.database_url())
        .env("HERALD_LOG_FILTER", "warn")
        .env_remove("HERALD_CONFIG")
        .output()
        .await
        .expect("herald runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_into_an_idempotent_projection_repairs_it_and_twice_changes_nothing() {
    let app = TestApp::start().await;
    let (_, key) = app.tenant().await;
    let (_, other) = app.tenant().await;
    let ids = send_some(&app, &key, 4).await;
    send_some(&app, &other, 2).await;
    let rows = status_rows(&app).await;
    assert_eq!(rows.len(), 6);
    let (_, last) = notification_events(&app).await;
    // Lost rows: one still requested, one cancelled.
    sqlx::query("DELETE FROM notification_status WHERE notification_id::text = ANY($1)")
        .bind(vec![ids[0].clone(), ids[1].clone()])
        .execute(app.store.pool())
        .await
        .unwrap();
    assert_eq!(status_rows(&app).await.len(), 4);

    // The whole log's range, every tenant's events: the rows come back as they were.
    let range = format!("1..{last}");
    let args = [
        "replay",
        "--into",
        "notification_status",
        "--positions",
        &range,
    ];
    let output = herald(&app, &args).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("through notification_status"), "{stderr}");
    assert!(output.stdout.is_empty());
    let repaired = status_rows(&app).await;
    let whole = |rows: &[(String, String)]| rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>();
    assert_eq!(whole(&repaired), whole(&rows));

    // Again: not one row is written (each keeps the transaction that wrote it).
    let output = herald(&app, &args).await;
    assert!(output.status.success());
    assert_eq!(status_rows(&app).await, repaired);

    // A counting projection is refused, with the way out.
    let output = herald(
        &app,
        &["replay", "--into", "analytics", "--positions", &range],
    )
    .await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("herald projections rebuild analytics"),
        "{stderr}"
    );
    // --into takes a position range, not an entity window.
    let output = herald(
        &app,
        &[
            "replay",
            "--into",
            "notification_status",
            "--entity",
            "order:o-1",
        ],
    )
    .await;
    assert!(!output.status.success());
}
