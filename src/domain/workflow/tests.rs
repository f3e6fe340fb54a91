//! Specifications of the definition rules and of both aggregates, and a
//! property test of the run's state machine.

use std::collections::BTreeMap;

use serde_json::Value;
use uuid::Uuid;

use super::*;
use crate::domain::ValidationErrors;
use crate::domain::notification_request::Recipient;
use crate::domain::template::{VariableSpec, VariableType};
use crate::domain::test_fixtures::{t0, tenant};
use crate::domain::values::{
    EmailAddress, ExternalEventType, IdempotencyKey, JsonObject, RecipientId, TemplateKey,
    TemplateVersion,
};

mod parse;
mod properties;
mod published;
mod run;

type Catalog = BTreeMap<TemplateKey, BTreeMap<TemplateVersion, BTreeMap<String, VariableSpec>>>;

/// `comment` (v1, v2), `comment_digest` (requires `digest`) and
/// `digest_as_text` (declares `digest` as a string).
fn catalog() -> Catalog {
    let variables = |digest: Option<(VariableType, bool)>| {
        let mut variables = BTreeMap::new();
        if let Some((kind, required)) = digest {
            variables.insert(DIGEST_VARIABLE.to_owned(), VariableSpec { kind, required });
        }
        variables
    };
    let versions = |specs: Vec<BTreeMap<String, VariableSpec>>| {
        specs
            .into_iter()
            .enumerate()
            .map(|(n, spec)| (TemplateVersion::parse(n as u32 + 1).unwrap(), spec))
            .collect::<BTreeMap<_, _>>()
    };
    [
        ("comment", versions(vec![variables(None), variables(None)])),
        (
            "comment_digest",
            versions(vec![variables(Some((VariableType::Object, true)))]),
        ),
        (
            "digest_as_text",
            versions(vec![variables(Some((VariableType::String, false)))]),
        ),
    ]
    .into_iter()
    .map(|(key, versions)| (TemplateKey::parse(key).unwrap(), versions))
    .collect()
}

fn input(value: Value) -> PublishWorkflow {
    serde_json::from_value(value).unwrap()
}

fn workflow(value: Value) -> WorkflowDefinition {
    input(value).parse(&catalog()).unwrap()
}

fn refusals(value: Value) -> ValidationErrors {
    input(value).parse(&catalog()).unwrap_err()
}

fn step(name: &str) -> StepName {
    StepName::parse(name).unwrap()
}

fn object(value: Value) -> JsonObject {
    JsonObject::parse(value, MAX_TRIGGER_PAYLOAD_BYTES).unwrap()
}

fn key(text: &str) -> IdempotencyKey {
    IdempotencyKey::parse(text).unwrap()
}

fn recipient() -> Recipient {
    Recipient {
        id: Some(RecipientId::parse("user-1").unwrap()),
        email: Some(EmailAddress::parse("user@x.com").unwrap()),
        ..Recipient::default()
    }
}

fn run_id() -> WorkflowRunId {
    WorkflowRunId::from(Uuid::from_u128(0x0199_f10e))
}

fn start_with(
    definition: WorkflowDefinition,
    payload: Value,
    throttle_counts: &[(&str, u32)],
) -> WorkflowRunCommand {
    WorkflowRunCommand::Start(StartRun {
        tenant_id: tenant(),
        run_id: run_id(),
        version: WorkflowVersion::FIRST,
        definition,
        recipient: recipient(),
        payload: object(payload),
        trigger_id: key("trigger-1"),
        throttle_counts: throttle_counts
            .iter()
            .map(|(name, count)| (step(name), *count))
            .collect(),
    })
}

fn start(definition: WorkflowDefinition, payload: Value) -> WorkflowRunCommand {
    start_with(definition, payload, &[])
}

fn observed(event_id: u128, event_type: &str, payload: Value) -> WorkflowRunCommand {
    WorkflowRunCommand::EventObserved(ObservedEvent {
        event_id: Uuid::from_u128(event_id),
        event_type: ExternalEventType::parse(event_type).unwrap(),
        payload: object(payload),
    })
}

fn joined(trigger_id: &str, payload: Value) -> WorkflowRunCommand {
    WorkflowRunCommand::DigestItemJoined {
        trigger_id: key(trigger_id),
        payload: object(payload),
    }
}

fn timer(visit: u32) -> WorkflowRunCommand {
    WorkflowRunCommand::TimerFired { visit }
}

/// The run after `commands`, each decided at its time, and every event recorded.
fn run_through(
    commands: impl IntoIterator<Item = (chrono::DateTime<chrono::Utc>, WorkflowRunCommand)>,
) -> (WorkflowRun, Vec<WorkflowRunEvent>) {
    use crate::domain::Aggregate;
    let mut run = WorkflowRun::default();
    let mut log = Vec::new();
    for (now, command) in commands {
        let events = run.decide(command, now).unwrap();
        for event in &events {
            run.apply(event);
        }
        log.extend(events);
    }
    (run, log)
}

fn event_types(events: &[WorkflowRunEvent]) -> Vec<&'static str> {
    events.iter().map(WorkflowRunEvent::event_type).collect()
}
