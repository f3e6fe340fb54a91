//! The ingest contract: one raw event as JSON, as the `ingestEvent`
//! mutation, `POST /api/events/bulk` and `herald ingest` take it. Its JSON
//! Schema, served at `/schemas/event.json`, is derived from this type.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use crate::domain::values::{
    EntityId, EntityType, ExternalEventId, ExternalEventType, JsonObject, SourceName,
};
use crate::domain::{MAX_PAYLOAD_BYTES, SourceEvent, ValidationErrors};

/// The ingest input as received; see [`IngestEventInput::parse`].
///
/// Every field is an `Option` so that a missing one is reported with the
/// others by `parse`; the published JSON Schema marks them all required.
/// The schema's patterns and lengths come from the value types themselves.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "IngestEvent",
    description = "A raw event from a source system, as accepted by Herald's `ingestEvent` mutation and, one per line, by `POST /api/events/bulk` (NDJSON). A repeated `event_id` from the same `source` is stored as a duplicate, flagged, never as a second original."
)]
pub struct IngestEventInput {
    /// The system the event comes from, e.g. `billing` or `s3.orders`.
    #[schemars(required, length(min = 1, max = SourceName::MAX_CHARS), pattern(SourceName::PATTERN))]
    pub source: Option<String>,
    /// The kind of entity the event is about, e.g. `order` or `user.account`.
    #[schemars(required, length(min = 1, max = EntityType::MAX_CHARS), pattern(EntityType::PATTERN))]
    pub entity_type: Option<String>,
    /// The source's id of that entity.
    #[schemars(required, length(min = 1, max = EntityId::MAX_CHARS), pattern(EntityId::PATTERN))]
    pub entity_id: Option<String>,
    /// What happened, e.g. `order.created`.
    #[schemars(required, length(min = 1, max = ExternalEventType::MAX_CHARS), pattern(ExternalEventType::PATTERN))]
    pub event_type: Option<String>,
    /// When it happened (RFC 3339); at most five minutes ahead of Herald's clock.
    #[schemars(required)]
    pub occurred_at: Option<DateTime<Utc>>,
    /// The event's data: a JSON object of at most 256 KiB when serialised.
    #[schemars(required, extend("type" = "object"))]
    pub payload: Option<Value>,
    /// The source's id for this event; a repeat from the same source is
    /// stored flagged as a duplicate.
    #[schemars(required, length(min = 1, max = ExternalEventId::MAX_CHARS), pattern(ExternalEventId::PATTERN))]
    pub event_id: Option<String>,
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
        let occurred_at = errors.required("occurred_at", self.occurred_at, |at| {
            SourceEvent::occurred_at(at, now)
        });
        let payload = errors.required("payload", self.payload, |payload| {
            JsonObject::parse(payload, MAX_PAYLOAD_BYTES)
        });

        // Every field is there exactly when no error was recorded.
        let parsed = || {
            Some(SourceEvent {
                event_id: event_id?,
                source: source?,
                entity_type: entity_type?,
                entity_id: entity_id?,
                event_type: event_type?,
                occurred_at: occurred_at?,
                payload: payload?,
            })
        };
        parsed().ok_or(errors)
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeDelta, TimeZone};
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
        assert_eq!(
            errors.at("occurred_at"),
            ["is more than five minutes in the future"]
        );
    }

    #[test]
    fn the_json_schema_requires_every_field_and_carries_the_value_rules() {
        let schema = serde_json::to_value(schemars::schema_for!(IngestEventInput)).unwrap();
        let mut required: Vec<&str> = schema["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|field| field.as_str().unwrap())
            .collect();
        required.sort();
        assert_eq!(
            required,
            [
                "entity_id",
                "entity_type",
                "event_id",
                "event_type",
                "occurred_at",
                "payload",
                "source"
            ]
        );
        assert_eq!(schema["additionalProperties"], json!(false));
        let properties = &schema["properties"];
        assert_eq!(properties["source"]["maxLength"], json!(64));
        assert_eq!(
            properties["source"]["pattern"],
            json!("^[a-z0-9][a-z0-9_.-]*$")
        );
        assert_eq!(properties["occurred_at"]["format"], json!("date-time"));
        assert_eq!(properties["payload"]["type"], json!("object"));
    }

    #[test]
    fn refuses_unknown_fields() {
        let unknown = serde_json::from_value::<IngestEventInput>(json!({"tenant_id": "t"}));
        assert!(unknown.is_err());
    }
}
