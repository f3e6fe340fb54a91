use super::Alphabet;

bounded_string!(
    /// The system an incoming event came from (`billing`, `s3.orders`):
    /// 1–64 of `a-z 0-9 _ . -`.
    SourceName,
    64,
    Alphabet::DottedSlug
);
