//! The facts of a notification's life, as stored in the log.
//!
//! The payload is the variant's JSON, tagged by `type` with the same name as
//! the log's `event_type` column. Old schema versions are upcast on read by
//! [`NotificationEvent::upcast`], never rewritten in place.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::domain_error::DomainError;
use super::notification_request::NotificationRequest;
use super::notification_status::NotificationStatus;
use super::signed_link::ClientContext;
use super::tagged_payload::upcast_current;
use super::values::{Channel, HttpUrl, JsonObject, NotificationId, TenantId};

// Requested carries the whole request. Values live for one decision and one
// append, so the size is harmless; a Box would leak into every constructor.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum NotificationEvent {
    #[serde(rename = "NotificationRequested")]
    Requested {
        tenant_id: TenantId,
        notification_id: NotificationId,
        request: NotificationRequest,
        requested_at: DateTime<Utc>,
    },
    #[serde(rename = "NotificationRanked")]
    Ranked {
        score: f64,
        breakdown: Value,
        scorer: String,
        send_after: Option<DateTime<Utc>>,
    },
    #[serde(rename = "NotificationScheduled")]
    Scheduled {
        schedule_at: DateTime<Utc>,
        reason: String,
    },
    #[serde(rename = "DeliveryAttempted")]
    DeliveryAttempted {
        attempt: u32,
        channel: Channel,
        provider: String,
    },
    #[serde(rename = "NotificationSent")]
    Sent {
        attempt: u32,
        provider: String,
        provider_message_id: Option<String>,
        /// What a templated in-app message showed: the in-app feed is
        /// rebuilt from the log, and a template's words are not in the request.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content: Option<DeliveredContent>,
    },
    #[serde(rename = "DeliveryFailed")]
    DeliveryFailed {
        attempt: u32,
        provider: String,
        error: String,
        permanent: bool,
        retry_at: Option<DateTime<Utc>>,
    },
    #[serde(rename = "NotificationDeadLettered")]
    DeadLettered { reason: String },
    #[serde(rename = "NotificationRequeued")]
    Requeued { reason: String },
    #[serde(rename = "NotificationDelivered")]
    Delivered { at: DateTime<Utc> },
    #[serde(rename = "NotificationBounced")]
    Bounced {
        hard: bool,
        reason: String,
        at: DateTime<Utc>,
    },
    #[serde(rename = "NotificationComplained")]
    Complained { at: DateTime<Utc> },
    /// `client` (user agent, IP network) is absent from events recorded
    /// before it was kept.
    #[serde(rename = "NotificationOpened")]
    Opened {
        first: bool,
        at: DateTime<Utc>,
        #[serde(default, skip_serializing_if = "ClientContext::is_empty")]
        client: ClientContext,
    },
    #[serde(rename = "NotificationClicked")]
    Clicked {
        first: bool,
        url: HttpUrl,
        at: DateTime<Utc>,
        #[serde(default, skip_serializing_if = "ClientContext::is_empty")]
        client: ClientContext,
    },
    #[serde(rename = "NotificationRejected")]
    Rejected { reason: String },
    #[serde(rename = "NotificationSuppressed")]
    Suppressed { reason: String },
    #[serde(rename = "NotificationExpired")]
    Expired,
    #[serde(rename = "NotificationCancelled")]
    Cancelled { reason: Option<String> },
    /// The dispatcher took `attempt` back before handing it to the provider
    /// (its campaign was paused meanwhile): the notification waits in the
    /// queue again, and no failure is counted.
    #[serde(rename = "DeliveryWithdrawn")]
    DeliveryWithdrawn { attempt: u32, reason: String },
}

/// Rendered words a delivery showed, kept where the log must remember them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeliveredContent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<JsonObject>,
}

impl NotificationEvent {
    /// The schema version every event is written with today.
    pub const SCHEMA_VERSION: i16 = 1;

    pub const EVENT_TYPES: [&'static str; 18] = [
        "NotificationRequested",
        "NotificationRanked",
        "NotificationScheduled",
        "DeliveryAttempted",
        "NotificationSent",
        "DeliveryFailed",
        "NotificationDeadLettered",
        "NotificationRequeued",
        "NotificationDelivered",
        "NotificationBounced",
        "NotificationComplained",
        "NotificationOpened",
        "NotificationClicked",
        "NotificationRejected",
        "NotificationSuppressed",
        "NotificationExpired",
        "NotificationCancelled",
        "DeliveryWithdrawn",
    ];

    /// The log's `event_type`, equal to the payload's `type` tag.
    pub fn event_type(&self) -> &'static str {
        match self {
            NotificationEvent::Requested { .. } => "NotificationRequested",
            NotificationEvent::Ranked { .. } => "NotificationRanked",
            NotificationEvent::Scheduled { .. } => "NotificationScheduled",
            NotificationEvent::DeliveryAttempted { .. } => "DeliveryAttempted",
            NotificationEvent::Sent { .. } => "NotificationSent",
            NotificationEvent::DeliveryFailed { .. } => "DeliveryFailed",
            NotificationEvent::DeadLettered { .. } => "NotificationDeadLettered",
            NotificationEvent::Requeued { .. } => "NotificationRequeued",
            NotificationEvent::Delivered { .. } => "NotificationDelivered",
            NotificationEvent::Bounced { .. } => "NotificationBounced",
            NotificationEvent::Complained { .. } => "NotificationComplained",
            NotificationEvent::Opened { .. } => "NotificationOpened",
            NotificationEvent::Clicked { .. } => "NotificationClicked",
            NotificationEvent::Rejected { .. } => "NotificationRejected",
            NotificationEvent::Suppressed { .. } => "NotificationSuppressed",
            NotificationEvent::Expired => "NotificationExpired",
            NotificationEvent::Cancelled { .. } => "NotificationCancelled",
            NotificationEvent::DeliveryWithdrawn { .. } => "DeliveryWithdrawn",
        }
    }

    /// The status a notification has right after this event, or `None` for
    /// events that leave it as it was (engagement).
    pub fn status_after(&self) -> Option<NotificationStatus> {
        Self::status_after_type(self.event_type()).unwrap_or_default()
    }

    /// [`status_after`](Self::status_after) from the event type alone, so a
    /// reader that only needs the status need not decode the payload; an
    /// unknown type is an error.
    pub fn status_after_type(event_type: &str) -> Result<Option<NotificationStatus>, DomainError> {
        use NotificationStatus as S;
        Ok(Some(match event_type {
            "NotificationRequested" => S::Requested,
            "NotificationRanked" => S::Ranked,
            "NotificationScheduled" => S::Scheduled,
            "DeliveryAttempted" => S::Sending,
            "NotificationSent" => S::Sent,
            // A final failure is followed by NotificationDeadLettered in the
            // same append; until then it waits like any failure.
            "DeliveryFailed" => S::RetryPending,
            "NotificationDeadLettered" => S::DeadLettered,
            "NotificationRequeued" => S::RetryPending,
            "NotificationDelivered" => S::Delivered,
            "NotificationBounced" => S::Bounced,
            "NotificationComplained" => S::Complained,
            "NotificationRejected" => S::Rejected,
            "NotificationSuppressed" => S::Suppressed,
            "NotificationExpired" => S::Expired,
            "NotificationCancelled" => S::Cancelled,
            // Back in the queue, ranked as before the attempt.
            "DeliveryWithdrawn" => S::Ranked,
            "NotificationOpened" | "NotificationClicked" => return Ok(None),
            other => {
                return Err(DomainError::UnknownEventType {
                    event_type: other.to_string(),
                });
            }
        }))
    }

    /// Reads a stored event of any schema version into today's shape.
    pub fn upcast(
        event_type: &str,
        schema_version: i16,
        payload: Value,
    ) -> Result<NotificationEvent, DomainError> {
        upcast_current(
            event_type,
            schema_version,
            payload,
            &Self::EVENT_TYPES,
            Self::SCHEMA_VERSION,
        )
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::test_fixtures::{every_notification_event, minute};

    #[test]
    fn every_variant_round_trips_through_upcast() {
        let events = every_notification_event();
        let types: Vec<&str> = events.iter().map(NotificationEvent::event_type).collect();
        assert_eq!(
            types,
            NotificationEvent::EVENT_TYPES,
            "one sample per variant"
        );
        for event in events {
            let payload = serde_json::to_value(&event).unwrap();
            assert_eq!(payload["type"], json!(event.event_type()));
            let read = NotificationEvent::upcast(
                event.event_type(),
                NotificationEvent::SCHEMA_VERSION,
                payload,
            );
            assert_eq!(read, Ok(event));
        }
    }

    #[test]
    fn payloads_without_their_tag_read_the_same() {
        let event = NotificationEvent::Delivered { at: minute(3) };
        let mut payload = serde_json::to_value(&event).unwrap();
        payload.as_object_mut().unwrap().remove("type");
        assert_eq!(
            NotificationEvent::upcast("NotificationDelivered", 1, payload),
            Ok(event)
        );
    }

    #[test]
    fn refuses_unknown_types_versions_and_shapes() {
        assert!(matches!(
            NotificationEvent::upcast("NotificationTeleported", 1, json!({})),
            Err(DomainError::UnknownEventType { .. })
        ));
        assert!(matches!(
            NotificationEvent::upcast("NotificationExpired", 2, json!({})),
            Err(DomainError::UnsupportedSchemaVersion {
                schema_version: 2,
                ..
            })
        ));
        assert!(matches!(
            NotificationEvent::upcast("NotificationDelivered", 1, json!({"at": "yesterday"})),
            Err(DomainError::MalformedEvent { .. })
        ));
        assert!(matches!(
            NotificationEvent::upcast("NotificationExpired", 1, json!([])),
            Err(DomainError::MalformedEvent { .. })
        ));
    }

    #[test]
    fn stored_events_cannot_smuggle_invalid_values() {
        let payload = json!({
            "attempt": 1, "channel": "fax", "provider": "console"
        });
        assert!(matches!(
            NotificationEvent::upcast("DeliveryAttempted", 1, payload),
            Err(DomainError::MalformedEvent { .. })
        ));
    }
}

#[cfg(test)]
mod status_tests {
    use super::NotificationEvent;

    #[test]
    fn every_event_type_names_its_status_and_nothing_else_does() {
        for event_type in NotificationEvent::EVENT_TYPES {
            assert!(
                NotificationEvent::status_after_type(event_type).is_ok(),
                "{event_type}"
            );
        }
        assert!(NotificationEvent::status_after_type("NotificationTeleported").is_err());
    }
}
