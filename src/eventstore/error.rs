use uuid::Uuid;

use super::model::ExpectedVersion;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The stream moved on since the appender read it; nothing was written.
    #[error("stream {stream} was expected at {expected} but is at version {actual}")]
    Conflict {
        stream: String,
        expected: ExpectedVersion,
        actual: i64,
    },
    /// An event id already in the log names a different event; nothing was written.
    #[error("event id {event_id} is already used by a different event")]
    EventIdReused { event_id: Uuid },
    /// The batch cannot be appended as given (the caller's mistake, not a race).
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    /// Another transaction raced this one inside a caller's transaction, which
    /// PostgreSQL has now aborted: roll back and run the whole unit of work again.
    #[error("a concurrent append raced this transaction; roll back and retry")]
    TransactionAborted,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl StoreError {
    /// Conflicts are the expected outcome of optimistic concurrency and worth a retry
    /// after re-reading; the rest are not.
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            StoreError::Conflict { .. } | StoreError::TransactionAborted
        )
    }
}
