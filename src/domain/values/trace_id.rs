use super::Alphabet;

bounded_string!(
    /// The caller's trace id, carried into logs and provider calls
    /// (1–128 printable ASCII characters without spaces).
    TraceId,
    128,
    Alphabet::VisibleAscii
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_trace_ids() {
        assert!(TraceId::parse("9e2b4f0c").is_ok());
        assert!(TraceId::parse(&"f".repeat(129)).is_err());
    }
}
