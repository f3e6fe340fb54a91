//! Workflows: publishing with every refusal by field, a trigger run through
//! a send step, a delay in config-scaled time, cancel, and `wait_for` an
//! in-app read through a real `herald serve` with an SMTP peer.

use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::peers::smtp_recorder;
use crate::served::{Served, serve, smtp_config};
use crate::support::{TestApp, data, error_codes, eventually, loopback_egress};
use herald::commands::notifications::SendPolicy;
use herald::commands::workflows::{WorkflowSettings, WorkflowsConfig};

const PUBLISH: &str =
    "mutation($d: JSON!) { publishWorkflow(definition: $d) { key version definition } }";
const TRIGGER: &str = "mutation($key: String!, $r: [RecipientInput!]!, $p: JSON, $k: String) { \
    triggerWorkflow(key: $key, recipients: $r, payload: $p, idempotencyKey: $k) { \
    joinedDigest run { id status currentStep } } }";
const RUN: &str = "query($id: ID!) { workflowRun(id: $id) { id workflowKey version status currentStep \
    timeline { type step } notifications { step visit notificationId notification { id status } } } }";
const CANCEL: &str =
    "mutation($id: ID!) { cancelWorkflowRun(id: $id, reason: \"test\") { id status currentStep } }";
const PUBLISH_TEMPLATE: &str =
    "mutation($input: PublishTemplateInput!) { publishTemplate(input: $input) { key number } }";

/// A rest of one hour lasts this many real seconds: 1 h × 0.0005 = 1.8 s.
const FAST: f64 = 0.0005;

fn fast_config() -> herald::config::Config {
    herald::config::Config {
        egress: loopback_egress(),
        workflows: WorkflowsConfig {
            time_scale: FAST,
            poll_interval_ms: 50,
            ..WorkflowsConfig::default()
        },
        ..herald::config::Config::default()
    }
}

/// The workflow worker over `app`'s database until the token is cancelled.
fn workflow_worker(app: &TestApp) -> tokio_util::sync::DropGuard {
    let shutdown = CancellationToken::new();
    herald::workers::workflows::spawn(
        app.store.clone(),
        WorkflowSettings {
            policy: SendPolicy::unlimited(Duration::from_secs(3600)),
            config: fast_config().workflows,
        },
        shutdown.clone(),
    );
    shutdown.drop_guard()
}

async fn publish_template(app: &TestApp, key: &str) {
    data(
        app.graphql(
            Some(key),
            PUBLISH_TEMPLATE,
            json!({ "input": {
                "key": "hello",
                "defaultLocale": "en",
                "variables": [],
                "locales": [{ "locale": "en",
                    "email": { "subject": "Hello", "text": "Hello there" },
                    "inApp": { "title": "Hello", "body": "Hello there" } }]
            }}),
        )
        .await,
    );
}

async fn run(app: &TestApp, key: &str, id: &str) -> Value {
    data(app.graphql(Some(key), RUN, json!({ "id": id })).await)["workflowRun"].clone()
}

async fn served_run(served: &Served, id: &str) -> Value {
    served.graphql(RUN, json!({ "id": id })).await["workflowRun"].clone()
}

async fn requested(app: &TestApp, tenant: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE event_type = 'NotificationRequested' AND tenant_id = $1",
    )
    .bind(tenant)
    .fetch_one(app.store.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn publish_reports_every_refusal_by_field_and_numbers_versions() {
    let app = TestApp::start().await;
    let (_, key) = app.tenant().await;
    publish_template(&app, &key).await;

    let refused = app
        .graphql(
            Some(&key),
            PUBLISH,
            json!({ "d": { "key": "Not A Key", "steps": [
                { "name": "first", "send": { "channels": ["email"], "template": "nope" } },
                { "name": "later", "delay": { "duration": "soon" } },
            ]}}),
        )
        .await;
    assert_eq!(error_codes(&refused), ["VALIDATION"], "{refused}");
    let paths: Vec<&str> = refused["errors"][0]["extensions"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|field| field["path"].as_str().unwrap())
        .collect();
    for path in ["key", "steps[0].send.template", "steps[1].delay.duration"] {
        assert!(paths.contains(&path), "{path} in {paths:?}");
    }

    // A misspelt field is refused, not ignored.
    let misspelt = app
        .graphql(
            Some(&key),
            PUBLISH,
            json!({ "d": { "key": "greet", "steps": [{ "name": "a", "sned": {} }] } }),
        )
        .await;
    assert_eq!(error_codes(&misspelt), ["VALIDATION"], "{misspelt}");

    let definition = json!({ "key": "greet", "steps": [
        { "name": "email", "send": { "channels": ["email"], "template": "hello" } },
    ]});
    let first = data(
        app.graphql(Some(&key), PUBLISH, json!({ "d": definition }))
            .await,
    );
    assert_eq!(first["publishWorkflow"]["version"], 1);
    let again = data(
        app.graphql(Some(&key), PUBLISH, json!({ "d": definition }))
            .await,
    );
    assert_eq!(
        again["publishWorkflow"]["version"], 1,
        "the same steps again"
    );
    let changed = json!({ "key": "greet", "steps": [
        { "name": "wait", "delay": { "duration": "1m" } },
        { "name": "email", "send": { "channels": ["email"], "template": "hello" } },
    ]});
    let second = data(
        app.graphql(Some(&key), PUBLISH, json!({ "d": changed }))
            .await,
    );
    assert_eq!(second["publishWorkflow"]["version"], 2);
}

#[tokio::test]
async fn a_trigger_runs_through_a_send_step_and_its_key_gives_the_same_run() {
    let app = TestApp::start().await;
    let (tenant, key) = app.tenant().await;
    publish_template(&app, &key).await;
    data(
        app.graphql(
            Some(&key),
            PUBLISH,
            json!({ "d": { "key": "greet", "steps": [
                { "name": "email", "send": { "channels": ["email"], "template": "hello" } },
            ]}}),
        )
        .await,
    );
    let variables = json!({ "key": "greet", "k": "welcome-1",
        "r": [{ "email": "ada@example.com" }, { "email": "bob@example.com" }],
        "p": { "name": "Ada" } });
    let triggered = data(app.graphql(Some(&key), TRIGGER, variables.clone()).await);
    let runs = triggered["triggerWorkflow"].as_array().unwrap().clone();
    assert_eq!(runs.len(), 2, "one run per recipient");
    for triggered in &runs {
        assert_eq!(triggered["run"]["status"], "COMPLETED", "{triggered}");
        let id = triggered["run"]["id"].as_str().unwrap();
        let run = run(&app, &key, id).await;
        let notifications = run["notifications"].as_array().unwrap();
        assert_eq!(notifications.len(), 1, "{run}");
        assert_eq!(notifications[0]["step"], "email");
        assert_eq!(
            notifications[0]["notification"]["id"], notifications[0]["notificationId"],
            "the step's notification was requested under its derived id: {run}"
        );
        let types: Vec<&str> = run["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .map(|event| event["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            [
                "WorkflowRunStarted",
                "WorkflowStepStarted",
                "WorkflowStepCompleted",
                "WorkflowRunCompleted"
            ]
        );
    }
    assert_eq!(requested(&app, &tenant).await, 2);

    let again = data(app.graphql(Some(&key), TRIGGER, variables).await);
    let ids = |runs: &[Value]| -> Vec<String> {
        runs.iter()
            .map(|r| r["run"]["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        ids(again["triggerWorkflow"].as_array().unwrap()),
        ids(&runs),
        "the same idempotency key gives the same runs back"
    );
    assert_eq!(requested(&app, &tenant).await, 2, "and sends nothing again");

    let unknown = app
        .graphql(
            Some(&key),
            TRIGGER,
            json!({ "key": "nope", "r": [{ "email": "ada@example.com" }] }),
        )
        .await;
    assert_eq!(error_codes(&unknown), ["NOT_FOUND"], "{unknown}");
    let bad = app
        .graphql(
            Some(&key),
            TRIGGER,
            json!({ "key": "greet", "r": [{ "email": "not an address" }] }),
        )
        .await;
    assert_eq!(error_codes(&bad), ["VALIDATION"], "{bad}");
    assert_eq!(
        bad["errors"][0]["extensions"]["fields"][0]["path"], "recipients[0].email",
        "{bad}"
    );

    // The REST twin: the same command, the same runs for the same key.
    let rest = |body: Value| {
        app.http
            .post(format!("{}/api/workflows/greet/trigger", app.base))
            .bearer_auth(&key)
            .json(&body)
            .send()
    };
    let answer = rest(json!({ "recipients": [{ "email": "ada@example.com" }],
        "payload": { "name": "Ada" }, "idempotency_key": "welcome-1" }))
    .await
    .unwrap();
    assert_eq!(answer.status(), 200);
    let answer: Value = answer.json().await.unwrap();
    assert_eq!(
        answer["runs"][0]["run_id"], runs[0]["run"]["id"],
        "{answer}"
    );
    assert_eq!(answer["runs"][0]["status"], "completed");
    let refused = rest(json!({ "recipients": [] })).await.unwrap();
    assert_eq!(refused.status(), 400);
}

#[tokio::test]
async fn a_one_hour_delay_passes_in_config_scaled_time() {
    let app = TestApp::start_with(&fast_config()).await;
    let _worker = workflow_worker(&app);
    let (tenant, key) = app.tenant().await;
    publish_template(&app, &key).await;
    data(
        app.graphql(
            Some(&key),
            PUBLISH,
            json!({ "d": { "key": "later", "steps": [
                { "name": "wait", "delay": { "duration": "1h" } },
                { "name": "email", "send": { "channels": ["email"], "template": "hello" } },
            ]}}),
        )
        .await,
    );
    let triggered = data(
        app.graphql(
            Some(&key),
            TRIGGER,
            json!({ "key": "later", "r": [{ "email": "ada@example.com" }] }),
        )
        .await,
    );
    let started = &triggered["triggerWorkflow"][0]["run"];
    assert_eq!(started["status"], "WAITING", "{started}");
    assert_eq!(started["currentStep"], "wait");
    assert_eq!(
        requested(&app, &tenant).await,
        0,
        "nothing sent before the delay"
    );
    let id = started["id"].as_str().unwrap().to_string();
    let timers: i64 = sqlx::query_scalar("SELECT count(*) FROM workflow_timers")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(timers, 1, "the rest is a row, not a timer in memory");

    let done = eventually(Duration::from_secs(30), async || {
        let run = run(&app, &key, &id).await;
        match run["status"].as_str() {
            Some("COMPLETED") => Ok(run),
            _ => Err(format!("not completed yet: {run}")),
        }
    })
    .await;
    assert_eq!(done["notifications"].as_array().unwrap().len(), 1, "{done}");
    assert_eq!(requested(&app, &tenant).await, 1);
    let timers: i64 = sqlx::query_scalar("SELECT count(*) FROM workflow_timers")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(timers, 0);
}

#[tokio::test]
async fn cancel_stops_a_waiting_run_and_refuses_a_completed_one() {
    let app = TestApp::start().await;
    let (tenant, key) = app.tenant().await;
    publish_template(&app, &key).await;
    data(
        app.graphql(
            Some(&key),
            PUBLISH,
            json!({ "d": { "key": "later", "steps": [
                { "name": "wait", "delay": { "duration": "1h" } },
                { "name": "email", "send": { "channels": ["email"], "template": "hello" } },
            ]}}),
        )
        .await,
    );
    let triggered = data(
        app.graphql(
            Some(&key),
            TRIGGER,
            json!({ "key": "later", "r": [{ "email": "ada@example.com" }] }),
        )
        .await,
    );
    let id = triggered["triggerWorkflow"][0]["run"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let cancelled = data(app.graphql(Some(&key), CANCEL, json!({ "id": id })).await);
    assert_eq!(cancelled["cancelWorkflowRun"]["status"], "CANCELLED");
    assert!(cancelled["cancelWorkflowRun"]["currentStep"].is_null());
    let again = data(app.graphql(Some(&key), CANCEL, json!({ "id": id })).await);
    assert_eq!(
        again["cancelWorkflowRun"]["status"], "CANCELLED",
        "a repeat records nothing"
    );
    let timers: i64 = sqlx::query_scalar("SELECT count(*) FROM workflow_timers")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(timers, 0, "the cancelled run's timer is gone");
    assert_eq!(requested(&app, &tenant).await, 0);

    // Another tenant sees no such run.
    let (_, other) = app.tenant().await;
    let foreign = app.graphql(Some(&other), CANCEL, json!({ "id": id })).await;
    assert_eq!(error_codes(&foreign), ["NOT_FOUND"], "{foreign}");

    data(
        app.graphql(
            Some(&key),
            PUBLISH,
            json!({ "d": { "key": "now", "steps": [
                { "name": "email", "send": { "channels": ["email"], "template": "hello" } },
            ]}}),
        )
        .await,
    );
    let completed = data(
        app.graphql(
            Some(&key),
            TRIGGER,
            json!({ "key": "now", "r": [{ "email": "ada@example.com" }] }),
        )
        .await,
    );
    let id = completed["triggerWorkflow"][0]["run"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let refused = app.graphql(Some(&key), CANCEL, json!({ "id": id })).await;
    assert_eq!(error_codes(&refused), ["CONFLICT"], "{refused}");

    let listed = data(
        app.graphql(
            Some(&key),
            "{ workflowRuns(first: 10, filter: { status: CANCELLED }) { edges { node { id workflowKey } } } }",
            json!({}),
        )
        .await,
    );
    let edges = listed["workflowRuns"]["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 1, "{listed}");
    assert_eq!(edges[0]["node"]["workflowKey"], "later");
}

/// In-app first; an email only when the in-app item is still unread an
/// hour (here 1 h × 0.003 ≈ 11 s) later. Ada reads hers in time and gets
/// no email; Bob does not, and gets exactly one.
#[tokio::test]
async fn wait_for_an_inapp_read_sends_the_email_only_when_unread() {
    let dir = std::env::temp_dir().join(format!("herald-workflow-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let smtp = smtp_recorder(&dir).await;
    let config = format!(
        "{}\n[workflows]\ntime_scale = 0.003\npoll_interval_ms = 50\n",
        smtp_config(smtp.peer.port)
    );
    let served = serve(&dir, "Workflows", &config).await;
    served
        .graphql(
            PUBLISH_TEMPLATE,
            json!({ "input": {
                "key": "hello",
                "defaultLocale": "en",
                "variables": [],
                "locales": [{ "locale": "en",
                    "email": { "subject": "Hello", "text": "Hello there" },
                    "inApp": { "title": "Hello", "body": "Hello there" } }]
            }}),
        )
        .await;
    served
        .graphql(
            PUBLISH,
            json!({ "d": { "key": "nudge", "steps": [
                { "name": "inapp", "send": { "channels": ["in_app"], "template": "hello" } },
                { "name": "wait_read", "wait_for": { "event": "InAppItemsMarked",
                    "where": { "notification_id": "steps.inapp.notification_id",
                               "state": { "value": "read" } },
                    "timeout": "1h", "on_match": "end" } },
                { "name": "email", "send": { "channels": ["email"], "template": "hello" } },
            ]}}),
        )
        .await;
    let triggered = served
        .graphql(
            TRIGGER,
            json!({ "key": "nudge", "r": [
                { "id": "ada", "email": "ada@example.com" },
                { "id": "bob", "email": "bob@example.com" },
            ]}),
        )
        .await;
    let run_ids: Vec<String> = triggered["triggerWorkflow"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            assert_eq!(t["run"]["status"], "WAITING", "{t}");
            assert_eq!(t["run"]["currentStep"], "wait_read", "{t}");
            t["run"]["id"].as_str().unwrap().to_string()
        })
        .collect();
    let ada_run = served.graphql(RUN, json!({ "id": run_ids[0] })).await;
    let ada_item = ada_run["workflowRun"]["notifications"][0]["notificationId"]
        .as_str()
        .unwrap()
        .to_string();

    // Ada reads her in-app item once it is in her feed.
    eventually(Duration::from_secs(10), async || {
        let feed = served
            .graphql(
                "query { inappFeed(recipientId: \"ada\") { edges { node { id } } } }",
                json!({}),
            )
            .await;
        let ids: Vec<&str> = feed["inappFeed"]["edges"]
            .as_array()
            .map(|edges| {
                edges
                    .iter()
                    .filter_map(|e| e["node"]["id"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        if ids.contains(&ada_item.as_str()) {
            Ok(())
        } else {
            Err(format!("not in ada's feed yet: {feed}"))
        }
    })
    .await;
    served
        .graphql(
            "mutation($ids: [ID!]!) { markInAppItems(recipientId: \"ada\", ids: $ids, state: READ) { state } }",
            json!({ "ids": [ada_item] }),
        )
        .await;

    let ada = eventually(Duration::from_secs(10), async || {
        let run = served_run(&served, &run_ids[0]).await;
        match run["status"].as_str() {
            Some("COMPLETED") => Ok(run),
            _ => Err(format!("ada's run has not seen the read: {run}")),
        }
    })
    .await;
    assert_eq!(
        ada["notifications"].as_array().unwrap().len(),
        1,
        "read in time: no email: {ada}"
    );
    let bob = eventually(Duration::from_secs(40), async || {
        let run = served_run(&served, &run_ids[1]).await;
        match run["status"].as_str() {
            Some("COMPLETED") => Ok(run),
            _ => Err(format!("bob's wait has not timed out: {run}")),
        }
    })
    .await;
    assert_eq!(bob["notifications"].as_array().unwrap().len(), 2, "{bob}");
    eventually(Duration::from_secs(20), async || {
        let receipts = smtp.receipts();
        if receipts.iter().any(|(_, to)| to == "bob@example.com") {
            Ok(())
        } else {
            Err(format!("no email for bob yet: {receipts:?}"))
        }
    })
    .await;
    // A moment for anything sent twice to arrive too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let receipts: Vec<String> = smtp.receipts().into_iter().map(|(_, to)| to).collect();
    assert_eq!(receipts, ["bob@example.com"], "one email, for bob alone");
    let _ = std::fs::remove_dir_all(&dir);
}
