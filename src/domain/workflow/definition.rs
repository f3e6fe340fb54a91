//! A published workflow version: its key and its ordered, named steps.
//! [`PublishWorkflow::parse`](super::PublishWorkflow::parse) is the way in;
//! serde reads one back from an event, checking again that every step name
//! is unique and every goto lands on a step.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::condition::Condition;
use super::event_matcher::EventMatcherSpec;
use super::field_path::FieldRef;
use super::partition_key::PartitionKey;
use super::step_duration::StepDuration;
use super::workflow_key::{StepName, WorkflowKey};
use crate::domain::values::{Channel, Priority, TemplateKey, TemplateVersion};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "StoredDefinition")]
pub struct WorkflowDefinition {
    key: WorkflowKey,
    steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub name: StepName,
    #[serde(flatten)]
    pub kind: StepKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    Send(SendStep),
    Delay(DelayStep),
    Digest(DigestStep),
    WaitFor(WaitForStep),
    Branch(BranchStep),
    Throttle(ThrottleStep),
    CancelOn(EventMatcherSpec),
}

/// One notification through the normal send path: channels in order of
/// preference, a template (its latest version unless pinned), a priority.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendStep {
    pub channels: Vec<Channel>,
    pub template: TemplateKey,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<TemplateVersion>,
    pub priority: Priority,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DelayStep {
    Duration(StepDuration),
    /// Until the RFC 3339 time at a `payload.` path.
    Until(FieldRef),
}

/// Every trigger with the same key within `window` of the first joins one
/// run; the steps after it see their payloads as the `digest` variable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DigestStep {
    pub window: StepDuration,
    /// `payload.` and `recipient.` paths.
    pub key: Vec<FieldRef>,
    /// The most payloads kept; later ones are counted, not listed.
    pub max_items: u32,
    /// Closes the window early once this many triggers have joined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_at_once_when: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaitForStep {
    #[serde(flatten)]
    pub event: EventMatcherSpec,
    pub timeout: StepDuration,
    pub on_match: Target,
    pub on_timeout: Target,
}

/// The first case whose conditions all hold decides; `otherwise` when none does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BranchStep {
    pub cases: Vec<BranchCase>,
    pub otherwise: Target,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BranchCase {
    pub when: Vec<Condition>,
    pub goto: Target,
}

/// At most `limit` runs of the workflow per key per `window`; a run over the
/// limit is cancelled here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThrottleStep {
    pub limit: u32,
    pub window: StepDuration,
    /// `payload.` and `recipient.` paths.
    pub key: Vec<FieldRef>,
}

/// Where a run goes next: a step by name, or the end of the run.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    Step(StepName),
    End,
}

/// `end` names the end of a run, so no step may be called that.
pub const END: &str = "end";

impl Target {
    fn as_str(&self) -> &str {
        match self {
            Target::Step(name) => name.as_str(),
            Target::End => END,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Target {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        if raw == END {
            return Ok(Target::End);
        }
        StepName::parse(&raw)
            .map(Target::Step)
            .map_err(serde::de::Error::custom)
    }
}

impl StepKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            StepKind::Send(_) => "send",
            StepKind::Delay(_) => "delay",
            StepKind::Digest(_) => "digest",
            StepKind::WaitFor(_) => "wait_for",
            StepKind::Branch(_) => "branch",
            StepKind::Throttle(_) => "throttle",
            StepKind::CancelOn(_) => "cancel_on",
        }
    }

    /// The outcomes `steps.<name>.outcome` can read for a step of this kind.
    pub fn outcomes(&self) -> &'static [&'static str] {
        outcomes_of(self.as_str())
    }

    /// A step a run stops at until a time passes or an event arrives; every
    /// other kind is done within the decision that reaches it.
    pub fn rests(&self) -> bool {
        matches!(
            self,
            StepKind::Delay(_) | StepKind::Digest(_) | StepKind::WaitFor(_)
        )
    }
}

/// The outcomes a step of `kind` can end with. A throttled run is
/// cancelled, so `passed` is the only one a throttle step shows.
pub(crate) fn outcomes_of(kind: &str) -> &'static [&'static str] {
    match kind {
        "send" => &["sent"],
        "delay" => &["delayed", "skipped"],
        "digest" => &["digested"],
        "wait_for" => &["matched", "timed_out"],
        "branch" => &["branched"],
        "throttle" => &["passed"],
        "cancel_on" => &["armed", "skipped"],
        _ => &[],
    }
}

impl WorkflowDefinition {
    /// Checks what makes a list of steps runnable at all; the publish rules
    /// (reachability, loops, templates) are [`PublishWorkflow::parse`](super::PublishWorkflow::parse)'s.
    pub(crate) fn new(key: WorkflowKey, steps: Vec<Step>) -> Result<Self, String> {
        if steps.is_empty() {
            return Err("a workflow needs at least one step".into());
        }
        let mut names = BTreeSet::new();
        for step in &steps {
            if step.name.as_str() == END || !names.insert(step.name.clone()) {
                return Err(format!("step name {} is reserved or repeated", step.name));
            }
        }
        let definition = Self { key, steps };
        for index in 0..definition.steps.len() {
            for target in definition.successors(index) {
                if let Target::Step(name) = target
                    && !names.contains(&name)
                {
                    return Err(format!("a goto names {name}, which is not a step"));
                }
            }
        }
        Ok(definition)
    }

    pub fn key(&self) -> &WorkflowKey {
        &self.key
    }

    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    pub fn index_of(&self, name: &StepName) -> Option<usize> {
        self.steps.iter().position(|step| &step.name == name)
    }

    /// Where a run begins.
    pub fn first(&self) -> Target {
        self.steps
            .first()
            .map_or(Target::End, |step| Target::Step(step.name.clone()))
    }

    /// The step after `index` in order, or the end after the last.
    pub fn next_in_order(&self, index: usize) -> Target {
        self.steps
            .get(index + 1)
            .map_or(Target::End, |step| Target::Step(step.name.clone()))
    }

    /// Every place the step at `index` can lead.
    pub fn successors(&self, index: usize) -> Vec<Target> {
        let Some(step) = self.steps.get(index) else {
            return Vec::new();
        };
        match &step.kind {
            StepKind::WaitFor(wait) => vec![wait.on_match.clone(), wait.on_timeout.clone()],
            StepKind::Branch(branch) => branch
                .cases
                .iter()
                .map(|case| case.goto.clone())
                .chain([branch.otherwise.clone()])
                .collect(),
            _ => vec![self.next_in_order(index)],
        }
    }

    /// The workflow's digest step (there is at most one) and its index.
    pub fn digest(&self) -> Option<(usize, &DigestStep)> {
        self.steps
            .iter()
            .enumerate()
            .find_map(|(index, step)| match &step.kind {
                StepKind::Digest(digest) => Some((index, digest)),
                _ => None,
            })
    }

    /// The key that a trigger's run shares with other triggers' runs in a
    /// digest window; `None` when the workflow has no digest. `read` gives
    /// the trigger's `payload.` and `recipient.` values.
    pub fn digest_key(&self, read: impl Fn(&FieldRef) -> Option<Value>) -> Option<PartitionKey> {
        self.digest()
            .map(|(_, digest)| PartitionKey::of(key_values(&digest.key, &read)))
    }

    /// What the caller must count before starting a run: for each throttle
    /// step, its key and window.
    pub fn throttle_checks(&self, read: impl Fn(&FieldRef) -> Option<Value>) -> Vec<ThrottleCheck> {
        self.steps
            .iter()
            .filter_map(|step| match &step.kind {
                StepKind::Throttle(throttle) => Some(ThrottleCheck {
                    step: step.name.clone(),
                    key: PartitionKey::of(
                        [("step".to_owned(), Value::String(step.name.to_string()))]
                            .into_iter()
                            .chain(key_values(&throttle.key, &read)),
                    ),
                    window: throttle.window,
                }),
                _ => None,
            })
            .collect()
    }
}

/// A question the caller answers before starting a run: how many runs of
/// this workflow passed `step` with `key` in the `window` before now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleCheck {
    pub step: StepName,
    pub key: PartitionKey,
    pub window: StepDuration,
}

/// Each key path with the value it reads, `null` when missing.
fn key_values<'a>(
    paths: &'a [FieldRef],
    read: &'a impl Fn(&FieldRef) -> Option<Value>,
) -> impl Iterator<Item = (String, Value)> + 'a {
    paths
        .iter()
        .map(|path| (path.to_string(), read(path).unwrap_or(Value::Null)))
}

#[derive(Deserialize)]
struct StoredDefinition {
    key: WorkflowKey,
    steps: Vec<Step>,
}

impl TryFrom<StoredDefinition> for WorkflowDefinition {
    type Error = String;

    fn try_from(stored: StoredDefinition) -> Result<Self, String> {
        Self::new(stored.key, stored.steps)
    }
}
