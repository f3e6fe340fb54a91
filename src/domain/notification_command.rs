use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;

use super::notification_event::DeliveredContent;
use super::notification_request::NotificationRequest;
use super::signed_link::ClientContext;
use super::values::{Channel, HttpUrl, NotificationId, TenantId};

/// What someone asks of a notification; [`super::Notification::decide`] says
/// whether it may happen and which events record it.
// Requested carries the whole request. Values live for one decision and one
// append, so the size is harmless; a Box would leak into every constructor.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum NotificationCommand {
    Request {
        tenant_id: TenantId,
        notification_id: NotificationId,
        request: NotificationRequest,
    },
    Rank {
        score: f64,
        breakdown: Value,
        scorer: String,
        send_after: Option<DateTime<Utc>>,
    },
    Schedule {
        schedule_at: DateTime<Utc>,
        reason: String,
        /// How often a worker looks at this hold again, if it does: a hold
        /// restated for the same reason and ending within `recheck` of now
        /// is not news, so it records nothing (the queue row alone moves).
        recheck: Option<TimeDelta>,
    },
    AttemptDelivery {
        channel: Channel,
        provider: String,
    },
    RecordSent {
        attempt: u32,
        provider: String,
        provider_message_id: Option<String>,
        content: Option<DeliveredContent>,
    },
    /// With `retry_at`, the notification waits for a retry or a failover
    /// (`permanent` marks this provider as not to be tried again); without,
    /// it is dead-lettered in the same decision.
    RecordFailure {
        attempt: u32,
        provider: String,
        error: String,
        permanent: bool,
        retry_at: Option<DateTime<Utc>>,
    },
    DeadLetter {
        reason: String,
    },
    /// An operator sends a dead-lettered notification through again.
    Requeue {
        reason: String,
    },
    /// `at` is when the provider says it happened, which may be well before
    /// its webhook reaches us.
    RecordDelivered {
        at: DateTime<Utc>,
    },
    RecordBounce {
        hard: bool,
        reason: String,
        at: DateTime<Utc>,
    },
    RecordComplaint {
        at: DateTime<Utc>,
    },
    /// `client` is what the tracking request said about its client, already
    /// cut to what analytics may keep.
    RecordOpen {
        at: DateTime<Utc>,
        client: ClientContext,
    },
    RecordClick {
        url: HttpUrl,
        at: DateTime<Utc>,
        client: ClientContext,
    },
    Reject {
        reason: String,
    },
    Suppress {
        reason: String,
    },
    Expire,
    Cancel {
        reason: Option<String>,
    },
    /// The dispatcher takes back `attempt`, which it has not handed to the
    /// provider, to try again later (its campaign was paused).
    WithdrawAttempt {
        attempt: u32,
        reason: String,
    },
    /// The dispatcher cancels the notification instead of making `attempt`,
    /// which it has not handed to the provider (its campaign was cancelled).
    CancelAttempt {
        attempt: u32,
        reason: String,
    },
}

impl NotificationCommand {
    pub fn name(&self) -> &'static str {
        match self {
            NotificationCommand::Request { .. } => "Request",
            NotificationCommand::Rank { .. } => "Rank",
            NotificationCommand::Schedule { .. } => "Schedule",
            NotificationCommand::AttemptDelivery { .. } => "AttemptDelivery",
            NotificationCommand::RecordSent { .. } => "RecordSent",
            NotificationCommand::RecordFailure { .. } => "RecordFailure",
            NotificationCommand::DeadLetter { .. } => "DeadLetter",
            NotificationCommand::Requeue { .. } => "Requeue",
            NotificationCommand::RecordDelivered { .. } => "RecordDelivered",
            NotificationCommand::RecordBounce { .. } => "RecordBounce",
            NotificationCommand::RecordComplaint { .. } => "RecordComplaint",
            NotificationCommand::RecordOpen { .. } => "RecordOpen",
            NotificationCommand::RecordClick { .. } => "RecordClick",
            NotificationCommand::Reject { .. } => "Reject",
            NotificationCommand::Suppress { .. } => "Suppress",
            NotificationCommand::Expire => "Expire",
            NotificationCommand::Cancel { .. } => "Cancel",
            NotificationCommand::WithdrawAttempt { .. } => "WithdrawAttempt",
            NotificationCommand::CancelAttempt { .. } => "CancelAttempt",
        }
    }
}
