//! Amazon SNS HTTP(S) messages: the envelope, and its signature checked
//! against the certificate SNS names (fetched only from allowed hosts, over
//! HTTPS, and cached).
//! <https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html>

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use aws_lc_rs::signature::{
    RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::Deserialize;

use super::Refusal;
use crate::commands::receipts::SnsReceiptsConfig;
use crate::egress::{operator_client, read_capped};

/// Certificates are a few KB; anything much larger is not one.
const MAX_CERT_BYTES: usize = 64 * 1024;
/// SNS signs with a handful of certificates at a time; the cache is
/// emptied when it holds more than this (a rotation, or junk URLs on an
/// allowed host).
const MAX_CACHED_CERTS: usize = 32;
const HTTP_TIMEOUT_SECONDS: u64 = 10;
/// A message signed longer ago than this is refused: SNS delivers within
/// its retry policy (at most an hour), so an older one is a replay.
const MAX_AGE: chrono::TimeDelta = chrono::TimeDelta::hours(1);
/// How far ahead of this clock a `Timestamp` may be (clock skew).
const MAX_AHEAD: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// The JSON body SNS posts. Only the fields Herald reads or signs.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SnsMessage {
    #[serde(rename = "Type")]
    pub kind: String,
    pub message_id: String,
    pub topic_arn: String,
    pub message: String,
    pub timestamp: String,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default, rename = "SubscribeURL")]
    pub subscribe_url: Option<String>,
    #[serde(default)]
    pub signature_version: Option<String>,
    #[serde(default)]
    pub signature: Option<String>,
    #[serde(default, rename = "SigningCertURL")]
    pub signing_cert_url: Option<String>,
}

/// The three kinds of message SNS posts to an HTTP subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnsKind {
    SubscriptionConfirmation,
    Notification,
    UnsubscribeConfirmation,
}

impl SnsMessage {
    pub fn parse(body: &[u8]) -> Result<SnsMessage, Refusal> {
        serde_json::from_slice(body)
            .map_err(|error| Refusal::BadRequest(format!("not an SNS message: {error}")))
    }

    pub fn kind(&self) -> Result<SnsKind, Refusal> {
        match self.kind.as_str() {
            "SubscriptionConfirmation" => Ok(SnsKind::SubscriptionConfirmation),
            "Notification" => Ok(SnsKind::Notification),
            "UnsubscribeConfirmation" => Ok(SnsKind::UnsubscribeConfirmation),
            other => Err(Refusal::BadRequest(format!(
                "unknown SNS message type {other:?}"
            ))),
        }
    }

    /// The text SNS signed: name and value lines of a fixed set of fields in
    /// byte order, which differs between notifications and (un)subscribe
    /// confirmations.
    pub fn string_to_sign(&self) -> Result<String, Refusal> {
        let fields: Vec<(&str, Option<&str>)> = match self.kind()? {
            SnsKind::Notification => vec![
                ("Message", Some(&self.message)),
                ("MessageId", Some(&self.message_id)),
                ("Subject", self.subject.as_deref()),
                ("Timestamp", Some(&self.timestamp)),
                ("TopicArn", Some(&self.topic_arn)),
                ("Type", Some(&self.kind)),
            ],
            SnsKind::SubscriptionConfirmation | SnsKind::UnsubscribeConfirmation => vec![
                ("Message", Some(&self.message)),
                ("MessageId", Some(&self.message_id)),
                (
                    "SubscribeURL",
                    Some(required(&self.subscribe_url, "SubscribeURL")?),
                ),
                ("Timestamp", Some(&self.timestamp)),
                ("Token", Some(required(&self.token, "Token")?)),
                ("TopicArn", Some(&self.topic_arn)),
                ("Type", Some(&self.kind)),
            ],
        };
        // A notification without a subject leaves the line out altogether.
        Ok(fields
            .into_iter()
            .filter_map(|(name, value)| value.map(|value| format!("{name}\n{value}\n")))
            .collect())
    }
}

fn required<'a>(value: &'a Option<String>, field: &str) -> Result<&'a str, Refusal> {
    value
        .as_deref()
        .ok_or_else(|| Refusal::BadRequest(format!("the SNS message has no {field}")))
}

/// Checks SNS signatures, keeping the public keys of certificates it fetched.
pub struct SnsVerifier {
    config: SnsReceiptsConfig,
    client: OnceLock<Result<reqwest::Client, String>>,
    /// SubjectPublicKeyInfo DER by certificate URL.
    keys: Mutex<HashMap<String, Arc<Vec<u8>>>>,
}

impl SnsVerifier {
    pub fn new(config: SnsReceiptsConfig) -> SnsVerifier {
        SnsVerifier {
            config,
            client: OnceLock::new(),
            keys: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &SnsReceiptsConfig {
        &self.config
    }

    /// Does not follow redirects: a redirect could leave the allowed hosts.
    pub fn client(&self) -> Result<&reqwest::Client, Refusal> {
        self.client
            .get_or_init(|| {
                operator_client(HTTP_TIMEOUT_SECONDS, "Herald-Receipts").map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|error| Refusal::Unavailable(format!("no HTTP client: {error}")))
    }

    /// Refuses a message whose topic is not on the allow-list (an empty
    /// list accepts none), or whose signature does not verify (when
    /// verification is on); answers when it was sent.
    pub async fn verify(
        &self,
        message: &SnsMessage,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, Refusal> {
        if !self.config.topic_arns.contains(&message.topic_arn) {
            return Err(Refusal::Forbidden(format!(
                "topic {} is not accepted here",
                message.topic_arn
            )));
        }
        if self.config.verify_signatures {
            self.verify_signature(message).await?;
        }
        // Checked after the signature, which covers the Timestamp.
        sent_at(&message.timestamp, now)
    }

    async fn verify_signature(&self, message: &SnsMessage) -> Result<(), Refusal> {
        let algorithm = match message.signature_version.as_deref() {
            Some("1") => &RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
            Some("2") => &RSA_PKCS1_2048_8192_SHA256,
            Some(other) => {
                return Err(Refusal::Forbidden(format!(
                    "unsupported SignatureVersion {other:?}"
                )));
            }
            None => return Err(Refusal::Forbidden("the message is not signed".into())),
        };
        let signature = STANDARD
            .decode(required(&message.signature, "Signature")?)
            .map_err(|_| Refusal::Forbidden("the signature is not base64".into()))?;
        let cert_url = required(&message.signing_cert_url, "SigningCertURL")?;
        let text = message.string_to_sign()?;
        let key = self.public_key(cert_url).await?;
        UnparsedPublicKey::new(algorithm, key.as_slice())
            .verify(text.as_bytes(), &signature)
            .map_err(|_| Refusal::Forbidden("the SNS signature does not verify".into()))
    }

    async fn public_key(&self, cert_url: &str) -> Result<Arc<Vec<u8>>, Refusal> {
        let url = allowed_url(cert_url, &self.config.cert_hosts, "SigningCertURL")?;
        if let Some(key) = self.cached(url.as_str()) {
            return Ok(key);
        }
        let response = self
            .client()?
            .get(url.as_str())
            .send()
            .await
            .map_err(|error| {
                Refusal::Unavailable(format!(
                    "cannot fetch the signing certificate: {}",
                    error.without_url()
                ))
            })?;
        if !response.status().is_success() {
            return Err(Refusal::Unavailable(format!(
                "the signing certificate URL answered {}",
                response.status()
            )));
        }
        let pem = read_capped(response, MAX_CERT_BYTES).await;
        let key = Arc::new(public_key_of(&pem)?);
        let mut keys = self
            .keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if keys.len() >= MAX_CACHED_CERTS {
            keys.clear();
        }
        keys.insert(url.to_string(), key.clone());
        Ok(key)
    }

    fn cached(&self, url: &str) -> Option<Arc<Vec<u8>>> {
        self.keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(url)
            .cloned()
    }
}

/// When the message was sent, if that is within [`MAX_AGE`] before `now`
/// (and not more than [`MAX_AHEAD`] after it).
fn sent_at(timestamp: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, Refusal> {
    let at = DateTime::parse_from_rfc3339(timestamp)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|_| Refusal::BadRequest(format!("the Timestamp {timestamp:?} is not RFC 3339")))?;
    if at < now - MAX_AGE {
        return Err(Refusal::Forbidden(format!(
            "the message was sent at {timestamp}, more than an hour ago"
        )));
    }
    if at > now + MAX_AHEAD {
        return Err(Refusal::Forbidden(format!(
            "the message claims to be sent at {timestamp}, in the future"
        )));
    }
    Ok(at)
}

/// The SubjectPublicKeyInfo of a PEM certificate.
fn public_key_of(pem: &[u8]) -> Result<Vec<u8>, Refusal> {
    let der = CertificateDer::from_pem_slice(pem).map_err(|_| {
        Refusal::Forbidden("the signing certificate is not a PEM certificate".into())
    })?;
    let cert = webpki::EndEntityCert::try_from(&der).map_err(|error| {
        Refusal::Forbidden(format!("the signing certificate cannot be read: {error}"))
    })?;
    Ok(cert.subject_public_key_info().as_ref().to_vec())
}

/// `raw` as a URL on one of `hosts`, over HTTPS (or HTTP to a loopback
/// address, which only tests allow themselves).
pub fn allowed_url(raw: &str, hosts: &[String], field: &str) -> Result<url::Url, Refusal> {
    let url =
        url::Url::parse(raw).map_err(|_| Refusal::Forbidden(format!("{field} is not a URL")))?;
    let host = url
        .host_str()
        .ok_or_else(|| Refusal::Forbidden(format!("{field} has no host")))?;
    if !hosts.iter().any(|pattern| host_matches(pattern, host)) {
        return Err(Refusal::Forbidden(format!(
            "{field} host {host} is not an allowed host"
        )));
    }
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        scheme => Err(Refusal::Forbidden(format!(
            "{field} must use https, not {scheme}"
        ))),
    }
}

/// `pattern` is a host name in which a `*` label stands for any one label.
fn host_matches(pattern: &str, host: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('.').collect();
    let host: Vec<&str> = host.split('.').collect();
    pattern.len() == host.len()
        && pattern
            .iter()
            .zip(&host)
            .all(|(want, got)| !got.is_empty() && (*want == "*" || want.eq_ignore_ascii_case(got)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: &str) -> SnsMessage {
        SnsMessage {
            kind: kind.into(),
            message_id: "m-1".into(),
            topic_arn: "arn:aws:sns:eu-west-1:123456789012:receipts".into(),
            message: "hello".into(),
            timestamp: "2026-11-23T19:00:00.000Z".into(),
            subject: None,
            token: Some("tok".into()),
            subscribe_url: Some(
                "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription".into(),
            ),
            signature_version: Some("1".into()),
            signature: Some("c2ln".into()),
            signing_cert_url: None,
        }
    }

    #[test]
    fn notifications_sign_subject_but_not_token() {
        let mut notification = message("Notification");
        assert_eq!(
            notification.string_to_sign().unwrap(),
            "Message\nhello\nMessageId\nm-1\nTimestamp\n2026-11-23T19:00:00.000Z\n\
             TopicArn\narn:aws:sns:eu-west-1:123456789012:receipts\nType\nNotification\n"
        );
        notification.subject = Some("Hi".into());
        assert!(
            notification
                .string_to_sign()
                .unwrap()
                .contains("MessageId\nm-1\nSubject\nHi\nTimestamp\n")
        );
    }

    #[test]
    fn confirmations_sign_subscribe_url_and_token() {
        let text = message("SubscriptionConfirmation")
            .string_to_sign()
            .unwrap();
        assert_eq!(
            text,
            "Message\nhello\nMessageId\nm-1\n\
             SubscribeURL\nhttps://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription\n\
             Timestamp\n2026-11-23T19:00:00.000Z\nToken\ntok\n\
             TopicArn\narn:aws:sns:eu-west-1:123456789012:receipts\nType\nSubscriptionConfirmation\n"
        );
        let mut without_token = message("UnsubscribeConfirmation");
        without_token.token = None;
        assert!(matches!(
            without_token.string_to_sign(),
            Err(Refusal::BadRequest(_))
        ));
        assert!(matches!(
            message("Teleport").string_to_sign(),
            Err(Refusal::BadRequest(_))
        ));
    }

    #[test]
    fn host_patterns_match_one_label_per_star() {
        assert!(host_matches(
            "sns.*.amazonaws.com",
            "sns.eu-west-1.amazonaws.com"
        ));
        assert!(host_matches(
            "sns.*.amazonaws.com",
            "SNS.us-east-1.AmazonAWS.com"
        ));
        assert!(!host_matches(
            "sns.*.amazonaws.com",
            "sns.evil.example.amazonaws.com"
        ));
        assert!(!host_matches("sns.*.amazonaws.com", "sns.amazonaws.com"));
        assert!(!host_matches(
            "sns.*.amazonaws.com",
            "sns.eu-west-1.amazonaws.com.evil.test"
        ));
        assert!(!host_matches("sns.*.amazonaws.com", "sns..amazonaws.com"));
        assert!(host_matches("127.0.0.1", "127.0.0.1"));
    }

    #[test]
    fn urls_need_an_allowed_host_and_https_unless_loopback() {
        let hosts = vec!["sns.*.amazonaws.com".to_string(), "127.0.0.1".to_string()];
        assert!(allowed_url("https://sns.eu-west-1.amazonaws.com/c.pem", &hosts, "u").is_ok());
        assert!(allowed_url("http://127.0.0.1:9/c.pem", &hosts, "u").is_ok());
        for refused in [
            "http://sns.eu-west-1.amazonaws.com/c.pem",
            "https://evil.test/c.pem",
            "https://sns.eu-west-1.amazonaws.com.evil.test/c.pem",
            "file:///etc/passwd",
            "not a url",
        ] {
            assert!(
                matches!(
                    allowed_url(refused, &hosts, "u"),
                    Err(Refusal::Forbidden(_))
                ),
                "{refused}"
            );
        }
    }

    #[test]
    fn only_messages_of_the_last_hour_are_fresh() {
        let now: DateTime<Utc> = "2026-11-23T19:00:00Z".parse().unwrap();
        assert_eq!(
            sent_at("2026-11-23T18:01:00.000Z", now).unwrap(),
            "2026-11-23T18:01:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert!(sent_at("2026-11-23T19:04:00.000Z", now).is_ok());
        for stale_or_future in ["2026-11-23T17:59:59.000Z", "2026-11-23T19:06:00.000Z"] {
            assert!(
                matches!(sent_at(stale_or_future, now), Err(Refusal::Forbidden(_))),
                "{stale_or_future}"
            );
        }
        assert!(matches!(
            sent_at("yesterday", now),
            Err(Refusal::BadRequest(_))
        ));
    }

    #[tokio::test]
    async fn a_topic_not_on_the_list_is_refused_with_or_without_signature_checks() {
        let now: DateTime<Utc> = "2026-11-23T19:00:00Z".parse().unwrap();
        let mut config = SnsReceiptsConfig {
            verify_signatures: false,
            ..SnsReceiptsConfig::default()
        };
        let verifier = SnsVerifier::new(config.clone());
        let notification = message("Notification");
        assert!(matches!(
            verifier.verify(&notification, now).await,
            Err(Refusal::Forbidden(_))
        ));
        config.topic_arns = vec![notification.topic_arn.clone()];
        let verifier = SnsVerifier::new(config);
        assert!(verifier.verify(&notification, now).await.is_ok());
        let mut elsewhere = notification;
        elsewhere.topic_arn = "arn:aws:sns:eu-west-1:999999999999:receipts".into();
        assert!(matches!(
            verifier.verify(&elsewhere, now).await,
            Err(Refusal::Forbidden(_))
        ));
    }

    #[test]
    fn junk_is_not_a_certificate() {
        assert!(matches!(
            public_key_of(b"hello"),
            Err(Refusal::Forbidden(_))
        ));
        assert!(matches!(
            public_key_of(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
            Err(Refusal::Forbidden(_))
        ));
    }
}
