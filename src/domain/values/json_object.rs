use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::ValueError;

/// A JSON object supplied by a caller (template variables, push data,
/// metadata, an ingested payload), bounded by its serialised size.
///
/// Each field has its own limit, so the limit is an argument of `parse`
/// rather than part of the type; events read back are trusted at any size.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JsonObject(Map<String, Value>);

impl JsonObject {
    pub fn parse(value: Value, max_bytes: usize) -> Result<Self, ValueError> {
        let serialised_len = value.to_string().len();
        let Value::Object(map) = value else {
            return Err(ValueError::Invalid("must be a JSON object".into()));
        };
        if serialised_len > max_bytes {
            return Err(ValueError::TooLong {
                max: max_bytes,
                unit: "bytes when serialised",
            });
        }
        // PostgreSQL's jsonb refuses `\u0000`; refusing it here keeps the
        // failure a 400 for the caller instead of a failed append later.
        if map_holds_nul(&map) {
            return Err(ValueError::Invalid(
                "must not contain NUL characters".into(),
            ));
        }
        Ok(Self(map))
    }

    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// This object with `key` set to `value`, which is not checked again:
    /// it must be made of values that were (a workflow's digest of parsed
    /// payloads).
    pub(crate) fn with_entry(mut self, key: &str, value: Value) -> Self {
        self.0.insert(key.to_owned(), value);
        self
    }
}

/// Whether a string anywhere in `value`, a key included, holds a NUL,
/// which PostgreSQL's jsonb and text refuse.
pub fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(map) => map_holds_nul(map),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

fn map_holds_nul(map: &Map<String, Value>) -> bool {
    map.iter()
        .any(|(key, value)| key.contains('\0') || holds_nul(value))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn accepts_objects_within_the_limit() {
        let object = JsonObject::parse(json!({"code": "384921", "ttl": 5}), 64).unwrap();
        assert_eq!(object.as_map()["ttl"], json!(5));
    }

    #[test]
    fn refuses_non_objects_large_objects_and_nul() {
        assert!(JsonObject::parse(json!([1, 2]), 64).is_err());
        assert!(JsonObject::parse(json!("text"), 64).is_err());
        assert!(JsonObject::parse(json!({"k": "v".repeat(64)}), 64).is_err());
        assert!(JsonObject::parse(json!({"k": ["a\u{0}"]}), 64).is_err());
        assert!(JsonObject::parse(json!({"a\u{0}": 1}), 64).is_err());
    }
}
