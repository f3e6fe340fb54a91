use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::field_path::FieldRef;

/// One test of a `branch` case on a value the run can read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Condition {
    pub field: FieldRef,
    #[serde(flatten)]
    pub test: Test,
}

/// What the value must be. A missing value equals nothing, differs from
/// everything and compares as neither greater nor less.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Test {
    Equals(Value),
    NotEquals(Value),
    OneOf(Vec<Value>),
    Exists(bool),
    GreaterThan(f64),
    LessThan(f64),
}

impl Condition {
    pub(crate) fn holds(&self, read: impl Fn(&FieldRef) -> Option<Value>) -> bool {
        let value = read(&self.field);
        let number = || value.as_ref().and_then(Value::as_f64);
        match &self.test {
            Test::Equals(expected) => value.as_ref() == Some(expected),
            Test::NotEquals(expected) => value.as_ref() != Some(expected),
            Test::OneOf(expected) => value.as_ref().is_some_and(|v| expected.contains(v)),
            Test::Exists(exists) => value.is_some() == *exists,
            Test::GreaterThan(bound) => number().is_some_and(|n| n > *bound),
            Test::LessThan(bound) => number().is_some_and(|n| n < *bound),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn condition(value: Value) -> Condition {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn each_test_on_a_present_and_a_missing_value() {
        let tier = |field: &FieldRef| (field.to_string() == "payload.tier").then(|| json!(3));
        let nothing = |_: &FieldRef| None;
        let cases = [
            (json!({"field": "payload.tier", "equals": 3}), true, false),
            (
                json!({"field": "payload.tier", "not_equals": 3}),
                false,
                true,
            ),
            (
                json!({"field": "payload.tier", "one_of": [1, 3]}),
                true,
                false,
            ),
            (
                json!({"field": "payload.tier", "exists": true}),
                true,
                false,
            ),
            (
                json!({"field": "payload.tier", "exists": false}),
                false,
                true,
            ),
            (
                json!({"field": "payload.tier", "greater_than": 2.5}),
                true,
                false,
            ),
            (
                json!({"field": "payload.tier", "less_than": 2.5}),
                false,
                false,
            ),
        ];
        for (written, present, missing) in cases {
            let parsed = condition(written.clone());
            assert_eq!(parsed.holds(tier), present, "{written}");
            assert_eq!(parsed.holds(nothing), missing, "{written}");
            assert_eq!(serde_json::to_value(&parsed).unwrap(), written);
        }
    }
}
