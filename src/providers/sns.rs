//! `sns`: SMS and mobile push through Amazon SNS `Publish`.
//!
//! SMS go to the phone number; pushes go to an SNS platform endpoint ARN
//! with one payload per platform. Every publish carries the notification id
//! as the message attribute `herald.notification_id` (pushes also in their
//! payload, the only part an app sees), so a receiver can drop duplicates.

use std::time::Duration;

use aws_sdk_sns::Client;
use aws_sdk_sns::config::http::HttpResponse;
use aws_sdk_sns::config::retry::RetryConfig;
use aws_sdk_sns::config::timeout::TimeoutConfig;
use aws_sdk_sns::config::{Credentials, Region};
use aws_sdk_sns::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sns::operation::publish::PublishError;
use aws_sdk_sns::operation::publish::builders::PublishFluentBuilder;
use aws_sdk_sns::types::MessageAttributeValue;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{
    Destination, OutboundMessage, Provider, Receipt, at_least_one, sms_text, wrong_channel,
};
use crate::domain::values::{Channel, Priority};
use crate::egress::SendError;
use crate::signing::Secret;

/// `[providers.NAME]` with `kind = "sns"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnsConfig {
    pub region: String,
    /// Another SNS endpoint than AWS's (a local peer such as moto).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    /// Set both keys, or neither to use the default AWS credential chain
    /// (environment, profile, web identity, ECS or EC2 role).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<Secret>,
    /// Shown as the SMS sender where the country allows it: 1 to 11 letters
    /// and digits, at least one letter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender_id: Option<String>,
    pub sms_type: SmsType,
    /// Limit on one `Publish` call, connecting included.
    pub timeout_seconds: u64,
}

impl Default for SnsConfig {
    fn default() -> Self {
        SnsConfig {
            region: "us-east-1".to_string(),
            endpoint_url: None,
            access_key_id: None,
            secret_access_key: None,
            sender_id: None,
            sms_type: SmsType::Transactional,
            timeout_seconds: 10,
        }
    }
}

/// SNS routes `transactional` SMS for reliability, `promotional` for cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmsType {
    #[default]
    Transactional,
    Promotional,
}

impl SmsType {
    fn attribute(self) -> &'static str {
        match self {
            SmsType::Transactional => "Transactional",
            SmsType::Promotional => "Promotional",
        }
    }
}

/// The message attribute that carries the idempotency key.
const NOTIFICATION_ID_ATTRIBUTE: &str = "herald.notification_id";

pub struct SnsProvider {
    name: String,
    client: Client,
    sender_id: Option<String>,
    sms_type: SmsType,
}

impl SnsProvider {
    pub async fn new(name: &str, config: &SnsConfig) -> anyhow::Result<Self> {
        if let Some(sender_id) = &config.sender_id {
            anyhow::ensure!(
                is_valid_sender_id(sender_id),
                "provider {name}: sender_id {sender_id:?} must be 1 to 11 letters and digits, at least one of them a letter"
            );
        }
        at_least_one(name, "timeout_seconds", config.timeout_seconds)?;
        let timeout = Duration::from_secs(config.timeout_seconds);
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            // The dispatcher owns retries and records each attempt.
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(timeout)
                    .operation_timeout(timeout)
                    .build(),
            );
        if let Some(url) = &config.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        match (&config.access_key_id, &config.secret_access_key) {
            (Some(key_id), Some(secret)) => {
                loader = loader.credentials_provider(Credentials::new(
                    key_id,
                    secret.expose(),
                    None,
                    None,
                    "herald-config",
                ));
            }
            (None, None) => {}
            _ => anyhow::bail!(
                "provider {name}: set both access_key_id and secret_access_key, or neither"
            ),
        }
        Ok(SnsProvider {
            name: name.to_string(),
            client: Client::new(&loader.load().await),
            sender_id: config.sender_id.clone(),
            sms_type: config.sms_type,
        })
    }

    fn publish(&self, message: &OutboundMessage) -> Result<PublishFluentBuilder, SendError> {
        let publish = self.client.publish().message_attributes(
            NOTIFICATION_ID_ATTRIBUTE,
            string_attribute(&message.notification_id.to_string())?,
        );
        match &message.destination {
            Destination::Sms(phone) => {
                let mut publish = publish
                    .phone_number(phone.as_str())
                    .message(sms_text(message)?)
                    .message_attributes(
                        "AWS.SNS.SMS.SMSType",
                        string_attribute(self.sms_type.attribute())?,
                    );
                if let Some(sender_id) = &self.sender_id {
                    publish = publish
                        .message_attributes("AWS.SNS.SMS.SenderID", string_attribute(sender_id)?);
                }
                Ok(publish)
            }
            Destination::Push(target) => {
                let arn = target.as_str();
                if !is_endpoint_arn(arn) {
                    return Err(SendError::permanent(
                        "push target is not an SNS platform endpoint ARN (arn:...:endpoint/...)",
                    ));
                }
                Ok(publish
                    .target_arn(arn)
                    .message_structure("json")
                    .message(push_payload(message)))
            }
            other => Err(wrong_channel("sns", other)),
        }
    }
}

fn is_valid_sender_id(sender_id: &str) -> bool {
    (1..=11).contains(&sender_id.len())
        && sender_id.bytes().all(|b| b.is_ascii_alphanumeric())
        && sender_id.bytes().any(|b| b.is_ascii_alphabetic())
}

fn is_endpoint_arn(target: &str) -> bool {
    target.starts_with("arn:") && target.contains(":endpoint/")
}

fn string_attribute(value: &str) -> Result<MessageAttributeValue, SendError> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .map_err(|error| SendError::permanent(format!("SNS message attribute: {error}")))
}

/// The `MessageStructure=json` body: `default` for platforms without their
/// own key, FCM's (legacy `GCM` key) and APNs' payloads with title and body,
/// the caller's data, the call-to-action URL (`url`) and `notification_id`.
fn push_payload(message: &OutboundMessage) -> String {
    let title = message.title.as_deref();
    let body = message.text.as_deref();
    let mut data: Map<String, Value> = message
        .data
        .as_ref()
        .map(|data| data.as_map().clone())
        .unwrap_or_default();
    if let Some(url) = &message.cta_url {
        data.insert("url".to_string(), json!(url.as_str()));
    }
    data.insert(
        "notification_id".to_string(),
        json!(message.notification_id.to_string()),
    );

    let mut alert = Map::new();
    if let Some(title) = title {
        alert.insert("title".to_string(), json!(title));
    }
    if let Some(body) = body {
        alert.insert("body".to_string(), json!(body));
    }

    // FCM data values must be strings.
    let fcm_data: Map<String, Value> = data
        .iter()
        .map(|(key, value)| {
            let text = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (key.clone(), Value::String(text))
        })
        .collect();
    let fcm_priority = if message.priority == Priority::High {
        "high"
    } else {
        "normal"
    };
    let mut fcm = json!({ "data": fcm_data, "priority": fcm_priority });
    let mut aps = json!({ "content-available": 1 });
    // Without title and text it is a silent push: the app only gets the data.
    if !alert.is_empty() {
        fcm["notification"] = json!(alert);
        aps = json!({ "alert": alert });
    }

    // APNs custom keys sit beside `aps`, which stays ours.
    let mut apns = data;
    apns.insert("aps".to_string(), aps);
    let apns = Value::Object(apns).to_string();

    json!({
        "default": body.or(title).unwrap_or_default(),
        "GCM": fcm.to_string(),
        "APNS": apns,
        "APNS_SANDBOX": apns,
    })
    .to_string()
}

/// A refusal SNS gave with `code` and HTTP `status`, by whether waiting helps.
fn classify_service_error(code: Option<&str>, status: u16, detail: &str) -> SendError {
    let text = format!("SNS {}: {detail}", code.unwrap_or("error"));
    let transient_code = matches!(
        code,
        Some(
            "Throttling"
                | "ThrottlingException"
                | "Throttled"
                | "ThrottledException"
                | "KMSThrottling"
                | "KMSThrottlingException"
                | "InternalError"
                | "InternalFailure"
                | "ServiceUnavailable"
                | "RequestTimeout"
                // Credentials that lapsed or a skewed clock: a refresh fixes them.
                | "ExpiredToken"
                | "RequestExpired"
        )
    );
    if transient_code || status == 429 || status >= 500 {
        SendError::transient(text)
    } else {
        // InvalidParameter, EndpointDisabled, NotFound, AuthorizationError, ...
        SendError::permanent(text)
    }
}

fn classify(error: &SdkError<PublishError, HttpResponse>) -> SendError {
    match error {
        SdkError::ServiceError(service) => classify_service_error(
            service.err().code(),
            service.raw().status().as_u16(),
            service.err().message().unwrap_or("no message"),
        ),
        // The request was never valid: sending it again builds it the same way.
        SdkError::ConstructionFailure(_) => {
            SendError::permanent(format!("SNS request: {}", with_sources(error)))
        }
        // Timeouts, network failures and unreadable replies.
        _ => SendError::transient(format!("SNS: {}", with_sources(error))),
    }
}

/// `error: its source: ...`; the SDK's own errors say only "dispatch failure".
fn with_sources(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl Provider for SnsProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn supports(&self, channel: Channel) -> bool {
        matches!(channel, Channel::Sms | Channel::Push)
    }

    fn send<'a>(
        &'a self,
        message: &'a OutboundMessage,
    ) -> BoxFuture<'a, Result<Receipt, SendError>> {
        Box::pin(async move {
            let output = self
                .publish(message)?
                .send()
                .await
                .map_err(|error| classify(&error))?;
            Ok(Receipt {
                provider_message_id: output.message_id().map(str::to_string),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::values::{
        EmailAddress, HttpUrl, JsonObject, NotificationId, PhoneNumber, PushTarget, TenantId,
    };

    fn outbound(destination: Destination) -> OutboundMessage {
        OutboundMessage {
            notification_id: NotificationId::new(),
            tenant_id: TenantId::parse("acme").unwrap(),
            attempt: 1,
            destination,
            priority: Priority::High,
            category: None,
            tags: vec![],
            title: Some("Your code".to_string()),
            text: Some("384921".to_string()),
            html: None,
            cta_url: Some(HttpUrl::parse("https://herald.test/open").unwrap()),
            data: Some(JsonObject::parse(json!({"ttl": 5, "kind": "otp"}), 1024).unwrap()),
            headers: vec![],
            signing_secrets: vec![],
            attachments: Vec::new(),
        }
    }

    fn push() -> Destination {
        Destination::Push(
            PushTarget::parse("arn:aws:sns:us-east-1:123456789012:endpoint/GCM/app/1").unwrap(),
        )
    }

    #[test]
    fn push_payload_has_a_default_and_a_payload_per_platform() {
        let message = outbound(push());
        let payload: Value = serde_json::from_str(&push_payload(&message)).unwrap();
        assert_eq!(payload["default"], "384921");
        let id = message.notification_id.to_string();

        let fcm: Value = serde_json::from_str(payload["GCM"].as_str().unwrap()).unwrap();
        assert_eq!(
            fcm["notification"],
            json!({"title": "Your code", "body": "384921"})
        );
        assert_eq!(
            fcm["data"],
            json!({"ttl": "5", "kind": "otp", "url": "https://herald.test/open", "notification_id": id})
        );
        assert_eq!(fcm["priority"], "high");

        for key in ["APNS", "APNS_SANDBOX"] {
            let apns: Value = serde_json::from_str(payload[key].as_str().unwrap()).unwrap();
            assert_eq!(
                apns["aps"]["alert"],
                json!({"title": "Your code", "body": "384921"})
            );
            assert_eq!(apns["ttl"], 5);
            assert_eq!(apns["notification_id"], json!(id));
        }
    }

    #[test]
    fn without_title_and_text_the_push_is_silent() {
        let mut message = outbound(push());
        message.title = None;
        message.text = None;
        let payload: Value = serde_json::from_str(&push_payload(&message)).unwrap();
        let fcm: Value = serde_json::from_str(payload["GCM"].as_str().unwrap()).unwrap();
        assert!(fcm.get("notification").is_none(), "{fcm}");
        let apns: Value = serde_json::from_str(payload["APNS"].as_str().unwrap()).unwrap();
        assert_eq!(apns["aps"], json!({"content-available": 1}));
    }

    #[test]
    fn caller_data_cannot_replace_aps_or_the_notification_id() {
        let mut message = outbound(push());
        message.data = Some(
            JsonObject::parse(json!({"aps": "mine", "notification_id": "forged"}), 1024).unwrap(),
        );
        let payload: Value = serde_json::from_str(&push_payload(&message)).unwrap();
        let apns: Value = serde_json::from_str(payload["APNS"].as_str().unwrap()).unwrap();
        assert!(apns["aps"]["alert"].is_object());
        assert_eq!(
            apns["notification_id"],
            json!(message.notification_id.to_string())
        );
    }

    #[test]
    fn sms_text_is_the_text_else_the_title() {
        let mut message = outbound(Destination::Sms(
            PhoneNumber::parse("+447700900123").unwrap(),
        ));
        assert_eq!(sms_text(&message).unwrap(), "384921");
        message.text = None;
        assert_eq!(sms_text(&message).unwrap(), "Your code");
        message.title = Some("  ".to_string());
        assert!(sms_text(&message).unwrap_err().is_permanent());
    }

    #[test]
    fn service_errors_are_classified_by_code_then_status() {
        let transient = |code, status| {
            matches!(
                classify_service_error(code, status, "x"),
                SendError::Transient { .. }
            )
        };
        assert!(transient(Some("Throttled"), 400));
        assert!(transient(Some("Throttling"), 400));
        assert!(transient(Some("InternalError"), 500));
        assert!(transient(Some("Unknown"), 503));
        assert!(transient(None, 429));
        assert!(!transient(Some("InvalidParameter"), 400));
        assert!(!transient(Some("EndpointDisabled"), 400));
        assert!(!transient(Some("NotFound"), 404));
        assert!(!transient(Some("AuthorizationError"), 403));
        assert_eq!(
            classify_service_error(Some("NotFound"), 404, "Endpoint does not exist"),
            SendError::permanent("SNS NotFound: Endpoint does not exist")
        );
    }

    #[test]
    fn sender_ids_and_endpoint_arns_are_checked() {
        assert!(is_valid_sender_id("Herald"));
        assert!(is_valid_sender_id("Acme2026"));
        assert!(!is_valid_sender_id("123456"));
        assert!(!is_valid_sender_id("Herald Mail"));
        assert!(!is_valid_sender_id("HeraldSender1"));
        assert!(is_endpoint_arn(
            "arn:aws:sns:eu-west-1:123456789012:endpoint/APNS/app/0f1e"
        ));
        assert!(!is_endpoint_arn("fcm:APA91bH-x_y"));
        assert!(!is_endpoint_arn("arn:aws:sns:eu-west-1:123456789012:topic"));
    }

    #[tokio::test]
    async fn wrong_channels_and_raw_tokens_are_permanent() {
        let provider = SnsProvider::new("sns-test", &SnsConfig::default())
            .await
            .unwrap();
        let email = outbound(Destination::Email(
            EmailAddress::parse("ada@example.com").unwrap(),
        ));
        assert!(provider.publish(&email).unwrap_err().is_permanent());
        let token = outbound(Destination::Push(PushTarget::parse("fcm:APA91bH").unwrap()));
        assert!(provider.publish(&token).unwrap_err().is_permanent());
        assert!(provider.supports(Channel::Sms) && provider.supports(Channel::Push));
        assert!(!provider.supports(Channel::Email));
    }

    #[tokio::test]
    async fn sms_and_push_requests_carry_their_attributes() {
        let config = SnsConfig {
            sender_id: Some("Herald".to_string()),
            ..SnsConfig::default()
        };
        let provider = SnsProvider::new("sns-test", &config).await.unwrap();
        let sms = outbound(Destination::Sms(
            PhoneNumber::parse("+447700900123").unwrap(),
        ));
        let request = provider.publish(&sms).unwrap();
        let attributes = request.get_message_attributes().as_ref().unwrap();
        let attribute = |name: &str| attributes[name].string_value().unwrap().to_string();
        assert_eq!(attribute("AWS.SNS.SMS.SMSType"), "Transactional");
        assert_eq!(attribute("AWS.SNS.SMS.SenderID"), "Herald");
        assert_eq!(
            attribute(NOTIFICATION_ID_ATTRIBUTE),
            sms.notification_id.to_string()
        );
        assert_eq!(request.get_phone_number().as_deref(), Some("+447700900123"));

        let push = outbound(push());
        let request = provider.publish(&push).unwrap();
        assert_eq!(request.get_message_structure().as_deref(), Some("json"));
        assert!(
            request
                .get_target_arn()
                .as_deref()
                .unwrap()
                .contains(":endpoint/")
        );
        assert!(
            request.get_message_attributes().as_ref().unwrap()[NOTIFICATION_ID_ATTRIBUTE]
                .string_value()
                .is_some()
        );
    }

    #[test]
    fn config_reads_toml_and_never_shows_the_secret_key() {
        let config: SnsConfig = toml::from_str(
            r#"
                access_key_id = "AKIAEXAMPLE"
                secret_access_key = "wJalrXUtnFEMI"
                sms_type = "promotional"
            "#,
        )
        .unwrap();
        assert_eq!(config.region, "us-east-1");
        assert_eq!(config.sms_type, SmsType::Promotional);
        let shown = toml::to_string(&config).unwrap();
        assert!(!shown.contains("wJalrXUtnFEMI"), "{shown}");
        assert!(!format!("{config:?}").contains("wJalrXUtnFEMI"));
        assert!(toml::from_str::<SnsConfig>("sms_type = \"bulk\"").is_err());
        assert!(toml::from_str::<SnsConfig>("regoin = \"eu-west-1\"").is_err());
    }
}
