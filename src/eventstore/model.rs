//! The values that go into and come out of the log.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// What the appender believes the stream's current version to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpectedVersion {
    /// Append whatever the stream holds.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream's last event must have exactly this version.
    Exact(i64),
}

impl ExpectedVersion {
    /// The version the stream must be at, if any (`NoStream` is version 0).
    pub fn required(self) -> Option<i64> {
        match self {
            ExpectedVersion::Any => None,
            ExpectedVersion::NoStream => Some(0),
            ExpectedVersion::Exact(version) => Some(version),
        }
    }
}

impl std::fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::Exact(version) => write!(f, "version {version}"),
        }
    }
}

/// An event not yet in the log.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Makes appends idempotent: the same id is stored at most once.
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: i16,
    pub tenant_id: String,
    pub payload: Value,
    pub metadata: Value,
}

/// Events for one stream within a batch, with the version the appender expects.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamAppend {
    pub stream_id: String,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
}

/// A place in the log's read order: readers resume strictly after it.
///
/// Read order is `(transaction_id, global_position)`, not `global_position`
/// alone, because positions are drawn before commit and can commit out of order.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct Checkpoint {
    pub transaction_id: i64,
    pub global_position: i64,
}

impl Checkpoint {
    /// Before the first event.
    pub const ORIGIN: Checkpoint = Checkpoint {
        transaction_id: 0,
        global_position: 0,
    };
}

impl std::fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.transaction_id, self.global_position)
    }
}

/// An event as stored in the log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordedEvent {
    pub global_position: i64,
    pub transaction_id: i64,
    pub stream_id: String,
    pub stream_version: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: i16,
    pub tenant_id: String,
    pub payload: Value,
    pub metadata: Value,
    pub recorded_at: DateTime<Utc>,
}

impl RecordedEvent {
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            transaction_id: self.transaction_id,
            global_position: self.global_position,
        }
    }
}

/// Which events a reader wants; `None` means all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReadFilter {
    pub tenant_id: Option<String>,
    pub event_types: Option<Vec<String>>,
    /// Only events of these types come with their payload and metadata; the
    /// others carry `null` in both. For readers that need the payloads of a
    /// few types: the database encodes, and the reader parses, far less.
    pub payload_types: Option<Vec<String>>,
}

/// One page of `read_all`.
#[derive(Debug, Clone)]
pub struct ReadBatch {
    pub events: Vec<RecordedEvent>,
    /// Where the next read starts. When the page was not full this is the
    /// horizon itself, so a filtered reader does not rescan what it skipped.
    pub next: Checkpoint,
    /// True when the page reached the horizon: nothing more is readable yet.
    pub caught_up: bool,
    /// Committed events exist above the horizon: an older transaction still
    /// running holds every reader back.
    pub held_back: bool,
    /// The highest global position in the log, for lag figures.
    pub head: i64,
}
