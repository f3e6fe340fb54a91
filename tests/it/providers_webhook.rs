//! The webhook driver against a receiver that verifies with the Standard
//! Webhooks reference library (tests/peers/webhook_receiver.py).

use std::time::Duration;

use herald::domain::values::{
    Category, HttpUrl, JsonObject, NotificationId, Priority, Tag, TenantId,
};
use herald::egress::SendError;
use herald::providers::webhook::{WebhookConfig, WebhookProvider};
use herald::providers::{Destination, OutboundMessage, Provider};
use herald::signing::{WebhookSecret, generate_secret};
use serde_json::{Value, json};

use crate::peers::{Peer, free_port, webhook_answer_next, webhook_receiver, webhook_requests};

async fn receiver(secret: &WebhookSecret) -> Peer {
    webhook_receiver(free_port(), secret).await
}

fn provider() -> WebhookProvider {
    WebhookProvider::new("webhook-test", &WebhookConfig::default(), &loopback())
        .expect("a provider")
}

/// The receivers listen on loopback, which these tests' operator allows.
fn loopback() -> herald::egress::Egress {
    herald::egress::Egress::new(&crate::support::loopback_egress())
}

fn message(port: u16, secrets: &[WebhookSecret]) -> OutboundMessage {
    OutboundMessage {
        notification_id: NotificationId::new(),
        tenant_id: TenantId::parse("acme").unwrap(),
        attempt: 2,
        destination: Destination::Webhook(
            HttpUrl::parse(&format!("http://127.0.0.1:{port}/hooks/herald?k=v")).unwrap(),
        ),
        priority: Priority::High,
        category: Some(Category::parse("auth").unwrap()),
        tags: vec![Tag::parse("otp").unwrap()],
        title: Some("Your code".into()),
        text: Some("Your code is 384921".into()),
        html: None,
        cta_url: Some(HttpUrl::parse("https://app.example.com/login").unwrap()),
        data: Some(JsonObject::parse(json!({"code": "384921"}), 1024).unwrap()),
        headers: Vec::new(),
        signing_secrets: secrets.to_vec(),
        attachments: Vec::new(),
    }
}

/// Neither the whole secret nor its key part appear in the error.
fn assert_hides(error: &SendError, secrets: &[WebhookSecret]) {
    let shown = format!("{error} {error:?}");
    for secret in secrets {
        let key = secret.expose().trim_start_matches("whsec_");
        assert!(!shown.contains(key), "{shown} leaks a secret");
    }
}

#[tokio::test]
async fn a_signed_message_verifies_with_the_reference_library() {
    let secret = generate_secret();
    let peer = receiver(&secret).await;
    let message = message(peer.port, std::slice::from_ref(&secret));

    let receipt = provider().send(&message).await.expect("delivered");

    let id = message.notification_id.to_string();
    assert_eq!(receipt.provider_message_id.as_deref(), Some(id.as_str()));
    let requests = webhook_requests(&peer).await;
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request["verified"], true, "{request}");
    assert_eq!(request["tampered_verified"], false, "{request}");
    assert_eq!(request["path"], "/hooks/herald?k=v");
    assert_eq!(request["headers"]["webhook-id"], id.as_str());
    assert_eq!(request["headers"]["idempotency-key"], id.as_str());
    assert_eq!(request["headers"]["content-type"], "application/json");
    let body: Value = serde_json::from_str(request["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        body,
        json!({
            "type": "notification.message",
            "notification_id": id,
            "tenant_id": "acme",
            "attempt": 2,
            "priority": "HIGH",
            "category": "auth",
            "tags": ["otp"],
            "title": "Your code",
            "text": "Your code is 384921",
            "cta_url": "https://app.example.com/login",
            "data": {"code": "384921"},
        })
    );
}

#[tokio::test]
async fn during_rotation_a_receiver_with_either_secret_verifies() {
    let (old, new) = (generate_secret(), generate_secret());
    let knows_new = receiver(&new).await;
    let knows_old = receiver(&old).await;
    let both = [old, new];

    for peer in [&knows_new, &knows_old] {
        provider()
            .send(&message(peer.port, &both))
            .await
            .expect("delivered");
        let request = &webhook_requests(peer).await[0];
        assert_eq!(request["verified"], true, "{request}");
        let signature = request["headers"]["webhook-signature"].as_str().unwrap();
        assert_eq!(signature.split(' ').count(), 2, "{signature}");
    }
}

#[tokio::test]
async fn a_receiver_with_another_secret_rejects_the_signature() {
    let peer = receiver(&generate_secret()).await;

    // The receiver answers 204 either way; only its verdict is under test.
    provider()
        .send(&message(peer.port, &[generate_secret()]))
        .await
        .expect("delivered");

    let request = &webhook_requests(&peer).await[0];
    assert_eq!(request["verified"], false, "{request}");
    assert!(
        request["error"]
            .as_str()
            .unwrap()
            .contains("No matching signature"),
        "{request}"
    );
}

#[tokio::test]
async fn retryable_answers_are_transient_with_the_requested_pause() {
    let secret = generate_secret();
    let peer = receiver(&secret).await;
    webhook_answer_next(
        &peer,
        json!([
            {"status": 500, "body": "database down"},
            {"status": 429, "headers": {"Retry-After": "7"}},
            {"status": 503, "headers": {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}},
            {"status": 408},
        ]),
    )
    .await;
    let provider = provider();
    let message = message(peer.port, std::slice::from_ref(&secret));

    let mut errors = Vec::new();
    for _ in 0..4 {
        errors.push(provider.send(&message).await.unwrap_err());
    }

    assert_eq!(
        errors,
        [
            SendError::Transient {
                message: "webhook answered HTTP 500 (server error)".into(),
                retry_after: None,
            },
            SendError::Transient {
                message: "webhook answered HTTP 429 (rate limited)".into(),
                retry_after: Some(Duration::from_secs(7)),
            },
            SendError::Transient {
                message: "webhook answered HTTP 503 (server error)".into(),
                retry_after: Some(Duration::ZERO),
            },
            SendError::Transient {
                message: "webhook answered HTTP 408 (request timeout)".into(),
                retry_after: None,
            },
        ]
    );
    let requests = webhook_requests(&peer).await;
    assert_eq!(requests.len(), 4);
    assert!(requests.iter().all(|request| request["verified"] == true));
}

#[tokio::test]
async fn refusals_and_redirects_are_permanent_and_never_show_the_secret() {
    let secret = generate_secret();
    let peer = receiver(&secret).await;
    // A receiver that echoes the secret back must not get it into the error.
    webhook_answer_next(
        &peer,
        json!([
            {"status": 400, "body": format!("bad signature for {}", secret.expose())},
            {"status": 410},
            {"status": 302, "headers": {"Location": "http://127.0.0.1:1/elsewhere"}},
        ]),
    )
    .await;
    let provider = provider();
    let message = message(peer.port, std::slice::from_ref(&secret));

    let mut errors = Vec::new();
    for _ in 0..3 {
        errors.push(provider.send(&message).await.unwrap_err());
    }

    assert_eq!(
        errors,
        [
            SendError::permanent("webhook answered HTTP 400 (client error)"),
            SendError::permanent("webhook answered HTTP 410 (client error)"),
            SendError::permanent("webhook answered HTTP 302 (redirect, not followed)"),
        ]
    );
    for error in &errors {
        assert_hides(error, std::slice::from_ref(&secret));
    }
    assert_eq!(
        webhook_requests(&peer).await.len(),
        3,
        "the redirect was not followed"
    );
}

#[tokio::test]
async fn an_unreachable_or_slow_receiver_is_transient() {
    let refused = provider()
        .send(&message(free_port(), &[generate_secret()]))
        .await
        .unwrap_err();
    assert!(!refused.is_permanent(), "{refused:?}");
    assert!(
        refused.to_string() == "webhook: connection refused",
        "{refused}"
    );
    assert!(!refused.to_string().contains("/hooks/herald"), "{refused}");

    let secret = generate_secret();
    let peer = receiver(&secret).await;
    webhook_answer_next(&peer, json!([{"status": 204, "delay_seconds": 3}])).await;
    let impatient = WebhookProvider::new(
        "webhook-test",
        &WebhookConfig {
            timeout_seconds: 1,
            ..WebhookConfig::default()
        },
        &loopback(),
    )
    .unwrap();
    let slow = impatient
        .send(&message(peer.port, std::slice::from_ref(&secret)))
        .await
        .unwrap_err();
    assert!(!slow.is_permanent(), "{slow:?}");
    assert!(slow.to_string() == "webhook: timed out", "{slow}");
}

#[tokio::test]
async fn no_or_malformed_secrets_send_nothing() {
    let secret = generate_secret();
    let peer = receiver(&secret).await;
    let malformed = WebhookSecret::new("whsec_this is not base64!");

    let unsigned = provider().send(&message(peer.port, &[])).await.unwrap_err();
    let broken = provider()
        .send(&message(peer.port, &[secret.clone(), malformed.clone()]))
        .await
        .unwrap_err();

    assert_eq!(
        unsigned,
        SendError::permanent("no signing secret: Herald never sends an unsigned webhook")
    );
    assert_eq!(
        broken,
        SendError::permanent("signing secret 2 is malformed: expected whsec_ followed by base64")
    );
    assert_hides(&broken, &[secret, malformed]);
    assert!(webhook_requests(&peer).await.is_empty());
}
