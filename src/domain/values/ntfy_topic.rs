use super::Alphabet;

bounded_string!(
    /// An ntfy topic: 1–64 of `A-Z a-z 0-9 _ -`, the characters ntfy accepts.
    NtfyTopic,
    64,
    Alphabet::Topic
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_topics() {
        assert!(NtfyTopic::parse("Alerts_prod-1").is_ok());
        assert!(NtfyTopic::parse("_x").is_ok());
        for bad in ["", "a.b", "a/b", "a b"] {
            assert!(NtfyTopic::parse(bad).is_err(), "{bad:?}");
        }
        assert!(NtfyTopic::parse(&"t".repeat(65)).is_err());
    }
}
