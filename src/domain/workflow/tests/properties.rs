//! Random workflows through random commands: a run never runs a step twice,
//! never passes over a step its path reaches, ends exactly once, records
//! nothing for a command it already took, and its events rebuild its state.

use std::collections::BTreeSet;

use chrono::TimeDelta;
use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::domain::Aggregate;

use WorkflowRunEvent as E;

/// A step at `position` of `count`; every goto leads forward, so each step
/// can run at most once, and the next in order is always one way on, so
/// every step is reachable.
fn step_input(position: usize, count: usize) -> impl Strategy<Value = Value> {
    let forward = (1usize..=3).prop_map(move |offset| {
        let target = position + offset;
        if target >= count {
            json!("end")
        } else {
            json!(format!("s{target}"))
        }
    });
    let name = format!("s{position}");
    prop_oneof![
        3 => Just(json!({"send": {"channels": ["in_app"], "template": "comment"}})),
        2 => (1u32..120).prop_map(|minutes| json!({"delay": {"duration": format!("{minutes}m")}})),
        1 => Just(json!({"delay": {"until": "payload.at"}})),
        2 => (1u32..60, prop::option::of(2u32..4)).prop_map(|(minutes, at_once)| json!({"digest": {
            "window": format!("{minutes}m"), "key": ["recipient.id"],
            "max_items": 3, "send_at_once_when": at_once}})),
        3 => (prop::sample::select(vec!["Ping", "Stop"]), any::<bool>(), 1u32..120, forward.clone())
            .prop_map(|(event, by_id, minutes, on_match)| {
                let fields = if by_id { json!({"id": "payload.id"}) } else { json!({}) };
                json!({"wait_for": {"event": event, "where": fields,
                                    "timeout": format!("{minutes}m"), "on_match": on_match}})
            }),
        2 => (any::<bool>(), forward).prop_map(|(flag, goto)| json!({"branch": {"cases": [
            {"when": [{"field": "payload.flag", "equals": flag}], "goto": goto}]}})),
        1 => (1u32..3).prop_map(|limit| json!({"throttle": {
            "limit": limit, "window": "1h", "key": ["recipient.id"]}})),
        2 => Just(json!({"cancel_on": {"event": "Stop", "where": {"id": "payload.id"}}})),
    ]
    .prop_map(move |mut step| {
        step["name"] = json!(name);
        step
    })
}

/// Definitions that publish: the rules refuse, for instance, two digests
/// or a throttle after a rest, and those are left out.
fn definition() -> impl Strategy<Value = WorkflowDefinition> {
    (1usize..8)
        .prop_flat_map(|count| {
            (0..count)
                .map(|position| step_input(position, count))
                .collect::<Vec<_>>()
        })
        .prop_filter_map("refused at publish", |steps| {
            input(json!({"key": "random", "steps": steps}))
                .parse(&catalog())
                .ok()
        })
}

#[derive(Debug, Clone)]
enum Action {
    /// The current rest's timer, or a stale or unknown one.
    Timer {
        current: bool,
        visit: u32,
    },
    Observe {
        event_id: u128,
        event_type: &'static str,
        id: u8,
    },
    Join {
        trigger: u8,
    },
    Cancel,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => (prop::bool::weighted(0.8), 0u32..10)
            .prop_map(|(current, visit)| Action::Timer { current, visit }),
        3 => (0u128..4, prop::sample::select(vec!["Ping", "Stop", "Other"]), 0u8..2)
            .prop_map(|(event_id, event_type, id)| Action::Observe { event_id, event_type, id }),
        3 => (0u8..5).prop_map(|trigger| Action::Join { trigger }),
        1 => Just(Action::Cancel),
    ]
}

impl Action {
    fn command(&self, run: &WorkflowRun) -> WorkflowRunCommand {
        match *self {
            Action::Timer { current, visit } => timer(match run.rest() {
                Some(rest) if current => rest.visit,
                _ => visit,
            }),
            Action::Observe {
                event_id,
                event_type,
                id,
            } => observed(event_id, event_type, json!({"id": id})),
            // Trigger 1 is the one that started the run.
            Action::Join { trigger } => {
                joined(&format!("trigger-{trigger}"), json!({"n": trigger}))
            }
            Action::Cancel => WorkflowRunCommand::Cancel { reason: None },
        }
    }
}

/// Where the run must go after the step that `event` ends.
fn expected_after(
    definition: &WorkflowDefinition,
    event: &WorkflowRunEvent,
) -> Result<Option<Target>, TestCaseError> {
    let (name, outcome) = match event {
        E::StepCompleted { step, outcome, .. } => (step, Some(outcome)),
        E::StepSkipped { step, .. } => (step, None),
        _ => return Ok(None),
    };
    let index = definition.index_of(name).unwrap();
    let target = match (&definition.steps()[index].kind, outcome) {
        // A throttled run is cancelled at once.
        (_, Some(StepOutcome::Throttled { .. })) => return Ok(None),
        (StepKind::WaitFor(wait), Some(StepOutcome::Matched { .. })) => wait.on_match.clone(),
        (StepKind::WaitFor(wait), Some(StepOutcome::TimedOut)) => wait.on_timeout.clone(),
        (StepKind::Branch(_), Some(StepOutcome::Branched { goto, .. })) => {
            prop_assert!(definition.successors(index).contains(goto));
            goto.clone()
        }
        (StepKind::WaitFor(_) | StepKind::Branch(_), _) => {
            return Err(TestCaseError::fail(format!(
                "{name} ended with {outcome:?}"
            )));
        }
        _ => definition.next_in_order(index),
    };
    Ok(Some(target))
}

/// The order of a whole run's events.
fn check_log(
    definition: &WorkflowDefinition,
    log: &[WorkflowRunEvent],
) -> Result<(), TestCaseError> {
    prop_assert!(
        matches!(log.first(), Some(E::RunStarted(_))),
        "{:?}",
        log.first()
    );
    let ends =
        |event: &WorkflowRunEvent| matches!(event, E::RunCompleted { .. } | E::RunCancelled { .. });
    prop_assert_eq!(log.iter().filter(|event| ends(event)).count(), 1);
    prop_assert!(log.last().is_some_and(ends));

    let mut next_visit = 1;
    let mut ran = BTreeSet::new();
    for (position, event) in log.iter().enumerate().skip(1) {
        let next = log.get(position + 1);
        match event {
            E::RunStarted(_) => prop_assert!(false, "started twice"),
            E::StepStarted { visit, step, .. } | E::StepSkipped { visit, step, .. } => {
                prop_assert_eq!(*visit, next_visit);
                next_visit += 1;
                prop_assert!(ran.insert(step.clone()), "{} ran twice", step);
            }
            _ => {}
        }
        match event {
            // An instant step completes at once; a resting one rests at once.
            E::StepStarted { visit, .. } => prop_assert!(
                matches!(next, Some(E::StepCompleted { visit: v, .. } | E::RunWaiting { visit: v, .. }) if v == visit),
                "after {:?} came {:?}",
                event,
                next
            ),
            // A rest ends by its step's completion or the run's cancellation.
            E::RunWaiting { visit, .. } | E::DigestItemJoined { visit, .. } => prop_assert!(
                matches!(next, Some(E::StepCompleted { visit: v, .. } | E::DigestItemJoined { visit: v, .. }) if v == visit)
                    || matches!(next, Some(E::RunCancelled { .. })),
                "after {:?} came {:?}",
                event,
                next
            ),
            E::StepCompleted { .. } | E::StepSkipped { .. } => {
                match expected_after(definition, event)? {
                    None => prop_assert!(
                        matches!(next, Some(E::RunCancelled { .. })),
                        "after {:?} came {:?}, not the cancellation",
                        event,
                        next
                    ),
                    Some(Target::End) => prop_assert!(
                        matches!(next, Some(E::RunCompleted { .. })),
                        "after {:?} came {:?}, not the end",
                        event,
                        next
                    ),
                    Some(Target::Step(name)) => prop_assert!(
                        matches!(next, Some(E::StepStarted { step, .. } | E::StepSkipped { step, .. }) if *step == name),
                        "after {:?} came {:?}, not {}",
                        event,
                        next,
                        name
                    ),
                }
            }
            _ => {}
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_runs_keep_every_step_once_and_in_its_order(
        definition in definition(),
        flag in any::<bool>(),
        at_minutes in prop::option::of(-30i64..180),
        throttle_counts in prop::collection::vec(0u32..3, 8),
        actions in prop::collection::vec((action(), 0i64..90), 0..40),
    ) {
        let mut payload = json!({"id": 1, "flag": flag});
        if let Some(minutes) = at_minutes {
            payload["at"] = json!((t0() + TimeDelta::minutes(minutes)).to_rfc3339());
        }
        let counts: Vec<(String, u32)> = definition
            .steps()
            .iter()
            .zip(throttle_counts)
            .map(|(step, count)| (step.name.to_string(), count))
            .collect();
        let counts: Vec<(&str, u32)> = counts.iter().map(|(name, count)| (name.as_str(), *count)).collect();

        let mut run = WorkflowRun::default();
        let mut log: Vec<WorkflowRunEvent> = Vec::new();
        let mut now = t0();
        let decide = |run: &mut WorkflowRun, log: &mut Vec<WorkflowRunEvent>, command: WorkflowRunCommand, now: chrono::DateTime<chrono::Utc>| -> Result<(), TestCaseError> {
            let decided = run.decide(command.clone(), now);
            match &decided {
                Ok(events) => {
                    for event in events {
                        let payload = serde_json::to_value(event).unwrap();
                        let read = WorkflowRunEvent::upcast(event.event_type(), WorkflowRunEvent::SCHEMA_VERSION, payload);
                        prop_assert_eq!(read.as_ref(), Ok(event));
                        run.apply(event);
                    }
                    log.extend(events.iter().cloned());
                }
                Err(WorkflowRunError::DigestClosed | WorkflowRunError::Completed) => {}
                Err(error) => prop_assert!(false, "{:?} refused: {}", command, error),
            }
            // The same command again, as after a crash, records nothing.
            let again = run.decide(command.clone(), now);
            prop_assert!(
                !matches!(&again, Ok(events) if !events.is_empty()),
                "{:?} recorded again: {:?}", command, again
            );
            Ok(())
        };

        decide(&mut run, &mut log, start_with(definition.clone(), payload, &counts), now)?;
        for (action, minutes) in actions {
            now += TimeDelta::minutes(minutes);
            let command = action.command(&run);
            decide(&mut run, &mut log, command, now)?;
        }
        // Every run ends once its timers have fired.
        for _ in 0..MAX_STEP_VISITS {
            let Some(rest) = run.rest().cloned() else { break };
            now = now.max(rest.until);
            decide(&mut run, &mut log, timer(rest.visit), now)?;
        }
        prop_assert!(
            matches!(run.status(), Some(RunStatus::Completed | RunStatus::Cancelled)),
            "{:?}", run.status()
        );

        check_log(&definition, &log)?;
        prop_assert_eq!(WorkflowRun::fold(&log), run);
    }
}
