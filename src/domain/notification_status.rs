use std::fmt;

use serde::{Deserialize, Serialize};

/// Where a notification is in its life; see the table in [`super::notification`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NotificationStatus {
    Requested,
    Ranked,
    Scheduled,
    Sending,
    Sent,
    RetryPending,
    DeadLettered,
    Delivered,
    Bounced,
    Complained,
    Rejected,
    Suppressed,
    Expired,
    Cancelled,
}

impl NotificationStatus {
    pub const ALL: [NotificationStatus; 14] = [
        NotificationStatus::Requested,
        NotificationStatus::Ranked,
        NotificationStatus::Scheduled,
        NotificationStatus::Sending,
        NotificationStatus::Sent,
        NotificationStatus::RetryPending,
        NotificationStatus::DeadLettered,
        NotificationStatus::Delivered,
        NotificationStatus::Bounced,
        NotificationStatus::Complained,
        NotificationStatus::Rejected,
        NotificationStatus::Suppressed,
        NotificationStatus::Expired,
        NotificationStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NotificationStatus::Requested => "REQUESTED",
            NotificationStatus::Ranked => "RANKED",
            NotificationStatus::Scheduled => "SCHEDULED",
            NotificationStatus::Sending => "SENDING",
            NotificationStatus::Sent => "SENT",
            NotificationStatus::RetryPending => "RETRY_PENDING",
            NotificationStatus::DeadLettered => "DEAD_LETTERED",
            NotificationStatus::Delivered => "DELIVERED",
            NotificationStatus::Bounced => "BOUNCED",
            NotificationStatus::Complained => "COMPLAINED",
            NotificationStatus::Rejected => "REJECTED",
            NotificationStatus::Suppressed => "SUPPRESSED",
            NotificationStatus::Expired => "EXPIRED",
            NotificationStatus::Cancelled => "CANCELLED",
        }
    }

    /// The outcome is settled: no delivery will be attempted again. Receipts
    /// and engagement may still arrive after `DELIVERED`, and a complaint may
    /// follow delivery, but a terminal status never leads back to a live one.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            NotificationStatus::DeadLettered
                | NotificationStatus::Delivered
                | NotificationStatus::Bounced
                | NotificationStatus::Complained
                | NotificationStatus::Rejected
                | NotificationStatus::Suppressed
                | NotificationStatus::Expired
                | NotificationStatus::Cancelled
        )
    }

    /// Waiting for its next delivery attempt, with none in flight.
    pub fn is_pending(self) -> bool {
        matches!(
            self,
            NotificationStatus::Requested
                | NotificationStatus::Ranked
                | NotificationStatus::Scheduled
                | NotificationStatus::RetryPending
        )
    }

    /// Not yet handed to a provider successfully: pending or in flight.
    pub fn is_unsent(self) -> bool {
        self.is_pending() || self == NotificationStatus::Sending
    }

    /// A provider accepted it and no bounce or complaint has ended it yet:
    /// receipts and engagement may still arrive.
    pub fn is_sent_or_delivered(self) -> bool {
        matches!(
            self,
            NotificationStatus::Sent | NotificationStatus::Delivered
        )
    }
}

impl fmt::Display for NotificationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_str_matches_serde() {
        for status in NotificationStatus::ALL {
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                serde_json::json!(status.as_str())
            );
        }
    }

    #[test]
    fn live_and_terminal_statuses_do_not_overlap() {
        for status in NotificationStatus::ALL {
            assert!(!(status.is_unsent() && status.is_terminal()), "{status}");
        }
    }
}
