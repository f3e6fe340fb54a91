//! What an SNS notification carries in its `Message`: an SNS SMS delivery
//! status log, or an SES notification (bounce, complaint, delivery), read
//! into one [`Receipt`].

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::Value;

use super::Refusal;
use crate::commands::receipts::{Receipt, ReceiptOutcome, ReceiptTarget};
use crate::domain::values::NotificationId;

/// The header every Herald email carries (see `providers::smtp`).
const NOTIFICATION_ID_HEADER: &str = "X-Herald-Notification-Id";

/// Provider answers to an SMS that will never get through to that number.
const PERMANENT_SMS_FAILURES: [&str; 4] = ["invalid", "opted out", "not a valid", "blocked sms"];

/// A message read from an SNS notification.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    Receipt(Receipt),
    /// Well formed, but nothing to record (an SES `Send` or `Open` event, or
    /// a message of some other publisher on the topic); says what it was.
    Ignored(String),
}

/// Reads `message`; `sent_at` (the SNS envelope's timestamp) stands in for
/// a report that gives no time of its own.
pub fn parse(message: &str, sent_at: DateTime<Utc>) -> Result<Parsed, Refusal> {
    let Ok(Value::Object(document)) = serde_json::from_str::<Value>(message) else {
        return Ok(Parsed::Ignored(
            "a message that is not a JSON object".into(),
        ));
    };
    let document = Value::Object(document);
    if let Some(kind) = text(&document, &["notificationType"]).or(text(&document, &["eventType"])) {
        return ses(&document, kind, sent_at);
    }
    if document.get("delivery").is_some() && document.get("status").is_some() {
        return sms(&document, sent_at);
    }
    Ok(Parsed::Ignored(
        "a message that is neither an SMS delivery status nor an SES notification".into(),
    ))
}

/// An SNS SMS delivery status log entry.
fn sms(document: &Value, sent_at: DateTime<Utc>) -> Result<Parsed, Refusal> {
    let message_id = text(document, &["notification", "messageId"])
        .ok_or_else(|| malformed("the SMS status has no notification.messageId"))?;
    let response = text(document, &["delivery", "providerResponse"]).unwrap_or("");
    let outcome = match text(document, &["status"]) {
        Some(status) if status.eq_ignore_ascii_case("SUCCESS") => ReceiptOutcome::Delivered,
        Some(status) if status.eq_ignore_ascii_case("FAILURE") => {
            let lowered = response.to_lowercase();
            ReceiptOutcome::Bounced {
                hard: PERMANENT_SMS_FAILURES
                    .iter()
                    .any(|phrase| lowered.contains(phrase)),
                reason: if response.is_empty() {
                    "SMS delivery failed".into()
                } else {
                    response.to_string()
                },
            }
        }
        Some(other) => return Ok(Parsed::Ignored(format!("an SMS status {other:?}"))),
        None => return Err(malformed("the SMS status has no status")),
    };
    let at = text(document, &["notification", "timestamp"])
        .and_then(timestamp)
        .unwrap_or(sent_at);
    Ok(Parsed::Receipt(Receipt {
        provider: "sns".into(),
        targets: vec![ReceiptTarget::ProviderMessageId(message_id.to_string())],
        outcome,
        at,
        addresses: text(document, &["delivery", "destination"])
            .map(str::to_string)
            .into_iter()
            .collect(),
    }))
}

/// An SES notification (`notificationType`) or event (`eventType`).
fn ses(document: &Value, kind: &str, sent_at: DateTime<Utc>) -> Result<Parsed, Refusal> {
    let (outcome, at, addresses) = match kind {
        "Delivery" => (
            ReceiptOutcome::Delivered,
            text(document, &["delivery", "timestamp"]),
            Vec::new(),
        ),
        "Bounce" => {
            let bounce = document
                .get("bounce")
                .ok_or_else(|| malformed("the SES bounce has no bounce object"))?;
            let bounce_type = text(bounce, &["bounceType"])
                .ok_or_else(|| malformed("the SES bounce has no bounce.bounceType"))?;
            let recipients = recipients(bounce, "bouncedRecipients");
            let diagnostic = bounce
                .get("bouncedRecipients")
                .and_then(Value::as_array)
                .and_then(|list| list.iter().find_map(|r| text(r, &["diagnosticCode"])));
            let mut reason = match text(bounce, &["bounceSubType"]) {
                Some(sub_type) => format!("{bounce_type}/{sub_type}"),
                None => bounce_type.to_string(),
            };
            if let Some(diagnostic) = diagnostic {
                reason = format!("{reason}: {diagnostic}");
            }
            (
                ReceiptOutcome::Bounced {
                    // Transient and Undetermined may clear up; only Permanent suppresses.
                    hard: bounce_type == "Permanent",
                    reason,
                },
                text(bounce, &["timestamp"]),
                recipients,
            )
        }
        "Complaint" => {
            let complaint = document
                .get("complaint")
                .ok_or_else(|| malformed("the SES complaint has no complaint object"))?;
            (
                ReceiptOutcome::Complained,
                text(complaint, &["timestamp"]),
                recipients(complaint, "complainedRecipients"),
            )
        }
        other => return Ok(Parsed::Ignored(format!("an SES {other} notification"))),
    };
    let mail = document
        .get("mail")
        .ok_or_else(|| malformed("the SES notification has no mail object"))?;
    let mut targets = Vec::new();
    if let Some(id) = header(mail, NOTIFICATION_ID_HEADER) {
        match NotificationId::parse(id.trim()) {
            Ok(id) => targets.push(ReceiptTarget::Notification(id)),
            Err(_) => tracing::debug!(value = %id, "ignoring a malformed {NOTIFICATION_ID_HEADER}"),
        }
    }
    // Herald's own Message-ID (what the smtp driver records), then SES's id.
    let own_message_id = text(mail, &["commonHeaders", "messageId"]).or(header(mail, "Message-ID"));
    for id in own_message_id.into_iter().chain(text(mail, &["messageId"])) {
        targets.push(ReceiptTarget::ProviderMessageId(id.to_string()));
    }
    if targets.is_empty() {
        return Err(malformed("the SES notification has no mail.messageId"));
    }
    Ok(Parsed::Receipt(Receipt {
        provider: "ses".into(),
        targets,
        outcome,
        at: at.and_then(timestamp).unwrap_or(sent_at),
        addresses,
    }))
}

/// The `emailAddress` of each entry of `list`.
fn recipients(report: &Value, list: &str) -> Vec<String> {
    report
        .get(list)
        .and_then(Value::as_array)
        .map(|entries| {
            entries
                .iter()
                .filter_map(|entry| text(entry, &["emailAddress"]).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A header of the original email, by case-insensitive name (`mail.headers`
/// is present when the SES identity includes headers).
fn header<'a>(mail: &'a Value, name: &str) -> Option<&'a str> {
    mail.get("headers")?.as_array()?.iter().find_map(|header| {
        text(header, &["name"])
            .filter(|n| n.eq_ignore_ascii_case(name))
            .and(text(header, &["value"]))
    })
}

fn text<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(value, |value, key| value.get(key))?
        .as_str()
}

/// RFC 3339, or the `2016-06-28 00:40:34.558` (UTC) of SMS status logs.
fn timestamp(raw: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(raw)
        .map(|at| at.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(raw, "%Y-%m-%d %H:%M:%S%.f")
                .ok()
                .map(|at| at.and_utc())
        })
}

fn malformed(reason: &str) -> Refusal {
    Refusal::BadRequest(reason.to_string())
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 19, 0, 0).unwrap()
    }

    fn receipt(message: Value) -> Receipt {
        match parse(&message.to_string(), now()) {
            Ok(Parsed::Receipt(receipt)) => receipt,
            other => panic!("not a receipt: {other:?}"),
        }
    }

    #[test]
    fn sms_success_is_a_delivery_of_the_published_message() {
        let read = receipt(json!({
            "notification": {"messageId": "a1b2", "timestamp": "2026-11-23 18:59:58.120"},
            "delivery": {"destination": "+14255550100", "providerResponse": "Message has been accepted by phone carrier"},
            "status": "SUCCESS"
        }));
        assert_eq!(read.outcome, ReceiptOutcome::Delivered);
        assert_eq!(
            read.targets,
            vec![ReceiptTarget::ProviderMessageId("a1b2".into())]
        );
        assert_eq!(
            read.at,
            Utc.with_ymd_and_hms(2026, 11, 23, 18, 59, 58).unwrap()
                + chrono::Duration::milliseconds(120)
        );
    }

    #[test]
    fn sms_failures_are_hard_only_when_the_number_is_unusable() {
        let failure = |response: &str| {
            receipt(json!({
                "notification": {"messageId": "a1b2"},
                "delivery": {"destination": "+14255550100", "providerResponse": response},
                "status": "FAILURE"
            }))
        };
        let invalid = failure("Invalid phone number");
        assert!(matches!(
            invalid.outcome,
            ReceiptOutcome::Bounced { hard: true, .. }
        ));
        assert_eq!(invalid.addresses, vec!["+14255550100".to_string()]);
        assert_eq!(invalid.at, now());
        assert!(matches!(
            failure("Phone is currently unreachable/unavailable").outcome,
            ReceiptOutcome::Bounced { hard: false, .. }
        ));
    }

    #[test]
    fn ses_bounces_name_the_notification_by_header_then_message_ids() {
        let id = NotificationId::new();
        let read = receipt(json!({
            "notificationType": "Bounce",
            "bounce": {
                "bounceType": "Permanent", "bounceSubType": "General",
                "bouncedRecipients": [{"emailAddress": "gone@example.com", "diagnosticCode": "smtp; 550 5.1.1 user unknown"}],
                "timestamp": "2026-11-23T18:58:00.000Z"
            },
            "mail": {
                "messageId": "0100018c-ses",
                "headers": [{"name": "x-herald-notification-id", "value": id.to_string()}],
                "commonHeaders": {"messageId": "<own@herald.test>"}
            }
        }));
        assert_eq!(
            read.targets,
            vec![
                ReceiptTarget::Notification(id),
                ReceiptTarget::ProviderMessageId("<own@herald.test>".into()),
                ReceiptTarget::ProviderMessageId("0100018c-ses".into()),
            ]
        );
        assert_eq!(
            read.outcome,
            ReceiptOutcome::Bounced {
                hard: true,
                reason: "Permanent/General: smtp; 550 5.1.1 user unknown".into()
            }
        );
        assert_eq!(read.addresses, vec!["gone@example.com".to_string()]);
        assert_eq!(
            read.at,
            Utc.with_ymd_and_hms(2026, 11, 23, 18, 58, 0).unwrap()
        );
    }

    #[test]
    fn ses_events_and_complaints_read_alike() {
        let read = receipt(json!({
            "eventType": "Complaint",
            "complaint": {"complainedRecipients": [{"emailAddress": "angry@example.com"}]},
            "mail": {"messageId": "0100018c-ses"}
        }));
        assert_eq!(read.outcome, ReceiptOutcome::Complained);
        assert_eq!(read.addresses, vec!["angry@example.com".to_string()]);
        let soft = receipt(json!({
            "notificationType": "Bounce",
            "bounce": {"bounceType": "Transient"},
            "mail": {"messageId": "m"}
        }));
        assert!(matches!(
            soft.outcome,
            ReceiptOutcome::Bounced { hard: false, .. }
        ));
    }

    #[test]
    fn other_messages_are_ignored_and_broken_receipts_refused() {
        for ignored in [
            json!({"eventType": "Open", "mail": {"messageId": "m"}}),
            json!({"hello": "world"}),
            json!({"notification": {"messageId": "m"}, "delivery": {}, "status": "PENDING"}),
        ] {
            assert!(matches!(
                parse(&ignored.to_string(), now()),
                Ok(Parsed::Ignored(_))
            ));
        }
        assert!(matches!(parse("plain text", now()), Ok(Parsed::Ignored(_))));
        for broken in [
            json!({"notificationType": "Bounce", "mail": {"messageId": "m"}}),
            json!({"notificationType": "Delivery"}),
            json!({"notificationType": "Delivery", "mail": {}}),
            json!({"delivery": {}, "status": "SUCCESS"}),
        ] {
            assert!(
                matches!(
                    parse(&broken.to_string(), now()),
                    Err(Refusal::BadRequest(_))
                ),
                "{broken}"
            );
        }
    }
}
