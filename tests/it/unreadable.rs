//! A notification stream holding an event that cannot be read (a malformed
//! payload, a schema version from the future): reads show the readable
//! history with the bad event marked, commands and an unreadable request
//! answer `UNREADABLE_STREAM`, never `INTERNAL`.

use serde_json::{Value, json};

use crate::support::{TestApp, append_raw, error_codes, position};

const GET: &str = r#"query($id: ID!) {
  notification(id: $id) { id status timeline { type position version readError } }
}"#;

async fn rest_get(app: &TestApp, key: &str, id: &str) -> (u16, Value) {
    let response = app
        .http
        .get(format!("{}/api/notifications/{id}", app.base))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn a_stream_with_unreadable_events_reads_as_its_readable_history() {
    let app = TestApp::start().await;
    let (tenant, key) = app.tenant().await;
    let sent = app
        .graphql(
            Some(&key),
            r#"mutation($input: SendNotificationInput!) { sendNotification(input: $input) { notification { id } } }"#,
            json!({ "input": {
                "recipient": { "email": "ada@example.com" },
                "channels": ["EMAIL"],
                "content": { "title": "Hello", "text": "Your code is 123456" },
            }}),
        )
        .await;
    let id = sent["data"]["sendNotification"]["notification"]["id"]
        .as_str()
        .expect("sent")
        .to_string();
    let stream = format!("notification-{id}");
    let malformed = append_raw(
        &app.store,
        &stream,
        &tenant,
        "NotificationScheduled",
        1,
        json!({ "schedule_at": "yesterday", "reason": "quiet hours" }),
    )
    .await;
    append_raw(
        &app.store,
        &stream,
        &tenant,
        "NotificationRanked",
        1,
        json!({ "score": 0.5, "breakdown": {}, "scorer": "rules", "send_after": null }),
    )
    .await;
    let future = append_raw(
        &app.store,
        &stream,
        &tenant,
        "NotificationCancelled",
        9,
        json!({ "reason": null }),
    )
    .await;

    let read = app.graphql(Some(&key), GET, json!({ "id": id })).await;
    assert!(read["errors"].is_null(), "{read}");
    let notification = &read["data"]["notification"];
    // Folded from the readable events: ranked, not cancelled.
    assert_eq!(notification["status"], "RANKED", "{read}");
    let timeline = notification["timeline"].as_array().unwrap();
    let types: Vec<&str> = timeline
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "NotificationRequested",
            "NotificationScheduled",
            "NotificationRanked",
            "NotificationCancelled"
        ]
    );
    let marked: Vec<(i64, i64)> = timeline
        .iter()
        .filter(|e| !e["readError"].is_null())
        .map(|e| (position(&e["position"]), e["version"].as_i64().unwrap()))
        .collect();
    assert_eq!(marked, [(malformed, 2), (future, 4)], "{read}");
    assert!(
        timeline[3]["readError"]
            .as_str()
            .unwrap()
            .contains("schema version 9"),
        "{read}"
    );

    let (status, body) = rest_get(&app, &key, &id).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "RANKED");
    let events = body["events"].as_array().unwrap();
    assert_eq!(events.len(), 4);
    assert!(events[0].get("read_error").is_none(), "{body}");
    assert!(
        events[1]["read_error"]
            .as_str()
            .is_some_and(|e| e.contains("NotificationScheduled")),
        "{body}"
    );
    assert_eq!(events[1]["position"], malformed);

    // A command needs the whole state: it waits for a repair, typed.
    let cancel = app
        .graphql(
            Some(&key),
            "mutation($id: ID!) { cancelNotification(id: $id) { status } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(error_codes(&cancel), ["UNREADABLE_STREAM"], "{cancel}");
    assert_eq!(
        cancel["errors"][0]["extensions"]["unreadable"]["position"],
        malformed
    );
}

#[tokio::test]
async fn an_unreadable_request_answers_a_typed_error_to_its_tenant_only() {
    let app = TestApp::start().await;
    let (tenant, key) = app.tenant().await;
    let (_, other_key) = app.tenant().await;
    let id = uuid::Uuid::now_v7().to_string();
    let position = append_raw(
        &app.store,
        &format!("notification-{id}"),
        &tenant,
        "NotificationRequested",
        1,
        json!({ "request": "not a request" }),
    )
    .await;

    let read = app.graphql(Some(&key), GET, json!({ "id": id })).await;
    assert_eq!(error_codes(&read), ["UNREADABLE_STREAM"], "{read}");
    let unreadable = &read["errors"][0]["extensions"]["unreadable"];
    assert_eq!(unreadable["position"], position);
    assert_eq!(unreadable["version"], 1);
    assert_eq!(unreadable["type"], "NotificationRequested");
    assert!(unreadable["error"].is_string(), "{read}");

    let (status, body) = rest_get(&app, &key, &id).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "UNREADABLE_STREAM");
    assert_eq!(body["error"]["unreadable"]["position"], position);

    // Another tenant learns nothing of it.
    let read = app
        .graphql(Some(&other_key), GET, json!({ "id": id }))
        .await;
    assert_eq!(error_codes(&read), ["NOT_FOUND"], "{read}");
    let (status, _) = rest_get(&app, &other_key, &id).await;
    assert_eq!(status, 404);
}
