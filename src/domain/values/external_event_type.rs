use super::Alphabet;

bounded_string!(
    /// The source's name for what happened (`order.created`, `OrderCreated`):
    /// 1–128 printable ASCII characters without spaces.
    ExternalEventType,
    128,
    Alphabet::VisibleAscii
);
