use super::Alphabet;

bounded_string!(
    /// The source's id for one incoming event, its idempotency key
    /// (1–255 printable ASCII characters without spaces).
    ExternalEventId,
    255,
    Alphabet::VisibleAscii
);
