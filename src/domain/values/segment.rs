use super::Alphabet;

bounded_string!(
    /// The audience segment a source event's user belongs to (`premium`):
    /// 1–64 of `a-z 0-9 _ . -`.
    Segment,
    64,
    Alphabet::DottedSlug
);
