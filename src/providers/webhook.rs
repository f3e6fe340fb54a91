//! `webhook`: POSTs the message as JSON to the destination URL, signed per
//! Standard Webhooks (<https://www.standardwebhooks.com/>) so the receiver
//! can check that Herald sent it, unchanged, and recently.
//!
//! The signing functions are public because status and campaign callbacks
//! sign their bodies the same way; the error helpers are shared with `ntfy`,
//! callbacks and attachments.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use hmac::{Hmac, KeyInit, Mac};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::{Destination, OutboundMessage, Provider, Receipt, SendError, WebhookSecret};
use crate::domain::values::{
    Category, Channel, HttpUrl, JsonObject, NotificationId, Priority, Tag, TenantId,
};
use crate::egress::{ClientOptions, Egress, EgressClient, EgressError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// The whole call (connect, send, answer); longer fails as transient.
    pub timeout_seconds: u64,
    pub user_agent: String,
    /// How much of an answer is read (and dropped) before the connection
    /// goes back to the pool; what a receiver says is never shown to a tenant.
    pub max_response_bytes: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            timeout_seconds: 10,
            user_agent: concat!("Herald-Webhooks/", env!("CARGO_PKG_VERSION")).to_string(),
            max_response_bytes: 64 * 1024,
        }
    }
}

pub struct WebhookProvider {
    name: String,
    client: EgressClient,
    max_response_bytes: usize,
}

impl WebhookProvider {
    pub fn new(name: &str, config: &WebhookConfig, egress: &Egress) -> anyhow::Result<Self> {
        anyhow::ensure!(
            config.timeout_seconds > 0,
            "provider {name}: timeout_seconds must be at least 1"
        );
        // A redirected POST would be re-sent as a GET or to a host nobody configured.
        let client = egress
            .client(&ClientOptions {
                timeout: Duration::from_secs(config.timeout_seconds),
                user_agent: config.user_agent.clone(),
                max_redirects: 0,
            })
            .map_err(|error| anyhow::anyhow!("provider {name}: {error}"))?;
        Ok(WebhookProvider {
            name: name.to_string(),
            client,
            max_response_bytes: config.max_response_bytes,
        })
    }

    async fn post(&self, url: &HttpUrl, message: &OutboundMessage) -> Result<Receipt, SendError> {
        let body = serde_json::to_vec(&WebhookBody::from(message))
            .map_err(|error| SendError::permanent(format!("webhook body: {error}")))?;
        let id = message.notification_id.to_string();
        let headers =
            signature_headers(&message.signing_secrets, &id, Utc::now().timestamp(), &body)
                .map_err(|error| SendError::permanent(error.to_string()))?;
        let request = self
            .client
            .request(Method::POST, url.as_str())
            .headers(headers)
            .header(CONTENT_TYPE, "application/json")
            .header("idempotency-key", &id)
            .body(body);
        let response = self
            .client
            .send(request)
            .await
            .map_err(|error| send_error("webhook", error))?;
        let status = response.status();
        let answer_headers = response.headers().clone();
        read_capped(response, self.max_response_bytes).await;
        if status.is_success() {
            return Ok(Receipt {
                provider_message_id: Some(id),
            });
        }
        Err(status_error("webhook", status, &answer_headers))
    }
}

impl Provider for WebhookProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn supports(&self, channel: Channel) -> bool {
        channel == Channel::Webhook
    }

    fn send<'a>(
        &'a self,
        message: &'a OutboundMessage,
    ) -> BoxFuture<'a, Result<Receipt, SendError>> {
        Box::pin(async move {
            match &message.destination {
                Destination::Webhook(url) => self.post(url, message).await,
                other => Err(SendError::wrong_channel("webhook", other)),
            }
        })
    }
}

/// What a receiver gets; absent values are left out rather than sent as null.
#[derive(Serialize)]
struct WebhookBody<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    notification_id: NotificationId,
    tenant_id: &'a TenantId,
    attempt: u32,
    priority: Priority,
    #[serde(skip_serializing_if = "Option::is_none")]
    category: Option<&'a Category>,
    tags: &'a [Tag],
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    html: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cta_url: Option<&'a HttpUrl>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a JsonObject>,
}

impl<'a> From<&'a OutboundMessage> for WebhookBody<'a> {
    fn from(message: &'a OutboundMessage) -> Self {
        WebhookBody {
            kind: "notification.message",
            notification_id: message.notification_id,
            tenant_id: &message.tenant_id,
            attempt: message.attempt,
            priority: message.priority,
            category: message.category.as_ref(),
            tags: &message.tags,
            title: message.title.as_deref(),
            text: message.text.as_deref(),
            html: message.html.as_deref(),
            cta_url: message.cta_url.as_ref(),
            data: message.data.as_ref(),
        }
    }
}

const SECRET_PREFIX: &str = "whsec_";

/// Secrets are written padded or unpadded; both mean the same key.
const SECRET_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a body could not be signed. Never holds a secret: it ends up in
/// events and logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    #[error("no signing secret: Herald never sends an unsigned webhook")]
    NoSecret,
    #[error("signing secret {position} is malformed: expected whsec_ followed by base64")]
    MalformedSecret { position: usize },
    #[error("webhook id is not a valid header value")]
    InvalidId,
}

/// The `webhook-signature` value: one `v1,<base64 HMAC-SHA256>` of
/// `{id}.{timestamp}.{body}` per secret, space-separated, so a receiver
/// holding any one of them verifies while secrets rotate.
pub fn sign(
    secrets: &[WebhookSecret],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, SigningError> {
    if secrets.is_empty() {
        return Err(SigningError::NoSecret);
    }
    let signatures = secrets
        .iter()
        .enumerate()
        .map(|(index, secret)| {
            let key = decode_secret(secret).ok_or(SigningError::MalformedSecret {
                position: index + 1,
            })?;
            let mut mac =
                Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes a key of any length");
            mac.update(format!("{id}.{timestamp}.").as_bytes());
            mac.update(body);
            Ok(format!(
                "v1,{}",
                STANDARD.encode(mac.finalize().into_bytes())
            ))
        })
        .collect::<Result<Vec<_>, SigningError>>()?;
    Ok(signatures.join(" "))
}

/// `webhook-id`, `webhook-timestamp` and `webhook-signature` for a body,
/// ready to add to a request.
pub fn signature_headers(
    secrets: &[WebhookSecret],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<HeaderMap, SigningError> {
    let id_value = HeaderValue::from_str(id).map_err(|_| SigningError::InvalidId)?;
    let signature = sign(secrets, id, timestamp, body)?;
    let mut headers = HeaderMap::new();
    headers.insert(HeaderName::from_static("webhook-id"), id_value);
    headers.insert(
        HeaderName::from_static("webhook-timestamp"),
        HeaderValue::from(timestamp),
    );
    headers.insert(
        HeaderName::from_static("webhook-signature"),
        HeaderValue::from_str(&signature).expect("base64 is a valid header value"),
    );
    Ok(headers)
}

/// A fresh secret: `whsec_` and 32 random bytes (a full HMAC-SHA256 key) in base64.
pub fn generate_secret() -> WebhookSecret {
    let mut key = [0u8; 32];
    rand::fill(&mut key);
    WebhookSecret::new(format!("{SECRET_PREFIX}{}", STANDARD.encode(key)))
}

fn decode_secret(secret: &WebhookSecret) -> Option<Vec<u8>> {
    let encoded = secret.expose().strip_prefix(SECRET_PREFIX)?;
    SECRET_BASE64
        .decode(encoded)
        .ok()
        .filter(|key| !key.is_empty())
}

/// A client for a provider whose server the operator configured (ntfy).
/// Redirects are not followed: a redirected POST would be re-sent as a GET
/// or to a host nobody configured.
pub(crate) fn http_client(
    timeout_seconds: u64,
    user_agent: &str,
) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(timeout_seconds))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(user_agent)
        .build()
}

/// The start of an answer, at most `max_bytes`; a failed read ends it early
/// because the status already decided the outcome. Reading it lets the
/// connection go back to the pool.
pub(crate) async fn read_capped(mut response: reqwest::Response, max_bytes: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < max_bytes {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = max_bytes - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    body
}

/// A call that got no answer, by reason class: worth retrying when the
/// network failed, not when the target was refused or the request was bad.
pub(crate) fn send_error(service: &str, error: EgressError) -> SendError {
    let message = format!("{service}: {error}");
    if error.is_transient() {
        SendError::transient(message)
    } else {
        SendError::permanent(message)
    }
}

/// A non-2xx answer: 408, 429 and 5xx are worth retrying (after the
/// `Retry-After` the receiver asked for); any other status, including a
/// redirect, will get the same answer again. Only the status and its class
/// are told: what the target said never reaches a tenant (it may be an
/// internal service's page, or echo a credential).
pub(crate) fn status_error(service: &str, status: StatusCode, headers: &HeaderMap) -> SendError {
    let class = match status.as_u16() {
        300..=399 => "redirect, not followed",
        408 => "request timeout",
        429 => "rate limited",
        400..=499 => "client error",
        500..=599 => "server error",
        _ => "unexpected status",
    };
    let message = format!("{service} answered HTTP {} ({class})", status.as_u16());
    let retryable = status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error();
    if retryable {
        SendError::Transient {
            message,
            retry_after: headers
                .get(RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| retry_after(value, Utc::now())),
        }
    } else {
        SendError::permanent(message)
    }
}

/// `Retry-After` as delay-seconds or an HTTP-date (a date already past
/// means no wait); anything else is ignored.
pub(crate) fn retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn signs_the_standard_webhooks_vector() {
        let secret = WebhookSecret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let signature = sign(
            &[secret],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(
            signature.as_deref(),
            Ok("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        );
    }

    #[test]
    fn signs_with_every_secret_for_rotation() {
        let old = WebhookSecret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let new = generate_secret();
        let both = sign(&[old.clone(), new.clone()], "id", 1, b"{}").unwrap();
        let each = [
            sign(&[old], "id", 1, b"{}").unwrap(),
            sign(&[new], "id", 1, b"{}").unwrap(),
        ];
        assert_eq!(both, each.join(" "));
    }

    #[test]
    fn refuses_to_sign_without_a_usable_secret() {
        assert_eq!(sign(&[], "id", 1, b"{}"), Err(SigningError::NoSecret));
        let good = generate_secret();
        for bad in [
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_not base64!",
            "whsec_",
        ] {
            let error = sign(&[good.clone(), WebhookSecret::new(bad)], "id", 1, b"{}").unwrap_err();
            assert_eq!(error, SigningError::MalformedSecret { position: 2 });
            // A fixed text: it cannot echo the secret.
            assert_eq!(
                error.to_string(),
                "signing secret 2 is malformed: expected whsec_ followed by base64"
            );
        }
        assert_eq!(
            signature_headers(&[good], "a\nb", 1, b"{}"),
            Err(SigningError::InvalidId)
        );
    }

    #[test]
    fn generated_secrets_are_fresh_32_byte_keys() {
        let (a, b) = (generate_secret(), generate_secret());
        assert_ne!(a, b);
        assert!(a.expose().starts_with("whsec_"));
        assert_eq!(decode_secret(&a).map(|key| key.len()), Some(32));
    }

    #[test]
    fn header_set_carries_id_timestamp_and_signature() {
        let secret = WebhookSecret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let headers = signature_headers(&[secret], "msg_1", 1614265330, b"{}").unwrap();
        assert_eq!(headers["webhook-id"], "msg_1");
        assert_eq!(headers["webhook-timestamp"], "1614265330");
        assert!(
            headers["webhook-signature"]
                .to_str()
                .unwrap()
                .starts_with("v1,")
        );
    }

    #[test]
    fn parses_retry_after_seconds_and_dates() {
        let now = Utc.with_ymd_and_hms(2015, 10, 21, 7, 28, 0).unwrap();
        assert_eq!(retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:30:00 GMT", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        for junk in ["", "-5", "1.5", "soon"] {
            assert_eq!(retry_after(junk, now), None, "{junk:?}");
        }
    }

    #[test]
    fn classifies_statuses_without_quoting_the_answer() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        for (status, class) in [
            (408, "request timeout"),
            (429, "rate limited"),
            (500, "server error"),
            (502, "server error"),
            (503, "server error"),
        ] {
            let error = status_error("webhook", StatusCode::from_u16(status).unwrap(), &headers);
            assert_eq!(
                error,
                SendError::Transient {
                    message: format!("webhook answered HTTP {status} ({class})"),
                    retry_after: Some(Duration::from_secs(7)),
                }
            );
        }
        for status in [301, 302, 400, 401, 403, 404, 410, 422] {
            let error = status_error("webhook", StatusCode::from_u16(status).unwrap(), &headers);
            assert!(error.is_permanent(), "{status}");
        }
    }
}
