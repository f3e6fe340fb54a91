//! Secrets and Standard Webhooks (<https://www.standardwebhooks.com/>)
//! signatures: the credentials that never print, the `whsec_` secrets that
//! sign a body, and the signed POST of status callbacks, campaign callbacks
//! and `herald replay --to-endpoint`. The webhook provider signs its bodies
//! here and the receipt routes verify with the same `sign`.

use std::fmt;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use chrono::Utc;
use hmac::{Hmac, KeyInit, Mac};
use reqwest::Method;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::domain::values::HttpUrl;
use crate::egress::{
    ClientOptions, Egress, EgressClient, EgressError, SendError, read_capped, send_error,
    status_error,
};

/// What Herald's webhooks and callbacks call themselves.
pub const USER_AGENT: &str = concat!("Herald-Webhooks/", env!("CARGO_PKG_VERSION"));

/// What a signed POST is for: the name its errors start with, and how much
/// of the receiver's answer is read (and dropped) before the connection goes
/// back to the pool.
#[derive(Debug, Clone, Copy)]
pub struct Purpose {
    pub name: &'static str,
    pub max_answer_bytes: usize,
}

/// Status callbacks, campaign callbacks and replays to an endpoint.
pub const CALLBACK: Purpose = Purpose {
    name: "callback",
    max_answer_bytes: 4 * 1024,
};

/// A `whsec_`-prefixed Standard Webhooks secret (base64 key after the prefix).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WebhookSecret(String);

impl WebhookSecret {
    pub fn new(raw: impl Into<String>) -> Self {
        WebhookSecret(raw.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

/// A credential in config (SMTP password, AWS secret key, ntfy token).
/// Debug and serialization show `****`, so `herald config`, logs and events
/// never carry it; only [`Secret::expose`] gives the value to a driver.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(raw: impl Into<String>) -> Self {
        Secret(raw.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(****)")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("****")
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

/// A guarded client for callbacks: a whole call longer than
/// `timeout_seconds` fails as transient, and redirects are not followed.
pub fn client(egress: &Egress, timeout_seconds: u64) -> Result<EgressClient, EgressError> {
    egress.client(&ClientOptions {
        timeout: Duration::from_secs(timeout_seconds.max(1)),
        user_agent: USER_AGENT.to_string(),
        max_redirects: 0,
    })
}

/// POSTs `body` as JSON to `url`, signed with every secret, with `webhook_id`
/// as the `webhook-id` and the `idempotency-key` (a receiver that saw it
/// already may drop the retry). Errors are classified alike for every
/// purpose: network failures, 408, 429 and 5xx are transient, any other
/// answer permanent.
pub async fn post_signed(
    client: &EgressClient,
    url: &HttpUrl,
    secrets: &[WebhookSecret],
    webhook_id: &str,
    body: Vec<u8>,
    purpose: Purpose,
) -> Result<(), SendError> {
    let headers = signature_headers(secrets, webhook_id, Utc::now().timestamp(), &body)
        .map_err(|error| SendError::permanent(error.to_string()))?;
    let request = client
        .request(Method::POST, url.as_str())
        .headers(headers)
        .header(CONTENT_TYPE, "application/json")
        .header("idempotency-key", webhook_id)
        .body(body);
    let response = client
        .send(request)
        .await
        .map_err(|error| send_error(purpose.name, error))?;
    let status = response.status();
    let answer_headers = response.headers().clone();
    read_capped(response, purpose.max_answer_bytes).await;
    if status.is_success() {
        return Ok(());
    }
    Err(status_error(purpose.name, status, &answer_headers))
}

#[cfg(test)]
mod tests {
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
}
