use language_tags::LanguageTag;

use super::ValueError;

/// A BCP 47 language tag in canonical form (`en-GB`; `en-latn-gb` becomes `en-GB`,
/// `iw` becomes `he`), so template lookups compare like with like.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Locale(String);

impl Locale {
    /// RFC 5646 asks implementations to support tags of at least 35 characters;
    /// nothing longer names a real locale.
    pub const MAX_CHARS: usize = 35;

    pub fn parse(s: &str) -> Result<Self, ValueError> {
        if s.is_empty() {
            return Err(ValueError::Empty);
        }
        if s.chars().count() > Self::MAX_CHARS {
            return Err(ValueError::too_many_chars(Self::MAX_CHARS));
        }
        let invalid = |error: &dyn std::fmt::Display| {
            ValueError::Invalid(format!("is not a BCP 47 language tag ({error})"))
        };
        let tag = LanguageTag::parse(s).map_err(|error| invalid(&error))?;
        tag.validate().map_err(|error| invalid(&error))?;
        let canonical = tag.canonicalize().map_err(|error| invalid(&error))?;
        Ok(Self(canonical.into_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

text_value!(Locale);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_tags() {
        assert_eq!(Locale::parse("en-gb").unwrap().as_str(), "en-GB");
        assert_eq!(Locale::parse("EN-latn-GB").unwrap().as_str(), "en-GB");
        assert_eq!(Locale::parse("zh-hant-tw").unwrap().as_str(), "zh-Hant-TW");
        assert_eq!(Locale::parse("fr").unwrap().as_str(), "fr");
    }

    #[test]
    fn rejects_malformed_and_unregistered_tags() {
        for bad in ["", "en_GB", "xx-YY", "english", "en-"] {
            assert!(Locale::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Locale::parse(&format!("en-{}", "a".repeat(40))).is_err());
    }
}
