//! Workflows: multi-step notification logic (send, delay, digest, wait for
//! an event, branch, throttle, cancel on an event) whose every step is an
//! event of the run's stream (docs/workflows.md).
//!
//! Two aggregates: [`PublishedWorkflow`], a key's numbered versions, each a
//! [`WorkflowDefinition`] that [`PublishWorkflow::parse`] checked; and
//! [`WorkflowRun`], one run of one version, decided step by step with the
//! time given, its timers and the notifications it sends described as data.

mod condition;
mod definition;
mod event_matcher;
mod field_path;
mod partition_key;
mod publish_workflow;
mod published_workflow;
mod run_event;
mod step_duration;
mod template_catalog;
mod workflow_key;
mod workflow_run;
mod workflow_version;

pub use condition::{Condition, Test};
pub use definition::{
    BranchCase, BranchStep, DelayStep, DigestStep, END, SendStep, Step, StepKind, Target,
    ThrottleCheck, ThrottleStep, WaitForStep, WorkflowDefinition,
};
pub use event_matcher::{
    EventMatcher, EventMatcherSpec, MAX_MATCH_FIELDS, MatchSource, ObservedEvent,
};
pub use field_path::{FieldRef, MAX_PATH_SEGMENTS, PayloadPath, RECIPIENT_FIELDS, StepField};
pub use partition_key::PartitionKey;
pub use publish_workflow::{
    BranchInput, CaseInput, ConditionInput, DIGEST_VARIABLE, DelayInput, DigestInput, MAX_CASES,
    MAX_CONDITIONS, MAX_DIGEST_ITEMS, MAX_DIGEST_WINDOW_SECONDS, MAX_KEY_PATHS,
    MAX_SEND_AT_ONCE_WHEN, MAX_STEPS, MAX_THROTTLE_LIMIT, MatchSourceInput, MatcherInput,
    PublishWorkflow, SendInput, StepInput, ThrottleInput, WaitForInput,
};
pub use published_workflow::{PublishedWorkflow, WorkflowCommand, WorkflowEvent};
pub use run_event::{
    CancelReason, NotificationToSend, RunStart, SkipReason, StepOutcome, WorkflowRunEvent,
    WorkflowRunId,
};
pub use step_duration::StepDuration;
pub use template_catalog::TemplateCatalog;
pub use workflow_key::{StepName, WorkflowKey};
pub use workflow_run::{
    MAX_DIGEST_BYTES, MAX_STEP_VISITS, MAX_TRIGGER_PAYLOAD_BYTES, Rest, RunStatus, StartRun,
    WorkflowRun, WorkflowRunCommand, WorkflowRunError, read_trigger,
};
pub use workflow_version::WorkflowVersion;

#[cfg(test)]
mod tests;
