use super::Alphabet;

bounded_string!(
    /// The client's key that makes a send safe to retry: 1–255 printable ASCII
    /// characters without spaces, since it usually arrives as an HTTP header.
    IdempotencyKey,
    255,
    Alphabet::VisibleAscii
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_printable_ascii() {
        assert!(IdempotencyKey::parse("nl-2ce1:9f/x=").is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(255)).is_ok());
    }

    #[test]
    fn rejects_spaces_controls_and_long_keys() {
        for bad in ["", "a b", "a\nb", "clé"] {
            assert!(IdempotencyKey::parse(bad).is_err(), "{bad:?}");
        }
        assert!(IdempotencyKey::parse(&"k".repeat(256)).is_err());
    }
}
