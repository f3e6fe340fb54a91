//! The `sns` driver against moto's SNS: what it records for SMS and push,
//! and how its refusals are classified.

use aws_sdk_sns::Client;
use aws_sdk_sns::config::{BehaviorVersion, Credentials, Region};
use herald::domain::values::{NotificationId, PhoneNumber, Priority, PushTarget, TenantId};
use herald::egress::SendError;
use herald::providers::sns::{SnsConfig, SnsProvider};
use herald::providers::{Destination, OutboundMessage, Provider};
use herald::signing::Secret;
use serde_json::Value;

use crate::peers::{Peer, free_port};

async fn moto() -> Peer {
    let port = free_port();
    let port_text = port.to_string();
    Peer::spawn_python(
        "moto",
        &["-m", "moto.server", "-H", "127.0.0.1", "-p", &port_text],
        port,
    )
    .await
}

fn endpoint(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

fn config(port: u16) -> SnsConfig {
    SnsConfig {
        endpoint_url: Some(endpoint(port)),
        access_key_id: Some("AKIDHERALDTEST".to_string()),
        secret_access_key: Some(Secret::new("herald-test-secret")),
        sender_id: Some("Herald".to_string()),
        ..SnsConfig::default()
    }
}

/// The SDK client the test itself uses to set moto up.
fn admin(port: u16) -> Client {
    let config = aws_sdk_sns::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint(port))
        .credentials_provider(Credentials::new("AKIDHERALDTEST", "x", None, None, "test"))
        .build();
    Client::from_conf(config)
}

fn message(destination: Destination) -> OutboundMessage {
    OutboundMessage {
        notification_id: NotificationId::new(),
        tenant_id: TenantId::parse("acme").unwrap(),
        attempt: 1,
        destination,
        priority: Priority::High,
        category: None,
        tags: vec![],
        title: Some("Sign-in code".to_string()),
        text: Some("Your code is 384921".to_string()),
        html: None,
        cta_url: None,
        data: None,
        headers: vec![],
        signing_secrets: vec![],
        attachments: Vec::new(),
    }
}

fn push(arn: &str) -> Destination {
    Destination::Push(PushTarget::parse(arn).unwrap())
}

/// moto's SNS state: `SMS` and `PlatformEndpoint` lists.
async fn recorded(port: u16) -> Value {
    let data: Value = reqwest::get(format!("{}/moto-api/data.json", endpoint(port)))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    data["sns"].clone()
}

/// A GCM platform application with one device endpoint; its ARN.
async fn platform_endpoint(port: u16) -> String {
    let client = admin(port);
    let app = client
        .create_platform_application()
        .name("herald-app")
        .platform("GCM")
        .attributes("PlatformCredential", "fcm-server-key")
        .send()
        .await
        .unwrap();
    client
        .create_platform_endpoint()
        .platform_application_arn(app.platform_application_arn().unwrap())
        .token("device-token-1")
        .send()
        .await
        .unwrap()
        .endpoint_arn()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn moto_records_an_sms() {
    let peer = moto().await;
    let provider = SnsProvider::new("sns-test", &config(peer.port))
        .await
        .unwrap();
    let message = message(Destination::Sms(
        PhoneNumber::parse("+447700900123").unwrap(),
    ));

    let receipt = provider.send(&message).await.unwrap();

    let id = receipt.provider_message_id.expect("a message id");
    let sns = recorded(peer.port).await;
    let sms: Vec<&Value> = sns["SMS"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|sms| sms["message_id"] == id.as_str())
        .collect();
    assert_eq!(sms.len(), 1, "{sns}");
    assert_eq!(sms[0]["phone_number"], "+447700900123");
    assert_eq!(sms[0]["message"], "Your code is 384921");
}

#[tokio::test]
async fn moto_records_a_push_to_a_platform_endpoint() {
    let peer = moto().await;
    let arn = platform_endpoint(peer.port).await;
    let provider = SnsProvider::new("sns-test", &config(peer.port))
        .await
        .unwrap();
    let message = message(push(&arn));

    let receipt = provider.send(&message).await.unwrap();

    let id = receipt.provider_message_id.expect("a message id");
    let sns = recorded(peer.port).await;
    let endpoint = sns["PlatformEndpoint"]
        .as_array()
        .unwrap()
        .iter()
        .find(|endpoint| endpoint["arn"] == arn.as_str())
        .unwrap_or_else(|| panic!("endpoint {arn} in {sns}"));
    let published: Value = serde_json::from_str(
        endpoint["messages"][id.as_str()]
            .as_str()
            .expect("the push"),
    )
    .unwrap();
    assert_eq!(published["default"], "Your code is 384921");
    let fcm: Value = serde_json::from_str(published["GCM"].as_str().unwrap()).unwrap();
    assert_eq!(fcm["notification"]["title"], "Sign-in code");
    assert_eq!(fcm["notification"]["body"], "Your code is 384921");
    assert_eq!(
        fcm["data"]["notification_id"],
        message.notification_id.to_string()
    );
}

#[tokio::test]
async fn a_missing_or_disabled_endpoint_is_permanent() {
    let peer = moto().await;
    let arn = platform_endpoint(peer.port).await;
    let provider = SnsProvider::new("sns-test", &config(peer.port))
        .await
        .unwrap();

    let missing = format!("{}-gone", arn);
    let error = provider.send(&message(push(&missing))).await.unwrap_err();
    assert!(
        matches!(&error, SendError::Permanent { message } if message.contains("NotFound")),
        "{error:?}"
    );

    admin(peer.port)
        .set_endpoint_attributes()
        .endpoint_arn(&arn)
        .attributes("Enabled", "false")
        .send()
        .await
        .unwrap();
    let error = provider.send(&message(push(&arn))).await.unwrap_err();
    assert!(
        matches!(&error, SendError::Permanent { message } if message.contains("EndpointDisabled")),
        "{error:?}"
    );
    assert!(!format!("{error:?}").contains("herald-test-secret"));
}

#[tokio::test]
async fn an_unreachable_endpoint_is_transient() {
    let provider = SnsProvider::new("sns-test", &config(free_port()))
        .await
        .unwrap();
    let error = provider
        .send(&message(Destination::Sms(
            PhoneNumber::parse("+447700900123").unwrap(),
        )))
        .await
        .unwrap_err();
    assert!(matches!(error, SendError::Transient { .. }), "{error:?}");
    assert!(!format!("{error:?}").contains("herald-test-secret"));
}

#[tokio::test]
async fn half_credentials_or_a_bad_sender_id_stop_startup() {
    let half = SnsConfig {
        secret_access_key: None,
        ..config(4566)
    };
    let error = SnsProvider::new("sns-main", &half).await.err().unwrap();
    assert!(error.to_string().contains("sns-main"), "{error}");

    let bad_sender = SnsConfig {
        sender_id: Some("Herald Notifications".to_string()),
        ..config(4566)
    };
    assert!(SnsProvider::new("sns-main", &bad_sender).await.is_err());
}
