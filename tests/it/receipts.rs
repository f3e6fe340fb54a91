//! Delivery receipts end to end: SNS messages signed by an independent
//! signer (`tests/peers/sns_signer.py`, python `cryptography`) and Standard
//! Webhooks receipts signed by the `standardwebhooks` library, posted to a
//! running Herald, become events on the right notification and entries on
//! the suppression list.

use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};

use herald::commands::receipts::ReceiptProviderConfig;
use herald::commands::{Actor, notifications, suppressions, tenants};
use herald::domain::suppression::SuppressedAddress;
use herald::domain::values::{Channel, EmailAddress, NotificationId, PhoneNumber, TenantId};
use herald::domain::{NotificationCommand, NotificationStatus, SendNotification};
use herald::eventstore::EventStore;
use herald::signing::Secret;

use crate::peers::{Peer, free_port};
use crate::support::{TestDatabase, fresh_database};

pub const TOPIC: &str = "arn:aws:sns:eu-west-1:123456789012:herald-receipts";
const ACME_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

pub struct Harness {
    _db: TestDatabase,
    base: String,
    pub store: EventStore,
    pub tenant: TenantId,
    http: reqwest::Client,
    pub signer: Peer,
}

impl Harness {
    /// Herald accepting SNS certificates and subscribe URLs from loopback
    /// (where the signer peer serves them) and receipts from provider `acme`.
    pub async fn start() -> Harness {
        let port = free_port();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/sns_signer.py");
        let signer =
            Peer::spawn_python("SNS signer", &[script, "--port", &port.to_string()], port).await;
        let db = fresh_database().await;
        herald::database::MIGRATOR
            .run(&db.pool)
            .await
            .expect("migrated");
        let store = EventStore::new(db.pool.clone());
        let mut config = herald::config::Config::default();
        config.receipts.sns.enabled = true;
        config.receipts.sns.topic_arns = vec![TOPIC.into()];
        config.receipts.sns.cert_hosts.push("127.0.0.1".into());
        config.receipts.sns.subscribe_hosts.push("127.0.0.1".into());
        config.receipts.providers.insert(
            "acme".into(),
            ReceiptProviderConfig {
                secret: Secret::new(ACME_SECRET),
            },
        );
        let options = config.api_options();
        let state = herald::api::ApiState::new(store.clone(), &options)
            .await
            .expect("API state");
        let app = herald::api::router(state, &options);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let tenant = tenants::create_tenant(&store, "Receipts", &Actor::new("test"))
            .await
            .expect("tenant")
            .tenant_id;
        Harness {
            _db: db,
            base,
            store,
            tenant,
            http: reqwest::Client::new(),
            signer,
        }
    }

    /// A notification the provider took, answering `provider_message_id`.
    pub async fn sent(&self, channel: Channel, provider_message_id: &str) -> NotificationId {
        self.sent_for(&self.tenant, channel, provider_message_id)
            .await
    }

    /// [`Harness::sent`] for another tenant.
    pub async fn sent_for(
        &self,
        tenant: &TenantId,
        channel: Channel,
        provider_message_id: &str,
    ) -> NotificationId {
        let id = self.sending_for(tenant, channel).await;
        notifications::handle(
            &self.store,
            tenant,
            &id,
            || NotificationCommand::RecordSent {
                attempt: 1,
                provider: provider(channel).into(),
                provider_message_id: Some(provider_message_id.into()),
                content: None,
            },
            &Actor::new("test"),
        )
        .await
        .expect("recorded");
        id
    }

    /// A notification handed to its provider, which has not answered yet.
    pub async fn sending(&self, channel: Channel) -> NotificationId {
        self.sending_for(&self.tenant, channel).await
    }

    async fn sending_for(&self, tenant: &TenantId, channel: Channel) -> NotificationId {
        let recipient = match channel {
            Channel::Sms => json!({ "phone": "+14255550100" }),
            _ => json!({ "email": "ada@example.com" }),
        };
        let input: SendNotification = serde_json::from_value(json!({
            "recipient": recipient,
            "channels": [channel.as_str()],
            "content": { "title": "Hello", "text": "Your code is 123456" },
        }))
        .expect("valid input");
        let actor = Actor::new("test");
        let id = notifications::send(
            &self.store,
            tenant,
            input,
            &notifications::SendPolicy::unlimited(Duration::from_secs(3600)),
            &actor,
        )
        .await
        .expect("requested")
        .notification
        .notification_id;
        let attempt = || NotificationCommand::AttemptDelivery {
            channel,
            provider: provider(channel).into(),
        };
        notifications::handle(&self.store, tenant, &id, attempt, &actor)
            .await
            .expect("attempted");
        id
    }

    /// The event types of a notification's stream, in order.
    pub async fn timeline(&self, id: &NotificationId) -> Vec<String> {
        notifications::get(&self.store, &self.tenant, id)
            .await
            .expect("read")
            .expect("exists")
            .timeline
            .into_iter()
            .map(|event| event.event_type)
            .collect()
    }

    pub async fn status(&self, id: &NotificationId) -> NotificationStatus {
        notifications::get(&self.store, &self.tenant, id)
            .await
            .expect("read")
            .expect("exists")
            .state
            .status
    }

    /// `message` signed by the peer as SNS signs (SignatureVersion `version`).
    pub async fn signed(&self, message: Value, version: &str) -> Value {
        self.signer_call(
            "/_peer/sign",
            json!({ "message": message, "version": version }),
        )
        .await
    }

    async fn signer_call(&self, path: &str, body: Value) -> Value {
        self.http
            .post(format!("http://127.0.0.1:{}{path}", self.signer.port))
            .json(&body)
            .send()
            .await
            .expect("the signer answers")
            .json()
            .await
            .expect("JSON")
    }

    pub async fn signer_log(&self) -> Value {
        self.http
            .get(format!("http://127.0.0.1:{}/_peer/log", self.signer.port))
            .send()
            .await
            .expect("the signer answers")
            .json()
            .await
            .expect("JSON")
    }

    /// Posts to `/webhooks/sns` as SNS does (JSON sent as text/plain).
    pub async fn post_sns(&self, message: &Value) -> (u16, String) {
        let response = self
            .http
            .post(format!("{}/webhooks/sns", self.base))
            .header("content-type", "text/plain; charset=UTF-8")
            .header(
                "x-amz-sns-message-type",
                message["Type"].as_str().unwrap_or(""),
            )
            .body(message.to_string())
            .send()
            .await
            .expect("Herald answers");
        (
            response.status().as_u16(),
            response.text().await.expect("body"),
        )
    }

    /// Posts `body` to `/webhooks/{provider}` with the given Standard
    /// Webhooks headers.
    async fn post_signed(
        &self,
        provider: &str,
        body: &str,
        id: &str,
        timestamp: i64,
        signature: &str,
    ) -> (u16, String) {
        let response = self
            .http
            .post(format!("{}/webhooks/{provider}", self.base))
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body.to_string())
            .send()
            .await
            .expect("Herald answers");
        (
            response.status().as_u16(),
            response.text().await.expect("body"),
        )
    }

    /// A Standard Webhooks signature made by the reference library.
    async fn webhook_signature(
        &self,
        secret: &str,
        id: &str,
        timestamp: i64,
        body: &str,
    ) -> String {
        let answer = self
            .signer_call(
                "/_peer/webhook-sign",
                json!({ "secret": secret, "id": id, "timestamp": timestamp, "body": body }),
            )
            .await;
        answer["signature"]
            .as_str()
            .expect("a signature")
            .to_string()
    }

    pub async fn suppression_reason(&self, address: SuppressedAddress) -> Option<String> {
        suppressions::get(self.store.pool(), &self.tenant, &address)
            .await
            .expect("read the suppression list")
            .map(|row| row.reason)
    }
}

fn provider(channel: Channel) -> &'static str {
    if channel == Channel::Sms {
        "sns"
    } else {
        "smtp"
    }
}

pub fn notification(message: Value) -> Value {
    json!({
        "Type": "Notification",
        "MessageId": uuid::Uuid::new_v4().to_string(),
        "TopicArn": TOPIC,
        "Message": message.to_string(),
        "Timestamp": now_timestamp(),
        "UnsubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe",
    })
}

/// An SNS `Timestamp` of now: Herald refuses messages older than an hour.
pub fn now_timestamp() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub fn sms_status(message_id: &str, status: &str, response: &str) -> Value {
    json!({
        "notification": { "messageId": message_id, "timestamp": "2026-11-23 18:59:58.120" },
        "delivery": {
            "destination": "+14255550100", "smsType": "Transactional",
            "providerResponse": response, "dwellTimeMs": 599
        },
        "status": status
    })
}

pub fn email(address: &str) -> SuppressedAddress {
    SuppressedAddress::Email(EmailAddress::parse(address).expect("an email address"))
}

#[tokio::test]
async fn an_sms_delivery_status_marks_the_notification_delivered() {
    let h = Harness::start().await;
    let id = h.sent(Channel::Sms, "4f6c7a1e-sns-sms").await;
    let signed = h
        .signed(
            notification(sms_status(
                "4f6c7a1e-sns-sms",
                "SUCCESS",
                "Message has been accepted by phone carrier",
            )),
            "1",
        )
        .await;
    let (status, body) = h.post_sns(&signed).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"recorded\""), "{body}");
    assert_eq!(h.status(&id).await, NotificationStatus::Delivered);

    // SNS retries what it thinks failed: the same receipt again changes nothing.
    let (status, _) = h.post_sns(&signed).await;
    assert_eq!(status, 200);
    let delivered = h
        .timeline(&id)
        .await
        .into_iter()
        .filter(|t| t == "NotificationDelivered")
        .count();
    assert_eq!(delivered, 1);
    assert_eq!(
        h.signer_log().await["cert_fetches"],
        1,
        "the certificate is cached"
    );
    // A delivery is no reason to suppress anyone.
    let phone = SuppressedAddress::Phone(PhoneNumber::parse("+14255550100").unwrap());
    assert_eq!(h.suppression_reason(phone).await, None);
}

#[tokio::test]
async fn an_ses_permanent_bounce_bounces_hard_and_suppresses_the_address() {
    let h = Harness::start().await;
    let id = h
        .sent(
            Channel::Email,
            &format!("<{}@herald.test>", uuid::Uuid::new_v4()),
        )
        .await;
    let bounce = json!({
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": "Permanent", "bounceSubType": "General",
            "bouncedRecipients": [{
                "emailAddress": "ada@example.com", "action": "failed", "status": "5.1.1",
                "diagnosticCode": "smtp; 550 5.1.1 user unknown"
            }],
            "timestamp": "2026-11-23T18:59:30.000Z",
            "feedbackId": "0100018c-feedback"
        },
        "mail": {
            "timestamp": "2026-11-23T18:59:00.000Z",
            "messageId": "0100018c-ses-id",
            "source": "herald@example.com",
            "destination": ["ada@example.com"],
            "headersTruncated": false,
            "headers": [
                { "name": "From", "value": "herald@example.com" },
                { "name": "X-Herald-Notification-Id", "value": id.to_string() }
            ]
        }
    });
    let (status, body) = h.post_sns(&h.signed(notification(bounce), "2").await).await;
    assert_eq!(status, 200, "{body}");
    let details = notifications::get(&h.store, &h.tenant, &id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(details.state.status, NotificationStatus::Bounced);
    let bounced = details
        .timeline
        .iter()
        .find(|event| event.event_type == "NotificationBounced")
        .expect("a bounce event");
    assert_eq!(bounced.payload["hard"], true);
    assert!(
        bounced.payload["reason"]
            .as_str()
            .unwrap()
            .contains("550 5.1.1 user unknown")
    );
    assert_eq!(bounced.payload["at"], "2026-11-23T18:59:30Z");
    assert_eq!(
        h.suppression_reason(email("ada@example.com"))
            .await
            .as_deref(),
        Some("hard_bounce")
    );

    // A late delivery receipt cannot undo the bounce: acknowledged, ignored.
    let delivery = json!({
        "notificationType": "Delivery",
        "delivery": { "timestamp": "2026-11-23T18:59:40.000Z", "recipients": ["ada@example.com"] },
        "mail": { "messageId": "0100018c-ses-id", "headers": [
            { "name": "X-Herald-Notification-Id", "value": id.to_string() }
        ] }
    });
    let (status, body) = h
        .post_sns(&h.signed(notification(delivery), "1").await)
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"ignored\""), "{body}");
    assert_eq!(h.status(&id).await, NotificationStatus::Bounced);
}

#[tokio::test]
async fn a_complaint_found_by_message_id_is_recorded_and_suppresses() {
    let h = Harness::start().await;
    let message_id = format!("<{}@herald.test>", uuid::Uuid::new_v4());
    let id = h.sent(Channel::Email, &message_id).await;
    // No X-Herald-Notification-Id: the email's own Message-ID finds it.
    let complaint = json!({
        "eventType": "Complaint",
        "complaint": {
            "complainedRecipients": [{ "emailAddress": "ada@example.com" }],
            "timestamp": "2026-11-23T19:01:00.000Z",
            "complaintFeedbackType": "abuse"
        },
        "mail": {
            "messageId": "0100018c-ses-id",
            "commonHeaders": { "messageId": message_id }
        }
    });
    let (status, body) = h
        .post_sns(&h.signed(notification(complaint), "2").await)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(h.status(&id).await, NotificationStatus::Complained);
    assert_eq!(
        h.suppression_reason(email("ada@example.com"))
            .await
            .as_deref(),
        Some("complaint")
    );
}

#[tokio::test]
async fn a_receipt_for_no_known_message_is_acknowledged() {
    let h = Harness::start().await;
    let signed = h
        .signed(
            notification(sms_status("never-sent", "FAILURE", "Invalid phone number")),
            "1",
        )
        .await;
    let (status, body) = h.post_sns(&signed).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"unmatched\""), "{body}");
}

#[tokio::test]
async fn a_bad_signature_is_refused_and_nothing_is_recorded() {
    let h = Harness::start().await;
    let id = h.sent(Channel::Sms, "sms-tampered").await;
    let before = h.timeline(&id).await;
    let mut tampered = h
        .signed(
            notification(sms_status("sms-tampered", "FAILURE", "Unknown error")),
            "2",
        )
        .await;
    // Turned into a delivery after signing.
    tampered["Message"] = json!(
        sms_status(
            "sms-tampered",
            "SUCCESS",
            "Message has been accepted by phone carrier"
        )
        .to_string()
    );
    let (status, body) = h.post_sns(&tampered).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("signature does not verify"), "{body}");

    // Signed, but with a certificate from a host that is not allowed.
    let mut elsewhere = notification(sms_status("sms-tampered", "SUCCESS", "ok"));
    elsewhere["SignatureVersion"] = json!("1");
    elsewhere["Signature"] = tampered["Signature"].clone();
    elsewhere["SigningCertURL"] = json!("https://evil.example/cert.pem");
    let (status, body) = h.post_sns(&elsewhere).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("not an allowed host"), "{body}");

    // Unsigned.
    let (status, _) = h
        .post_sns(&notification(sms_status("sms-tampered", "SUCCESS", "ok")))
        .await;
    assert_eq!(status, 403);

    // Not SNS at all.
    let (status, _) = h.post_sns(&json!({ "hello": "world" })).await;
    assert_eq!(status, 400);

    assert_eq!(h.timeline(&id).await, before);
    assert_eq!(h.status(&id).await, NotificationStatus::Sent);
}

#[tokio::test]
async fn a_subscription_confirmation_visits_an_allowed_subscribe_url_only() {
    let h = Harness::start().await;
    let confirmation = |subscribe_url: String| {
        json!({
            "Type": "SubscriptionConfirmation",
            "MessageId": uuid::Uuid::new_v4().to_string(),
            "Token": "2336412f37fb687f5d51e6e2425",
            "TopicArn": TOPIC,
            "Message": format!("You have chosen to subscribe to the topic {TOPIC}."),
            "SubscribeURL": subscribe_url,
            "Timestamp": now_timestamp(),
        })
    };
    let local = format!(
        "http://127.0.0.1:{}/confirm?Action=ConfirmSubscription&Token=2336412f37fb687f5d51e6e2425",
        h.signer.port
    );
    let (status, body) = h.post_sns(&h.signed(confirmation(local), "1").await).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"confirmed\""), "{body}");
    let log = h.signer_log().await;
    assert_eq!(
        log["confirmations"],
        json!(["/confirm?Action=ConfirmSubscription&Token=2336412f37fb687f5d51e6e2425"])
    );
    let recorded: String =
        sqlx::query_scalar("SELECT status FROM sns_subscriptions WHERE topic_arn = $1")
            .bind(TOPIC)
            .fetch_one(h.store.pool())
            .await
            .expect("the subscription is recorded");
    assert_eq!(recorded, "confirmed");

    // Correctly signed, but pointing somewhere SNS never would.
    let (status, body) = h
        .post_sns(
            &h.signed(confirmation("https://evil.example/confirm".into()), "1")
                .await,
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        h.signer_log().await["confirmations"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_signed_provider_receipt_is_recorded_and_a_tampered_one_refused() {
    let h = Harness::start().await;
    let id = h.sent(Channel::Email, "acme-42").await;
    let now = Utc::now().timestamp();
    let body = json!({
        "providerMessageId": "acme-42",
        "status": "bounced",
        "hard": true,
        "reason": "550 mailbox unavailable",
        "occurredAt": "2026-11-23T19:02:00Z"
    })
    .to_string();
    let signature = h.webhook_signature(ACME_SECRET, "msg_1", now, &body).await;

    let tampered = body.replace("\"hard\":true", "\"hard\":false");
    assert_ne!(tampered, body);
    let (status, answer) = h
        .post_signed("acme", &tampered, "msg_1", now, &signature)
        .await;
    assert_eq!(status, 401, "{answer}");
    let stale = h
        .webhook_signature(ACME_SECRET, "msg_1", now - 600, &body)
        .await;
    let (status, _) = h
        .post_signed("acme", &body, "msg_1", now - 600, &stale)
        .await;
    assert_eq!(status, 401);
    let (status, _) = h
        .post_signed("nobody", &body, "msg_1", now, &signature)
        .await;
    assert_eq!(status, 404);
    assert_eq!(h.status(&id).await, NotificationStatus::Sent);

    let (status, answer) = h.post_signed("acme", &body, "msg_1", now, &signature).await;
    assert_eq!(status, 200, "{answer}");
    let details = notifications::get(&h.store, &h.tenant, &id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(details.state.status, NotificationStatus::Bounced);
    let bounced = details.timeline.last().expect("events");
    assert_eq!(bounced.event_type, "NotificationBounced");
    assert_eq!(bounced.payload["hard"], true);
    // The receipt names no address: the one the notification went to is suppressed.
    assert_eq!(
        h.suppression_reason(email("ada@example.com"))
            .await
            .as_deref(),
        Some("hard_bounce")
    );

    // Signed, but not a receipt.
    let junk = json!({ "providerMessageId": "acme-42", "status": "read" }).to_string();
    let signature = h.webhook_signature(ACME_SECRET, "msg_2", now, &junk).await;
    let (status, answer) = h.post_signed("acme", &junk, "msg_2", now, &signature).await;
    assert_eq!(status, 400, "{answer}");
}

#[tokio::test]
async fn a_receipt_that_overtakes_the_send_is_asked_to_come_back() {
    let h = Harness::start().await;
    let id = h.sending(Channel::Email).await;
    let now = Utc::now().timestamp();
    let body = json!({ "notificationId": id.to_string(), "status": "delivered" }).to_string();
    let signature = h
        .webhook_signature(ACME_SECRET, "msg_early", now, &body)
        .await;
    let (status, answer) = h
        .post_signed("acme", &body, "msg_early", now, &signature)
        .await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(h.status(&id).await, NotificationStatus::Sending);
}
