use super::ValueError;

/// An email address as lettre parses it (RFC 5321 syntax), at most 254
/// characters: the longest path SMTP carries.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EmailAddress(lettre::Address);

impl EmailAddress {
    pub const MAX_CHARS: usize = 254;

    pub fn parse(s: &str) -> Result<Self, ValueError> {
        if s.is_empty() {
            return Err(ValueError::Empty);
        }
        if s.chars().count() > Self::MAX_CHARS {
            return Err(ValueError::too_many_chars(Self::MAX_CHARS));
        }
        s.parse::<lettre::Address>()
            .map(Self)
            .map_err(|error| ValueError::Invalid(format!("is not an email address ({error})")))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_ref()
    }

    /// The address as the SMTP driver takes it.
    pub fn as_address(&self) -> &lettre::Address {
        &self.0
    }
}

text_value!(EmailAddress);
redacted_debug!(EmailAddress);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_addresses() {
        for good in ["user@x.com", "first.last+tag@sub.example.co.uk"] {
            assert_eq!(EmailAddress::parse(good).unwrap().as_str(), good);
        }
    }

    #[test]
    fn rejects_non_addresses() {
        for bad in [
            "",
            "user",
            "user@",
            "@x.com",
            "a b@x.com",
            "user@-x.com",
            " user@x.com",
        ] {
            assert!(
                EmailAddress::parse(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn rejects_addresses_longer_than_smtp_allows() {
        let long = format!("{}@{}.com", "u".repeat(60), "d".repeat(200));
        assert_eq!(
            EmailAddress::parse(&long),
            Err(ValueError::too_many_chars(254))
        );
    }
}

#[cfg(test)]
mod redaction_tests {
    use super::EmailAddress;

    #[test]
    fn debug_output_never_shows_the_address() {
        let email = EmailAddress::parse("ada@example.com").unwrap();
        let shown = format!("{email:?}");
        assert!(!shown.contains("ada"), "{shown}");
        assert_eq!(shown, "EmailAddress(<redacted: 15 chars>)");
    }
}
