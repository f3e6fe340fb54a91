use serde::de::DeserializeOwned;
use serde_json::Value;

use super::domain_error::DomainError;

/// Reads a current-version payload into an event enum tagged by `type`.
///
/// The log's `event_type` column is the source of truth for the tag, so a
/// payload stored without its `type` field reads the same.
pub(crate) fn decode_tagged<E: DeserializeOwned>(
    event_type: &str,
    payload: Value,
) -> Result<E, DomainError> {
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
