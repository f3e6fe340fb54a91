//! A bounded schema fuzz: hypothesis-graphql (`tests/peers/graphql_fuzz.py`)
//! generates queries and mutations from `schema.graphql`, with odd values in
//! every argument, and sends them to a real `herald serve` with an admin key.
//! Bad input must come back as a typed error: no 5xx, no `INTERNAL`, no
//! panic, and the service stays ready.

use std::fs::File;

use serde_json::{Value, json};

use crate::peers::{PYTHON_PEERS, python};
use crate::served::serve_with_stderr;
use crate::support::{TestApp, error_codes};

/// Operations per run: enough to reach every root field many times over,
/// few enough for a minute or so against a debug build.
const OPERATIONS: &str = "300";

#[tokio::test]
async fn generated_operations_get_typed_errors_and_the_service_stays_ready() {
    let dir = std::env::temp_dir().join(format!("herald-fuzz-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let stderr_path = dir.join("herald.stderr");
    let stderr = File::create(&stderr_path).unwrap();
    let served = serve_with_stderr(&dir, "Fuzz", "", Some(&stderr)).await;

    let output = tokio::process::Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/peers/graphql_fuzz.py"
        ))
        .args(["--url", &served.base, "--key", &served.key])
        .args(["--count", OPERATIONS])
        .args([
            "--schema",
            concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql"),
        ])
        .output()
        .await
        .expect("the Python peers run");
    let report = String::from_utf8_lossy(&output.stdout);
    let server_stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(
        output.status.success(),
        "{report}\n{}\n(the Python peers: {PYTHON_PEERS})\nserver stderr:\n{server_stderr}",
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(
        !server_stderr.contains("panicked"),
        "herald panicked during the fuzz:\n{server_stderr}"
    );
    eprintln!("{report}");
    drop(served);
    let _ = std::fs::remove_dir_all(&dir);
}

/// What the fuzz found: a NUL in a campaign's address column, in a listed
/// or uploaded recipient's variables, in a cancel reason, in a partial's
/// body or in a suppression filter reached PostgreSQL (jsonb and text refuse
/// it) and came back `INTERNAL`.
#[tokio::test]
async fn nul_characters_in_campaign_input_get_typed_answers() {
    let app = TestApp::start().await;
    let (_, key) = app.tenant().await;
    let call = |query: &'static str, variables: Value| {
        let app = &app;
        let key = &key;
        async move { app.graphql(Some(key), query, variables).await }
    };
    let published = call(
        r#"mutation($input: PublishTemplateInput!) { publishTemplate(input: $input) { key } }"#,
        json!({ "input": {
            "key": "sale", "defaultLocale": "en", "variables": [],
            "locales": [{ "locale": "en", "email": { "subject": "Sale", "text": "Sale" } }],
        }}),
    )
    .await;
    assert!(published["errors"].is_null(), "{published}");
    const CREATE: &str = r#"mutation($input: CreateCampaignInput!) {
      createCampaign(input: $input) { campaign { id } }
    }"#;
    let campaign = |address_column: &'static str| {
        json!({ "input": {
            "name": "Sale", "template": { "key": "sale" }, "channel": "email",
            "addressColumn": address_column, "progressSteps": [],
        }})
    };

    let refused = call(CREATE, campaign("e\u{0}mail")).await;
    assert_eq!(error_codes(&refused), ["VALIDATION"], "{refused}");
    assert_eq!(
        refused["errors"][0]["extensions"]["fields"][0]["path"],
        "addressColumn"
    );

    let created = call(CREATE, campaign("email")).await;
    let id = created["data"]["createCampaign"]["campaign"]["id"].clone();
    assert!(id.is_string(), "{created}");
    let listed = call(
        r#"mutation($id: ID!, $recipients: [CampaignRecipientInput!]!) {
          addCampaignRecipients(id: $id, recipients: $recipients) { accepted rejected errors { line reason } }
        }"#,
        json!({ "id": id, "recipients": [
            { "address": "ada@example.com", "variables": { "name": "A\u{0}da" } },
            { "address": "bob@example.com", "variables": { "n\u{0}ame": "Bob" } },
            { "address": "cy@example.com", "variables": { "name": "Cy" } },
        ]}),
    )
    .await;
    assert!(listed["errors"].is_null(), "{listed}");
    let summary = &listed["data"]["addCampaignRecipients"];
    assert_eq!(summary["accepted"], 1, "{summary}");
    assert_eq!(summary["rejected"], 2, "{summary}");
    for error in summary["errors"].as_array().unwrap() {
        assert!(
            error["reason"]
                .as_str()
                .unwrap()
                .contains("must not contain NUL"),
            "{error}"
        );
    }

    let uploaded = app
        .http
        .post(format!(
            "{}/api/campaigns/{}/recipients",
            app.base,
            id.as_str().unwrap()
        ))
        .bearer_auth(&key)
        .header("content-type", "text/csv")
        .body("email,name\ndee@example.com,D\u{0}ee\n")
        .send()
        .await
        .expect("sent");
    assert_eq!(uploaded.status(), 200);
    let summary: Value = uploaded.json().await.expect("JSON");
    assert_eq!(summary["rejected"], 1, "{summary}");

    let cancelled = call(
        r#"mutation($id: ID!) { cancelCampaign(id: $id, reason: "gone\u0000") { status } }"#,
        json!({ "id": id }),
    )
    .await;
    assert!(cancelled["errors"].is_null(), "{cancelled}");
    assert_eq!(cancelled["data"]["cancelCampaign"]["status"], "CANCELLED");

    let partial = call(
        r#"mutation { upsertTemplatePartial(name: "footer", body: "b\u0000ye") { name } }"#,
        json!({}),
    )
    .await;
    assert_eq!(error_codes(&partial), ["VALIDATION"], "{partial}");
    let filtered = call(
        r#"{ suppressions(first: 5, filter: { addressContains: "a\u0000" }) { edges { cursor } } }"#,
        json!({}),
    )
    .await;
    assert_eq!(error_codes(&filtered), ["VALIDATION"], "{filtered}");
}
