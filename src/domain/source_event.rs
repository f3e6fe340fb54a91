//! A raw event from a producer (the ingest contract): kept immutable,
//! indexed by entity and time for replay, and the input to rules that turn
//! events into notifications. Its JSON input shape is the edge's
//! (`commands::ingest::IngestEventInput`); this is the parsed value.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::values::{
    EntityId, EntityType, ExternalEventId, ExternalEventType, JsonObject, SourceName, ValueError,
};

pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;

/// How far ahead of our clock `occurred_at` may be. Replay selects by time
/// window, so an event dated in the future would hide from the windows that
/// should find it.
const FUTURE_SKEW: TimeDelta = TimeDelta::minutes(5);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceEvent {
    /// The producer's id for this event; ingest is idempotent on it per source.
    pub event_id: ExternalEventId,
    pub source: SourceName,
    pub entity_type: EntityType,
    pub entity_id: EntityId,
    pub event_type: ExternalEventType,
    pub occurred_at: DateTime<Utc>,
    pub payload: JsonObject,
}

impl SourceEvent {
    /// `at` as an event's `occurred_at`, received at `now`: at most five
    /// minutes ahead.
    pub fn occurred_at(at: DateTime<Utc>, now: DateTime<Utc>) -> Result<DateTime<Utc>, ValueError> {
        if at > now + FUTURE_SKEW {
            return Err(ValueError::Invalid(
                "is more than five minutes in the future".into(),
            ));
        }
        Ok(at)
    }
}
