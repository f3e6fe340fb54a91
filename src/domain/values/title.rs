use super::Alphabet;

bounded_string!(
    /// A message's title: the email subject, the push or ntfy title.
    ///
    /// At most 998 characters, RFC 5322's line limit, and no control
    /// characters, so a subject can never inject a header.
    Title,
    998,
    Alphabet::Text
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_header_injection_and_long_subjects() {
        assert!(Title::parse("Your code is 384921").is_ok());
        assert!(Title::parse("Hi\r\nBcc: everyone@example.com").is_err());
        assert!(Title::parse(&"s".repeat(998)).is_ok());
        assert!(Title::parse(&"s".repeat(999)).is_err());
    }
}
