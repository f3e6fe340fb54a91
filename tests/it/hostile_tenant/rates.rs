//! A key bursts past its request rate (`[limits] api_rate`, per API key).

use std::time::Duration;

use serde_json::{Value, json};

use herald::commands::limits::LimitsConfig;
use herald::config::Config;
use herald::domain::RateLimit;

use crate::support::{TestApp, error_codes};

const QUERY: &str = "{ tenantLimits { messagesPerDay } }";

/// One GraphQL request: its status, `Retry-After` and body.
async fn graphql(app: &TestApp, key: &str) -> (u16, Option<u64>, Value) {
    let answer = app
        .http
        .post(format!("{}/graphql", app.base))
        .bearer_auth(key)
        .json(&json!({ "query": QUERY }))
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    let retry_after = retry_after(&answer);
    (status, retry_after, answer.json().await.unwrap())
}

async fn rest(app: &TestApp, key: &str) -> (u16, Option<u64>, Value) {
    let answer = app
        .http
        .get(format!(
            "{}/api/notifications/{}",
            app.base,
            uuid::Uuid::now_v7()
        ))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    let retry_after = retry_after(&answer);
    (status, retry_after, answer.json().await.unwrap())
}

fn retry_after(answer: &reqwest::Response) -> Option<u64> {
    answer
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap())
}

#[tokio::test]
async fn a_burst_past_the_keys_rate_is_refused_until_retry_after() {
    let config = Config {
        limits: LimitsConfig {
            api_rate: Some(RateLimit::new(2.0, 3.0).unwrap()),
            ..LimitsConfig::default()
        },
        ..Config::default()
    };
    let app = TestApp::start_with(&config).await;
    let (_, key) = app.tenant().await;
    let (_, neighbour) = app.tenant().await;

    // GraphQL: within a few requests past the burst of 3, the key is refused.
    let mut refused = None;
    for _ in 0..50 {
        let answer = graphql(&app, &key).await;
        if answer.0 != 200 {
            refused = Some(answer);
            break;
        }
        assert!(answer.2["errors"].is_null(), "{}", answer.2);
    }
    let (status, header, body) = refused.expect("the burst was refused");
    assert_eq!(status, 429, "{body}");
    assert_eq!(error_codes(&body), ["RATE_LIMITED"], "{body}");
    let wait = body["errors"][0]["extensions"]["retryAfter"]
        .as_u64()
        .expect("retryAfter");
    assert!((1..=2).contains(&wait), "{body}");
    assert_eq!(header, Some(wait));

    // The REST twin shares the key's bucket.
    let (status, header, body) = rest(&app, &key).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "RATE_LIMITED");
    assert!(header.is_some_and(|s| s >= 1));

    // Another tenant's key is untouched by the burst.
    let (status, _, body) = graphql(&app, &neighbour).await;
    assert_eq!(status, 200);
    assert!(body["errors"].is_null(), "{body}");
    let (status, _, _) = rest(&app, &neighbour).await;
    assert_eq!(status, 404, "an unknown notification, not a refusal");

    // After Retry-After the key works again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        tokio::time::sleep(Duration::from_secs(wait)).await;
        let (status, _, body) = graphql(&app, &key).await;
        if status == 200 {
            assert!(body["errors"].is_null(), "{body}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still refused: {body}"
        );
    }
}
