//! The `WorkflowRun` aggregate: one trigger (and, in a digest, the triggers
//! that join it) for one recipient, followed through one workflow version.
//!
//! | command | legal when | records |
//! |---|---|---|
//! | Start | not started; the same trigger again records nothing | WorkflowRunStarted, then the steps up to the first rest |
//! | TimerFired | resting at that visit and its time has come; otherwise nothing | WorkflowStepCompleted (delayed, digested, timed out), then the steps up to the next rest |
//! | EventObserved | started; nothing when ended, already matched or matching nothing | WorkflowRunCancelled (a `cancel_on` matched), or WorkflowStepCompleted (the `wait_for` matched) and the steps up to the next rest |
//! | DigestItemJoined | its digest window is open; a trigger already in the run records nothing | WorkflowDigestItemJoined (and, at `send_at_once_when`, the digest's completion and the steps after it) |
//! | Cancel | started and not completed; nothing when cancelled | WorkflowRunCancelled |
//!
//! One decision takes the run from one rest (a delay, a digest window, a
//! wait) to the next, or to its end, and is appended as one batch: the
//! steps between two rests (sends, branches, throttles, `cancel_on`) are
//! each started and completed once within it, so a crash can neither repeat
//! nor lose one. Timers are data: `WorkflowRunWaiting` says until when, and
//! which events would wake the run, for a table and a worker to keep.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::definition::{
    DelayStep, DigestStep, SendStep, Step, StepKind, Target, WorkflowDefinition,
};
use super::event_matcher::{EventMatcher, ObservedEvent};
use super::field_path::{FieldRef, StepField};
use super::partition_key::PartitionKey;
use super::publish_workflow::DIGEST_VARIABLE;
use super::run_event::{
    CancelReason, NotificationToSend, RunStart, SkipReason, StepOutcome, WorkflowRunEvent,
    WorkflowRunId,
};
use super::step_duration::StepDuration;
use super::workflow_key::StepName;
use super::workflow_version::WorkflowVersion;
use crate::domain::aggregate::Aggregate;
use crate::domain::notification::clip;
use crate::domain::notification_request::{Recipient, TemplateRef};
use crate::domain::values::{IdempotencyKey, JsonObject, NotificationId, TenantId};

/// The most steps one run goes through; a loop through a delay stops here.
pub const MAX_STEP_VISITS: u32 = 200;
/// The most bytes of payloads a digest lists; later ones are counted only.
pub const MAX_DIGEST_BYTES: usize = 256 * 1024;
/// The largest trigger payload, for whoever parses one into a [`JsonObject`].
pub const MAX_TRIGGER_PAYLOAD_BYTES: usize = 16 * 1024;

// Start carries a definition. Commands live for one decision, so the size is
// harmless; a Box would leak into every constructor.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum WorkflowRunCommand {
    Start(StartRun),
    /// The timer of the rest at `visit` is due.
    TimerFired {
        visit: u32,
    },
    EventObserved(ObservedEvent),
    /// A further trigger with the run's digest key.
    DigestItemJoined {
        trigger_id: IdempotencyKey,
        payload: JsonObject,
    },
    /// An operator's cancel.
    Cancel {
        reason: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct StartRun {
    pub tenant_id: TenantId,
    pub run_id: WorkflowRunId,
    pub version: WorkflowVersion,
    pub definition: WorkflowDefinition,
    pub recipient: Recipient,
    pub payload: JsonObject,
    pub trigger_id: IdempotencyKey,
    /// For each of the definition's
    /// [`throttle_checks`](WorkflowDefinition::throttle_checks), by step:
    /// the runs that passed it with the same key within its window.
    pub throttle_counts: BTreeMap<StepName, u32>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WorkflowRunError {
    #[error("the workflow run has not started")]
    NotStarted,
    #[error("the workflow run was started by another trigger")]
    AlreadyStarted,
    #[error("the workflow run has completed")]
    Completed,
    /// The caller starts a new run for the trigger instead.
    #[error("the workflow run has no open digest window")]
    DigestClosed,
    #[error("no run count was given for the throttle step {0}")]
    ThrottleCountMissing(StepName),
}

/// Where a run is, for listings and the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Waiting,
    Completed,
    Cancelled,
}

/// A run's rest: the step it waits at and what ends the wait.
#[derive(Debug, Clone, PartialEq)]
pub struct Rest {
    pub visit: u32,
    pub step: StepName,
    index: usize,
    pub until: DateTime<Utc>,
    pub wait_for: Option<EventMatcher>,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct DigestItems {
    count: u32,
    kept: Vec<JsonObject>,
    kept_bytes: usize,
}

impl DigestItems {
    fn first(payload: &JsonObject) -> Self {
        let mut items = DigestItems::default();
        items.join(Some(payload));
        items
    }

    fn join(&mut self, payload: Option<&JsonObject>) {
        self.count = self.count.saturating_add(1);
        if let Some(payload) = payload {
            self.kept_bytes += payload_bytes(payload);
            self.kept.push(payload.clone());
        }
    }

    /// Whether the digest lists `payload` or only counts it.
    fn keeps(&self, payload: &JsonObject, max_items: u32) -> bool {
        self.kept.len() < max_items as usize
            && self.kept_bytes + payload_bytes(payload) <= MAX_DIGEST_BYTES
    }

    fn outcome(&self) -> StepOutcome {
        StepOutcome::Digested {
            count: self.count,
            kept: u32::try_from(self.kept.len()).unwrap_or(u32::MAX),
        }
    }
}

fn payload_bytes(payload: &JsonObject) -> usize {
    Value::Object(payload.as_map().clone()).to_string().len()
}

/// A run's state; `Default` is one not started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkflowRun {
    start: Option<RunStart>,
    /// Steps started or skipped so far; the last one's visit number.
    visits: u32,
    rest: Option<Rest>,
    /// Each step's latest outcome (`Err` when skipped), read by conditions.
    results: BTreeMap<StepName, Result<StepOutcome, SkipReason>>,
    cancel_on: Vec<(StepName, EventMatcher)>,
    matched_events: BTreeSet<Uuid>,
    triggers: BTreeSet<IdempotencyKey>,
    digest: Option<DigestItems>,
    ended: Option<RunStatus>,
}

impl WorkflowRun {
    pub fn start(&self) -> Option<&RunStart> {
        self.start.as_ref()
    }

    pub fn status(&self) -> Option<RunStatus> {
        self.start.as_ref()?;
        Some(self.ended.unwrap_or(RunStatus::Waiting))
    }

    /// Where the run waits and until when; `None` once it has ended.
    pub fn rest(&self) -> Option<&Rest> {
        self.rest.as_ref()
    }

    /// The events that would end the run, by the `cancel_on` step that armed each.
    pub fn cancel_on(&self) -> &[(StepName, EventMatcher)] {
        &self.cancel_on
    }

    /// Whether a trigger with this run's digest key joins it at `now`.
    pub fn digest_open(&self, now: DateTime<Utc>) -> bool {
        self.digest_rest()
            .is_some_and(|(rest, _)| self.ended.is_none() && now < rest.until)
    }

    fn definition(&self) -> Option<&WorkflowDefinition> {
        self.start.as_ref().map(|start| &start.definition)
    }

    fn step(&self, index: usize) -> Option<&Step> {
        self.definition()?.steps().get(index)
    }

    /// The rest at the digest step, while the run waits there.
    fn digest_rest(&self) -> Option<(&Rest, &DigestStep)> {
        let rest = self.rest.as_ref()?;
        match &self.step(rest.index)?.kind {
            StepKind::Digest(digest) => Some((rest, digest)),
            _ => None,
        }
    }

    /// A value the run can read; see [`FieldRef`].
    fn read(&self, field: &FieldRef) -> Option<Value> {
        match field {
            FieldRef::Step(name, StepField::Outcome) => {
                self.results.get(name).map(|result| match result {
                    Ok(outcome) => json!(outcome.name()),
                    Err(_) => json!("skipped"),
                })
            }
            FieldRef::Step(name, StepField::NotificationId) => match self.results.get(name)? {
                Ok(StepOutcome::Sent { notification }) => {
                    Some(json!(notification.notification_id.to_string()))
                }
                _ => None,
            },
            trigger_field => {
                let start = self.start.as_ref()?;
                read_trigger(&start.recipient, &start.payload, trigger_field)
            }
        }
    }

    /// The send of a `send` step at `visit`: the payload as variables, and
    /// the digest's items once a digest has run.
    fn notification(&self, visit: u32, send: &SendStep) -> Option<NotificationToSend> {
        let start = self.start.as_ref()?;
        let mut variables = start.payload.clone();
        if let Some(digest) = &self.digest {
            let items: Vec<Value> = digest
                .kept
                .iter()
                .map(|item| Value::Object(item.as_map().clone()))
                .collect();
            variables = variables.with_entry(
                DIGEST_VARIABLE,
                json!({"items": items, "count": digest.count}),
            );
        }
        Some(NotificationToSend {
            notification_id: notification_id(start.run_id, visit),
            channels: send.channels.clone(),
            template: TemplateRef {
                key: send.template.clone(),
                version: send.version,
                locale: None,
                variables,
            },
            priority: send.priority,
        })
    }

    fn step_named(&self, name: &StepName) -> Option<&Step> {
        self.definition()?
            .steps()
            .iter()
            .find(|step| &step.name == name)
    }
}

/// A trigger's `payload.` and `recipient.` values; nothing else is known
/// before its run starts.
pub fn read_trigger(
    recipient: &Recipient,
    payload: &JsonObject,
    field: &FieldRef,
) -> Option<Value> {
    match field {
        FieldRef::Payload(path) => path.lookup(payload.as_map()).cloned(),
        FieldRef::Recipient(name) => match serde_json::to_value(recipient).ok()? {
            Value::Object(mut fields) => fields.remove(*name),
            _ => None,
        },
        FieldRef::Step(..) => None,
    }
}

/// The same id for the same run and visit in every process, so the worker
/// that requests it twice finds it requested.
pub(super) fn notification_id(run_id: WorkflowRunId, visit: u32) -> NotificationId {
    let mut hasher = Sha256::new();
    hasher.update(run_id.as_uuid().as_bytes());
    hasher.update(visit.to_be_bytes());
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    NotificationId::from(uuid::Builder::from_custom_bytes(bytes).into_uuid())
}

fn after(now: DateTime<Utc>, duration: StepDuration) -> DateTime<Utc> {
    now.checked_add_signed(duration.as_delta())
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

impl Aggregate for WorkflowRun {
    type Command = WorkflowRunCommand;
    type Event = WorkflowRunEvent;
    type Error = WorkflowRunError;

    fn apply(&mut self, event: &WorkflowRunEvent) {
        match event {
            WorkflowRunEvent::RunStarted(start) => {
                self.triggers.insert(start.trigger_id.clone());
                self.start = Some(start.clone());
            }
            WorkflowRunEvent::StepStarted { visit, step, .. } => {
                self.visits = *visit;
                self.rest = None;
                let digest = self
                    .step_named(step)
                    .is_some_and(|step| matches!(step.kind, StepKind::Digest(_)));
                if let (true, Some(start)) = (digest, &self.start) {
                    self.digest = Some(DigestItems::first(&start.payload));
                }
            }
            WorkflowRunEvent::StepCompleted { step, outcome, .. } => {
                self.rest = None;
                match outcome {
                    StepOutcome::Matched { event_id } => {
                        self.matched_events.insert(*event_id);
                    }
                    StepOutcome::Armed { matcher } => {
                        self.cancel_on.push((step.clone(), matcher.clone()));
                    }
                    _ => {}
                }
                self.results.insert(step.clone(), Ok(outcome.clone()));
            }
            WorkflowRunEvent::StepSkipped {
                visit,
                step,
                reason,
                ..
            } => {
                self.visits = *visit;
                self.rest = None;
                self.results.insert(step.clone(), Err(reason.clone()));
            }
            WorkflowRunEvent::RunWaiting {
                visit,
                step,
                until,
                wait_for,
                ..
            } => {
                let index = self
                    .definition()
                    .and_then(|definition| definition.index_of(step));
                self.rest = index.map(|index| Rest {
                    visit: *visit,
                    step: step.clone(),
                    index,
                    until: *until,
                    wait_for: wait_for.clone(),
                });
            }
            WorkflowRunEvent::DigestItemJoined {
                trigger_id,
                payload,
                ..
            } => {
                self.triggers.insert(trigger_id.clone());
                if let Some(digest) = &mut self.digest {
                    digest.join(payload.as_ref());
                }
            }
            WorkflowRunEvent::RunCancelled { .. } => {
                self.rest = None;
                self.ended = Some(RunStatus::Cancelled);
            }
            WorkflowRunEvent::RunCompleted { .. } => {
                self.rest = None;
                self.ended = Some(RunStatus::Completed);
            }
        }
    }

    fn decide(
        &self,
        command: WorkflowRunCommand,
        now: DateTime<Utc>,
    ) -> Result<Vec<WorkflowRunEvent>, WorkflowRunError> {
        let mut decision = Decision {
            run: self.clone(),
            events: Vec::new(),
            now,
        };
        match command {
            WorkflowRunCommand::Start(start) => decision.start(start)?,
            _ if self.start.is_none() => return Err(WorkflowRunError::NotStarted),
            WorkflowRunCommand::Cancel { reason } => match self.ended {
                Some(RunStatus::Completed) => return Err(WorkflowRunError::Completed),
                Some(_) => {}
                None => decision.record(WorkflowRunEvent::RunCancelled {
                    reason: CancelReason::Operator {
                        reason: reason.map(clip),
                    },
                    at: now,
                }),
            },
            _ if self.ended.is_some() => match command {
                WorkflowRunCommand::DigestItemJoined { trigger_id, .. }
                    if !self.triggers.contains(&trigger_id) =>
                {
                    return Err(WorkflowRunError::DigestClosed);
                }
                _ => {}
            },
            WorkflowRunCommand::TimerFired { visit } => decision.timer_fired(visit)?,
            WorkflowRunCommand::EventObserved(event) => decision.event_observed(&event)?,
            WorkflowRunCommand::DigestItemJoined {
                trigger_id,
                payload,
            } => decision.digest_item_joined(trigger_id, payload)?,
        }
        Ok(decision.events)
    }
}

/// One decision in progress: each event is applied as it is recorded, so
/// every step decides on the state the steps before it left.
struct Decision {
    run: WorkflowRun,
    events: Vec<WorkflowRunEvent>,
    now: DateTime<Utc>,
}

impl Decision {
    fn record(&mut self, event: WorkflowRunEvent) {
        self.run.apply(&event);
        self.events.push(event);
    }

    fn start(&mut self, command: StartRun) -> Result<(), WorkflowRunError> {
        if let Some(start) = &self.run.start {
            return if start.run_id == command.run_id && start.trigger_id == command.trigger_id {
                Ok(())
            } else {
                Err(WorkflowRunError::AlreadyStarted)
            };
        }
        let digest_key = command
            .definition
            .digest_key(|field| read_trigger(&command.recipient, &command.payload, field));
        let first = command.definition.first();
        self.record(WorkflowRunEvent::RunStarted(RunStart {
            tenant_id: command.tenant_id,
            run_id: command.run_id,
            version: command.version,
            definition: command.definition,
            recipient: command.recipient,
            payload: command.payload,
            trigger_id: command.trigger_id,
            digest_key,
            started_at: self.now,
        }));
        self.run_from(first, &command.throttle_counts)
    }

    fn timer_fired(&mut self, visit: u32) -> Result<(), WorkflowRunError> {
        let Some(rest) = self.run.rest.clone() else {
            return Ok(());
        };
        // A timer of an earlier rest, fired again after a crash, or one fired early.
        if rest.visit != visit || self.now < rest.until {
            return Ok(());
        }
        let Some(step) = self.run.step(rest.index).cloned() else {
            return Ok(());
        };
        let (outcome, next) = match &step.kind {
            StepKind::WaitFor(wait) => (StepOutcome::TimedOut, wait.on_timeout.clone()),
            StepKind::Digest(_) => (
                self.run.digest.as_ref().map_or(
                    StepOutcome::Digested { count: 0, kept: 0 },
                    DigestItems::outcome,
                ),
                self.next_in_order(rest.index),
            ),
            _ => (StepOutcome::Delayed, self.next_in_order(rest.index)),
        };
        self.complete(rest.visit, &step.name, outcome);
        self.run_from(next, &BTreeMap::new())
    }

    fn event_observed(&mut self, event: &ObservedEvent) -> Result<(), WorkflowRunError> {
        if self.run.matched_events.contains(&event.event_id) {
            return Ok(());
        }
        if let Some((step, _)) = self
            .run
            .cancel_on
            .iter()
            .find(|(_, matcher)| matcher.matches(event))
        {
            let reason = CancelReason::CancelOn {
                step: step.clone(),
                event_id: event.event_id,
            };
            self.record(WorkflowRunEvent::RunCancelled {
                reason,
                at: self.now,
            });
            return Ok(());
        }
        let Some(rest) = self.run.rest.clone() else {
            return Ok(());
        };
        if !rest
            .wait_for
            .as_ref()
            .is_some_and(|matcher| matcher.matches(event))
        {
            return Ok(());
        }
        let Some(StepKind::WaitFor(wait)) = self.run.step(rest.index).map(|step| step.kind.clone())
        else {
            return Ok(());
        };
        self.complete(
            rest.visit,
            &rest.step,
            StepOutcome::Matched {
                event_id: event.event_id,
            },
        );
        self.run_from(wait.on_match, &BTreeMap::new())
    }

    fn digest_item_joined(
        &mut self,
        trigger_id: IdempotencyKey,
        payload: JsonObject,
    ) -> Result<(), WorkflowRunError> {
        if self.run.triggers.contains(&trigger_id) {
            return Ok(());
        }
        if !self.run.digest_open(self.now) {
            return Err(WorkflowRunError::DigestClosed);
        }
        let (Some((rest, step)), Some(digest)) = (self.run.digest_rest(), &self.run.digest) else {
            return Err(WorkflowRunError::DigestClosed);
        };
        let (rest, send_at_once_when) = (rest.clone(), step.send_at_once_when);
        let kept = digest.keeps(&payload, step.max_items).then_some(payload);
        self.record(WorkflowRunEvent::DigestItemJoined {
            visit: rest.visit,
            trigger_id,
            payload: kept,
            at: self.now,
        });
        let count = self.run.digest.as_ref().map_or(0, |digest| digest.count);
        if send_at_once_when.is_some_and(|enough| count >= enough) {
            let outcome = self.run.digest.as_ref().map_or(
                StepOutcome::Digested { count, kept: 0 },
                DigestItems::outcome,
            );
            self.complete(rest.visit, &rest.step, outcome);
            let next = self.next_in_order(rest.index);
            self.run_from(next, &BTreeMap::new())?;
        }
        Ok(())
    }

    fn next_in_order(&self, index: usize) -> Target {
        self.run
            .definition()
            .map_or(Target::End, |definition| definition.next_in_order(index))
    }

    fn complete(&mut self, visit: u32, step: &StepName, outcome: StepOutcome) {
        self.record(WorkflowRunEvent::StepCompleted {
            visit,
            step: step.clone(),
            outcome,
            at: self.now,
        });
    }

    /// Runs the steps from `target` on until the run rests or ends.
    fn run_from(
        &mut self,
        mut target: Target,
        throttle_counts: &BTreeMap<StepName, u32>,
    ) -> Result<(), WorkflowRunError> {
        let now = self.now;
        loop {
            // A definition's gotos all name steps (checked when it was built
            // or read), so an unknown name cannot occur; it would end the run.
            let found = match &target {
                Target::Step(name) => self.run.definition().and_then(|definition| {
                    let index = definition.index_of(name)?;
                    Some((index, definition.steps().get(index)?.clone()))
                }),
                Target::End => None,
            };
            let Some((index, step)) = found else {
                self.record(WorkflowRunEvent::RunCompleted { at: now });
                return Ok(());
            };
            if self.run.visits >= MAX_STEP_VISITS {
                self.record(WorkflowRunEvent::RunCancelled {
                    reason: CancelReason::StepLimit {
                        visits: self.run.visits,
                    },
                    at: now,
                });
                return Ok(());
            }
            let visit = self.run.visits + 1;
            let started = WorkflowRunEvent::StepStarted {
                visit,
                step: step.name.clone(),
                at: now,
            };
            target = match &step.kind {
                StepKind::Send(send) => {
                    self.record(started);
                    let Some(notification) = self.run.notification(visit, send) else {
                        return Ok(());
                    };
                    self.complete(visit, &step.name, StepOutcome::Sent { notification });
                    self.next_in_order(index)
                }
                StepKind::Delay(delay) => match self.delay_until(delay) {
                    Err(reason) => {
                        self.skip(visit, &step.name, reason);
                        self.next_in_order(index)
                    }
                    Ok(until) if until <= now => {
                        self.record(started);
                        self.complete(visit, &step.name, StepOutcome::Delayed);
                        self.next_in_order(index)
                    }
                    Ok(until) => {
                        self.record(started);
                        self.rest(visit, &step.name, until, None);
                        return Ok(());
                    }
                },
                StepKind::Digest(digest) => {
                    self.record(started);
                    self.rest(visit, &step.name, after(now, digest.window), None);
                    return Ok(());
                }
                StepKind::WaitFor(wait) => {
                    self.record(started);
                    // A matcher whose run values are missing can match nothing: wait out the timeout.
                    let matcher = wait.event.resolve(|field| self.run.read(field)).ok();
                    self.rest(visit, &step.name, after(now, wait.timeout), matcher);
                    return Ok(());
                }
                StepKind::Branch(branch) => {
                    let chosen = branch.cases.iter().position(|case| {
                        case.when
                            .iter()
                            .all(|condition| condition.holds(|field| self.run.read(field)))
                    });
                    let goto = chosen
                        .and_then(|case| branch.cases.get(case))
                        .map_or(branch.otherwise.clone(), |case| case.goto.clone());
                    self.record(started);
                    let case = chosen.and_then(|case| u32::try_from(case).ok());
                    self.complete(
                        visit,
                        &step.name,
                        StepOutcome::Branched {
                            case,
                            goto: goto.clone(),
                        },
                    );
                    goto
                }
                StepKind::Throttle(throttle) => {
                    let runs_in_window = *throttle_counts
                        .get(&step.name)
                        .ok_or_else(|| WorkflowRunError::ThrottleCountMissing(step.name.clone()))?;
                    let key = self.throttle_key(&step.name);
                    self.record(started);
                    if runs_in_window >= throttle.limit {
                        let outcome = StepOutcome::Throttled {
                            key,
                            runs_in_window,
                        };
                        self.complete(visit, &step.name, outcome);
                        self.record(WorkflowRunEvent::RunCancelled {
                            reason: CancelReason::Throttled {
                                step: step.name.clone(),
                            },
                            at: now,
                        });
                        return Ok(());
                    }
                    let outcome = StepOutcome::Passed {
                        key,
                        runs_in_window,
                    };
                    self.complete(visit, &step.name, outcome);
                    self.next_in_order(index)
                }
                StepKind::CancelOn(spec) => {
                    match spec.resolve(|field| self.run.read(field)) {
                        Ok(matcher) => {
                            self.record(started);
                            self.complete(visit, &step.name, StepOutcome::Armed { matcher });
                        }
                        Err(field) => self.skip(visit, &step.name, SkipReason::Missing { field }),
                    }
                    self.next_in_order(index)
                }
            };
        }
    }

    fn skip(&mut self, visit: u32, step: &StepName, reason: SkipReason) {
        self.record(WorkflowRunEvent::StepSkipped {
            visit,
            step: step.clone(),
            reason,
            at: self.now,
        });
    }

    fn rest(
        &mut self,
        visit: u32,
        step: &StepName,
        until: DateTime<Utc>,
        wait_for: Option<EventMatcher>,
    ) {
        let cancel_on = self
            .run
            .cancel_on
            .iter()
            .map(|(_, matcher)| matcher.clone())
            .collect();
        self.record(WorkflowRunEvent::RunWaiting {
            visit,
            step: step.clone(),
            until,
            wait_for,
            cancel_on,
        });
    }

    fn delay_until(&self, delay: &DelayStep) -> Result<DateTime<Utc>, SkipReason> {
        let field = match delay {
            DelayStep::Duration(duration) => return Ok(after(self.now, *duration)),
            DelayStep::Until(field) => field,
        };
        let value = self.run.read(field).ok_or_else(|| SkipReason::Missing {
            field: field.clone(),
        })?;
        let until = value
            .as_str()
            .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
            .map(|until| until.with_timezone(&Utc))
            .ok_or_else(|| SkipReason::NotATime {
                field: field.clone(),
                value: value.clone(),
            })?;
        if until > after(self.now, StepDuration::MAX) {
            return Err(SkipReason::TooFarAhead {
                field: field.clone(),
                until,
            });
        }
        Ok(until)
    }

    fn throttle_key(&self, step: &StepName) -> PartitionKey {
        let checks = self.run.start.as_ref().map(|start| {
            start
                .definition
                .throttle_checks(|field| read_trigger(&start.recipient, &start.payload, field))
        });
        checks
            .into_iter()
            .flatten()
            .find(|check| &check.step == step)
            .map_or_else(|| PartitionKey::of([]), |check| check.key)
    }
}
