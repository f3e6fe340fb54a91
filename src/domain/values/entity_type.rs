use super::Alphabet;

bounded_string!(
    /// The kind of entity an incoming event is about (`order`, `user.account`):
    /// 1–64 of `a-z 0-9 _ . -`. Replay selects by it.
    EntityType,
    64,
    Alphabet::DottedSlug
);
