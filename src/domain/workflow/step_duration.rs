use std::fmt;

use chrono::TimeDelta;

use crate::domain::values::ValueError;

/// A length of time in a definition (`90s`, `30m`, `1h30m`, `2d`): whole
/// seconds from one second to [`StepDuration::MAX`]. Kept and shown in the
/// same notation it is written in, so a stored definition reads like its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StepDuration {
    seconds: u32,
}

const UNITS: [(char, u32); 4] = [('d', 86_400), ('h', 3_600), ('m', 60), ('s', 1)];

impl StepDuration {
    /// Thirty days: the longest delay, wait or window, so no run outlives
    /// what an operator can reason about.
    pub const MAX: StepDuration = StepDuration {
        seconds: 30 * 86_400,
    };

    pub fn parse(s: &str) -> Result<Self, ValueError> {
        let invalid = || {
            ValueError::Invalid(format!(
                "{s:?} is not a duration; write numbers with units d, h, m, s in that order, such as 90s, 30m or 1h30m"
            ))
        };
        if s.trim().is_empty() {
            return Err(ValueError::Empty);
        }
        let mut seconds: u64 = 0;
        let mut digits = String::new();
        let mut next_unit = 0;
        for c in s.chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            let position = UNITS[next_unit..]
                .iter()
                .position(|(unit, _)| *unit == c)
                .ok_or_else(invalid)?;
            let (_, unit_seconds) = UNITS[next_unit + position];
            let count: u64 = digits.parse().map_err(|_| invalid())?;
            seconds = seconds.saturating_add(count.saturating_mul(u64::from(unit_seconds)));
            digits.clear();
            next_unit += position + 1;
        }
        if !digits.is_empty() || next_unit == 0 {
            return Err(invalid());
        }
        Self::from_seconds(seconds)
    }

    pub fn from_seconds(seconds: u64) -> Result<Self, ValueError> {
        match u32::try_from(seconds) {
            Ok(seconds @ 1..) if seconds <= Self::MAX.seconds => Ok(Self { seconds }),
            Ok(0) => Err(ValueError::Invalid("must be at least 1s".into())),
            _ => Err(ValueError::Invalid(format!(
                "must be at most {}",
                Self::MAX
            ))),
        }
    }

    pub fn seconds(self) -> u32 {
        self.seconds
    }

    pub fn as_delta(self) -> TimeDelta {
        TimeDelta::seconds(i64::from(self.seconds))
    }

    fn notation(&self) -> String {
        let mut text = String::new();
        let mut rest = self.seconds;
        for (unit, unit_seconds) in UNITS {
            if rest >= unit_seconds {
                text.push_str(&format!("{}{unit}", rest / unit_seconds));
                rest %= unit_seconds;
            }
        }
        text
    }
}

impl fmt::Display for StepDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.notation())
    }
}

impl serde::Serialize for StepDuration {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.notation())
    }
}

impl<'de> serde::Deserialize<'de> for StepDuration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = <String as serde::Deserialize>::deserialize(deserializer)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_units_in_order_and_writes_them_back_canonically() {
        assert_eq!(StepDuration::parse("90s").unwrap().seconds(), 90);
        assert_eq!(StepDuration::parse("90s").unwrap().to_string(), "1m30s");
        assert_eq!(StepDuration::parse("1h30m").unwrap().seconds(), 5_400);
        assert_eq!(StepDuration::parse("2d").unwrap().to_string(), "2d");
        assert_eq!(StepDuration::parse("30d").unwrap(), StepDuration::MAX);
        let stored = serde_json::to_string(&StepDuration::parse("1d2h").unwrap()).unwrap();
        assert_eq!(stored, "\"1d2h\"");
        assert_eq!(
            serde_json::from_str::<StepDuration>(&stored)
                .unwrap()
                .seconds(),
            93_600
        );
    }

    #[test]
    fn refuses_nonsense_zero_and_too_long() {
        for bad in [
            "",
            "10",
            "h",
            "1x",
            "30m1h",
            "1h1h",
            "0s",
            "31d",
            "-5m",
            "99999999999999999999d",
        ] {
            assert!(StepDuration::parse(bad).is_err(), "{bad:?}");
        }
    }
}
