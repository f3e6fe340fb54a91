//! Traces (issue 16 item 7): a notification's whole life in one trace, as
//! an independent OTLP/HTTP receiver (the OpenTelemetry project's protobuf
//! definitions, PyPI `opentelemetry-proto`) decodes what a real `herald
//! serve` exports. The trace is the caller's `traceparent`, or the request's
//! `trace_id`, or a new one; every event of the notification records it.

use std::time::Duration;

use serde_json::{Value, json};

use crate::peers::{Peer, free_port};
use crate::served::{Served, serve};
use crate::support::eventually;

async fn otlp_receiver() -> Peer {
    let port = free_port();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/otlp_receiver.py");
    Peer::spawn_python("the OTLP receiver", &[script, &port.to_string()], port).await
}

/// Sends one email through the REST twin; its notification id.
async fn send(served: &Served, traceparent: Option<&str>, body_trace_id: Option<&str>) -> String {
    let mut body = json!({
        "recipient": { "email": "ada@example.com" },
        "channels": ["email"],
        "content": { "title": "Traced", "text": "One trace from request to provider" },
    });
    if let Some(trace_id) = body_trace_id {
        body["trace_id"] = json!(trace_id);
    }
    let mut request = served
        .http
        .post(format!("{}/api/notifications", served.base))
        .bearer_auth(&served.key)
        .json(&body);
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    let answer = request.send().await.expect("an answer");
    assert_eq!(answer.status(), 202);
    let answer: Value = answer.json().await.expect("JSON");
    answer["notification_id"]
        .as_str()
        .expect("an id")
        .to_string()
}

/// Sends one email through GraphQL with a `traceparent` header and a
/// `traceId`; its notification id.
async fn graphql_send(served: &Served, traceparent: &str, trace_id: &str) -> String {
    let answer: Value = served
        .http
        .post(format!("{}/graphql", served.base))
        .bearer_auth(&served.key)
        .header("traceparent", traceparent)
        .json(&json!({
            "query": "mutation($input: SendNotificationInput!) { sendNotification(input: $input) { notification { id } } }",
            "variables": { "input": {
                "recipient": { "email": "ada@example.com" },
                "channels": ["EMAIL"],
                "content": { "title": "Traced", "text": "Named by the caller" },
                "traceId": trace_id,
            } },
        }))
        .send()
        .await
        .expect("an answer")
        .json()
        .await
        .expect("JSON");
    answer["data"]["sendNotification"]["notification"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("a notification: {answer:#}"))
        .to_string()
}

/// Waits until the notification was handed to its provider.
async fn wait_sent(served: &Served, id: &str) {
    eventually(Duration::from_secs(30), async || {
        let view: Value = served
            .http
            .get(format!("{}/api/notifications/{id}", served.base))
            .bearer_auth(&served.key)
            .send()
            .await
            .expect("an answer")
            .json()
            .await
            .expect("JSON");
        if view["status"] == "SENT" {
            Ok(())
        } else {
            Err(format!("not sent: {view:#}"))
        }
    })
    .await;
}

/// The trace id of every event of the notification, from the log itself.
async fn event_trace_ids(served: &Served, id: &str) -> Vec<Option<String>> {
    let pool = sqlx::PgPool::connect(&served.database_url)
        .await
        .expect("connected");
    let metadata: Vec<Value> = sqlx::query_scalar(
        "SELECT metadata FROM events WHERE stream_id = $1 ORDER BY stream_version",
    )
    .bind(format!("notification-{id}"))
    .fetch_all(&pool)
    .await
    .expect("events read");
    pool.close().await;
    assert!(
        metadata.len() >= 3,
        "requested, attempted, sent: {metadata:?}"
    );
    metadata
        .iter()
        .map(|m| m["trace_id"].as_str().map(str::to_string))
        .collect()
}

/// The spans of `trace_id` the receiver has, once it has every one of `names`.
async fn spans_of(receiver: &Peer, trace_id: &str, names: &[&str]) -> Vec<Value> {
    let http = reqwest::Client::new();
    eventually(Duration::from_secs(30), async || {
        let all: Vec<Value> = http
            .get(format!("http://127.0.0.1:{}/spans", receiver.port))
            .send()
            .await
            .expect("the receiver answers")
            .json()
            .await
            .expect("JSON");
        let spans: Vec<Value> = all
            .into_iter()
            .filter(|span| span["trace_id"] == trace_id)
            .collect();
        if names
            .iter()
            .all(|name| spans.iter().any(|span| span["name"] == *name))
        {
            Ok(spans)
        } else {
            Err(format!(
                "trace {trace_id} lacks some of {names:?}: {spans:#?}"
            ))
        }
    })
    .await
}

fn named_span<'a>(spans: &'a [Value], name: &str) -> &'a Value {
    spans
        .iter()
        .find(|span| span["name"] == name)
        .unwrap_or_else(|| panic!("no {name} span in {spans:#?}"))
}

const LIFE: [&str; 4] = [
    "POST /api/notifications",
    "send_notification",
    "dispatch",
    "provider_call",
];

#[tokio::test]
async fn a_notification_s_life_is_one_trace() {
    let receiver = otlp_receiver().await;
    let dir = tempfile_dir("traces");
    let served = serve(
        &dir,
        "traced",
        &format!(
            "otel_exporter_otlp_endpoint = \"http://127.0.0.1:{}\"\n",
            receiver.port
        ),
    )
    .await;

    // The caller's W3C traceparent: Herald's spans are its children.
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let from_header = send(
        &served,
        Some(&format!("00-{caller_trace}-{caller_span}-01")),
        None,
    )
    .await;
    // A trace id in the request body (`trace_id`), no header.
    let body_trace = "0af7651916cd43dd8448eb211c80319c";
    let from_body = send(&served, None, Some(body_trace)).await;
    // Neither: a new trace, which the events name.
    let fresh = send(&served, None, None).await;
    // Both, through GraphQL, the request's `traceId` not a W3C id: the
    // request's wins, as the first 16 bytes of its SHA-256.
    let other_caller = "5bf92f3577b34da6a3ce929d0e0e4737";
    let named = graphql_send(
        &served,
        &format!("00-{other_caller}-{caller_span}-01"),
        "order-1234",
    )
    .await;
    let named_trace = {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(b"order-1234");
        digest[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    for id in [&from_header, &from_body, &fresh, &named] {
        wait_sent(&served, id).await;
    }

    for (id, trace) in [
        (&from_header, caller_trace),
        (&from_body, body_trace),
        (&named, named_trace.as_str()),
    ] {
        let traces = event_trace_ids(&served, id).await;
        assert!(
            traces.iter().all(|t| t.as_deref() == Some(trace)),
            "every event of {id} in trace {trace}: {traces:?}"
        );
    }
    let fresh_traces = event_trace_ids(&served, &fresh).await;
    let fresh_trace = fresh_traces[0].clone().expect("a new trace id");
    assert!(
        fresh_traces
            .iter()
            .all(|t| t.as_ref() == Some(&fresh_trace)),
        "{fresh_traces:?}"
    );
    assert_ne!(fresh_trace, caller_trace);
    assert_ne!(fresh_trace, body_trace);

    // The header's trace, span by span: request, command, dispatch, provider call.
    let spans = spans_of(&receiver, caller_trace, &LIFE).await;
    let request = named_span(&spans, LIFE[0]);
    let command = named_span(&spans, LIFE[1]);
    let call = named_span(&spans, LIFE[3]);
    assert_eq!(request["parent_span_id"], caller_span, "{spans:#?}");
    assert_eq!(request["service"], "herald");
    assert_eq!(command["parent_span_id"], request["span_id"], "{spans:#?}");
    let dispatch = spans
        .iter()
        .find(|span| span["name"] == "dispatch" && span["span_id"] == call["parent_span_id"])
        .unwrap_or_else(|| panic!("the provider call's parent is a dispatch: {spans:#?}"));
    // The worker picked the trace up from the events the command recorded.
    assert_eq!(dispatch["parent_span_id"], command["span_id"], "{spans:#?}");
    assert_eq!(call["attributes"]["provider"], "console");
    assert_eq!(
        dispatch["attributes"]["notification_id"],
        from_header.as_str()
    );

    // The request's trace_id: the command and everything after it.
    let spans = spans_of(&receiver, body_trace, &LIFE[1..]).await;
    let command = named_span(&spans, LIFE[1]);
    let dispatch = spans
        .iter()
        .find(|span| span["name"] == "dispatch" && span["parent_span_id"] == command["span_id"])
        .unwrap_or_else(|| panic!("a dispatch under the command: {spans:#?}"));
    assert_eq!(
        dispatch["attributes"]["notification_id"],
        from_body.as_str()
    );

    // The caller's traceparent holds the GraphQL request's span; the
    // command, in the named trace, links back to it.
    let spans = spans_of(&receiver, other_caller, &["POST /graphql"]).await;
    let request = named_span(&spans, "POST /graphql");
    assert_eq!(request["parent_span_id"], caller_span);
    let spans = spans_of(&receiver, &named_trace, &LIFE[1..]).await;
    assert_eq!(
        named_span(&spans, LIFE[1])["parent_span_id"],
        request["span_id"],
        "{spans:#?}"
    );

    // A new trace: the whole life again, the request span its root.
    let spans = spans_of(&receiver, &fresh_trace, &LIFE).await;
    assert_eq!(
        named_span(&spans, LIFE[0])["parent_span_id"],
        "",
        "{spans:#?}"
    );
    assert_eq!(
        named_span(&spans, LIFE[1])["parent_span_id"],
        named_span(&spans, LIFE[0])["span_id"]
    );
}

fn tempfile_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("herald-{name}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
