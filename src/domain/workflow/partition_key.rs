use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::notification_request::canonical;
use crate::domain::sha256_hex::sha256_hex;

/// Which runs belong together: the hex SHA-256 of the values a digest's or a
/// throttle's key paths read, so a table can index it at a fixed width
/// whatever the payload holds. A missing value counts as `null`.
///
/// The key is only unique within one tenant's workflow (and, for a throttle,
/// its step): whoever stores it stores those beside it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PartitionKey(String);

impl PartitionKey {
    /// The key of `values`, each under the path it was read from.
    pub(crate) fn of(values: impl IntoIterator<Item = (String, Value)>) -> Self {
        let pairs: Vec<Value> = values
            .into_iter()
            .map(|(path, value)| Value::Array(vec![Value::String(path), canonical(value)]))
            .collect();
        Self(sha256_hex(Value::Array(pairs).to_string().as_bytes()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn equal_values_give_equal_keys_whatever_their_key_order() {
        let a = PartitionKey::of([("payload.t".into(), json!({"x": 1, "y": 2}))]);
        let b = PartitionKey::of([("payload.t".into(), json!({"y": 2, "x": 1}))]);
        let c = PartitionKey::of([("payload.u".into(), json!({"x": 1, "y": 2}))]);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.as_str().len(), 64);
    }
}
