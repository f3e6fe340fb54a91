//! The fact that a raw source event arrived: kept immutable in the
//! log, on its entity's stream, whether or not it repeats an earlier one.
//!
//! A repeated event id from the same source is stored as well, flagged as a
//! duplicate and never as a second original: replay can then choose to
//! include or skip duplicates, and the log still shows every delivery the
//! producer made. Which one is the original is decided by the command side
//! (a unique index), not here: it needs every tenant's earlier events.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::domain_error::DomainError;
use super::source_event::SourceEvent;
use super::tagged_payload::upcast_current;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub struct SourceEventIngested {
    pub source_event: SourceEvent,
    /// The same source already delivered this event id to this tenant.
    pub duplicate: bool,
}

impl SourceEventIngested {
    /// The log's `event_type`, equal to the payload's `type` tag.
    pub const EVENT_TYPE: &'static str = "SourceEventIngested";

    /// The schema version every event is written with today.
    pub const SCHEMA_VERSION: i16 = 1;

    pub fn event_type(&self) -> &'static str {
        Self::EVENT_TYPE
    }

    /// Reads a stored event of any schema version into today's shape.
    pub fn upcast(
        event_type: &str,
        schema_version: i16,
        payload: Value,
    ) -> Result<SourceEventIngested, DomainError> {
        upcast_current(
            event_type,
            schema_version,
            payload,
            &[Self::EVENT_TYPE],
            Self::SCHEMA_VERSION,
        )
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::test_fixtures::minute;

    fn ingested(duplicate: bool) -> SourceEventIngested {
        let source_event: SourceEvent = serde_json::from_value(json!({
            "event_id": "evt-1",
            "source": "billing",
            "entity_type": "invoice",
            "entity_id": "inv_42",
            "event_type": "invoice.paid",
            "occurred_at": minute(-1),
            "payload": {"amount": 1200}
        }))
        .unwrap();
        SourceEventIngested {
            source_event,
            duplicate,
        }
    }

    #[test]
    fn round_trips_through_upcast_with_its_tag() {
        for duplicate in [false, true] {
            let event = ingested(duplicate);
            let payload = serde_json::to_value(&event).unwrap();
            assert_eq!(payload["type"], json!("SourceEventIngested"));
            assert_eq!(payload["duplicate"], json!(duplicate));
            let read = SourceEventIngested::upcast(
                event.event_type(),
                SourceEventIngested::SCHEMA_VERSION,
                payload,
            );
            assert_eq!(read, Ok(event));
        }
    }

    #[test]
    fn payloads_without_their_tag_read_the_same() {
        let event = ingested(false);
        let mut payload = serde_json::to_value(&event).unwrap();
        payload.as_object_mut().unwrap().remove("type");
        assert_eq!(
            SourceEventIngested::upcast("SourceEventIngested", 1, payload),
            Ok(event)
        );
    }

    #[test]
    fn refuses_unknown_types_versions_and_invalid_values() {
        let payload = serde_json::to_value(ingested(false)).unwrap();
        assert!(matches!(
            SourceEventIngested::upcast("NotificationRequested", 1, payload.clone()),
            Err(DomainError::UnknownEventType { .. })
        ));
        assert!(matches!(
            SourceEventIngested::upcast("SourceEventIngested", 2, payload.clone()),
            Err(DomainError::UnsupportedSchemaVersion { .. })
        ));
        let mut smuggled = payload;
        smuggled["source_event"]["source"] = json!("Not A Slug");
        assert!(matches!(
            SourceEventIngested::upcast("SourceEventIngested", 1, smuggled),
            Err(DomainError::MalformedEvent { .. })
        ));
    }
}
