//! Where a definition reads a value: the trigger's payload, the recipient,
//! or what an earlier step did.

use std::fmt;

use serde_json::{Map, Value};

use super::workflow_key::StepName;
use crate::domain::values::{ValueError, text_value};

pub const MAX_PATH_SEGMENTS: usize = 8;

/// A dotted path into a JSON object (`order.id`, `items.0.sku`): 1 to
/// [`MAX_PATH_SEGMENTS`] segments of `A-Z a-z 0-9 _ -`; a segment of digits
/// also indexes an array.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PayloadPath(String);

impl PayloadPath {
    pub const MAX_CHARS: usize = 128;

    pub fn parse(s: &str) -> Result<Self, ValueError> {
        if s.is_empty() {
            return Err(ValueError::Empty);
        }
        if s.chars().count() > Self::MAX_CHARS {
            return Err(ValueError::too_many_chars(Self::MAX_CHARS));
        }
        let segments: Vec<&str> = s.split('.').collect();
        if segments.len() > MAX_PATH_SEGMENTS {
            return Err(ValueError::Invalid(format!(
                "must have at most {MAX_PATH_SEGMENTS} segments"
            )));
        }
        let well_formed = |segment: &str| {
            !segment.is_empty()
                && segment
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if !segments.into_iter().all(well_formed) {
            return Err(ValueError::Invalid(
                "must be dot-separated names of A-Z, a-z, 0-9, '_' and '-'".into(),
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The value at this path in `object`, if there is one.
    pub fn lookup<'a>(&self, object: &'a Map<String, Value>) -> Option<&'a Value> {
        let mut segments = self.0.split('.');
        let mut current = object.get(segments.next()?)?;
        for segment in segments {
            current = match current {
                Value::Object(fields) => fields.get(segment)?,
                Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(current)
    }
}

text_value!(PayloadPath);

/// The recipient's fields a definition may read.
pub const RECIPIENT_FIELDS: [&str; 8] = [
    "id",
    "email",
    "phone",
    "push_target",
    "webhook_url",
    "ntfy_topic",
    "locale",
    "timezone",
];

/// What a step has to show for itself, read by `steps.<name>.<field>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StepField {
    /// `sent`, `delayed`, `digested`, `matched`, `timed_out`, ... or `skipped`.
    Outcome,
    /// The notification a `send` step made.
    NotificationId,
}

impl StepField {
    fn as_str(self) -> &'static str {
        match self {
            StepField::Outcome => "outcome",
            StepField::NotificationId => "notification_id",
        }
    }
}

/// A value a run can read: `payload.<path>`, `recipient.<field>` or
/// `steps.<name>.outcome` / `steps.<name>.notification_id`. Each place in a
/// definition says which of these it accepts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FieldRef {
    Payload(PayloadPath),
    Recipient(&'static str),
    Step(StepName, StepField),
}

impl FieldRef {
    pub fn parse(s: &str) -> Result<Self, ValueError> {
        if s.is_empty() {
            return Err(ValueError::Empty);
        }
        let unknown = || {
            ValueError::Invalid(format!(
                "{s:?} must start with payload., recipient. or steps."
            ))
        };
        let (root, rest) = s.split_once('.').ok_or_else(unknown)?;
        match root {
            "payload" => PayloadPath::parse(rest).map(FieldRef::Payload),
            "recipient" => RECIPIENT_FIELDS
                .into_iter()
                .find(|field| *field == rest)
                .map(FieldRef::Recipient)
                .ok_or_else(|| {
                    ValueError::Invalid(format!(
                        "recipient has no field {rest:?}; expected one of {}",
                        RECIPIENT_FIELDS.join(", ")
                    ))
                }),
            "steps" => {
                let (name, field) = rest.split_once('.').ok_or_else(|| {
                    ValueError::Invalid(
                        "must be steps.<name>.outcome or steps.<name>.notification_id".into(),
                    )
                })?;
                let field = [StepField::Outcome, StepField::NotificationId]
                    .into_iter()
                    .find(|known| known.as_str() == field)
                    .ok_or_else(|| {
                        ValueError::Invalid(format!(
                            "a step has no field {field:?}; expected outcome or notification_id"
                        ))
                    })?;
                Ok(FieldRef::Step(StepName::parse(name)?, field))
            }
            _ => Err(unknown()),
        }
    }

    fn as_str(&self) -> String {
        match self {
            FieldRef::Payload(path) => format!("payload.{path}"),
            FieldRef::Recipient(field) => format!("recipient.{field}"),
            FieldRef::Step(name, field) => format!("steps.{name}.{}", field.as_str()),
        }
    }
}

impl fmt::Display for FieldRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str())
    }
}

impl serde::Serialize for FieldRef {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for FieldRef {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = <String as serde::Deserialize>::deserialize(deserializer)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn payload_paths_walk_objects_and_arrays() {
        let payload = json!({"order": {"id": "o-1", "items": [{"sku": "a"}]}});
        let payload = payload.as_object().unwrap();
        let at = |path: &str| PayloadPath::parse(path).unwrap().lookup(payload).cloned();
        assert_eq!(at("order.id"), Some(json!("o-1")));
        assert_eq!(at("order.items.0.sku"), Some(json!("a")));
        assert_eq!(at("order.items.1.sku"), None);
        assert_eq!(at("order.id.more"), None);
        for bad in ["", "a..b", ".a", "a b", "a.b.c.d.e.f.g.h.i"] {
            assert!(PayloadPath::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn field_refs_name_their_root() {
        for good in [
            "payload.thread_id",
            "recipient.email",
            "steps.inapp.notification_id",
            "steps.wait.outcome",
        ] {
            let parsed = FieldRef::parse(good).unwrap();
            assert_eq!(parsed.to_string(), good);
            assert_eq!(serde_json::to_value(&parsed).unwrap(), json!(good));
        }
        for bad in [
            "thread_id",
            "payload.",
            "recipient.name",
            "steps.x",
            "steps.x.y",
            "steps.X.outcome",
        ] {
            assert!(FieldRef::parse(bad).is_err(), "{bad:?}");
        }
    }
}
