//! Receipts from other providers: a small JSON body signed per Standard
//! Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`) with
//! the secret configured for the provider.

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::Refusal;
use crate::commands::receipts::{Receipt, ReceiptOutcome, ReceiptTarget};
use crate::domain::values::NotificationId;
use crate::signing::{Secret, WebhookSecret, sign};

/// A signature older or newer than this is refused, so a captured receipt
/// cannot be replayed later.
const TIMESTAMP_TOLERANCE_SECONDS: i64 = 5 * 60;

/// Checks the Standard Webhooks signature of `body`; any one of the
/// space-separated `v1,` signatures may match.
pub fn verify(
    secret: &Secret,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<(), Refusal> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .ok_or_else(|| Refusal::Unauthorized(format!("the {name} header is missing")))
    };
    let (id, timestamp, signatures) = (
        header("webhook-id")?,
        header("webhook-timestamp")?,
        header("webhook-signature")?,
    );
    let timestamp: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| Refusal::Unauthorized("webhook-timestamp is not a number".into()))?;
    if (now.timestamp() - timestamp).abs() > TIMESTAMP_TOLERANCE_SECONDS {
        return Err(Refusal::Unauthorized(
            "webhook-timestamp is more than 5 minutes away from now".into(),
        ));
    }
    let expected =
        sign(&[WebhookSecret::new(secret.expose())], id, timestamp, body).map_err(|error| {
            tracing::error!(%error, "a receipt provider's secret is unusable");
            Refusal::Unavailable("the receipt secret is misconfigured".into())
        })?;
    let matches = signatures.split_whitespace().any(|candidate| {
        aws_lc_rs::constant_time::verify_slices_are_equal(candidate.as_bytes(), expected.as_bytes())
            .is_ok()
    });
    if matches {
        Ok(())
    } else {
        Err(Refusal::Unauthorized(
            "the signature does not verify".into(),
        ))
    }
}

/// The body of a signed receipt.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignedReceipt {
    #[serde(default)]
    notification_id: Option<String>,
    #[serde(default)]
    provider_message_id: Option<String>,
    status: String,
    #[serde(default)]
    hard: bool,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    occurred_at: Option<DateTime<Utc>>,
}

pub fn parse(provider: &str, body: &[u8]) -> Result<Receipt, Refusal> {
    let input: SignedReceipt = serde_json::from_slice(body)
        .map_err(|error| Refusal::BadRequest(format!("not a receipt: {error}")))?;
    let mut targets = Vec::new();
    if let Some(id) = &input.notification_id {
        let id = NotificationId::parse(id)
            .map_err(|_| Refusal::BadRequest("notificationId is not a UUID".into()))?;
        targets.push(ReceiptTarget::Notification(id));
    }
    if let Some(message_id) = input.provider_message_id.filter(|id| !id.is_empty()) {
        targets.push(ReceiptTarget::ProviderMessageId(message_id));
    }
    if targets.is_empty() {
        return Err(Refusal::BadRequest(
            "a receipt needs notificationId or providerMessageId".into(),
        ));
    }
    let outcome = match input.status.as_str() {
        "delivered" => ReceiptOutcome::Delivered,
        "bounced" => ReceiptOutcome::Bounced {
            hard: input.hard,
            reason: input.reason.unwrap_or_else(|| "bounced".into()),
        },
        "complained" => ReceiptOutcome::Complained,
        other => {
            return Err(Refusal::BadRequest(format!(
                "status {other:?} is not delivered, bounced or complained"
            )));
        }
    };
    Ok(Receipt {
        provider: provider.to_string(),
        targets,
        outcome,
        at: input.occurred_at.unwrap_or_else(Utc::now),
        addresses: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use chrono::TimeZone;

    use super::*;

    // The Standard Webhooks specification's own test vector.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn headers(signature: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            "webhook-id",
            HeaderValue::from_static("msg_p5jXN8AQM9LWM0D4loKWxJek"),
        );
        headers.insert("webhook-timestamp", HeaderValue::from_static("1614265330"));
        headers.insert(
            "webhook-signature",
            HeaderValue::from_str(signature).unwrap(),
        );
        headers
    }

    fn at(offset_seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1614265330 + offset_seconds, 0).unwrap()
    }

    #[test]
    fn verifies_the_specification_vector_among_other_signatures() {
        let secret = Secret::new(SECRET);
        assert!(verify(&secret, &headers(SIGNATURE), BODY, at(0)).is_ok());
        let rotated = format!("v1,bm90IGl0 {SIGNATURE}");
        assert!(verify(&secret, &headers(&rotated), BODY, at(299)).is_ok());
    }

    #[test]
    fn refuses_tampering_staleness_and_missing_headers() {
        let secret = Secret::new(SECRET);
        let refused = |headers: &HeaderMap, body: &[u8], now| {
            matches!(
                verify(&secret, headers, body, now),
                Err(Refusal::Unauthorized(_))
            )
        };
        assert!(refused(&headers(SIGNATURE), br#"{"test": 1}"#, at(0)));
        assert!(refused(&headers(SIGNATURE), BODY, at(301)));
        assert!(refused(&headers(SIGNATURE), BODY, at(-301)));
        assert!(refused(&headers("v1,AAAA"), BODY, at(0)));
        let mut without = headers(SIGNATURE);
        without.remove("webhook-id");
        assert!(refused(&without, BODY, at(0)));
    }

    #[test]
    fn reads_receipts_and_names_what_is_wrong() {
        let id = NotificationId::new();
        let body = format!(
            r#"{{"notificationId":"{id}","status":"bounced","hard":true,"reason":"550 no such user","occurredAt":"2026-11-23T19:00:00Z"}}"#
        );
        let receipt = parse("acme", body.as_bytes()).unwrap();
        assert_eq!(receipt.targets, vec![ReceiptTarget::Notification(id)]);
        assert_eq!(
            receipt.outcome,
            ReceiptOutcome::Bounced {
                hard: true,
                reason: "550 no such user".into()
            }
        );
        assert_eq!(
            receipt.at,
            Utc.with_ymd_and_hms(2026, 11, 23, 19, 0, 0).unwrap()
        );
        for (body, says) in [
            (
                r#"{"status":"delivered"}"#,
                "notificationId or providerMessageId",
            ),
            (r#"{"providerMessageId":"m","status":"read"}"#, "\"read\""),
            (
                r#"{"notificationId":"x","status":"delivered"}"#,
                "not a UUID",
            ),
            ("[]", "not a receipt"),
        ] {
            match parse("acme", body.as_bytes()) {
                Err(Refusal::BadRequest(reason)) => assert!(reason.contains(says), "{reason}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }
}
