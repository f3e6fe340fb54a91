//! A raw event from a producer (seed 001's ingest contract): kept immutable,
//! indexed by entity and time for replay, and the input to rules that turn
//! events into notifications.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::validation_errors::ValidationErrors;
use super::values::{
    EntityId, EntityType, ExternalEventId, ExternalEventType, JsonObject, SourceName,
};

pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;

/// How far ahead of our clock `occurred_at` may be. Replay selects by time
/// window, so an event dated in the future would hide from the windows that
/// should find it.
const FUTURE_SKEW: TimeDelta = TimeDelta::minutes(5);

/// The ingest input as received; see [`IngestEventInput::parse`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestEventInput {
    pub source: Option<String>,
    pub entity_type: Option<String>,
    pub entity_id: Option<String>,
    pub event_type: Option<String>,
    pub occurred_at: Option<DateTime<Utc>>,
    pub payload: Option<Value>,
    pub event_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceEvent {
    /// The producer's id for this event; ingest is idempotent on it per source.
    pub event_id: ExternalEventId,
    pub source: SourceName,
    pub entity_type: EntityType,
    pub entity_id: EntityId,
    pub event_type: ExternalEventType,
    pub occurred_at: DateTime<Utc>,
    pub payload: JsonObject,
}

impl IngestEventInput {
    /// Checks every field, reporting all refusals at once.
    pub fn parse(self, now: DateTime<Utc>) -> Result<SourceEvent, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let event_id =
            errors.required("event_id", self.event_id.as_deref(), ExternalEventId::parse);
        let source = errors.required("source", self.source.as_deref(), SourceName::parse);
        let entity_type = errors.required(
            "entity_type",
            self.entity_type.as_deref(),
            EntityType::parse,
        );
        let entity_id = errors.required("entity_id", self.entity_id.as_deref(), EntityId::parse);
        let event_type = errors.required(
            "event_type",
            self.event_type.as_deref(),
            ExternalEventType::parse,
        );
        match self.occurred_at {
            None => errors.add("occurred_at", "is required"),
            Some(at) if at > now + FUTURE_SKEW => {
                errors.add("occurred_at", "is more than five minutes in the future");
            }
            Some(_) => {}
        }
        let payload = match self.payload {
            None => {
                errors.add("payload", "is required");
                None
            }
            Some(payload) => errors.check("payload", JsonObject::parse(payload, MAX_PAYLOAD_BYTES)),
        };

        let (
            Some(event_id),
            Some(source),
            Some(entity_type),
            Some(entity_id),
            Some(event_type),
            Some(occurred_at),
            Some(payload),
        ) = (
            event_id,
            source,
            entity_type,
            entity_id,
            event_type,
            self.occurred_at,
            payload,
        )
        else {
            return Err(errors);
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(SourceEvent {
            event_id,
            source,
            entity_type,
            entity_id,
            event_type,
            occurred_at,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 10, 29, 20, 0, 0).unwrap()
    }

    #[test]
    fn parses_a_complete_event() {
        let input: IngestEventInput = serde_json::from_value(json!({
            "event_id": "evt-1",
            "source": "billing",
            "entity_type": "invoice",
            "entity_id": "inv_42",
            "event_type": "invoice.paid",
            "occurred_at": "2025-10-29T19:59:00Z",
            "payload": {"amount": 1200, "currency": "EUR"}
        }))
        .unwrap();
        let event = input.parse(now()).unwrap();
        assert_eq!(event.entity_id.as_str(), "inv_42");
        assert_eq!(event.payload.as_map()["currency"], json!("EUR"));
    }

    #[test]
    fn reports_every_missing_or_bad_field() {
        let input = IngestEventInput {
            source: Some("Billing Service".into()),
            entity_type: None,
            entity_id: Some("has space".into()),
            event_type: Some("invoice.paid".into()),
            occurred_at: Some(now() + TimeDelta::hours(1)),
            payload: Some(json!({"blob": "x".repeat(MAX_PAYLOAD_BYTES)})),
            event_id: None,
        };
        let errors = input.parse(now()).unwrap_err();
        let paths: Vec<&str> = errors.errors().iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "event_id",
                "source",
                "entity_type",
                "entity_id",
                "occurred_at",
                "payload"
            ]
        );
    }

    #[test]
    fn refuses_unknown_fields() {
        let unknown = serde_json::from_value::<IngestEventInput>(json!({"tenant_id": "t"}));
        assert!(unknown.is_err());
    }
}
