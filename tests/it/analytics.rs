//! The analyst query over the analytics projection, fed by a running projector.

use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::support::{TestApp, error_codes};

#[tokio::test]
async fn analytics_counts_statuses_per_channel_with_rates() {
    let app = TestApp::start().await;
    let (_, key) = app.tenant().await;
    let stop = CancellationToken::new();
    let projector = herald::projections::runner::spawn_all(app.store.clone(), stop.clone());
    let send = "mutation($input: SendNotificationInput!) { sendNotification(input: $input) { notification { id } } }";
    let mut ids = Vec::new();
    for channel in ["EMAIL", "EMAIL", "EMAIL", "SMS"] {
        let input = json!({
            "recipient": { "email": "ada@example.com", "phone": "+447700900123" },
            "channels": [channel],
            "content": { "text": "hi" },
        });
        let sent = app
            .graphql(Some(&key), send, json!({ "input": input }))
            .await;
        ids.push(sent["data"]["sendNotification"]["notification"]["id"].clone());
    }
    app.graphql(
        Some(&key),
        "mutation($id: ID!) { cancelNotification(id: $id) { status } }",
        json!({ "id": ids[0] }),
    )
    .await;

    let query = r#"query($from: DateTime!, $to: DateTime!) {
      analytics(from: $from, to: $to, groupBy: [CHANNEL, STATUS]) { channel status count rate }
    }"#;
    let window = json!({
        "from": (chrono::Utc::now() - chrono::Duration::hours(2)).to_rfc3339(),
        "to": (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339(),
    });
    let expected = json!([
        { "channel": "email", "status": "CANCELLED", "count": 1, "rate": 1.0 / 3.0 },
        { "channel": "email", "status": "REQUESTED", "count": 3, "rate": 1.0 },
        { "channel": "sms", "status": "REQUESTED", "count": 1, "rate": 1.0 },
    ]);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut rows: Value;
    loop {
        let response = app.graphql(Some(&key), query, window.clone()).await;
        assert!(response["errors"].is_null(), "{response}");
        rows = response["data"]["analytics"].clone();
        if rows == expected || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(rows, expected);

    let backwards = json!({ "from": window["to"], "to": window["from"] });
    let response = app.graphql(Some(&key), query, backwards).await;
    assert_eq!(error_codes(&response), vec!["VALIDATION"]);
    stop.cancel();
    projector.await.unwrap();
}
