//! Random command sequences through decide → apply never reach an illegal
//! state, and the events they produce rebuild the same state.

use chrono::TimeDelta;
use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::domain::test_fixtures::{link, minute, notification_id, request, t0, tenant};

use NotificationCommand as C;
use NotificationEvent as E;
use NotificationStatus as S;

/// Mostly the channels the fixture request asks for, sometimes any.
fn channel() -> impl Strategy<Value = Channel> {
    prop_oneof![
        3 => prop::sample::select(vec![Channel::Email, Channel::Sms]),
        1 => prop::sample::select(Channel::ALL.to_vec()),
    ]
}

/// Mostly a plausible attempt number, sometimes a stale or impossible one.
fn attempt() -> impl Strategy<Value = u32> {
    prop_oneof![3 => 1u32..3, 1 => 0u32..5]
}

fn time() -> impl Strategy<Value = DateTime<Utc>> {
    (0i64..90).prop_map(minute)
}

fn command() -> impl Strategy<Value = NotificationCommand> {
    prop_oneof![
        1 => Just(C::Request {
            tenant_id: tenant(),
            notification_id: notification_id(),
            request: request(),
        }),
        1 => (-10.0f64..10.0, prop::option::of(time())).prop_map(|(score, send_after)| C::Rank {
            score,
            breakdown: json!({"score": score}),
            scorer: "rules".into(),
            send_after,
        }),
        1 => (time(), prop::option::of(0i64..600)).prop_map(|(schedule_at, recheck)| C::Schedule {
            schedule_at,
            reason: "quiet hours".into(),
            recheck: recheck.map(chrono::TimeDelta::seconds),
        }),
        3 => channel().prop_map(|channel| C::AttemptDelivery {
            channel,
            provider: "console".into(),
        }),
        3 => attempt().prop_map(|attempt| C::RecordSent {
            attempt,
            provider: "console".into(),
            provider_message_id: Some(format!("m-{attempt}")),
            content: None,
        }),
        2 => (attempt(), any::<bool>(), prop::option::of(time())).prop_map(
            |(attempt, permanent, retry_at)| C::RecordFailure {
                attempt,
                provider: "console".into(),
                error: "421".into(),
                permanent,
                retry_at,
            }
        ),
        1 => Just(C::DeadLetter {
            reason: "ops".into()
        }),
        1 => Just(C::Requeue {
            reason: "ops".into()
        }),
        1 => time().prop_map(|at| C::RecordDelivered { at }),
        1 => (any::<bool>(), time()).prop_map(|(hard, at)| C::RecordBounce {
            hard,
            reason: "550".into(),
            at,
        }),
        1 => time().prop_map(|at| C::RecordComplaint { at }),
        2 => time().prop_map(|at| C::RecordOpen {
            at,
            client: Default::default()
        }),
        1 => time().prop_map(|at| C::RecordClick {
            url: link(),
            at,
            client: Default::default()
        }),
        1 => Just(C::Reject {
            reason: "quota".into()
        }),
        1 => Just(C::Suppress {
            reason: "unsubscribed".into()
        }),
        1 => Just(C::Expire),
        1 => prop::option::of(Just("asked".to_owned())).prop_map(|reason| C::Cancel { reason }),
        1 => attempt().prop_map(|attempt| C::WithdrawAttempt {
            attempt,
            reason: "campaign paused".into(),
        }),
        1 => attempt().prop_map(|attempt| C::CancelAttempt {
            attempt,
            reason: "campaign cancelled".into(),
        }),
    ]
}

/// Statuses that end a notification before any provider accepted it.
fn ended_unsent(status: NotificationStatus) -> bool {
    matches!(
        status,
        S::Cancelled | S::Expired | S::Rejected | S::Suppressed | S::DeadLettered
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_commands_keep_the_lifecycle_legal(
        steps in prop::collection::vec((command(), 0i64..8), 1..60)
    ) {
        let mut notification = Notification::default();
        let mut log: Vec<NotificationEvent> = Vec::new();
        let mut now = t0();
        let mut first_opens = 0;

        for (command, minutes) in steps {
            now += TimeDelta::minutes(minutes);
            let before = notification.clone();
            let requeue = matches!(command, C::Requeue { .. });
            let Ok(events) = notification.decide(command, now) else {
                continue;
            };
            for event in &events {
                let status = notification.status();
                let attempts = notification.state().map_or(0, |state| state.attempts);
                match event {
                    E::DeliveryAttempted { attempt, .. } => {
                        prop_assert!(status.is_some_and(NotificationStatus::is_pending));
                        prop_assert_eq!(*attempt, attempts + 1);
                    }
                    E::Sent { attempt, .. }
                    | E::DeliveryFailed { attempt, .. }
                    | E::DeliveryWithdrawn { attempt, .. } => {
                        prop_assert_eq!(status, Some(S::Sending));
                        prop_assert_eq!(*attempt, attempts);
                    }
                    E::Opened { first, .. } => {
                        prop_assert!(status.is_some_and(NotificationStatus::is_sent_or_delivered));
                        first_opens += usize::from(*first);
                    }
                    // Never after a provider took it.
                    E::Cancelled { .. } => {
                        prop_assert!(status.is_some_and(NotificationStatus::is_unsent));
                    }
                    E::Clicked { .. } | E::Delivered { .. } => {
                        prop_assert!(status.is_some_and(NotificationStatus::is_sent_or_delivered));
                    }
                    _ => {}
                }
                let payload = serde_json::to_value(event).unwrap();
                let read = NotificationEvent::upcast(
                    event.event_type(),
                    NotificationEvent::SCHEMA_VERSION,
                    payload,
                );
                prop_assert_eq!(read.as_ref(), Ok(event));
                notification.apply(event);
            }
            log.extend(events);

            let (Some(was), Some(is)) = (before.status(), notification.status()) else {
                continue;
            };
            // Requeue is the one way back: a dead letter waits for a retry again.
            if requeue && was != is {
                prop_assert_eq!((was, is), (S::DeadLettered, S::RetryPending));
                continue;
            }
            if was.is_terminal() {
                prop_assert!(is.is_terminal(), "{} became {}", was, is);
            }
            if ended_unsent(was) {
                prop_assert_eq!(is, was);
            }
            let attempts = |n: &Notification| n.state().map_or(0, |state| state.attempts);
            prop_assert!(attempts(&notification) >= attempts(&before));
        }

        prop_assert!(first_opens <= 1);
        prop_assert_eq!(Notification::fold(&log), notification);
    }
}
