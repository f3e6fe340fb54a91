//! The `Notification` aggregate: which transitions are legal (its life is
//! described in docs/architecture.md).
//!
//! The same rules run when a command is handled ([`Notification::decide`]) and
//! are assumed when state is rebuilt ([`Notification::apply`] trusts events).
//!
//! | command | legal from | records | then | returns no events (a retried command) when |
//! |---|---|---|---|---|
//! | Request | nothing yet | NotificationRequested (+ NotificationScheduled, reason `schedule_at`, when `schedule_at` is later) | REQUESTED (SCHEDULED) | never: `AlreadyRequested` |
//! | Rank | REQUESTED, or SCHEDULED not yet ranked | NotificationRanked | RANKED | |
//! | Schedule | REQUESTED, RANKED, SCHEDULED, RETRY_PENDING; not past expiry | NotificationScheduled | SCHEDULED | SCHEDULED for the same reason, ending within the command's `recheck` |
//! | AttemptDelivery | REQUESTED, RANKED, SCHEDULED, RETRY_PENDING; a requested channel; not past expiry | DeliveryAttempted, attempt n + 1 | SENDING | |
//! | RecordSent | SENDING, current attempt | NotificationSent | SENT | SENT, DELIVERED, BOUNCED or COMPLAINED at that attempt |
//! | RecordFailure with `retry_at` | SENDING, current attempt | DeliveryFailed | RETRY_PENDING | RETRY_PENDING or DEAD_LETTERED at that attempt |
//! | RecordFailure without `retry_at` | SENDING, current attempt | DeliveryFailed, NotificationDeadLettered | DEAD_LETTERED | as above |
//! | DeadLetter | SENDING, RETRY_PENDING | NotificationDeadLettered | DEAD_LETTERED | DEAD_LETTERED |
//! | Requeue | DEAD_LETTERED | NotificationRequeued | RETRY_PENDING | |
//! | RecordDelivered | SENT | NotificationDelivered | DELIVERED | DELIVERED |
//! | RecordBounce | SENT, DELIVERED | NotificationBounced | BOUNCED | BOUNCED |
//! | RecordComplaint | SENT, DELIVERED | NotificationComplained | COMPLAINED | COMPLAINED |
//! | RecordOpen | SENT, DELIVERED | NotificationOpened, `first` if none before | unchanged | |
//! | RecordClick | SENT, DELIVERED | NotificationClicked, `first` if none before | unchanged | |
//! | Reject | REQUESTED, RANKED, SCHEDULED, RETRY_PENDING, SENDING | NotificationRejected | REJECTED | REJECTED |
//! | Suppress | REQUESTED, RANKED, SCHEDULED, RETRY_PENDING, SENDING | NotificationSuppressed | SUPPRESSED | SUPPRESSED |
//! | Expire | REQUESTED, RANKED, SCHEDULED, RETRY_PENDING, SENDING | NotificationExpired | EXPIRED | EXPIRED |
//! | Cancel | REQUESTED, RANKED, SCHEDULED, RETRY_PENDING | NotificationCancelled | CANCELLED | CANCELLED |
//! | WithdrawAttempt | SENDING, current attempt | DeliveryWithdrawn | RANKED | RANKED at that attempt |
//! | CancelAttempt | SENDING, current attempt | NotificationCancelled | CANCELLED | CANCELLED |
//!
//! Every other pair is `IllegalTransition`; any command but Request before
//! the notification exists is `NotRequested`. Why some rows are as they are:
//!
//! - A final failure dead-letters in the same decision, so no crash between
//!   two appends can leave a notification that nothing will pick up. To fail
//!   over to another provider or channel, record the failure with a
//!   `retry_at`, permanent or not: `permanent` classifies the error (that
//!   provider will not be tried again), `retry_at` says whether anything is.
//! - Requeue is the one way out of a terminal status: an operator replaying
//!   the dead-letter queue. It starts a fresh retry budget; the attempt
//!   numbers go on.
//! - Cancel stops short of SENDING: the message may already be with the
//!   provider, and a cancel that cannot stop it must not claim it did.
//! - WithdrawAttempt and CancelAttempt are the dispatcher's, decided at its
//!   last look before the provider call (the campaign was paused or
//!   cancelled meanwhile), when it knows the message never left. A withdrawal
//!   counts no failure: the retry budget and the routes tried stay as they
//!   were, and only the attempt number goes on.
//! - Reject and Suppress are legal in SENDING because a provider can refuse at
//!   send time (an address on its own suppression list).
//! - Expire is legal in SENDING so a notification whose dispatcher died
//!   mid-attempt can still be closed; that attempt's late report is refused.
//! - Terminal statuses never lead back to a live one. Only receipts and
//!   engagement follow SENT, and a complaint or bounce may follow DELIVERED.

use chrono::{DateTime, Utc};

use super::aggregate::Aggregate;
use super::domain_error::DomainError;
use super::notification_command::NotificationCommand;
use super::notification_event::NotificationEvent;
use super::notification_request::NotificationRequest;
use super::notification_status::NotificationStatus;
use super::values::{Channel, NotificationId, TenantId};

/// Free text from providers and workers (errors, reasons, ids) is clipped to
/// this many characters: one verbose provider must not bloat the log.
pub const MAX_EVENT_TEXT_CHARS: usize = 2048;
pub const MAX_BREAKDOWN_BYTES: usize = 16 * 1024;

/// A notification's state; `Default` is one not yet requested.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Notification {
    state: Option<NotificationState>,
}

/// What is known about a requested notification. Read it through
/// [`Notification::state`]; only events change it.
#[derive(Debug, Clone, PartialEq)]
pub struct NotificationState {
    pub tenant_id: TenantId,
    pub notification_id: NotificationId,
    pub request: NotificationRequest,
    pub requested_at: DateTime<Utc>,
    pub status: NotificationStatus,
    pub score: Option<f64>,
    pub send_after: Option<DateTime<Utc>>,
    pub schedule_at: Option<DateTime<Utc>>,
    /// The reason of the last `NotificationScheduled`.
    pub schedule_reason: Option<String>,
    /// Attempts started so far, which is also the current attempt's number.
    pub attempts: u32,
    pub channel: Option<Channel>,
    pub provider: Option<String>,
    pub provider_message_id: Option<String>,
    pub retry_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// Transient failures since the request or the last requeue: what the
    /// retry schedule counts.
    pub transient_failures: u32,
    /// Routes that failed permanently since the request or the last requeue;
    /// they are not tried again.
    pub failed_routes: Vec<(Channel, String)>,
    /// The provider of the last failed attempt, so the next one starts after it.
    pub last_failed_provider: Option<String>,
    pub opens: u32,
    pub clicks: u32,
}

impl NotificationState {
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.request.expires_at(self.requested_at)
    }
}

impl Notification {
    /// A notification whose state is already known (a worker carrying it
    /// between two decisions), without folding its events again.
    pub fn from_state(state: NotificationState) -> Notification {
        Notification { state: Some(state) }
    }

    /// `None` until the notification is requested.
    pub fn status(&self) -> Option<NotificationStatus> {
        self.state.as_ref().map(|state| state.status)
    }

    pub fn state(&self) -> Option<&NotificationState> {
        self.state.as_ref()
    }

    /// The state of a stream as far as it can be read: each stored event
    /// decoded, or why not. An unreadable event is left out (the reader shows
    /// it beside the state) unless it is the request, without which there is
    /// no state at all: `UnreadableRequest`.
    pub fn fold_readable(
        events: &[Result<NotificationEvent, DomainError>],
    ) -> Result<Notification, DomainError> {
        match events.first() {
            Some(Err(error)) => Err(DomainError::UnreadableRequest {
                reason: error.to_string(),
            }),
            _ => Ok(Self::fold(events.iter().filter_map(|e| e.as_ref().ok()))),
        }
    }
}

/// The reason of the `NotificationScheduled` a send for later is accepted with.
pub const SCHEDULE_AT_REASON: &str = "schedule_at";

impl NotificationState {
    /// Not ranked yet: requested, or accepted for a later `schedule_at`.
    pub fn awaits_ranking(&self) -> bool {
        self.score.is_none()
            && matches!(
                self.status,
                NotificationStatus::Requested | NotificationStatus::Scheduled
            )
    }

    fn decide(
        &self,
        command: NotificationCommand,
        now: DateTime<Utc>,
    ) -> Result<Vec<NotificationEvent>, DomainError> {
        use NotificationCommand as C;
        use NotificationEvent as E;
        use NotificationStatus as S;

        let status = self.status;
        let illegal = DomainError::IllegalTransition {
            from: status,
            command: command.name(),
        };
        match command {
            C::Request { .. } => Err(DomainError::AlreadyRequested),
            C::Rank {
                score,
                breakdown,
                scorer,
                send_after,
            } => {
                if !self.awaits_ranking() {
                    return Err(illegal);
                }
                // JSON has no NaN or infinity: such a score would not read back.
                if !score.is_finite() {
                    return Err(DomainError::InvalidCommand(
                        "the score must be a finite number",
                    ));
                }
                if breakdown.to_string().len() > MAX_BREAKDOWN_BYTES {
                    return Err(DomainError::InvalidCommand(
                        "the score breakdown must be at most 16 KiB",
                    ));
                }
                Ok(vec![E::Ranked {
                    score,
                    breakdown,
                    scorer: clip(scorer),
                    send_after,
                }])
            }
            C::Schedule {
                schedule_at,
                reason,
                recheck,
            } => {
                if !status.is_pending() {
                    return Err(illegal);
                }
                self.ensure_before_expiry(schedule_at)?;
                let reason = clip(reason);
                let restated = status == S::Scheduled
                    && self.schedule_reason.as_ref() == Some(&reason)
                    && recheck.is_some_and(|recheck| schedule_at - now <= recheck);
                if restated {
                    return Ok(vec![]);
                }
                Ok(vec![E::Scheduled {
                    schedule_at,
                    reason,
                }])
            }
            C::AttemptDelivery { channel, provider } => {
                if !status.is_pending() {
                    return Err(illegal);
                }
                if !self.request.channels.contains(&channel) {
                    return Err(DomainError::ChannelNotRequested(channel));
                }
                self.ensure_before_expiry(now)?;
                Ok(vec![E::DeliveryAttempted {
                    attempt: self.attempts + 1,
                    channel,
                    provider: clip(provider),
                }])
            }
            C::RecordSent {
                attempt,
                provider,
                provider_message_id,
                content,
            } => match status {
                S::Sending => {
                    self.ensure_current(attempt)?;
                    Ok(vec![E::Sent {
                        attempt,
                        provider: clip(provider),
                        provider_message_id: provider_message_id.map(clip),
                        content,
                    }])
                }
                S::Sent | S::Delivered | S::Bounced | S::Complained if attempt == self.attempts => {
                    Ok(vec![])
                }
                _ => Err(illegal),
            },
            C::RecordFailure {
                attempt,
                provider,
                error,
                permanent,
                retry_at,
            } => match status {
                S::Sending => {
                    self.ensure_current(attempt)?;
                    let provider = clip(provider);
                    let error = clip(error);
                    let dead_letter = retry_at.is_none().then(|| E::DeadLettered {
                        reason: clip(format!("attempt {attempt} via {provider} failed: {error}")),
                    });
                    let failed = E::DeliveryFailed {
                        attempt,
                        provider,
                        error,
                        permanent,
                        retry_at,
                    };
                    Ok(std::iter::once(failed).chain(dead_letter).collect())
                }
                S::RetryPending | S::DeadLettered if attempt == self.attempts => Ok(vec![]),
                _ => Err(illegal),
            },
            C::DeadLetter { reason } => once(
                status,
                S::DeadLettered,
                matches!(status, S::Sending | S::RetryPending),
                E::DeadLettered {
                    reason: clip(reason),
                },
                illegal,
            ),
            C::Requeue { reason } => {
                if status != S::DeadLettered {
                    return Err(illegal);
                }
                Ok(vec![E::Requeued {
                    reason: clip(reason),
                }])
            }
            C::RecordDelivered { at } => once(
                status,
                S::Delivered,
                status == S::Sent,
                E::Delivered { at },
                illegal,
            ),
            C::RecordBounce { hard, reason, at } => once(
                status,
                S::Bounced,
                status.is_sent_or_delivered(),
                E::Bounced {
                    hard,
                    reason: clip(reason),
                    at,
                },
                illegal,
            ),
            C::RecordComplaint { at } => once(
                status,
                S::Complained,
                status.is_sent_or_delivered(),
                E::Complained { at },
                illegal,
            ),
            C::RecordOpen { at, client } => {
                if !status.is_sent_or_delivered() {
                    return Err(illegal);
                }
                Ok(vec![E::Opened {
                    first: self.opens == 0,
                    at,
                    client,
                }])
            }
            C::RecordClick { url, at, client } => {
                if !status.is_sent_or_delivered() {
                    return Err(illegal);
                }
                Ok(vec![E::Clicked {
                    first: self.clicks == 0,
                    url,
                    at,
                    client,
                }])
            }
            C::Reject { reason } => once(
                status,
                S::Rejected,
                status.is_unsent(),
                E::Rejected {
                    reason: clip(reason),
                },
                illegal,
            ),
            C::Suppress { reason } => once(
                status,
                S::Suppressed,
                status.is_unsent(),
                E::Suppressed {
                    reason: clip(reason),
                },
                illegal,
            ),
            C::Expire => once(status, S::Expired, status.is_unsent(), E::Expired, illegal),
            C::Cancel { reason } => once(
                status,
                S::Cancelled,
                status.is_pending(),
                E::Cancelled {
                    reason: reason.map(clip),
                },
                illegal,
            ),
            C::WithdrawAttempt { attempt, reason } => match status {
                S::Sending => {
                    self.ensure_current(attempt)?;
                    Ok(vec![E::DeliveryWithdrawn {
                        attempt,
                        reason: clip(reason),
                    }])
                }
                S::Ranked if attempt > 0 && attempt == self.attempts => Ok(vec![]),
                _ => Err(illegal),
            },
            C::CancelAttempt { attempt, reason } => match status {
                S::Sending => {
                    self.ensure_current(attempt)?;
                    Ok(vec![E::Cancelled {
                        reason: Some(clip(reason)),
                    }])
                }
                S::Cancelled => Ok(vec![]),
                _ => Err(illegal),
            },
        }
    }

    fn ensure_current(&self, attempt: u32) -> Result<(), DomainError> {
        if attempt == self.attempts {
            Ok(())
        } else {
            Err(DomainError::StaleAttempt {
                current: self.attempts,
                reported: attempt,
            })
        }
    }

    fn ensure_before_expiry(&self, at: DateTime<Utc>) -> Result<(), DomainError> {
        match self.expires_at() {
            Some(expires_at) if at >= expires_at => Err(DomainError::PastExpiry { expires_at }),
            _ => Ok(()),
        }
    }
}

/// `event` when `allowed`; nothing when the notification is already at
/// `target` (the command is being retried); otherwise `illegal`.
fn once(
    status: NotificationStatus,
    target: NotificationStatus,
    allowed: bool,
    event: NotificationEvent,
    illegal: DomainError,
) -> Result<Vec<NotificationEvent>, DomainError> {
    if status == target {
        Ok(vec![])
    } else if allowed {
        Ok(vec![event])
    } else {
        Err(illegal)
    }
}

/// Drops NUL (jsonb cannot store it) and keeps the first
/// [`MAX_EVENT_TEXT_CHARS`] characters; for every free-text reason an
/// event carries.
pub(crate) fn clip(text: String) -> String {
    if text.contains('\0') || text.chars().count() > MAX_EVENT_TEXT_CHARS {
        text.chars()
            .filter(|&c| c != '\0')
            .take(MAX_EVENT_TEXT_CHARS)
            .collect()
    } else {
        text
    }
}

impl Aggregate for Notification {
    type Command = NotificationCommand;
    type Event = NotificationEvent;
    type Error = DomainError;

    /// Folds one event in. Events are facts already decided, so this cannot
    /// fail; a valid stream starts with `NotificationRequested`, and anything
    /// before it is ignored.
    fn apply(&mut self, event: &NotificationEvent) {
        use NotificationEvent as E;
        use NotificationStatus as S;

        let Some(state) = &mut self.state else {
            if let E::Requested {
                tenant_id,
                notification_id,
                request,
                requested_at,
            } = event
            {
                self.state = Some(NotificationState {
                    tenant_id: tenant_id.clone(),
                    notification_id: *notification_id,
                    request: request.clone(),
                    requested_at: *requested_at,
                    status: S::Requested,
                    score: None,
                    send_after: None,
                    schedule_at: request.schedule_at,
                    schedule_reason: None,
                    attempts: 0,
                    channel: None,
                    provider: None,
                    provider_message_id: None,
                    retry_at: None,
                    last_error: None,
                    transient_failures: 0,
                    failed_routes: Vec::new(),
                    last_failed_provider: None,
                    opens: 0,
                    clicks: 0,
                });
            }
            return;
        };
        if let Some(status) = event.status_after() {
            state.status = status;
        }
        match event {
            E::Ranked {
                score, send_after, ..
            } => {
                state.score = Some(*score);
                state.send_after = *send_after;
            }
            E::Scheduled {
                schedule_at,
                reason,
            } => {
                state.schedule_at = Some(*schedule_at);
                state.schedule_reason = Some(reason.clone());
            }
            E::DeliveryAttempted {
                attempt,
                channel,
                provider,
            } => {
                state.attempts = *attempt;
                state.channel = Some(*channel);
                state.provider = Some(provider.clone());
                state.retry_at = None;
            }
            E::Sent {
                provider_message_id,
                ..
            } => state.provider_message_id = provider_message_id.clone(),
            E::DeliveryFailed {
                provider,
                error,
                permanent,
                retry_at,
                ..
            } => {
                state.retry_at = *retry_at;
                state.last_error = Some(error.clone());
                state.last_failed_provider = Some(provider.clone());
                match (*permanent, state.channel) {
                    (true, Some(channel)) => state.failed_routes.push((channel, provider.clone())),
                    _ => state.transient_failures += 1,
                }
            }
            E::Requeued { .. } => {
                state.transient_failures = 0;
                state.failed_routes.clear();
                state.last_failed_provider = None;
                state.retry_at = None;
            }
            E::Opened { .. } => state.opens += 1,
            E::Clicked { .. } => state.clicks += 1,
            // A stream holds one Requested; the rest only move the status.
            _ => {}
        }
    }

    /// Decides whether `command` may happen now and which events record it.
    /// An empty list means it already happened (see the table above).
    fn decide(
        &self,
        command: NotificationCommand,
        now: DateTime<Utc>,
    ) -> Result<Vec<NotificationEvent>, DomainError> {
        match (&self.state, command) {
            (
                None,
                NotificationCommand::Request {
                    tenant_id,
                    notification_id,
                    request,
                },
            ) => {
                // A send for later says so from the start, so SCHEDULED
                // filters and dashboards see it while it waits.
                let later = request.schedule_at.filter(|at| *at > now);
                let mut events = vec![NotificationEvent::Requested {
                    tenant_id,
                    notification_id,
                    request,
                    requested_at: now,
                }];
                if let Some(schedule_at) = later {
                    events.push(NotificationEvent::Scheduled {
                        schedule_at,
                        reason: SCHEDULE_AT_REASON.into(),
                    });
                }
                Ok(events)
            }
            (None, _) => Err(DomainError::NotRequested),
            (Some(state), command) => state.decide(command, now),
        }
    }
}

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;
