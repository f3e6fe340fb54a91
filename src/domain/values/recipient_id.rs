use super::Alphabet;

bounded_string!(
    /// The tenant's own id for a recipient (1–255 characters, no control
    /// characters); it also addresses the in-app feed.
    RecipientId,
    255,
    Alphabet::Text
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_free_text_within_limits() {
        assert!(RecipientId::parse("user 42 / Zoë").is_ok());
        assert!(RecipientId::parse(&"é".repeat(255)).is_ok());
    }

    #[test]
    fn rejects_blank_control_and_long() {
        for bad in ["", "   ", "a\u{0}b", "a\tb"] {
            assert!(RecipientId::parse(bad).is_err(), "{bad:?}");
        }
        assert!(RecipientId::parse(&"é".repeat(256)).is_err());
    }
}
