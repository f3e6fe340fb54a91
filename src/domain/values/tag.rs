use super::Alphabet;

bounded_string!(
    /// A free label on a notification (1–64 characters, no control characters).
    Tag,
    64,
    Alphabet::Text
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_tags() {
        assert!(Tag::parse("OTP login").is_ok());
        assert!(Tag::parse("").is_err());
        assert!(Tag::parse("a\rb").is_err());
        assert!(Tag::parse(&"t".repeat(64)).is_ok());
        assert!(Tag::parse(&"t".repeat(65)).is_err());
    }
}
