//! Workflows: `publishWorkflow`, `triggerWorkflow`, `workflowRun`,
//! `workflowRuns`, `cancelWorkflowRun` (docs/workflows.md). Publishing
//! needs `admin`; triggering and cancelling `send`; reading `read`.

use async_graphql::{Context, Enum, ID, InputObject, Json, Object, SimpleObject};
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::connection::Connection;
use super::notification::NotificationNode;
use super::types::RecipientInput;
use super::{ApiError, api, parse_uuid, require, run};
use crate::api::auth::actor;
use crate::api::cursor::{self, page_size};
use crate::commands::workflows::{self, RunFilter, RunRow, StoredWorkflow, TriggerWorkflow};
use crate::domain::Scope;
use crate::domain::values::{NotificationId, TenantId};
use crate::domain::workflow::{PublishWorkflow, WorkflowRunEvent, WorkflowRunId};
use crate::eventstore::RecordedEvent;

/// A published workflow version.
pub struct WorkflowVersionNode(StoredWorkflow);

#[Object(name = "WorkflowVersion")]
impl WorkflowVersionNode {
    async fn key(&self) -> &str {
        self.0.key.as_str()
    }

    async fn version(&self) -> u32 {
        self.0.version.get()
    }

    /// The definition as stored (the shape `publishWorkflow` takes).
    async fn definition(&self) -> Json<Value> {
        Json(serde_json::to_value(&self.0.definition).unwrap_or(Value::Null))
    }

    async fn published_at(&self) -> DateTime<Utc> {
        self.0.published_at
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum WorkflowRunStatus {
    /// Resting at a delay, a digest window or a wait.
    Waiting,
    Completed,
    Cancelled,
}

impl WorkflowRunStatus {
    fn of(status: &str) -> Self {
        match status {
            "completed" => WorkflowRunStatus::Completed,
            "cancelled" => WorkflowRunStatus::Cancelled,
            _ => WorkflowRunStatus::Waiting,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            WorkflowRunStatus::Waiting => "waiting",
            WorkflowRunStatus::Completed => "completed",
            WorkflowRunStatus::Cancelled => "cancelled",
        }
    }
}

/// One event of a run's stream.
#[derive(SimpleObject)]
pub struct WorkflowRunTimelineEvent {
    /// `WorkflowRunStarted`, `WorkflowStepCompleted`, ...
    #[graphql(name = "type")]
    pub kind: String,
    /// The event's place in the log.
    pub position: i64,
    pub recorded_at: DateTime<Utc>,
    /// The step it concerns, if any.
    pub step: Option<String>,
    /// The event as stored.
    pub data: Json<Value>,
}

/// A notification a `send` step made.
pub struct WorkflowStepNotification {
    tenant_id: TenantId,
    step: String,
    visit: u32,
    notification_id: NotificationId,
}

#[Object]
impl WorkflowStepNotification {
    async fn step(&self) -> &str {
        &self.step
    }

    /// The step's visit number within the run (1, 2, ...).
    async fn visit(&self) -> u32 {
        self.visit
    }

    async fn notification_id(&self) -> ID {
        ID(self.notification_id.to_string())
    }

    /// The notification with its status; null while its send is not stored
    /// (or when it was refused).
    async fn notification(&self, ctx: &Context<'_>) -> Result<Option<NotificationNode>, ApiError> {
        let details = crate::commands::notifications::get(
            &api(ctx)?.store,
            &self.tenant_id,
            &self.notification_id,
        )
        .await?;
        Ok(details.map(NotificationNode::from_details))
    }
}

pub struct WorkflowRunNode {
    tenant_id: TenantId,
    row: RunRow,
}

#[Object(name = "WorkflowRun")]
impl WorkflowRunNode {
    async fn id(&self) -> ID {
        ID(self.row.run_id.to_string())
    }

    async fn workflow_key(&self) -> &str {
        &self.row.workflow_key
    }

    /// The version the run follows to its end.
    async fn version(&self) -> i32 {
        self.row.version
    }

    async fn status(&self) -> WorkflowRunStatus {
        WorkflowRunStatus::of(&self.row.status)
    }

    async fn recipient(&self) -> Json<Value> {
        Json(self.row.recipient.0.clone())
    }

    /// The trigger's idempotency key (or the id made for it).
    async fn trigger_id(&self) -> &str {
        &self.row.trigger_id
    }

    /// The step it rests at; null once ended.
    async fn current_step(&self) -> Option<&str> {
        self.row.current_step.as_deref()
    }

    /// Until when it rests there, in the run's own time.
    async fn waiting_until(&self) -> Option<DateTime<Utc>> {
        self.row.waiting_until
    }

    async fn started_at(&self) -> DateTime<Utc> {
        self.row.started_at
    }

    async fn updated_at(&self) -> DateTime<Utc> {
        self.row.updated_at
    }

    /// Every event of the run, in order.
    async fn timeline(&self, ctx: &Context<'_>) -> Result<Vec<WorkflowRunTimelineEvent>, ApiError> {
        let events = self.events(ctx).await?;
        Ok(events
            .into_iter()
            .map(|(recorded, event)| WorkflowRunTimelineEvent {
                kind: recorded.event_type.clone(),
                position: recorded.global_position,
                recorded_at: recorded.recorded_at,
                step: step_of(&event),
                data: Json(recorded.payload),
            })
            .collect())
    }

    /// The notifications its `send` steps made, in order.
    async fn notifications(
        &self,
        ctx: &Context<'_>,
    ) -> Result<Vec<WorkflowStepNotification>, ApiError> {
        let events = self.events(ctx).await?;
        Ok(workflows::notifications_of(&events)
            .into_iter()
            .map(|(step, visit, notification_id)| WorkflowStepNotification {
                tenant_id: self.tenant_id.clone(),
                step,
                visit,
                notification_id,
            })
            .collect())
    }
}

impl WorkflowRunNode {
    async fn events(
        &self,
        ctx: &Context<'_>,
    ) -> Result<Vec<(RecordedEvent, WorkflowRunEvent)>, ApiError> {
        Ok(workflows::timeline(
            &api(ctx)?.store,
            &self.tenant_id,
            WorkflowRunId::from(self.row.run_id),
        )
        .await?)
    }
}

fn step_of(event: &WorkflowRunEvent) -> Option<String> {
    match event {
        WorkflowRunEvent::StepStarted { step, .. }
        | WorkflowRunEvent::StepCompleted { step, .. }
        | WorkflowRunEvent::StepSkipped { step, .. }
        | WorkflowRunEvent::RunWaiting { step, .. } => Some(step.as_str().to_string()),
        _ => None,
    }
}

#[derive(InputObject, Default)]
pub struct WorkflowRunFilter {
    pub workflow_key: Option<String>,
    pub status: Option<WorkflowRunStatus>,
}

/// What a trigger did for one recipient.
#[derive(SimpleObject)]
pub struct TriggeredWorkflowRun {
    pub run: WorkflowRunNode,
    /// It joined an open digest's run instead of starting one.
    pub joined_digest: bool,
}

#[derive(Default)]
pub struct WorkflowsQuery;

#[Object]
impl WorkflowsQuery {
    /// One run with its timeline (requires `read`); null when the tenant
    /// has no such run.
    async fn workflow_run(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> Result<Option<WorkflowRunNode>, ApiError> {
        let principal = require(ctx, Scope::Read)?;
        let run_id = WorkflowRunId::from(parse_uuid("id", &id, "workflow run")?);
        let row = workflows::run_row(api(ctx)?.store.pool(), &principal.tenant_id, run_id).await?;
        Ok(row.map(|row| WorkflowRunNode {
            tenant_id: principal.tenant_id.clone(),
            row,
        }))
    }

    /// The tenant's runs, newest first (requires `read`).
    async fn workflow_runs(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
        filter: Option<WorkflowRunFilter>,
    ) -> Result<Connection<WorkflowRunNode>, ApiError> {
        let principal = require(ctx, Scope::Read)?;
        let first = page_size("first", first.into())?;
        let after = cursor::decode::<uuid::Uuid>(after.as_deref())?;
        let filter = filter.unwrap_or_default();
        let filter = RunFilter {
            workflow_key: filter.workflow_key,
            status: filter.status.map(|status| status.as_str().to_string()),
        };
        let page = workflows::runs(
            api(ctx)?.store.pool(),
            &principal.tenant_id,
            &filter,
            first,
            after,
        )
        .await?;
        Ok(Connection::page(
            page,
            |row| row.run_id,
            |row| WorkflowRunNode {
                tenant_id: principal.tenant_id.clone(),
                row,
            },
        ))
    }
}

#[derive(Default)]
pub struct WorkflowsMutation;

#[Object]
impl WorkflowsMutation {
    /// Publishes a workflow definition (the JSON of docs/workflows.md) as
    /// its key's next version, or returns the latest version when the steps
    /// are the same (requires `admin`). Every refusal is a `VALIDATION`
    /// error on its field (`steps[2].send.template`).
    async fn publish_workflow(
        &self,
        ctx: &Context<'_>,
        definition: Json<Value>,
    ) -> Result<WorkflowVersionNode, ApiError> {
        let principal = require(ctx, Scope::Admin)?;
        let input: PublishWorkflow = serde_json::from_value(definition.0)
            .map_err(|error| ApiError::field("definition", error.to_string()))?;
        let stored = run(ctx, principal, input, workflows::publish).await?;
        Ok(WorkflowVersionNode(stored))
    }

    /// Starts a run of the latest version for each recipient, or joins the
    /// open digest of its key (requires `send`). The same `idempotencyKey`
    /// gives the same runs back.
    async fn trigger_workflow(
        &self,
        ctx: &Context<'_>,
        key: String,
        recipients: Vec<RecipientInput>,
        payload: Option<Json<Value>>,
        idempotency_key: Option<String>,
    ) -> Result<Vec<TriggeredWorkflowRun>, ApiError> {
        let principal = require(ctx, Scope::Send)?;
        let api = api(ctx)?;
        let input = TriggerWorkflow {
            key: Some(key),
            recipients: recipients.into_iter().map(Into::into).collect(),
            payload: payload.map(|payload| payload.0),
            idempotency_key,
        };
        let triggered = workflows::trigger(
            &api.store,
            &principal.tenant_id,
            input,
            &api.workflow_settings(),
            &actor(principal),
        )
        .await?;
        Ok(triggered
            .into_iter()
            .map(|triggered| TriggeredWorkflowRun {
                run: WorkflowRunNode {
                    tenant_id: principal.tenant_id.clone(),
                    row: triggered.run,
                },
                joined_digest: triggered.joined_digest,
            })
            .collect())
    }

    /// Cancels a run (requires `send`); a cancelled run stays cancelled, a
    /// completed one is a `CONFLICT`.
    async fn cancel_workflow_run(
        &self,
        ctx: &Context<'_>,
        id: ID,
        reason: Option<String>,
    ) -> Result<WorkflowRunNode, ApiError> {
        let principal = require(ctx, Scope::Send)?;
        let api = api(ctx)?;
        let run_id = WorkflowRunId::from(parse_uuid("id", &id, "workflow run")?);
        let row = workflows::cancel(
            &api.store,
            &principal.tenant_id,
            run_id,
            reason,
            &api.workflow_settings(),
            &actor(principal),
        )
        .await?;
        Ok(WorkflowRunNode {
            tenant_id: principal.tenant_id.clone(),
            row,
        })
    }
}
