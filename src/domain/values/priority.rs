use std::fmt;

use serde::{Deserialize, Serialize};

use super::ValueError;

/// How urgently a notification should go out. Sorting puts `High` first.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Priority {
    High,
    #[default]
    Normal,
    Low,
}

impl Priority {
    /// Accepts any case: REST clients send `high`, GraphQL sends `HIGH`.
    pub fn parse(s: &str) -> Result<Self, ValueError> {
        [Priority::High, Priority::Normal, Priority::Low]
            .into_iter()
            .find(|priority| priority.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                ValueError::Invalid(format!(
                    "unknown priority {s:?}; expected HIGH, NORMAL or LOW"
                ))
            })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "HIGH",
            Priority::Normal => "NORMAL",
            Priority::Low => "LOW",
        }
    }

    /// The queue's sort key: lower goes first.
    pub fn rank(self) -> u8 {
        match self {
            Priority::High => 0,
            Priority::Normal => 1,
            Priority::Low => 2,
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn high_sorts_first() {
        let mut priorities = vec![Priority::Low, Priority::High, Priority::Normal];
        priorities.sort();
        assert_eq!(
            priorities,
            [Priority::High, Priority::Normal, Priority::Low]
        );
        assert!(Priority::High.rank() < Priority::Normal.rank());
        assert!(Priority::Normal.rank() < Priority::Low.rank());
    }

    #[test]
    fn parses_any_case_and_serialises_screaming() {
        assert_eq!(Priority::parse("high"), Ok(Priority::High));
        assert_eq!(Priority::parse("LOW"), Ok(Priority::Low));
        assert!(Priority::parse("urgent").is_err());
        assert_eq!(
            serde_json::to_string(&Priority::Normal).unwrap(),
            "\"NORMAL\""
        );
    }
}
