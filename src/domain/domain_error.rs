use chrono::{DateTime, Utc};

use super::notification_status::NotificationStatus;
use super::validation_errors::ValidationErrors;
use super::values::{ApiKeyId, Channel};

/// Why a command was refused or a stored event could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DomainError {
    #[error("the notification has not been requested")]
    NotRequested,
    #[error("the notification has already been requested")]
    AlreadyRequested,
    #[error("cannot {command} a notification that is {from}")]
    IllegalTransition {
        from: NotificationStatus,
        command: &'static str,
    },
    /// A dispatcher reported on an attempt that is no longer the current one.
    #[error("attempt {reported} is not the current attempt ({current})")]
    StaleAttempt { current: u32, reported: u32 },
    #[error("channel {0} was not requested for this notification")]
    ChannelNotRequested(Channel),
    #[error("the notification expires at {expires_at}")]
    PastExpiry { expires_at: DateTime<Utc> },
    #[error("invalid command: {0}")]
    InvalidCommand(&'static str),

    #[error("the tenant already exists")]
    TenantAlreadyCreated,
    #[error("the tenant does not exist")]
    TenantNotCreated,
    #[error("API key {0} is already issued")]
    ApiKeyAlreadyIssued(ApiKeyId),
    #[error("API key {0} does not exist")]
    UnknownApiKey(ApiKeyId),
    #[error("API key {0} is already revoked")]
    ApiKeyAlreadyRevoked(ApiKeyId),
    /// A tenant's own overrides would raise or lift the operator's limits.
    #[error("above the operator's limits: {0}")]
    AboveOperatorLimits(ValidationErrors),

    #[error("unknown event type {event_type:?}")]
    UnknownEventType { event_type: String },
    #[error("{event_type} has no schema version {schema_version}")]
    UnsupportedSchemaVersion {
        event_type: String,
        schema_version: i16,
    },
    #[error("stored {event_type} cannot be read: {reason}")]
    MalformedEvent { event_type: String, reason: String },
    /// A stream whose first event, the request, cannot be read: nothing of
    /// the notification can be told from the rest.
    #[error("the notification's request cannot be read: {reason}")]
    UnreadableRequest { reason: String },
}
