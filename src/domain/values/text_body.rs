use super::ValueError;

/// A plain-text body, at most 64 KiB.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TextBody(String);

impl TextBody {
    pub const MAX_BYTES: usize = 64 * 1024;

    pub fn parse(s: &str) -> Result<Self, ValueError> {
        check_body(s, Self::MAX_BYTES)?;
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

text_value!(TextBody);
redacted_debug!(TextBody);

/// Bodies keep their newlines and tabs, but not NUL: PostgreSQL's `jsonb`
/// cannot store `\u0000`, and every body ends up in an event payload.
pub(super) fn check_body(s: &str, max_bytes: usize) -> Result<(), ValueError> {
    if s.trim().is_empty() {
        return Err(ValueError::Empty);
    }
    if s.len() > max_bytes {
        return Err(ValueError::too_many_bytes(max_bytes));
    }
    if s.contains('\0') {
        return Err(ValueError::Invalid(
            "must not contain NUL characters".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_bodies_in_bytes() {
        assert!(TextBody::parse("line one\n\tline two").is_ok());
        assert!(TextBody::parse(&"b".repeat(TextBody::MAX_BYTES)).is_ok());
        assert_eq!(
            TextBody::parse(&"b".repeat(TextBody::MAX_BYTES + 1)),
            Err(ValueError::too_many_bytes(TextBody::MAX_BYTES))
        );
        // 'é' is two bytes: the limit is on storage, not on characters.
        assert!(TextBody::parse(&"é".repeat(TextBody::MAX_BYTES / 2 + 1)).is_err());
        assert!(TextBody::parse("a\0b").is_err());
        assert!(TextBody::parse("").is_err());
    }
}
