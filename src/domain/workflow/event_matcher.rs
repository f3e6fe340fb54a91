//! Events a run listens for: a `wait_for` step's and the `cancel_on` steps'.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::field_path::{FieldRef, PayloadPath};
use crate::domain::values::{ExternalEventType, JsonObject};

pub const MAX_MATCH_FIELDS: usize = 10;

/// Where an expected value comes from: a field of the run (`payload.order_id`,
/// `recipient.id`, `steps.inapp.notification_id`), or a value written out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MatchSource {
    Field(FieldRef),
    Literal { value: Value },
}

/// An event type and the fields of its payload that must hold the run's
/// values, as a definition writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventMatcherSpec {
    pub event: ExternalEventType,
    #[serde(rename = "where", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<PayloadPath, MatchSource>,
}

impl EventMatcherSpec {
    /// The matcher with the run's values filled in, or the first field the
    /// run does not have: such a matcher could never match anything.
    pub(crate) fn resolve(
        &self,
        read: impl Fn(&FieldRef) -> Option<Value>,
    ) -> Result<EventMatcher, FieldRef> {
        let mut fields = BTreeMap::new();
        for (path, source) in &self.fields {
            let expected = match source {
                MatchSource::Literal { value } => value.clone(),
                MatchSource::Field(field) => read(field).ok_or_else(|| field.clone())?,
            };
            fields.insert(path.clone(), expected);
        }
        Ok(EventMatcher {
            event_type: self.event.clone(),
            fields,
        })
    }
}

/// A matcher with every expected value known: what a run that is waiting
/// stores, and what a later index of waiting runs looks events up by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventMatcher {
    pub event_type: ExternalEventType,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<PayloadPath, Value>,
}

impl EventMatcher {
    pub fn matches(&self, event: &ObservedEvent) -> bool {
        event.event_type == self.event_type
            && self
                .fields
                .iter()
                .all(|(path, expected)| path.lookup(event.payload.as_map()) == Some(expected))
    }
}

/// An event on the log that may concern a run: an ingested source event
/// (its `eventType` and payload) or one of Herald's own (`NotificationOpened`,
/// with the notification's id in its payload as `notification_id`).
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedEvent {
    /// The log's `event_id`: a run acts on one event once.
    pub event_id: Uuid,
    pub event_type: ExternalEventType,
    pub payload: JsonObject,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn observed(event_type: &str, payload: Value) -> ObservedEvent {
        ObservedEvent {
            event_id: Uuid::nil(),
            event_type: ExternalEventType::parse(event_type).unwrap(),
            payload: JsonObject::parse(payload, 1024).unwrap(),
        }
    }

    #[test]
    fn resolves_the_run_values_then_matches_type_and_fields() {
        let spec: EventMatcherSpec = serde_json::from_value(json!({
            "event": "OrderCancelled",
            "where": {"order.id": "payload.order_id", "status": {"value": "final"}}
        }))
        .unwrap();
        let matcher = spec
            .resolve(|field| (field.to_string() == "payload.order_id").then(|| json!("o-1")))
            .unwrap();
        let cancelled = |id: &str| json!({"order": {"id": id}, "status": "final"});
        assert!(matcher.matches(&observed("OrderCancelled", cancelled("o-1"))));
        assert!(!matcher.matches(&observed("OrderCancelled", cancelled("o-2"))));
        assert!(!matcher.matches(&observed("OrderShipped", cancelled("o-1"))));
        assert!(!matcher.matches(&observed("OrderCancelled", json!({"order": {"id": "o-1"}}))));
    }

    #[test]
    fn a_run_value_that_is_missing_names_itself() {
        let spec: EventMatcherSpec = serde_json::from_value(json!({
            "event": "OrderCancelled", "where": {"id": "payload.order_id"}
        }))
        .unwrap();
        let missing = spec.resolve(|_| None).unwrap_err();
        assert_eq!(missing.to_string(), "payload.order_id");
    }
}
