use serde::de::DeserializeOwned;
use serde_json::Value;

use super::domain_error::DomainError;

/// The upcast every event type shares today: a known type stored at the
/// current schema version decodes as it is. When a payload changes shape, the
/// type's own `upcast` rewrites the older version into the current one first.
pub(crate) fn upcast_current<E: DeserializeOwned>(
    event_type: &str,
    schema_version: i16,
    payload: Value,
    known: &[&str],
    current: i16,
) -> Result<E, DomainError> {
    if !known.contains(&event_type) {
        return Err(DomainError::UnknownEventType {
            event_type: event_type.to_owned(),
        });
    }
    if schema_version != current {
        return Err(DomainError::UnsupportedSchemaVersion {
            event_type: event_type.to_owned(),
            schema_version,
        });
    }
    decode_tagged(event_type, payload)
}

/// Reads a current-version payload into an event enum tagged by `type`.
///
/// The log's `event_type` column is the source of truth for the tag, so a
/// payload stored without its `type` field reads the same.
fn decode_tagged<E: DeserializeOwned>(event_type: &str, payload: Value) -> Result<E, DomainError> {
    let malformed = |reason: String| DomainError::MalformedEvent {
        event_type: event_type.to_owned(),
        reason,
    };
    let Value::Object(mut fields) = payload else {
        return Err(malformed("the payload is not a JSON object".into()));
    };
    fields.insert("type".into(), Value::String(event_type.to_owned()));
    serde_json::from_value(Value::Object(fields)).map_err(|error| malformed(error.to_string()))
}
