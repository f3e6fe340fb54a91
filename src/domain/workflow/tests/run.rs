//! One test per row of the table in `workflow_run.rs`, for every step kind.

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;

use super::super::workflow_run::notification_id;
use super::*;
use crate::domain::given_when_then::given;
use crate::domain::notification_request::{Content, TemplateRef};
use crate::domain::test_fixtures::minute;
use crate::domain::values::{Channel, Priority};

use WorkflowRunEvent as E;

fn send(template: &str, channels: &[&str]) -> Value {
    json!({"channels": channels, "template": template})
}

/// In-app now; email only if the in-app message is still unread an hour later.
fn reminder() -> WorkflowDefinition {
    workflow(json!({"key": "reminder", "steps": [
        {"name": "inapp", "send": send("comment", &["in_app"])},
        {"name": "wait_read", "wait_for": {
            "event": "NotificationOpened",
            "where": {"notification_id": "steps.inapp.notification_id"},
            "timeout": "1h", "on_match": "end"}},
        {"name": "email", "send": send("comment", &["email"])}
    ]}))
}

/// Comments per recipient and thread for 30 minutes, listing two, sent at
/// once when three have come.
fn digest_flow() -> WorkflowDefinition {
    workflow(json!({"key": "comments", "steps": [
        {"name": "gather", "digest": {"window": "30m",
            "key": ["recipient.id", "payload.thread_id"],
            "max_items": 2, "send_at_once_when": 3}},
        {"name": "email", "send": send("comment_digest", &["email"])}
    ]}))
}

fn delay_then_send(delay: Value) -> WorkflowDefinition {
    workflow(json!({"key": "later", "steps": [
        {"name": "pause", "delay": delay},
        {"name": "email", "send": send("comment", &["email"])}
    ]}))
}

fn run_started(definition: WorkflowDefinition, payload: Value) -> WorkflowRunEvent {
    let payload = object(payload);
    let digest_key = definition.digest_key(|field| read_trigger(&recipient(), &payload, field));
    E::RunStarted(RunStart {
        tenant_id: tenant(),
        run_id: run_id(),
        version: WorkflowVersion::FIRST,
        definition,
        recipient: recipient(),
        payload,
        trigger_id: key("trigger-1"),
        digest_key,
        started_at: t0(),
    })
}

fn step_started(visit: u32, name: &str, at: DateTime<Utc>) -> WorkflowRunEvent {
    E::StepStarted {
        visit,
        step: step(name),
        at,
    }
}

fn completed(visit: u32, name: &str, outcome: StepOutcome, at: DateTime<Utc>) -> WorkflowRunEvent {
    E::StepCompleted {
        visit,
        step: step(name),
        outcome,
        at,
    }
}

fn waiting(visit: u32, name: &str, until: DateTime<Utc>) -> WorkflowRunEvent {
    E::RunWaiting {
        visit,
        step: step(name),
        until,
        wait_for: None,
        cancel_on: Vec::new(),
    }
}

fn sent(visit: u32, channel: Channel, template: &str, variables: Value) -> StepOutcome {
    StepOutcome::Sent {
        notification: NotificationToSend {
            notification_id: notification_id(run_id(), visit),
            channels: vec![channel],
            template: TemplateRef {
                key: TemplateKey::parse(template).unwrap(),
                version: None,
                locale: None,
                variables: object(variables),
            },
            priority: Priority::Normal,
        },
    }
}

fn opened(event_id: u128, visit: u32) -> WorkflowRunCommand {
    observed(
        event_id,
        "NotificationOpened",
        json!({"notification_id": notification_id(run_id(), visit).to_string()}),
    )
}

/// The events `commands` record from the start of a run at `t0`.
fn history(
    definition: WorkflowDefinition,
    payload: Value,
    commands: Vec<(DateTime<Utc>, WorkflowRunCommand)>,
) -> Vec<WorkflowRunEvent> {
    run_through(
        [(t0(), start(definition, payload))]
            .into_iter()
            .chain(commands),
    )
    .1
}

// Start

#[test]
fn start_records_the_run_and_its_steps_up_to_the_first_rest() {
    let payload = json!({"comment": "Nice"});
    let matcher = EventMatcher {
        event_type: ExternalEventType::parse("NotificationOpened").unwrap(),
        fields: [(
            PayloadPath::parse("notification_id").unwrap(),
            json!(notification_id(run_id(), 1).to_string()),
        )]
        .into(),
    };
    given::<WorkflowRun>([])
        .when(start(reminder(), payload.clone()))
        .then([
            run_started(reminder(), payload.clone()),
            step_started(1, "inapp", t0()),
            completed(
                1,
                "inapp",
                sent(1, Channel::InApp, "comment", payload),
                t0(),
            ),
            step_started(2, "wait_read", t0()),
            E::RunWaiting {
                visit: 2,
                step: step("wait_read"),
                until: minute(60),
                wait_for: Some(matcher),
                cancel_on: Vec::new(),
            },
        ]);
}

#[test]
fn the_same_trigger_again_records_nothing_and_another_is_refused() {
    let history = history(reminder(), json!({}), vec![]);
    given::<WorkflowRun>(history.clone())
        .when(start(reminder(), json!({})))
        .then_nothing();
    let WorkflowRunCommand::Start(mut other) = start(reminder(), json!({})) else {
        unreachable!()
    };
    other.trigger_id = key("trigger-2");
    given::<WorkflowRun>(history)
        .when(WorkflowRunCommand::Start(other))
        .then_error(WorkflowRunError::AlreadyStarted);
}

#[test]
fn nothing_but_start_is_legal_before_the_run_starts() {
    for command in [
        timer(1),
        opened(1, 1),
        joined("trigger-2", json!({})),
        WorkflowRunCommand::Cancel { reason: None },
    ] {
        given::<WorkflowRun>([])
            .when(command)
            .then_error(WorkflowRunError::NotStarted);
    }
}

#[test]
fn a_send_step_describes_its_notification_for_the_normal_send_path() {
    let (run, log) = run_through([(t0(), start(reminder(), json!({"comment": "Nice"})))]);
    let Some(E::StepCompleted {
        outcome: StepOutcome::Sent { notification },
        ..
    }) = log.get(2)
    else {
        panic!("the in-app send: {log:?}");
    };
    let request = notification.request(&run.start().unwrap().recipient);
    assert_eq!(request.channels, [Channel::InApp]);
    assert_eq!(request.recipient, recipient());
    let Content::Template(template) = request.content else {
        panic!("a template");
    };
    assert_eq!(template.variables.as_map()["comment"], json!("Nice"));
    // Derived from run and visit: a retried decision names the same notification.
    assert_eq!(notification.notification_id, notification_id(run_id(), 1));
    assert_ne!(notification_id(run_id(), 1), notification_id(run_id(), 2));
}

// Delay

#[test]
fn a_delay_rests_until_its_time_then_the_run_goes_on() {
    let definition = delay_then_send(json!({"duration": "1h"}));
    let history = history(definition.clone(), json!({}), vec![]);
    assert_eq!(history.last(), Some(&waiting(1, "pause", minute(60))));
    given::<WorkflowRun>(history)
        .at(minute(61))
        .when(timer(1))
        .then([
            completed(1, "pause", StepOutcome::Delayed, minute(61)),
            step_started(2, "email", minute(61)),
            completed(
                2,
                "email",
                sent(2, Channel::Email, "comment", json!({})),
                minute(61),
            ),
            E::RunCompleted { at: minute(61) },
        ]);
}

#[test]
fn a_timer_early_stale_or_fired_twice_records_nothing() {
    let definition = delay_then_send(json!({"duration": "1h"}));
    let resting = history(definition.clone(), json!({}), vec![]);
    given::<WorkflowRun>(resting.clone())
        .at(minute(59))
        .when(timer(1))
        .then_nothing();
    given::<WorkflowRun>(resting)
        .at(minute(61))
        .when(timer(7))
        .then_nothing();
    let fired = history(definition, json!({}), vec![(minute(61), timer(1))]);
    given::<WorkflowRun>(fired)
        .at(minute(62))
        .when(timer(1))
        .then_nothing();
}

#[test]
fn a_delay_until_a_payload_time_waits_for_it_or_goes_on_when_past() {
    let definition = delay_then_send(json!({"until": "payload.remind_at"}));
    let at = |time: DateTime<Utc>| json!({"remind_at": time.to_rfc3339()});
    let future = history(definition.clone(), at(minute(90)), vec![]);
    assert_eq!(future.last(), Some(&waiting(1, "pause", minute(90))));

    let past = history(definition, at(minute(-5)), vec![]);
    assert_eq!(
        event_types(&past[1..]),
        [
            "WorkflowStepStarted",
            "WorkflowStepCompleted",
            "WorkflowStepStarted",
            "WorkflowStepCompleted",
            "WorkflowRunCompleted"
        ]
    );
}

#[test]
fn a_delay_without_a_usable_time_is_skipped_with_its_reason() {
    let definition = delay_then_send(json!({"until": "payload.remind_at"}));
    let field = FieldRef::parse("payload.remind_at").unwrap();
    let far = t0() + TimeDelta::days(31);
    let cases = [
        (
            json!({}),
            SkipReason::Missing {
                field: field.clone(),
            },
        ),
        (
            json!({"remind_at": "tomorrow"}),
            SkipReason::NotATime {
                field: field.clone(),
                value: json!("tomorrow"),
            },
        ),
        (
            json!({"remind_at": far.to_rfc3339()}),
            SkipReason::TooFarAhead {
                field: field.clone(),
                until: far,
            },
        ),
    ];
    for (payload, reason) in cases {
        let (run, log) = run_through([(t0(), start(definition.clone(), payload))]);
        assert_eq!(
            log[1],
            E::StepSkipped {
                visit: 1,
                step: step("pause"),
                reason,
                at: t0(),
            }
        );
        assert_eq!(run.status(), Some(RunStatus::Completed));
    }
}

// Digest

#[test]
fn a_digest_opens_its_window_keyed_by_recipient_and_thread() {
    let history = history(digest_flow(), json!({"thread_id": "t-1"}), vec![]);
    assert_eq!(
        history,
        [
            run_started(digest_flow(), json!({"thread_id": "t-1"})),
            step_started(1, "gather", t0()),
            waiting(1, "gather", minute(30)),
        ]
    );
    let key_of = |thread: &str| {
        let payload = object(json!({"thread_id": thread, "comment": "any"}));
        digest_flow().digest_key(|field| read_trigger(&recipient(), &payload, field))
    };
    let E::RunStarted(started) = &history[0] else {
        unreachable!()
    };
    assert_eq!(started.digest_key, key_of("t-1"));
    assert_ne!(key_of("t-1"), key_of("t-2"));
}

#[test]
fn triggers_join_an_open_digest_once_each() {
    let history = history(digest_flow(), json!({"n": 1}), vec![]);
    given::<WorkflowRun>(history.clone())
        .at(minute(10))
        .when(joined("trigger-2", json!({"n": 2})))
        .then([E::DigestItemJoined {
            visit: 1,
            trigger_id: key("trigger-2"),
            payload: Some(object(json!({"n": 2}))),
            at: minute(10),
        }]);
    let joined_once = [
        history.clone(),
        vec![E::DigestItemJoined {
            visit: 1,
            trigger_id: key("trigger-2"),
            payload: Some(object(json!({"n": 2}))),
            at: minute(10),
        }],
    ]
    .concat();
    for trigger in ["trigger-1", "trigger-2"] {
        given::<WorkflowRun>(joined_once.clone())
            .at(minute(11))
            .when(joined(trigger, json!({"n": 2})))
            .then_nothing();
    }
}

#[test]
fn the_window_end_sends_the_digest_with_every_payload_kept() {
    let history = history(
        digest_flow(),
        json!({"n": 1}),
        vec![(minute(10), joined("trigger-2", json!({"n": 2})))],
    );
    let variables = json!({"n": 1, "digest": {"items": [{"n": 1}, {"n": 2}], "count": 2}});
    given::<WorkflowRun>(history)
        .at(minute(30))
        .when(timer(1))
        .then([
            completed(
                1,
                "gather",
                StepOutcome::Digested { count: 2, kept: 2 },
                minute(30),
            ),
            step_started(2, "email", minute(30)),
            completed(
                2,
                "email",
                sent(2, Channel::Email, "comment_digest", variables),
                minute(30),
            ),
            E::RunCompleted { at: minute(30) },
        ]);
}

#[test]
fn send_at_once_when_closes_the_window_early_and_max_items_only_counts_the_rest() {
    let history = history(
        digest_flow(),
        json!({"n": 1}),
        vec![(minute(1), joined("trigger-2", json!({"n": 2})))],
    );
    let variables = json!({"n": 1, "digest": {"items": [{"n": 1}, {"n": 2}], "count": 3}});
    given::<WorkflowRun>(history)
        .at(minute(2))
        .when(joined("trigger-3", json!({"n": 3})))
        .then([
            E::DigestItemJoined {
                visit: 1,
                trigger_id: key("trigger-3"),
                payload: None,
                at: minute(2),
            },
            completed(
                1,
                "gather",
                StepOutcome::Digested { count: 3, kept: 2 },
                minute(2),
            ),
            step_started(2, "email", minute(2)),
            completed(
                2,
                "email",
                sent(2, Channel::Email, "comment_digest", variables),
                minute(2),
            ),
            E::RunCompleted { at: minute(2) },
        ]);
}

#[test]
fn a_trigger_cannot_join_a_closed_window_or_a_run_not_at_its_digest() {
    let open = history(digest_flow(), json!({}), vec![]);
    given::<WorkflowRun>(open.clone())
        .at(minute(30))
        .when(joined("trigger-2", json!({})))
        .then_error(WorkflowRunError::DigestClosed);
    let ended = history(digest_flow(), json!({}), vec![(minute(30), timer(1))]);
    given::<WorkflowRun>(ended)
        .at(minute(31))
        .when(joined("trigger-2", json!({})))
        .then_error(WorkflowRunError::DigestClosed);
    let delaying = history(
        delay_then_send(json!({"duration": "1h"})),
        json!({}),
        vec![],
    );
    given::<WorkflowRun>(delaying)
        .when(joined("trigger-2", json!({})))
        .then_error(WorkflowRunError::DigestClosed);
}

// Wait for

#[test]
fn a_matching_event_ends_the_wait_and_takes_on_match() {
    let resting = history(reminder(), json!({}), vec![]);
    given::<WorkflowRun>(resting)
        .at(minute(20))
        .when(opened(7, 1))
        .then([
            completed(
                2,
                "wait_read",
                StepOutcome::Matched {
                    event_id: Uuid::from_u128(7),
                },
                minute(20),
            ),
            E::RunCompleted { at: minute(20) },
        ]);
}

#[test]
fn an_event_of_another_type_or_for_another_notification_records_nothing() {
    let resting = history(reminder(), json!({}), vec![]);
    given::<WorkflowRun>(resting.clone())
        .when(opened(7, 2))
        .then_nothing();
    given::<WorkflowRun>(resting)
        .when(observed(
            7,
            "NotificationClicked",
            json!({"notification_id": notification_id(run_id(), 1).to_string()}),
        ))
        .then_nothing();
}

#[test]
fn the_timeout_takes_on_timeout() {
    let resting = history(reminder(), json!({}), vec![]);
    given::<WorkflowRun>(resting)
        .at(minute(60))
        .when(timer(2))
        .then([
            completed(2, "wait_read", StepOutcome::TimedOut, minute(60)),
            step_started(3, "email", minute(60)),
            completed(
                3,
                "email",
                sent(3, Channel::Email, "comment", json!({})),
                minute(60),
            ),
            E::RunCompleted { at: minute(60) },
        ]);
}

#[test]
fn an_event_matches_one_wait_once_even_when_observed_again_later() {
    let twice = workflow(json!({"key": "twice", "steps": [
        {"name": "first", "wait_for": {"event": "Ping", "timeout": "1h"}},
        {"name": "second", "wait_for": {"event": "Ping", "timeout": "1h"}}
    ]}));
    let after_first = history(
        twice,
        json!({}),
        vec![(minute(1), observed(1, "Ping", json!({})))],
    );
    given::<WorkflowRun>(after_first.clone())
        .at(minute(2))
        .when(observed(1, "Ping", json!({})))
        .then_nothing();
    given::<WorkflowRun>(after_first)
        .at(minute(2))
        .when(observed(2, "Ping", json!({})))
        .then([
            completed(
                2,
                "second",
                StepOutcome::Matched {
                    event_id: Uuid::from_u128(2),
                },
                minute(2),
            ),
            E::RunCompleted { at: minute(2) },
        ]);
}

#[test]
fn a_wait_whose_values_are_missing_only_times_out() {
    let definition = workflow(json!({"key": "k", "steps": [
        {"name": "wait", "wait_for": {"event": "OrderShipped",
            "where": {"order_id": "payload.order_id"}, "timeout": "1h"}}
    ]}));
    let history = history(definition, json!({}), vec![]);
    assert_eq!(history.last(), Some(&waiting(1, "wait", minute(60))));
}

// Branch

#[test]
fn a_branch_takes_the_first_case_that_holds_or_otherwise() {
    let definition = workflow(json!({"key": "k", "steps": [
        {"name": "choose", "branch": {"cases": [
            {"when": [{"field": "payload.tier", "equals": "vip"},
                      {"field": "recipient.email", "exists": true}], "goto": "vip"},
            {"when": [{"field": "payload.total", "greater_than": 100}], "goto": "big"}
        ], "otherwise": "end"}},
        {"name": "vip", "send": send("comment", &["email"])},
        {"name": "big", "send": send("comment", &["in_app"])}
    ]}));
    let branched = |payload: Value| {
        let (_, log) = run_through([(t0(), start(definition.clone(), payload))]);
        match &log[2] {
            E::StepCompleted {
                outcome: StepOutcome::Branched { case, goto },
                ..
            } => (*case, goto.to_string(), event_types(&log[3..])),
            other => panic!("{other:?}"),
        }
    };
    let send_then_end = vec![
        "WorkflowStepStarted",
        "WorkflowStepCompleted",
        "WorkflowRunCompleted",
    ];
    let vip = branched(json!({"tier": "vip", "total": 500}));
    let two_sends_then_end = [&send_then_end[..2], &send_then_end[..]].concat();
    assert_eq!(vip, (Some(0), "vip".into(), two_sends_then_end));
    assert_eq!(
        branched(json!({"total": 500})),
        (Some(1), "big".into(), send_then_end)
    );
    assert_eq!(
        branched(json!({"total": 5})),
        (None, "end".into(), vec!["WorkflowRunCompleted"])
    );
}

#[test]
fn a_branch_reads_an_earlier_steps_outcome() {
    let definition = workflow(json!({"key": "k", "steps": [
        {"name": "wait", "wait_for": {"event": "Ping", "timeout": "1h"}},
        {"name": "choose", "branch": {"cases": [
            {"when": [{"field": "steps.wait.outcome", "equals": "timed_out"}], "goto": "nudge"}
        ], "otherwise": "end"}},
        {"name": "nudge", "send": send("comment", &["email"])}
    ]}));
    let (_, timed_out) = run_through([
        (t0(), start(definition.clone(), json!({}))),
        (minute(60), timer(1)),
    ]);
    let (_, matched) = run_through([
        (t0(), start(definition, json!({}))),
        (minute(5), observed(1, "Ping", json!({}))),
    ]);
    let nudged = |log: &[WorkflowRunEvent]| {
        log.iter()
            .any(|event| matches!(event, E::StepCompleted { step, .. } if step.as_str() == "nudge"))
    };
    assert!(nudged(&timed_out));
    assert!(!nudged(&matched));
}

// Throttle

fn throttled() -> WorkflowDefinition {
    workflow(json!({"key": "k", "steps": [
        {"name": "limit", "throttle": {"limit": 2, "window": "1h", "key": ["recipient.id"]}},
        {"name": "email", "send": send("comment", &["email"])}
    ]}))
}

#[test]
fn a_throttle_lets_runs_under_its_limit_through() {
    let (_, log) = run_through([(t0(), start_with(throttled(), json!({}), &[("limit", 1)]))]);
    let E::StepCompleted {
        outcome: StepOutcome::Passed { runs_in_window, .. },
        ..
    } = &log[2]
    else {
        panic!("{log:?}");
    };
    assert_eq!(*runs_in_window, 1);
    assert_eq!(log.last(), Some(&E::RunCompleted { at: t0() }));
}

#[test]
fn a_throttle_cancels_a_run_over_its_limit() {
    let key = throttled()
        .throttle_checks(|field| read_trigger(&recipient(), &object(json!({})), field))
        .remove(0)
        .key;
    given::<WorkflowRun>([])
        .when(start_with(throttled(), json!({}), &[("limit", 2)]))
        .then([
            run_started(throttled(), json!({})),
            step_started(1, "limit", t0()),
            completed(
                1,
                "limit",
                StepOutcome::Throttled {
                    key,
                    runs_in_window: 2,
                },
                t0(),
            ),
            E::RunCancelled {
                reason: CancelReason::Throttled {
                    step: step("limit"),
                },
                at: t0(),
            },
        ]);
}

#[test]
fn a_throttle_needs_its_count() {
    given::<WorkflowRun>([])
        .when(start(throttled(), json!({})))
        .then_error(WorkflowRunError::ThrottleCountMissing(step("limit")));
}

// Cancel on

fn cancellable() -> WorkflowDefinition {
    workflow(json!({"key": "k", "steps": [
        {"name": "stop", "cancel_on": {"event": "OrderCancelled",
                                       "where": {"order.id": "payload.order_id"}}},
        {"name": "wait", "wait_for": {"event": "OrderCancelled", "timeout": "1h"}}
    ]}))
}

#[test]
fn cancel_on_arms_a_matcher_that_every_rest_carries() {
    let history = history(cancellable(), json!({"order_id": "o-1"}), vec![]);
    let matcher = EventMatcher {
        event_type: ExternalEventType::parse("OrderCancelled").unwrap(),
        fields: [(PayloadPath::parse("order.id").unwrap(), json!("o-1"))].into(),
    };
    assert_eq!(
        history[1..],
        [
            step_started(1, "stop", t0()),
            completed(
                1,
                "stop",
                StepOutcome::Armed {
                    matcher: matcher.clone()
                },
                t0()
            ),
            step_started(2, "wait", t0()),
            E::RunWaiting {
                visit: 2,
                step: step("wait"),
                until: minute(60),
                wait_for: Some(EventMatcher {
                    event_type: matcher.event_type.clone(),
                    fields: Default::default(),
                }),
                cancel_on: vec![matcher],
            },
        ]
    );
}

#[test]
fn a_matching_event_cancels_the_run_before_any_wait_sees_it() {
    let history = history(cancellable(), json!({"order_id": "o-1"}), vec![]);
    given::<WorkflowRun>(history.clone())
        .at(minute(5))
        .when(observed(
            9,
            "OrderCancelled",
            json!({"order": {"id": "o-1"}}),
        ))
        .then([E::RunCancelled {
            reason: CancelReason::CancelOn {
                step: step("stop"),
                event_id: Uuid::from_u128(9),
            },
            at: minute(5),
        }]);
    // Another order's cancellation only ends the wait.
    given::<WorkflowRun>(history)
        .at(minute(5))
        .when(observed(
            9,
            "OrderCancelled",
            json!({"order": {"id": "o-2"}}),
        ))
        .then([
            completed(
                2,
                "wait",
                StepOutcome::Matched {
                    event_id: Uuid::from_u128(9),
                },
                minute(5),
            ),
            E::RunCompleted { at: minute(5) },
        ]);
}

#[test]
fn cancel_on_without_its_value_is_skipped() {
    let history = history(cancellable(), json!({}), vec![]);
    assert_eq!(
        history[1],
        E::StepSkipped {
            visit: 1,
            step: step("stop"),
            reason: SkipReason::Missing {
                field: FieldRef::parse("payload.order_id").unwrap()
            },
            at: t0(),
        }
    );
}

// Cancel

#[test]
fn an_operator_cancels_a_live_run_once() {
    let resting = history(reminder(), json!({}), vec![]);
    let long = "x".repeat(5_000);
    given::<WorkflowRun>(resting.clone())
        .at(minute(3))
        .when(WorkflowRunCommand::Cancel {
            reason: Some(long.clone()),
        })
        .then([E::RunCancelled {
            reason: CancelReason::Operator {
                reason: Some(long[..crate::domain::MAX_EVENT_TEXT_CHARS].to_owned()),
            },
            at: minute(3),
        }]);
    let cancelled = history(
        reminder(),
        json!({}),
        vec![(minute(3), WorkflowRunCommand::Cancel { reason: None })],
    );
    for command in [
        WorkflowRunCommand::Cancel { reason: None },
        timer(2),
        opened(7, 1),
    ] {
        given::<WorkflowRun>(cancelled.clone())
            .at(minute(90))
            .when(command)
            .then_nothing();
    }
}

#[test]
fn a_completed_run_cannot_be_cancelled() {
    let completed = history(reminder(), json!({}), vec![(minute(5), opened(7, 1))]);
    given::<WorkflowRun>(completed)
        .when(WorkflowRunCommand::Cancel { reason: None })
        .then_error(WorkflowRunError::Completed);
}

// A loop

#[test]
fn a_loop_through_a_wait_stops_at_the_step_limit() {
    let nag = workflow(json!({"key": "k", "steps": [
        {"name": "nag", "send": send("comment", &["email"])},
        {"name": "wait_read", "wait_for": {"event": "NotificationOpened", "timeout": "1d",
                                           "on_match": "end", "on_timeout": "nag"}}
    ]}));
    let mut commands = vec![(t0(), start(nag, json!({})))];
    for visit in (2..=MAX_STEP_VISITS).step_by(2) {
        commands.push((t0() + TimeDelta::days(i64::from(visit)), timer(visit)));
    }
    let (run, log) = run_through(commands);
    assert_eq!(run.status(), Some(RunStatus::Cancelled));
    let E::RunCancelled { reason, .. } = log.last().unwrap() else {
        panic!("{:?}", log.last());
    };
    assert_eq!(
        *reason,
        CancelReason::StepLimit {
            visits: MAX_STEP_VISITS
        }
    );
}
