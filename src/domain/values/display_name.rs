use super::Alphabet;

bounded_string!(
    /// A human-readable name for a tenant or an API key (1–128 characters, no
    /// control characters).
    DisplayName,
    128,
    Alphabet::Text
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_names() {
        assert!(DisplayName::parse("Acme Ltd — production").is_ok());
        assert!(DisplayName::parse(" ").is_err());
        assert!(DisplayName::parse(&"n".repeat(129)).is_err());
    }
}
