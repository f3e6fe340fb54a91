//! Shared test data: one clock, one request, a history reaching each status.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use serde_json::json;

use super::notification_event::NotificationEvent;
use super::notification_request::NotificationRequest;
use super::notification_status::NotificationStatus;
use super::send_notification::SendNotification;
use super::values::{Channel, HttpUrl, NotificationId, TenantId};

pub(crate) fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 10, 29, 20, 0, 0).unwrap()
}

pub(crate) fn minute(n: i64) -> DateTime<Utc> {
    t0() + TimeDelta::minutes(n)
}

pub(crate) fn tenant() -> TenantId {
    TenantId::parse("t_001").unwrap()
}

pub(crate) fn notification_id() -> NotificationId {
    NotificationId::from(uuid::Uuid::from_u128(0x0199_2ce1))
}

/// An OTP by email, falling back to SMS, that expires an hour after it is requested.
pub(crate) fn request() -> NotificationRequest {
    serde_json::from_value::<SendNotification>(json!({
        "idempotency_key": "nl-2ce1",
        "recipient": {"id": "user-1", "email": "user@x.com", "phone": "+447700900123"},
        "channels": ["email", "sms"],
        "priority": "high",
        "template": {"key": "otp_login", "version": 3, "locale": "en-GB",
                     "variables": {"code": "384921"}},
        "category": "auth",
        "ttl_seconds": 3600,
        "tags": ["otp"]
    }))
    .unwrap()
    .parse(t0())
    .unwrap()
}

pub(crate) fn requested() -> NotificationEvent {
    NotificationEvent::Requested {
        tenant_id: tenant(),
        notification_id: notification_id(),
        request: request(),
        requested_at: t0(),
    }
}

pub(crate) fn ranked() -> NotificationEvent {
    NotificationEvent::Ranked {
        score: 0.9,
        breakdown: json!({"urgency": 0.9}),
        scorer: "rules".into(),
        send_after: None,
    }
}

pub(crate) fn scheduled(at: DateTime<Utc>) -> NotificationEvent {
    NotificationEvent::Scheduled {
        schedule_at: at,
        reason: "quiet hours".into(),
    }
}

pub(crate) fn attempted(attempt: u32, channel: Channel) -> NotificationEvent {
    NotificationEvent::DeliveryAttempted {
        attempt,
        channel,
        provider: "console".into(),
    }
}

pub(crate) fn sent(attempt: u32) -> NotificationEvent {
    NotificationEvent::Sent {
        attempt,
        provider: "console".into(),
        provider_message_id: Some("m-1".into()),
        content: None,
    }
}

pub(crate) fn failed(attempt: u32, retry_at: Option<DateTime<Utc>>) -> NotificationEvent {
    NotificationEvent::DeliveryFailed {
        attempt,
        provider: "console".into(),
        error: "421 try later".into(),
        permanent: false,
        retry_at,
    }
}

pub(crate) fn link() -> HttpUrl {
    HttpUrl::parse("https://example.com/login").unwrap()
}

/// The shortest history that leaves a notification in `status`.
pub(crate) fn history(status: NotificationStatus) -> Vec<NotificationEvent> {
    use NotificationEvent as E;
    use NotificationStatus as S;

    let sending = || vec![requested(), attempted(1, Channel::Email)];
    let sent_once = || [sending(), vec![sent(1)]].concat();
    let then = |mut events: Vec<E>, last: E| {
        events.push(last);
        events
    };
    match status {
        S::Requested => vec![requested()],
        S::Ranked => vec![requested(), ranked()],
        S::Scheduled => vec![requested(), ranked(), scheduled(minute(5))],
        S::Sending => sending(),
        S::Sent => sent_once(),
        S::RetryPending => then(sending(), failed(1, Some(minute(1)))),
        S::DeadLettered => then(
            sending(),
            E::DeadLettered {
                reason: "gave up".into(),
            },
        ),
        S::Delivered => then(sent_once(), E::Delivered { at: minute(1) }),
        S::Bounced => then(
            sent_once(),
            E::Bounced {
                hard: true,
                reason: "550 no such user".into(),
                at: minute(1),
            },
        ),
        S::Complained => then(sent_once(), E::Complained { at: minute(1) }),
        S::Rejected => then(
            vec![requested()],
            E::Rejected {
                reason: "quota".into(),
            },
        ),
        S::Suppressed => then(
            vec![requested()],
            E::Suppressed {
                reason: "unsubscribed".into(),
            },
        ),
        S::Expired => then(vec![requested()], E::Expired),
        S::Cancelled => then(vec![requested()], E::Cancelled { reason: None }),
    }
}

/// One event of every variant, in `NotificationEvent::EVENT_TYPES` order.
pub(crate) fn every_notification_event() -> Vec<NotificationEvent> {
    use NotificationEvent as E;
    vec![
        requested(),
        ranked(),
        scheduled(minute(5)),
        attempted(1, Channel::Sms),
        sent(1),
        failed(1, Some(minute(2))),
        E::DeadLettered {
            reason: "gave up".into(),
        },
        E::Requeued {
            reason: "replayed from the dead-letter queue".into(),
        },
        E::Delivered { at: minute(3) },
        E::Bounced {
            hard: false,
            reason: "mailbox full".into(),
            at: minute(3),
        },
        E::Complained { at: minute(4) },
        E::Opened {
            first: true,
            at: minute(4),
            client: Default::default(),
        },
        E::Clicked {
            first: true,
            url: link(),
            at: minute(4),
            client: super::signed_link::ClientContext {
                user_agent: Some("Mozilla/5.0".into()),
                ip_prefix: Some("203.0.113.0/24".into()),
            },
        },
        E::Rejected {
            reason: "quota".into(),
        },
        E::Suppressed {
            reason: "unsubscribed".into(),
        },
        E::Expired,
        E::Cancelled {
            reason: Some("user asked".into()),
        },
        E::DeliveryWithdrawn {
            attempt: 1,
            reason: "campaign paused".into(),
        },
    ]
}
