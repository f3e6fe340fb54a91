//! The ntfy driver against a loopback receiver that speaks ntfy's publish
//! API (tests/peers/ntfy_receiver.py).

use std::time::Duration;

use herald::domain::values::{HttpUrl, NotificationId, NtfyTopic, Priority, Tag, TenantId};
use herald::egress::SendError;
use herald::providers::ntfy::{NtfyConfig, NtfyProvider};
use herald::providers::{Destination, OutboundMessage, Provider};
use herald::signing::Secret;
use serde_json::{Value, json};

use crate::peers::{Peer, free_port};

const TOKEN: &str = "tk_herald_test_token_0123456789";

async fn receiver(token: Option<&str>) -> Peer {
    let port = free_port();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/ntfy_receiver.py");
    let port_text = port.to_string();
    let mut args = vec![script, "--port", &port_text];
    if let Some(token) = token {
        args.extend(["--token", token]);
    }
    Peer::spawn_python("ntfy receiver", &args, port).await
}

async fn recorded(peer: &Peer) -> Vec<Value> {
    reqwest::get(format!("http://127.0.0.1:{}/_peer/requests", peer.port))
        .await
        .expect("the receiver answers")
        .json()
        .await
        .expect("a JSON list")
}

fn provider(peer: &Peer, token: Option<&str>) -> NtfyProvider {
    let config = NtfyConfig {
        server_url: HttpUrl::parse(&format!("http://127.0.0.1:{}", peer.port)).unwrap(),
        token: token.map(Secret::new),
        tags: vec![Tag::parse("herald").unwrap()],
        ..NtfyConfig::default()
    };
    NtfyProvider::new("ntfy-test", &config).expect("a provider")
}

fn message(topic: &str) -> OutboundMessage {
    OutboundMessage {
        notification_id: NotificationId::new(),
        tenant_id: TenantId::parse("acme").unwrap(),
        attempt: 1,
        destination: Destination::Ntfy(NtfyTopic::parse(topic).unwrap()),
        priority: Priority::High,
        category: None,
        tags: vec![Tag::parse("warning").unwrap(), Tag::parse("disk").unwrap()],
        title: Some("Disk almost full".into()),
        text: Some("/var is at 93%".into()),
        html: None,
        cta_url: Some(HttpUrl::parse("https://grafana.example.com/d/disk").unwrap()),
        data: None,
        headers: Vec::new(),
        signing_secrets: Vec::new(),
        attachments: Vec::new(),
    }
}

#[tokio::test]
async fn a_publish_arrives_with_title_priority_tags_click_and_token() {
    let peer = receiver(Some(TOKEN)).await;
    let message = message("alerts_prod-1");

    let receipt = provider(&peer, Some(TOKEN))
        .send(&message)
        .await
        .expect("published");

    let publishes = recorded(&peer).await;
    assert_eq!(publishes.len(), 1);
    let published = &publishes[0]["message"];
    assert_eq!(
        receipt.provider_message_id.as_deref(),
        published["id"].as_str()
    );
    assert_eq!(published["topic"], "alerts_prod-1");
    assert_eq!(published["message"], "/var is at 93%");
    assert_eq!(published["title"], "Disk almost full");
    assert_eq!(published["priority"], 4);
    assert_eq!(published["tags"], json!(["herald", "warning", "disk"]));
    assert_eq!(published["click"], "https://grafana.example.com/d/disk");
    let headers = &publishes[0]["headers"];
    assert_eq!(headers["authorization"], format!("Bearer {TOKEN}"));
    assert_eq!(
        headers["x-herald-notification-id"],
        message.notification_id.to_string()
    );
}

#[tokio::test]
async fn unicode_titles_and_tags_survive_the_headers() {
    let peer = receiver(None).await;
    let mut message = message("cafe");
    message.title = Some("Café ☕ ready\nnow".into());
    message.tags = vec![Tag::parse("für").unwrap()];
    message.priority = Priority::Low;
    message.cta_url = None;
    message.text = None;

    provider(&peer, None)
        .send(&message)
        .await
        .expect("published");

    let published = &recorded(&peer).await[0];
    assert_eq!(published["message"]["title"], "Café ☕ ready\nnow");
    assert_eq!(published["message"]["tags"], json!(["herald", "für"]));
    assert_eq!(published["message"]["priority"], 2);
    assert_eq!(published["message"]["message"], "triggered");
    assert!(published["message"].get("click").is_none());
    assert!(published["headers"].get("authorization").is_none());
}

#[tokio::test]
async fn a_wrong_or_missing_token_is_permanent_and_not_shown() {
    let peer = receiver(Some(TOKEN)).await;
    let wrong = "tk_wrong_token_987654321";

    let refused = provider(&peer, Some(wrong))
        .send(&message("alerts"))
        .await
        .unwrap_err();
    let anonymous = provider(&peer, None)
        .send(&message("alerts"))
        .await
        .unwrap_err();

    assert_eq!(
        refused,
        SendError::permanent("ntfy answered HTTP 401 (client error)")
    );
    assert!(!format!("{refused} {refused:?}").contains(wrong));
    assert_eq!(
        anonymous,
        SendError::permanent("ntfy answered HTTP 403 (client error)")
    );
    assert!(recorded(&peer).await.is_empty());
}

#[tokio::test]
async fn busy_or_unreachable_servers_are_transient() {
    let peer = receiver(None).await;
    reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/_peer/respond", peer.port))
        .json(&json!([
            {"status": 429, "headers": {"Retry-After": "7"}},
            {"status": 502},
        ]))
        .send()
        .await
        .expect("the receiver takes a script");
    let provider = provider(&peer, None);

    let limited = provider.send(&message("alerts")).await.unwrap_err();
    let bad_gateway = provider.send(&message("alerts")).await.unwrap_err();

    assert_eq!(
        limited,
        SendError::Transient {
            message: "ntfy answered HTTP 429 (rate limited)".into(),
            retry_after: Some(Duration::from_secs(7)),
        }
    );
    assert_eq!(
        bad_gateway,
        SendError::Transient {
            message: "ntfy answered HTTP 502 (server error)".into(),
            retry_after: None,
        }
    );

    let nowhere = NtfyProvider::new(
        "ntfy-test",
        &NtfyConfig {
            server_url: HttpUrl::parse(&format!("http://127.0.0.1:{}", free_port())).unwrap(),
            ..NtfyConfig::default()
        },
    )
    .unwrap();
    let refused = nowhere.send(&message("alerts")).await.unwrap_err();
    assert!(!refused.is_permanent(), "{refused:?}");
}
