use super::Alphabet;

bounded_string!(
    /// The source's id of the entity an incoming event is about
    /// (1–255 printable ASCII characters without spaces).
    EntityId,
    255,
    Alphabet::VisibleAscii
);
