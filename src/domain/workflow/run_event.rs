//! The facts of a workflow run, as stored in its stream.
//!
//! Tagged by `type` like every event of the log. Step events carry `at`, the
//! decision's `now`: under a simulation's virtual clock it differs from the
//! log's `recorded_at`, and the timeline must show the run's own time.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::definition::{Target, WorkflowDefinition};
use super::event_matcher::EventMatcher;
use super::field_path::FieldRef;
use super::partition_key::PartitionKey;
use super::workflow_key::StepName;
use super::workflow_version::WorkflowVersion;
use crate::domain::domain_error::DomainError;
use crate::domain::notification_request::{Content, NotificationRequest, Recipient, TemplateRef};
use crate::domain::tagged_payload::upcast_current;
use crate::domain::values::{
    Channel, IdempotencyKey, JsonObject, NotificationId, Priority, TenantId, uuid_id,
};

uuid_id!(
    /// A workflow run's id; its stream is `workflow-run-<id>`.
    WorkflowRunId
);

// RunStarted carries the definition. Values live for one decision and one
// append, so the size is harmless; a Box would leak into every constructor.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum WorkflowRunEvent {
    #[serde(rename = "WorkflowRunStarted")]
    RunStarted(RunStart),
    #[serde(rename = "WorkflowStepStarted")]
    StepStarted {
        visit: u32,
        step: StepName,
        at: DateTime<Utc>,
    },
    #[serde(rename = "WorkflowStepCompleted")]
    StepCompleted {
        visit: u32,
        step: StepName,
        outcome: StepOutcome,
        at: DateTime<Utc>,
    },
    /// The step could not run (a value it reads is missing); the run goes on
    /// to the step after it.
    #[serde(rename = "WorkflowStepSkipped")]
    StepSkipped {
        visit: u32,
        step: StepName,
        reason: SkipReason,
        at: DateTime<Utc>,
    },
    /// The run rests at `step` until `until`, or until an event matches
    /// `wait_for` or one of `cancel_on`: what the timer table and the index
    /// of waiting runs store.
    #[serde(rename = "WorkflowRunWaiting")]
    RunWaiting {
        visit: u32,
        step: StepName,
        until: DateTime<Utc>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wait_for: Option<EventMatcher>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        cancel_on: Vec<EventMatcher>,
    },
    /// A further trigger joined the open digest. Its payload is `None` when
    /// the digest already keeps as many as it may: it is counted, not listed.
    #[serde(rename = "WorkflowDigestItemJoined")]
    DigestItemJoined {
        visit: u32,
        trigger_id: IdempotencyKey,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        payload: Option<JsonObject>,
        at: DateTime<Utc>,
    },
    #[serde(rename = "WorkflowRunCancelled")]
    RunCancelled {
        reason: CancelReason,
        at: DateTime<Utc>,
    },
    #[serde(rename = "WorkflowRunCompleted")]
    RunCompleted { at: DateTime<Utc> },
}

/// How a run began: the trigger, and the version it follows to its end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStart {
    pub tenant_id: TenantId,
    pub run_id: WorkflowRunId,
    pub version: WorkflowVersion,
    /// The version's steps, so the run's stream alone replays it (and a
    /// simulation needs nothing else), and publishing a new version never
    /// changes a run under way.
    pub definition: WorkflowDefinition,
    pub recipient: Recipient,
    pub payload: JsonObject,
    /// The trigger's idempotency key; a digest's later triggers join by theirs.
    pub trigger_id: IdempotencyKey,
    /// For a workflow with a digest: the runs of this key share one window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest_key: Option<PartitionKey>,
    pub started_at: DateTime<Utc>,
}

/// What a completed step did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StepOutcome {
    /// The notification to request; a worker sends it through the normal
    /// send path.
    Sent {
        notification: NotificationToSend,
    },
    Delayed,
    /// `count` triggers joined; the first `kept` of them are listed.
    Digested {
        count: u32,
        kept: u32,
    },
    Matched {
        event_id: Uuid,
    },
    TimedOut,
    /// `case` is the position of the case that held, `None` for otherwise.
    Branched {
        case: Option<u32>,
        goto: Target,
    },
    /// The throttle let the run on; `runs_in_window` passed before it.
    Passed {
        key: PartitionKey,
        runs_in_window: u32,
    },
    /// The throttle stopped the run, which is cancelled with it.
    Throttled {
        key: PartitionKey,
        runs_in_window: u32,
    },
    /// From here on, an event that matches ends the run.
    Armed {
        matcher: EventMatcher,
    },
}

impl StepOutcome {
    /// The name `steps.<name>.outcome` reads.
    pub fn name(&self) -> &'static str {
        match self {
            StepOutcome::Sent { .. } => "sent",
            StepOutcome::Delayed => "delayed",
            StepOutcome::Digested { .. } => "digested",
            StepOutcome::Matched { .. } => "matched",
            StepOutcome::TimedOut => "timed_out",
            StepOutcome::Branched { .. } => "branched",
            StepOutcome::Passed { .. } => "passed",
            StepOutcome::Throttled { .. } => "throttled",
            StepOutcome::Armed { .. } => "armed",
        }
    }
}

/// A notification a `send` step decided on, as data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotificationToSend {
    /// Derived from the run and the visit, so sending it again after a
    /// crash finds the notification already requested instead of making a
    /// second one.
    pub notification_id: NotificationId,
    pub channels: Vec<Channel>,
    /// Its variables are the trigger's payload, and `digest` (`items`, the
    /// payloads kept, and `count`) after a digest.
    pub template: TemplateRef,
    pub priority: Priority,
}

impl NotificationToSend {
    /// The request to send for `recipient`, the run's.
    pub fn request(&self, recipient: &Recipient) -> NotificationRequest {
        NotificationRequest {
            idempotency_key: None,
            recipient: recipient.clone(),
            channels: self.channels.clone(),
            priority: self.priority,
            content: Content::Template(self.template.clone()),
            category: None,
            schedule_at: None,
            expiry: None,
            callback_url: None,
            tags: Vec::new(),
            metadata: None,
            trace_id: None,
            source_event: None,
            attachments: Vec::new(),
            campaign_id: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SkipReason {
    /// The run has no value at the field the step reads.
    Missing { field: FieldRef },
    /// The value is not an RFC 3339 time.
    NotATime { field: FieldRef, value: Value },
    /// The time is further ahead than the longest wait.
    TooFarAhead {
        field: FieldRef,
        until: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CancelReason {
    /// An event matched the `cancel_on` of `step`.
    CancelOn { step: StepName, event_id: Uuid },
    Operator {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Over the limit of the throttle `step`.
    Throttled { step: StepName },
    /// The run went through this many steps: a loop that never ends stops here.
    StepLimit { visits: u32 },
}

impl WorkflowRunEvent {
    pub const SCHEMA_VERSION: i16 = 1;

    pub const EVENT_TYPES: [&'static str; 8] = [
        "WorkflowRunStarted",
        "WorkflowStepStarted",
        "WorkflowStepCompleted",
        "WorkflowStepSkipped",
        "WorkflowRunWaiting",
        "WorkflowDigestItemJoined",
        "WorkflowRunCancelled",
        "WorkflowRunCompleted",
    ];

    /// The log's `event_type`, equal to the payload's `type` tag.
    pub fn event_type(&self) -> &'static str {
        match self {
            WorkflowRunEvent::RunStarted(_) => "WorkflowRunStarted",
            WorkflowRunEvent::StepStarted { .. } => "WorkflowStepStarted",
            WorkflowRunEvent::StepCompleted { .. } => "WorkflowStepCompleted",
            WorkflowRunEvent::StepSkipped { .. } => "WorkflowStepSkipped",
            WorkflowRunEvent::RunWaiting { .. } => "WorkflowRunWaiting",
            WorkflowRunEvent::DigestItemJoined { .. } => "WorkflowDigestItemJoined",
            WorkflowRunEvent::RunCancelled { .. } => "WorkflowRunCancelled",
            WorkflowRunEvent::RunCompleted { .. } => "WorkflowRunCompleted",
        }
    }

    /// Reads a stored event of any schema version into today's shape.
    pub fn upcast(
        event_type: &str,
        schema_version: i16,
        payload: Value,
    ) -> Result<WorkflowRunEvent, DomainError> {
        upcast_current(
            event_type,
            schema_version,
            payload,
            &Self::EVENT_TYPES,
            Self::SCHEMA_VERSION,
        )
    }
}
