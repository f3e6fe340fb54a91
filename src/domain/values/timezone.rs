use chrono_tz::Tz;

use super::ValueError;

/// An IANA time zone (`Europe/Paris`), used for quiet hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timezone(Tz);

impl Timezone {
    pub fn parse(s: &str) -> Result<Self, ValueError> {
        if s.is_empty() {
            return Err(ValueError::Empty);
        }
        s.parse::<Tz>()
            .map(Self)
            .map_err(|_| ValueError::Invalid("is not an IANA time zone name".into()))
    }

    pub fn as_str(&self) -> &str {
        self.0.name()
    }

    pub fn tz(&self) -> Tz {
        self.0
    }
}

text_value!(Timezone);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_iana_names_only() {
        assert_eq!(
            Timezone::parse("Europe/Paris").unwrap().as_str(),
            "Europe/Paris"
        );
        assert!(Timezone::parse("UTC").is_ok());
        for bad in ["", "Mars/Base", "europe/paris", "+02:00", "CEST "] {
            assert!(Timezone::parse(bad).is_err(), "{bad:?}");
        }
    }
}
