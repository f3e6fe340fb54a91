//! One test per row of the transition table in `notification.rs`.

use chrono::TimeDelta;
use serde_json::json;

use super::*;
use crate::domain::given_when_then::given;
use crate::domain::signed_link::ClientContext;
use crate::domain::test_fixtures::{
    attempted, failed, history, link, minute, notification_id, ranked, request, requested,
    scheduled, sent, t0, tenant,
};

use NotificationCommand as C;
use NotificationEvent as E;
use NotificationStatus as S;

fn illegal(from: NotificationStatus, command: &'static str) -> DomainError {
    DomainError::IllegalTransition { from, command }
}

fn attempt(channel: Channel) -> NotificationCommand {
    C::AttemptDelivery {
        channel,
        provider: "console".into(),
    }
}

fn record_sent(attempt: u32) -> NotificationCommand {
    C::RecordSent {
        attempt,
        provider: "console".into(),
        provider_message_id: Some("m-1".into()),
        content: None,
    }
}

fn record_failure(
    attempt: u32,
    permanent: bool,
    retry_at: Option<DateTime<Utc>>,
) -> NotificationCommand {
    C::RecordFailure {
        attempt,
        provider: "console".into(),
        error: "421 try later".into(),
        permanent,
        retry_at,
    }
}

fn cancel() -> NotificationCommand {
    C::Cancel {
        reason: Some("user asked".into()),
    }
}

fn cancelled() -> NotificationEvent {
    E::Cancelled {
        reason: Some("user asked".into()),
    }
}

// Request

#[test]
fn request_records_the_request_at_now() {
    given::<Notification>([])
        .when(C::Request {
            tenant_id: tenant(),
            notification_id: notification_id(),
            request: request(),
        })
        .then([requested()]);
}

fn requested_for(schedule_at: DateTime<Utc>) -> (NotificationRequest, NotificationEvent) {
    let mut later = request();
    later.schedule_at = Some(schedule_at);
    let event = E::Requested {
        tenant_id: tenant(),
        notification_id: notification_id(),
        request: later.clone(),
        requested_at: t0(),
    };
    (later, event)
}

#[test]
fn request_for_later_is_scheduled_from_the_start() {
    let (later, event) = requested_for(minute(5));
    given::<Notification>([])
        .when(C::Request {
            tenant_id: tenant(),
            notification_id: notification_id(),
            request: later,
        })
        .then([
            event,
            E::Scheduled {
                schedule_at: minute(5),
                reason: SCHEDULE_AT_REASON.into(),
            },
        ]);
}

#[test]
fn request_for_now_is_only_requested() {
    let (now, event) = requested_for(t0());
    given::<Notification>([])
        .when(C::Request {
            tenant_id: tenant(),
            notification_id: notification_id(),
            request: now,
        })
        .then([event]);
}

#[test]
fn a_send_scheduled_at_acceptance_is_ranked_once_due() {
    let (_, event) = requested_for(minute(5));
    let accepted = vec![
        event,
        E::Scheduled {
            schedule_at: minute(5),
            reason: SCHEDULE_AT_REASON.into(),
        },
    ];
    given::<Notification>(accepted.clone())
        .at(minute(5))
        .when(C::Rank {
            score: 0.9,
            breakdown: json!({"urgency": 0.9}),
            scorer: "rules".into(),
            send_after: None,
        })
        .then([ranked()]);
}

#[test]
fn request_twice_is_refused() {
    given::<Notification>(history(S::Requested))
        .when(C::Request {
            tenant_id: tenant(),
            notification_id: notification_id(),
            request: request(),
        })
        .then_error(DomainError::AlreadyRequested);
}

#[test]
fn nothing_but_request_before_the_request() {
    given::<Notification>([])
        .when(cancel())
        .then_error(DomainError::NotRequested);
}

// Rank

#[test]
fn rank_a_requested_notification() {
    given::<Notification>(history(S::Requested))
        .when(C::Rank {
            score: 0.9,
            breakdown: json!({"urgency": 0.9}),
            scorer: "rules".into(),
            send_after: None,
        })
        .then([ranked()]);
}

#[test]
fn rank_only_once() {
    given::<Notification>(history(S::Ranked))
        .when(C::Rank {
            score: 0.1,
            breakdown: json!({}),
            scorer: "rules".into(),
            send_after: None,
        })
        .then_error(illegal(S::Ranked, "Rank"));
}

#[test]
fn rank_refuses_a_score_json_cannot_hold() {
    given::<Notification>(history(S::Requested))
        .when(C::Rank {
            score: f64::NAN,
            breakdown: json!({}),
            scorer: "rules".into(),
            send_after: None,
        })
        .then_error(DomainError::InvalidCommand(
            "the score must be a finite number",
        ));
}

// Schedule

#[test]
fn schedule_a_ranked_notification() {
    given::<Notification>(history(S::Ranked))
        .when(C::Schedule {
            schedule_at: minute(5),
            reason: "quiet hours".into(),
            recheck: None,
        })
        .then([scheduled(minute(5))]);
}

#[test]
fn schedule_again_moves_the_time() {
    given::<Notification>(history(S::Scheduled))
        .when(C::Schedule {
            schedule_at: minute(9),
            reason: "quiet hours".into(),
            recheck: None,
        })
        .then([scheduled(minute(9))]);
}

#[test]
fn restating_a_hold_for_the_same_reason_within_its_recheck_records_nothing() {
    given::<Notification>(history(S::Scheduled))
        .at(minute(5))
        .when(C::Schedule {
            schedule_at: minute(6),
            reason: "quiet hours".into(),
            recheck: Some(TimeDelta::minutes(1)),
        })
        .then([]);
}

#[test]
fn a_hold_is_recorded_again_for_a_new_reason_or_a_longer_wait() {
    let restated = |reason: &str, schedule_at| C::Schedule {
        schedule_at,
        reason: reason.into(),
        recheck: Some(TimeDelta::minutes(1)),
    };
    given::<Notification>(history(S::Scheduled))
        .at(minute(5))
        .when(restated("throttled", minute(6)))
        .then([E::Scheduled {
            schedule_at: minute(6),
            reason: "throttled".into(),
        }]);
    given::<Notification>(history(S::Scheduled))
        .at(minute(5))
        .when(restated("quiet hours", minute(7)))
        .then([scheduled(minute(7))]);
}

#[test]
fn a_hold_after_an_attempt_is_news_whatever_its_reason() {
    given::<Notification>(history(S::RetryPending))
        .when(C::Schedule {
            schedule_at: minute(1),
            reason: "quiet hours".into(),
            recheck: Some(TimeDelta::minutes(5)),
        })
        .then([scheduled(minute(1))]);
}

#[test]
fn schedule_past_the_expiry_is_refused() {
    given::<Notification>(history(S::Ranked))
        .when(C::Schedule {
            schedule_at: minute(60),
            reason: "quiet hours".into(),
            recheck: None,
        })
        .then_error(DomainError::PastExpiry {
            expires_at: minute(60),
        });
}

#[test]
fn schedule_while_sending_is_illegal() {
    given::<Notification>(history(S::Sending))
        .when(C::Schedule {
            schedule_at: minute(5),
            reason: "throttle".into(),
            recheck: None,
        })
        .then_error(illegal(S::Sending, "Schedule"));
}

// AttemptDelivery

#[test]
fn attempt_delivery_starts_attempt_one() {
    given::<Notification>(history(S::Scheduled))
        .when(attempt(Channel::Email))
        .then([attempted(1, Channel::Email)]);
}

#[test]
fn attempt_delivery_after_a_failure_is_the_next_attempt() {
    given::<Notification>(history(S::RetryPending))
        .at(minute(1))
        .when(attempt(Channel::Sms))
        .then([attempted(2, Channel::Sms)]);
}

#[test]
fn attempt_delivery_on_a_channel_not_requested_is_refused() {
    given::<Notification>(history(S::Requested))
        .when(attempt(Channel::Push))
        .then_error(DomainError::ChannelNotRequested(Channel::Push));
}

#[test]
fn attempt_delivery_after_the_expiry_is_refused() {
    given::<Notification>(history(S::Scheduled))
        .at(minute(61))
        .when(attempt(Channel::Email))
        .then_error(DomainError::PastExpiry {
            expires_at: minute(60),
        });
}

#[test]
fn attempt_delivery_while_one_is_in_flight_is_illegal() {
    given::<Notification>(history(S::Sending))
        .when(attempt(Channel::Email))
        .then_error(illegal(S::Sending, "AttemptDelivery"));
}

// RecordSent

#[test]
fn record_sent_for_the_current_attempt() {
    given::<Notification>(history(S::Sending))
        .when(record_sent(1))
        .then([sent(1)]);
}

#[test]
fn record_sent_for_another_attempt_is_stale() {
    given::<Notification>(history(S::Sending))
        .when(record_sent(2))
        .then_error(DomainError::StaleAttempt {
            current: 1,
            reported: 2,
        });
}

#[test]
fn record_sent_again_changes_nothing() {
    given::<Notification>(history(S::Sent))
        .when(record_sent(1))
        .then_nothing();
    given::<Notification>(history(S::Delivered))
        .when(record_sent(1))
        .then_nothing();
}

#[test]
fn record_sent_after_expiring_mid_attempt_is_refused() {
    let mut events = history(S::Sending);
    events.push(E::Expired);
    given::<Notification>(events)
        .when(record_sent(1))
        .then_error(illegal(S::Expired, "RecordSent"));
}

// RecordFailure

#[test]
fn failure_with_a_retry_time_waits_for_the_retry() {
    given::<Notification>(history(S::Sending))
        .when(record_failure(1, false, Some(minute(1))))
        .then([failed(1, Some(minute(1)))]);
}

#[test]
fn permanent_failure_with_a_retry_time_fails_over() {
    given::<Notification>(history(S::Sending))
        .when(record_failure(1, true, Some(minute(1))))
        .then([E::DeliveryFailed {
            attempt: 1,
            provider: "console".into(),
            error: "421 try later".into(),
            permanent: true,
            retry_at: Some(minute(1)),
        }]);
}

#[test]
fn permanent_failure_without_a_retry_time_dead_letters_in_the_same_decision() {
    given::<Notification>(history(S::Sending))
        .when(record_failure(1, true, None))
        .then([
            E::DeliveryFailed {
                attempt: 1,
                provider: "console".into(),
                error: "421 try later".into(),
                permanent: true,
                retry_at: None,
            },
            E::DeadLettered {
                reason: "attempt 1 via console failed: 421 try later".into(),
            },
        ]);
}

#[test]
fn failures_are_counted_by_class() {
    let mut events = history(S::Sending);
    events.push(failed(1, Some(minute(1))));
    events.push(attempted(2, Channel::Email));
    events.push(E::DeliveryFailed {
        attempt: 2,
        provider: "smtp".into(),
        error: "550 no such user".into(),
        permanent: true,
        retry_at: Some(minute(2)),
    });
    let state = Notification::fold(&events);
    let state = state.state().unwrap();
    assert_eq!(state.transient_failures, 1);
    assert_eq!(
        state.failed_routes,
        vec![(Channel::Email, "smtp".to_string())]
    );
    assert_eq!(state.last_failed_provider.as_deref(), Some("smtp"));
}

#[test]
fn failure_without_a_retry_time_dead_letters_in_the_same_decision() {
    given::<Notification>(history(S::Sending))
        .when(record_failure(1, false, None))
        .then([
            failed(1, None),
            E::DeadLettered {
                reason: "attempt 1 via console failed: 421 try later".into(),
            },
        ]);
}

#[test]
fn failure_reported_twice_changes_nothing() {
    given::<Notification>(history(S::RetryPending))
        .when(record_failure(1, false, Some(minute(1))))
        .then_nothing();
}

#[test]
fn failure_after_sent_is_illegal() {
    given::<Notification>(history(S::Sent))
        .when(record_failure(1, false, None))
        .then_error(illegal(S::Sent, "RecordFailure"));
}

// Requeue

#[test]
fn requeue_sends_a_dead_letter_through_again_with_a_fresh_budget() {
    let mut events = history(S::Sending);
    events.push(failed(1, None));
    events.push(E::DeadLettered {
        reason: "gave up".into(),
    });
    given::<Notification>(events.clone())
        .when(C::Requeue {
            reason: "ops".into(),
        })
        .then([E::Requeued {
            reason: "ops".into(),
        }]);
    events.push(E::Requeued {
        reason: "ops".into(),
    });
    let state = Notification::fold(&events);
    assert_eq!(state.status(), Some(S::RetryPending));
    assert_eq!(state.state().unwrap().transient_failures, 0);
}

#[test]
fn only_dead_letters_can_be_requeued() {
    given::<Notification>(history(S::Sent))
        .when(C::Requeue {
            reason: "ops".into(),
        })
        .then_error(illegal(S::Sent, "Requeue"));
}

// DeadLetter

#[test]
fn dead_letter_a_notification_waiting_for_a_retry() {
    given::<Notification>(history(S::RetryPending))
        .when(C::DeadLetter {
            reason: "retries exhausted".into(),
        })
        .then([E::DeadLettered {
            reason: "retries exhausted".into(),
        }]);
}

#[test]
fn dead_letter_twice_changes_nothing() {
    given::<Notification>(history(S::DeadLettered))
        .when(C::DeadLetter {
            reason: "again".into(),
        })
        .then_nothing();
}

#[test]
fn dead_letter_before_any_attempt_is_illegal() {
    given::<Notification>(history(S::Scheduled))
        .when(C::DeadLetter {
            reason: "why".into(),
        })
        .then_error(illegal(S::Scheduled, "DeadLetter"));
}

// Receipts

#[test]
fn delivered_after_sent() {
    given::<Notification>(history(S::Sent))
        .when(C::RecordDelivered { at: minute(1) })
        .then([E::Delivered { at: minute(1) }]);
}

#[test]
fn delivered_twice_changes_nothing() {
    given::<Notification>(history(S::Delivered))
        .when(C::RecordDelivered { at: minute(2) })
        .then_nothing();
}

#[test]
fn delivered_before_sent_is_illegal() {
    given::<Notification>(history(S::Sending))
        .when(C::RecordDelivered { at: minute(1) })
        .then_error(illegal(S::Sending, "RecordDelivered"));
}

#[test]
fn bounce_may_follow_delivery() {
    given::<Notification>(history(S::Delivered))
        .when(C::RecordBounce {
            hard: true,
            reason: "550 no such user".into(),
            at: minute(2),
        })
        .then([E::Bounced {
            hard: true,
            reason: "550 no such user".into(),
            at: minute(2),
        }]);
}

#[test]
fn complaint_may_follow_delivery() {
    given::<Notification>(history(S::Delivered))
        .when(C::RecordComplaint { at: minute(2) })
        .then([E::Complained { at: minute(2) }]);
}

#[test]
fn complaint_before_sent_is_illegal() {
    given::<Notification>(history(S::Scheduled))
        .when(C::RecordComplaint { at: minute(2) })
        .then_error(illegal(S::Scheduled, "RecordComplaint"));
}

// Engagement

#[test]
fn the_first_open_is_first() {
    given::<Notification>(history(S::Delivered))
        .when(C::RecordOpen {
            at: minute(2),
            client: ClientContext::default(),
        })
        .then([E::Opened {
            first: true,
            at: minute(2),
            client: ClientContext::default(),
        }]);
}

#[test]
fn a_later_open_is_not_first() {
    let mut events = history(S::Sent);
    events.push(E::Opened {
        first: true,
        at: minute(2),
        client: ClientContext::default(),
    });
    given::<Notification>(events)
        .when(C::RecordOpen {
            at: minute(3),
            client: ClientContext::default(),
        })
        .then([E::Opened {
            first: false,
            at: minute(3),
            client: ClientContext::default(),
        }]);
}

#[test]
fn clicks_count_their_own_first() {
    let mut events = history(S::Delivered);
    events.push(E::Opened {
        first: true,
        at: minute(2),
        client: ClientContext::default(),
    });
    given::<Notification>(events)
        .when(C::RecordClick {
            url: link(),
            at: minute(3),
            client: ClientContext::default(),
        })
        .then([E::Clicked {
            first: true,
            url: link(),
            at: minute(3),
            client: ClientContext::default(),
        }]);
}

#[test]
fn engagement_only_after_sent_or_delivered() {
    for status in [S::Scheduled, S::Sending, S::Bounced, S::Cancelled] {
        given::<Notification>(history(status))
            .when(C::RecordOpen {
                at: minute(2),
                client: ClientContext::default(),
            })
            .then_error(illegal(status, "RecordOpen"));
    }
}

#[test]
fn engagement_leaves_the_status_alone() {
    let mut notification = Notification::fold(&history(S::Delivered));
    notification.apply(&E::Opened {
        first: true,
        at: minute(2),
        client: ClientContext::default(),
    });
    notification.apply(&E::Clicked {
        first: true,
        url: link(),
        at: minute(2),
        client: ClientContext::default(),
    });
    let state = notification.state().unwrap();
    assert_eq!(
        (state.status, state.opens, state.clicks),
        (S::Delivered, 1, 1)
    );
}

// Cancel

#[test]
fn cancel_before_sending() {
    for status in [S::Requested, S::Ranked, S::Scheduled, S::RetryPending] {
        given::<Notification>(history(status))
            .when(cancel())
            .then([cancelled()]);
    }
}

#[test]
fn cancel_while_sending_is_illegal() {
    given::<Notification>(history(S::Sending))
        .when(cancel())
        .then_error(illegal(S::Sending, "Cancel"));
}

#[test]
fn cancel_after_sent_is_illegal() {
    for status in [S::Sent, S::Delivered, S::Bounced, S::Complained] {
        given::<Notification>(history(status))
            .when(cancel())
            .then_error(illegal(status, "Cancel"));
    }
}

#[test]
fn cancel_twice_changes_nothing() {
    given::<Notification>(history(S::Cancelled))
        .when(cancel())
        .then_nothing();
}

#[test]
fn cancel_after_another_ending_is_illegal() {
    for status in [S::Expired, S::Rejected, S::Suppressed, S::DeadLettered] {
        given::<Notification>(history(status))
            .when(cancel())
            .then_error(illegal(status, "Cancel"));
    }
}

// WithdrawAttempt and CancelAttempt: the dispatcher's last look before the call

fn withdraw(attempt: u32) -> NotificationCommand {
    C::WithdrawAttempt {
        attempt,
        reason: "campaign paused".into(),
    }
}

fn withdrawn(attempt: u32) -> NotificationEvent {
    E::DeliveryWithdrawn {
        attempt,
        reason: "campaign paused".into(),
    }
}

fn cancel_attempt(attempt: u32) -> NotificationCommand {
    C::CancelAttempt {
        attempt,
        reason: "campaign cancelled".into(),
    }
}

#[test]
fn withdraw_puts_a_sending_notification_back_in_the_queue() {
    given::<Notification>(history(S::Sending))
        .when(withdraw(1))
        .then([withdrawn(1)]);
}

#[test]
fn a_withdrawn_attempt_counts_no_failure_and_the_next_attempt_follows_it() {
    let mut events = history(S::Sending);
    events.push(withdrawn(1));
    let notification = Notification::fold(&events);
    let state = notification.state().unwrap();
    assert_eq!(state.status, S::Ranked);
    assert_eq!(
        (state.transient_failures, state.failed_routes.len()),
        (0, 0)
    );
    assert_eq!(
        (state.retry_at, state.last_failed_provider.as_ref()),
        (None, None)
    );
    given::<Notification>(events)
        .when(attempt(Channel::Email))
        .then([attempted(2, Channel::Email)]);
}

#[test]
fn withdraw_twice_changes_nothing() {
    let mut events = history(S::Sending);
    events.push(withdrawn(1));
    given::<Notification>(events)
        .when(withdraw(1))
        .then_nothing();
}

#[test]
fn withdraw_of_another_attempt_is_stale() {
    given::<Notification>(history(S::Sending))
        .when(withdraw(2))
        .then_error(DomainError::StaleAttempt {
            current: 1,
            reported: 2,
        });
}

#[test]
fn withdraw_only_while_sending() {
    for status in [S::Ranked, S::RetryPending, S::Sent, S::Cancelled] {
        given::<Notification>(history(status))
            .when(withdraw(1))
            .then_error(illegal(status, "WithdrawAttempt"));
    }
}

#[test]
fn cancel_attempt_cancels_a_sending_notification() {
    given::<Notification>(history(S::Sending))
        .when(cancel_attempt(1))
        .then([E::Cancelled {
            reason: Some("campaign cancelled".into()),
        }]);
}

#[test]
fn cancel_attempt_of_another_attempt_is_stale() {
    given::<Notification>(history(S::Sending))
        .when(cancel_attempt(0))
        .then_error(DomainError::StaleAttempt {
            current: 1,
            reported: 0,
        });
}

#[test]
fn cancel_attempt_twice_changes_nothing() {
    given::<Notification>(history(S::Cancelled))
        .when(cancel_attempt(1))
        .then_nothing();
}

#[test]
fn cancel_attempt_only_while_sending() {
    for status in [
        S::Ranked,
        S::RetryPending,
        S::Sent,
        S::Delivered,
        S::Expired,
    ] {
        given::<Notification>(history(status))
            .when(cancel_attempt(1))
            .then_error(illegal(status, "CancelAttempt"));
    }
}

// Expire, Reject, Suppress

#[test]
fn expire_while_not_yet_sent() {
    for status in [S::Requested, S::Scheduled, S::RetryPending, S::Sending] {
        given::<Notification>(history(status))
            .when(C::Expire)
            .then([E::Expired]);
    }
}

#[test]
fn expire_after_sent_is_illegal() {
    given::<Notification>(history(S::Sent))
        .when(C::Expire)
        .then_error(illegal(S::Sent, "Expire"));
}

#[test]
fn expire_twice_changes_nothing() {
    given::<Notification>(history(S::Expired))
        .when(C::Expire)
        .then_nothing();
}

#[test]
fn reject_or_suppress_until_sent() {
    given::<Notification>(history(S::Sending))
        .when(C::Suppress {
            reason: "on the provider's suppression list".into(),
        })
        .then([E::Suppressed {
            reason: "on the provider's suppression list".into(),
        }]);
    given::<Notification>(history(S::Ranked))
        .when(C::Reject {
            reason: "monthly quota reached".into(),
        })
        .then([E::Rejected {
            reason: "monthly quota reached".into(),
        }]);
    given::<Notification>(history(S::Sent))
        .when(C::Reject {
            reason: "too late".into(),
        })
        .then_error(illegal(S::Sent, "Reject"));
}

#[test]
fn reject_and_suppress_twice_change_nothing() {
    given::<Notification>(history(S::Rejected))
        .when(C::Reject {
            reason: "again".into(),
        })
        .then_nothing();
    given::<Notification>(history(S::Suppressed))
        .when(C::Suppress {
            reason: "again".into(),
        })
        .then_nothing();
}

// After the end

#[test]
fn no_delivery_after_an_unsent_ending() {
    for status in [
        S::Cancelled,
        S::Expired,
        S::Rejected,
        S::Suppressed,
        S::DeadLettered,
    ] {
        given::<Notification>(history(status))
            .when(attempt(Channel::Email))
            .then_error(illegal(status, "AttemptDelivery"));
    }
}

// State

#[test]
fn state_follows_the_events() {
    let notification = Notification::fold(&[
        requested(),
        ranked(),
        attempted(1, Channel::Email),
        failed(1, Some(minute(1))),
        attempted(2, Channel::Sms),
        sent(2),
    ]);
    let state = notification.state().unwrap();
    assert_eq!(state.status, S::Sent);
    assert_eq!(state.attempts, 2);
    assert_eq!(state.channel, Some(Channel::Sms));
    assert_eq!(state.provider_message_id.as_deref(), Some("m-1"));
    assert_eq!(state.last_error.as_deref(), Some("421 try later"));
    assert_eq!(state.score, Some(0.9));
    assert_eq!(state.expires_at(), Some(t0() + TimeDelta::hours(1)));
}

#[test]
fn provider_text_is_clipped_and_loses_nul() {
    let events = Notification::fold(&history(S::Sending))
        .decide(
            C::RecordFailure {
                attempt: 1,
                provider: "smtp".into(),
                error: format!("a\0{}", "e".repeat(5000)),
                permanent: false,
                retry_at: Some(minute(1)),
            },
            t0(),
        )
        .unwrap();
    let E::DeliveryFailed { error, .. } = &events[0] else {
        panic!("expected DeliveryFailed, got {events:?}");
    };
    assert_eq!(error.chars().count(), MAX_EVENT_TEXT_CHARS);
    assert!(!error.contains('\0'));
}

fn unreadable() -> DomainError {
    DomainError::MalformedEvent {
        event_type: "NotificationScheduled".into(),
        reason: "missing field `schedule_at`".into(),
    }
}

#[test]
fn an_unreadable_event_is_left_out_of_the_state() {
    let events = [
        Ok(requested()),
        Ok(ranked()),
        Err(unreadable()),
        Ok(attempted(1, Channel::Email)),
    ];
    let notification = Notification::fold_readable(&events).unwrap();
    assert_eq!(
        notification,
        Notification::fold(&[requested(), ranked(), attempted(1, Channel::Email)])
    );
    assert_eq!(notification.status(), Some(S::Sending));
}

#[test]
fn an_unreadable_last_event_leaves_the_state_before_it() {
    let events = [Ok(requested()), Ok(ranked()), Err(unreadable())];
    let notification = Notification::fold_readable(&events).unwrap();
    assert_eq!(notification.status(), Some(S::Ranked));
}

#[test]
fn an_unreadable_request_cannot_be_folded() {
    let events = [Err(unreadable()), Ok(ranked())];
    assert_eq!(
        Notification::fold_readable(&events),
        Err(DomainError::UnreadableRequest {
            reason: unreadable().to_string()
        })
    );
    assert_eq!(
        Notification::fold_readable(&[]),
        Ok(Notification::default())
    );
}
