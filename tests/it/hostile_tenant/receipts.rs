//! Forged, replayed and misdirected delivery receipts. Every SNS message
//! here carries a valid signature (made by `tests/peers/sns_signer.py`), so
//! only the topic allow-list, the timestamp and the notification's own
//! address stand between it and the tenant's data.

use chrono::Utc;
use serde_json::json;

use herald::commands::{Actor, suppressions, tenants};
use herald::domain::NotificationStatus;
use herald::domain::suppression::SuppressedAddress;
use herald::domain::values::{Channel, PhoneNumber};

use crate::receipts::{Harness, email, notification, now_timestamp, sms_status};

/// The same topic name in an AWS account that is not the operator's.
const FORGED_TOPIC: &str = "arn:aws:sns:eu-west-1:999999999999:herald-receipts";

fn phone() -> SuppressedAddress {
    SuppressedAddress::Phone(PhoneNumber::parse("+14255550100").expect("a phone number"))
}

fn ses_bounce(notification_id: &str, address: &str) -> serde_json::Value {
    json!({
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": "Permanent", "bounceSubType": "General",
            "bouncedRecipients": [{ "emailAddress": address, "diagnosticCode": "smtp; 550 5.1.1 user unknown" }],
            "timestamp": "2026-11-23T18:59:30.000Z"
        },
        "mail": {
            "messageId": "0100018c-ses-id",
            "headers": [{ "name": "X-Herald-Notification-Id", "value": notification_id }]
        }
    })
}

#[tokio::test]
async fn a_correctly_signed_receipt_from_another_accounts_topic_is_refused_and_never_confirmed() {
    let h = Harness::start().await;
    let confirmation = json!({
        "Type": "SubscriptionConfirmation",
        "MessageId": uuid::Uuid::new_v4().to_string(),
        "Token": "2336412f37fb687f5d51e6e2425",
        "TopicArn": FORGED_TOPIC,
        "Message": format!("You have chosen to subscribe to the topic {FORGED_TOPIC}."),
        "SubscribeURL": format!(
            "http://127.0.0.1:{}/confirm?Action=ConfirmSubscription&Token=2336412f37fb687f5d51e6e2425",
            h.signer.port
        ),
        "Timestamp": now_timestamp(),
    });
    let (status, body) = h.post_sns(&h.signed(confirmation, "2").await).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("is not accepted here"), "{body}");
    assert_eq!(
        h.signer_log().await["confirmations"],
        json!([]),
        "never visited"
    );
    let subscriptions: i64 = sqlx::query_scalar("SELECT count(*) FROM sns_subscriptions")
        .fetch_one(h.store.pool())
        .await
        .expect("count");
    assert_eq!(subscriptions, 0);

    // A permanent SMS failure for a real notification, from the forged topic.
    let id = h.sent(Channel::Sms, "forged-topic-sms").await;
    let mut forged = notification(sms_status(
        "forged-topic-sms",
        "FAILURE",
        "Invalid phone number",
    ));
    forged["TopicArn"] = json!(FORGED_TOPIC);
    let (status, body) = h.post_sns(&h.signed(forged, "2").await).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(h.status(&id).await, NotificationStatus::Sent);
    assert_eq!(h.suppression_reason(phone()).await, None);
}

#[tokio::test]
async fn a_receipt_signed_more_than_an_hour_ago_or_in_the_future_is_refused() {
    let h = Harness::start().await;
    let id = h.sent(Channel::Sms, "replayed-sms").await;
    let failure = notification(sms_status(
        "replayed-sms",
        "FAILURE",
        "Invalid phone number",
    ));
    for (at, why) in [
        (
            Utc::now() - chrono::Duration::minutes(61),
            "more than an hour ago",
        ),
        (Utc::now() + chrono::Duration::hours(1), "in the future"),
    ] {
        let mut replayed = failure.clone();
        replayed["Timestamp"] = json!(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        let (status, body) = h.post_sns(&h.signed(replayed, "2").await).await;
        assert_eq!(status, 403, "{body}");
        assert!(body.contains(why), "{body}");
    }
    assert_eq!(h.status(&id).await, NotificationStatus::Sent);
    assert_eq!(h.suppression_reason(phone()).await, None);

    // The same report sent now is taken: only its age was wrong.
    let (status, body) = h.post_sns(&h.signed(failure, "2").await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(h.status(&id).await, NotificationStatus::Bounced);
}

#[tokio::test]
async fn a_bounce_naming_an_address_the_notification_never_went_to_changes_nothing() {
    let h = Harness::start().await;
    // Sent to ada@example.com.
    let id = h
        .sent(
            Channel::Email,
            &format!("<{}@herald.test>", uuid::Uuid::new_v4()),
        )
        .await;
    let misdirected = ses_bounce(&id.to_string(), "victim@example.com");
    let (status, body) = h
        .post_sns(&h.signed(notification(misdirected), "2").await)
        .await;
    assert_eq!(status, 200, "acknowledged, so SNS does not retry: {body}");
    assert!(body.contains("\"ignored\""), "{body}");
    assert_eq!(h.status(&id).await, NotificationStatus::Sent);
    assert_eq!(
        h.suppression_reason(email("victim@example.com")).await,
        None
    );
    assert_eq!(h.suppression_reason(email("ada@example.com")).await, None);

    // Another tenant wrote to the same address. A bounce of the first
    // tenant's notification suppresses the address in that tenant only.
    let other = tenants::create_tenant(&h.store, "Other", &Actor::new("test"))
        .await
        .expect("tenant")
        .tenant_id;
    let other_id = h
        .sent_for(
            &other,
            Channel::Email,
            &format!("<{}@herald.test>", uuid::Uuid::new_v4()),
        )
        .await;
    let bounce = ses_bounce(&id.to_string(), "ada@example.com");
    let (status, body) = h.post_sns(&h.signed(notification(bounce), "2").await).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"recorded\""), "{body}");
    assert_eq!(h.status(&id).await, NotificationStatus::Bounced);
    assert_eq!(
        h.suppression_reason(email("ada@example.com"))
            .await
            .as_deref(),
        Some("hard_bounce")
    );
    let elsewhere = suppressions::get(h.store.pool(), &other, &email("ada@example.com"))
        .await
        .expect("read the other tenant's list");
    assert!(elsewhere.is_none(), "the other tenant's list is untouched");
    let other_status = herald::commands::notifications::get(&h.store, &other, &other_id)
        .await
        .expect("read")
        .expect("exists")
        .state
        .status;
    assert_eq!(other_status, NotificationStatus::Sent);
}
