//! Workflows (docs/workflows.md): publish a version, trigger runs, and move
//! runs along (a timer fired, an event observed, an operator's cancel).
//!
//! Versions live in `workflow-<tenant>:<key>` streams, as templates do; each
//! run in `workflow-run-<uuid>`. Every command goes through the one
//! pipeline, and the tables a worker or a read needs right after it (the
//! `workflows` and `workflow_versions` of a publish; a run's row, its timer,
//! the events it waits for, its open digest and its throttle passes) are
//! written in the append's transaction.
//!
//! A `send` step is sent before the decision that made it is appended, with
//! the notification id the domain derives from the run and the visit: a
//! crash or a lost race before the append leaves the run where it was, the
//! next attempt decides the same step again and finds the notification
//! already made (`notifications::send_as`), so nothing is sent twice.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::notifications::{self, SendPolicy};
use super::pipeline::{
    Applied, Executed, Loaded, Step, Stream, Transaction, load, retry_on_conflict,
};
use super::{Actor, CommandError};
use crate::domain::template::VariableSpec;
use crate::domain::values::{
    Channel, IdempotencyKey, JsonObject, NotificationId, TemplateKey, TemplateVersion, TenantId,
};
use crate::domain::workflow::{
    FieldRef, MAX_TRIGGER_PAYLOAD_BYTES, NotificationToSend, ObservedEvent, PublishWorkflow,
    PublishedWorkflow, RunStatus, StartRun, StepKind, StepOutcome, WorkflowCommand,
    WorkflowDefinition, WorkflowEvent, WorkflowKey, WorkflowRun, WorkflowRunCommand,
    WorkflowRunError, WorkflowRunEvent, WorkflowRunId, WorkflowVersion, read_trigger,
};
use crate::domain::{
    Aggregate, DomainError, Recipient, RecipientInput, SendNotification, TemplateRefInput,
    ValidationErrors,
};
use crate::eventstore::EventStore;

/// The most recipients one trigger names: one run each.
pub const MAX_TRIGGER_RECIPIENTS: usize = 100;

/// `[workflows]`: how the workflow worker claims timers, and how fast a
/// run's rests pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkflowsConfig {
    /// A rest (a delay, a digest window, a wait's timeout) lasts this
    /// fraction of its length: 1 in production; a test sets 0.0005 so a
    /// one-hour delay passes in under 2 s. The run's own times (`until`,
    /// each event's `at`) are not scaled.
    pub time_scale: f64,
    /// The longest wait between two looks for due timers and new events.
    pub poll_interval_ms: u64,
    /// Timers claimed per look.
    pub batch: u32,
    /// A claimed timer not fired within this time is claimed again.
    pub lease_seconds: u64,
}

impl Default for WorkflowsConfig {
    fn default() -> Self {
        WorkflowsConfig {
            time_scale: 1.0,
            poll_interval_ms: 1_000,
            batch: 100,
            lease_seconds: 60,
        }
    }
}

impl WorkflowsConfig {
    /// When a rest from `now` until `until` falls due, the time scale applied.
    pub fn due_at(&self, now: DateTime<Utc>, until: DateTime<Utc>) -> DateTime<Utc> {
        let scale = if self.time_scale.is_finite() {
            self.time_scale.clamp(0.0, 1.0)
        } else {
            1.0
        };
        if scale >= 1.0 || until <= now {
            return until;
        }
        let millis = (until - now).num_milliseconds() as f64 * scale;
        now + TimeDelta::milliseconds(millis as i64)
    }
}

/// What the workflow commands need besides their input: the sends' policy
/// and the time scale of rests.
#[derive(Clone)]
pub struct WorkflowSettings {
    pub policy: SendPolicy,
    pub config: WorkflowsConfig,
}

pub fn stream_id(tenant_id: &TenantId, key: &WorkflowKey) -> String {
    format!("workflow-{tenant_id}:{key}")
}

pub fn run_stream_id(run_id: WorkflowRunId) -> String {
    format!("workflow-run-{run_id}")
}

/// One published version, whole.
#[derive(Debug, Clone)]
pub struct StoredWorkflow {
    pub key: WorkflowKey,
    pub version: WorkflowVersion,
    pub definition: WorkflowDefinition,
    pub published_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct VersionRow {
    workflow_key: String,
    version: i32,
    definition: Json<WorkflowDefinition>,
    published_at: DateTime<Utc>,
}

impl TryFrom<VersionRow> for StoredWorkflow {
    type Error = sqlx::Error;

    fn try_from(row: VersionRow) -> Result<Self, sqlx::Error> {
        let corrupt = |what: &str| sqlx::Error::Decode(format!("workflow_versions: {what}").into());
        Ok(StoredWorkflow {
            key: WorkflowKey::parse(&row.workflow_key).map_err(|_| corrupt("workflow_key"))?,
            version: u32::try_from(row.version)
                .ok()
                .and_then(|v| WorkflowVersion::parse(v).ok())
                .ok_or_else(|| corrupt("version"))?,
            definition: row.definition.0,
            published_at: row.published_at,
        })
    }
}

/// Publishes `input` as the key's next version, or returns the latest
/// version when it has the same steps. Templates are checked against the
/// tenant's published ones.
pub async fn publish(
    store: &EventStore,
    tenant_id: &TenantId,
    input: PublishWorkflow,
    actor: &Actor,
) -> Result<StoredWorkflow, CommandError> {
    let catalog = template_catalog(store.pool(), tenant_id, &input).await?;
    let definition = input.parse(&catalog)?;
    let key = definition.key().clone();
    let stream = Stream::new(store, stream_id(tenant_id, &key), tenant_id, actor);
    let executed = stream
        .execute(
            |workflow: &PublishedWorkflow| {
                let command = WorkflowCommand::Publish {
                    tenant_id: tenant_id.clone(),
                    definition: definition.clone(),
                };
                Ok(workflow.decide(command, Utc::now())?)
            },
            |tx, applied| {
                Box::pin(async move {
                    let mut stored = None;
                    for event in &applied.events {
                        stored = Some(write_version(tx.connection(), event).await?);
                    }
                    Ok(stored)
                })
            },
        )
        .await?;
    match executed {
        Executed::Appended(stored) => stored,
        Executed::Unchanged(_) => latest(store.pool(), tenant_id, &key).await?,
    }
    .ok_or(CommandError::NotFound("workflow"))
}

/// A published template version's key, number and declared variables.
type TemplateVariablesRow = (String, i32, Option<Json<BTreeMap<String, VariableSpec>>>);

/// The declared variables of each version of the templates `input` names.
async fn template_catalog(
    pool: &PgPool,
    tenant_id: &TenantId,
    input: &PublishWorkflow,
) -> Result<
    BTreeMap<TemplateKey, BTreeMap<TemplateVersion, BTreeMap<String, VariableSpec>>>,
    CommandError,
> {
    let named: Vec<String> = input
        .steps
        .iter()
        .filter_map(|step| step.send.as_ref()?.template.clone())
        .collect();
    let mut catalog: BTreeMap<TemplateKey, BTreeMap<TemplateVersion, _>> = BTreeMap::new();
    if named.is_empty() {
        return Ok(catalog);
    }
    let rows: Vec<TemplateVariablesRow> = sqlx::query_as(
        "SELECT template_key, version, definition -> 'variables' FROM template_versions \
         WHERE tenant_id = $1 AND template_key = ANY($2)",
    )
    .bind(tenant_id.as_str())
    .bind(&named)
    .fetch_all(pool)
    .await?;
    for (key, version, variables) in rows {
        let (Ok(key), Some(version)) = (
            TemplateKey::parse(&key),
            u32::try_from(version)
                .ok()
                .and_then(|v| TemplateVersion::parse(v).ok()),
        ) else {
            continue;
        };
        catalog
            .entry(key)
            .or_default()
            .insert(version, variables.map(|v| v.0).unwrap_or_default());
    }
    Ok(catalog)
}

async fn write_version(
    conn: &mut PgConnection,
    event: &WorkflowEvent,
) -> Result<StoredWorkflow, sqlx::Error> {
    let WorkflowEvent::Published {
        tenant_id,
        key,
        version,
        definition,
        published_at,
    } = event;
    let number = i32::try_from(version.get())
        .map_err(|_| sqlx::Error::Protocol("workflow version out of range".into()))?;
    sqlx::query(
        "INSERT INTO workflows (tenant_id, workflow_key, latest_version, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $4) \
         ON CONFLICT (tenant_id, workflow_key) DO UPDATE \
             SET latest_version = EXCLUDED.latest_version, updated_at = EXCLUDED.updated_at",
    )
    .bind(tenant_id.as_str())
    .bind(key.as_str())
    .bind(number)
    .bind(published_at)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO workflow_versions (tenant_id, workflow_key, version, definition, published_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(tenant_id.as_str())
    .bind(key.as_str())
    .bind(number)
    .bind(Json(definition))
    .bind(published_at)
    .execute(&mut *conn)
    .await?;
    Ok(StoredWorkflow {
        key: key.clone(),
        version: *version,
        definition: definition.clone(),
        published_at: *published_at,
    })
}

/// The key's latest published version.
pub async fn latest(
    pool: &PgPool,
    tenant_id: &TenantId,
    key: &WorkflowKey,
) -> Result<Option<StoredWorkflow>, sqlx::Error> {
    let row: Option<VersionRow> = sqlx::query_as(
        "SELECT v.workflow_key, v.version, v.definition, v.published_at \
         FROM workflows w JOIN workflow_versions v \
           ON v.tenant_id = w.tenant_id AND v.workflow_key = w.workflow_key \
          AND v.version = w.latest_version \
         WHERE w.tenant_id = $1 AND w.workflow_key = $2",
    )
    .bind(tenant_id.as_str())
    .bind(key.as_str())
    .fetch_optional(pool)
    .await?;
    row.map(StoredWorkflow::try_from).transpose()
}

/// A trigger as given: the workflow, whom it runs for, and the payload its
/// steps read.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TriggerWorkflow {
    pub key: Option<String>,
    #[serde(default)]
    pub recipients: Vec<RecipientInput>,
    pub payload: Option<Value>,
    /// The same key (for the same recipient) gives the same run back.
    pub idempotency_key: Option<String>,
}

/// What a trigger did for one recipient.
#[derive(Debug, Clone)]
pub struct Triggered {
    pub run: RunRow,
    /// The trigger joined an open digest's run instead of starting one.
    pub joined_digest: bool,
}

struct ParsedTrigger {
    key: WorkflowKey,
    recipients: Vec<Recipient>,
    payload: JsonObject,
    idempotency_key: Option<IdempotencyKey>,
}

impl TriggerWorkflow {
    fn parse(self) -> Result<ParsedTrigger, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let key = errors.required("key", self.key.as_deref(), WorkflowKey::parse);
        if self.recipients.is_empty() {
            errors.add("recipients", "at least one recipient is required");
        }
        if self.recipients.len() > MAX_TRIGGER_RECIPIENTS {
            errors.add(
                "recipients",
                format!("at most {MAX_TRIGGER_RECIPIENTS} recipients"),
            );
        }
        let mut recipients = Vec::with_capacity(self.recipients.len());
        for (index, input) in self.recipients.into_iter().enumerate() {
            match input.parse_alone() {
                Ok(recipient) => recipients.push(recipient),
                Err(refused) => {
                    for error in refused.errors() {
                        let field = error.path.strip_prefix("recipient.").unwrap_or(&error.path);
                        errors.add(
                            format!("recipients[{index}].{field}"),
                            error.message.clone(),
                        );
                    }
                }
            }
        }
        let payload = match JsonObject::parse(
            self.payload
                .unwrap_or_else(|| Value::Object(Default::default())),
            MAX_TRIGGER_PAYLOAD_BYTES,
        ) {
            Ok(payload) => Some(payload),
            Err(error) => {
                errors.add("payload", error.to_string());
                None
            }
        };
        let idempotency_key = errors.optional(
            "idempotency_key",
            self.idempotency_key.as_deref(),
            IdempotencyKey::parse,
        );
        match (key, payload) {
            (Some(key), Some(payload)) if errors.is_empty() => Ok(ParsedTrigger {
                key,
                recipients,
                payload,
                idempotency_key,
            }),
            _ => Err(errors),
        }
    }
}

/// Starts a run of the key's latest version for each recipient (or joins
/// the open digest of its digest key). A repeated idempotency key gives the
/// same runs back.
pub async fn trigger(
    store: &EventStore,
    tenant_id: &TenantId,
    input: TriggerWorkflow,
    settings: &WorkflowSettings,
    actor: &Actor,
) -> Result<Vec<Triggered>, CommandError> {
    let trigger = input.parse()?;
    let workflow = load::<PublishedWorkflow>(store, &stream_id(tenant_id, &trigger.key)).await?;
    let Some((version, definition)) = workflow.state.latest() else {
        return Err(CommandError::NotFound("workflow"));
    };
    let mut triggered = Vec::with_capacity(trigger.recipients.len());
    for recipient in &trigger.recipients {
        let (run_id, trigger_id) = match &trigger.idempotency_key {
            Some(key) => (
                derived_run_id(tenant_id, &trigger.key, key, recipient),
                key.clone(),
            ),
            None => {
                let run_id = WorkflowRunId::new();
                let trigger_id = IdempotencyKey::parse(&run_id.to_string())
                    .map_err(|_| CommandError::NotFound("trigger id"))?;
                (run_id, trigger_id)
            }
        };
        // The same trigger again: the run it started.
        if let Some(run) = run_row(store.pool(), tenant_id, run_id).await? {
            triggered.push(Triggered {
                run,
                joined_digest: false,
            });
            continue;
        }
        let read = |field: &FieldRef| read_trigger(recipient, &trigger.payload, field);
        if let Some(digest_key) = definition.digest_key(read) {
            let open =
                open_digest(store.pool(), tenant_id, &trigger.key, digest_key.as_str()).await?;
            if let Some(open) = open {
                let command = WorkflowRunCommand::DigestItemJoined {
                    trigger_id: trigger_id.clone(),
                    payload: trigger.payload.clone(),
                };
                match advance(store, settings, tenant_id, open, command, Utc::now(), actor).await {
                    Ok(_) => {
                        if let Some(run) = run_row(store.pool(), tenant_id, open).await? {
                            triggered.push(Triggered {
                                run,
                                joined_digest: true,
                            });
                            continue;
                        }
                    }
                    // The window closed meanwhile: this trigger starts a run of its own.
                    Err(CommandError::Domain(DomainError::InvalidCommand(DIGEST_CLOSED))) => {}
                    Err(error) => return Err(error),
                }
            }
        }
        let now = Utc::now();
        let mut throttle_counts = BTreeMap::new();
        for check in definition.throttle_checks(read) {
            let since = now - check.window.as_delta();
            let count: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM workflow_throttle_passes \
                 WHERE tenant_id = $1 AND workflow_key = $2 AND step = $3 \
                   AND throttle_key = $4 AND passed_at > $5",
            )
            .bind(tenant_id.as_str())
            .bind(trigger.key.as_str())
            .bind(check.step.as_str())
            .bind(check.key.as_str())
            .bind(since)
            .fetch_one(store.pool())
            .await?;
            throttle_counts.insert(check.step, u32::try_from(count).unwrap_or(u32::MAX));
        }
        let command = WorkflowRunCommand::Start(StartRun {
            tenant_id: tenant_id.clone(),
            run_id,
            version,
            definition: definition.clone(),
            recipient: recipient.clone(),
            payload: trigger.payload.clone(),
            trigger_id,
            throttle_counts,
        });
        advance(store, settings, tenant_id, run_id, command, now, actor).await?;
        let run = run_row(store.pool(), tenant_id, run_id)
            .await?
            .ok_or(CommandError::NotFound("workflow run"))?;
        triggered.push(Triggered {
            run,
            joined_digest: false,
        });
    }
    Ok(triggered)
}

/// The same run for the same tenant, workflow, idempotency key and recipient.
fn derived_run_id(
    tenant_id: &TenantId,
    key: &WorkflowKey,
    idempotency_key: &IdempotencyKey,
    recipient: &Recipient,
) -> WorkflowRunId {
    let mut hasher = Sha256::new();
    for part in [
        tenant_id.as_str(),
        key.as_str(),
        idempotency_key.as_str(),
        &serde_json::to_string(recipient).unwrap_or_default(),
    ] {
        hasher.update(part.as_bytes());
        hasher.update([0u8]);
    }
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    WorkflowRunId::from(uuid::Builder::from_custom_bytes(bytes).into_uuid())
}

const DIGEST_CLOSED: &str = "the workflow run has no open digest window";

fn run_error(error: WorkflowRunError) -> CommandError {
    CommandError::Domain(DomainError::InvalidCommand(match error {
        WorkflowRunError::NotStarted => return CommandError::NotFound("workflow run"),
        WorkflowRunError::AlreadyStarted => "the workflow run was started by another trigger",
        WorkflowRunError::Completed => "the workflow run has completed",
        WorkflowRunError::DigestClosed => DIGEST_CLOSED,
        WorkflowRunError::ThrottleCountMissing(_) => "a throttle step's run count is missing",
    }))
}

/// What a command on a run led to.
#[derive(Debug, Clone, PartialEq)]
pub enum Advanced {
    /// Nothing to record: a stale timer, an event already seen, a retry.
    Unchanged,
    /// Events appended; the run's status after them.
    Appended { status: Option<RunStatus> },
}

/// One decision on a run at `now`: decide, send the `send` steps it made,
/// append with the run's tables; again from the start after a lost race.
async fn advance(
    store: &EventStore,
    settings: &WorkflowSettings,
    tenant_id: &TenantId,
    run_id: WorkflowRunId,
    command: WorkflowRunCommand,
    now: DateTime<Utc>,
    actor: &Actor,
) -> Result<Advanced, CommandError> {
    let stream = Stream::new(store, run_stream_id(run_id), tenant_id, actor);
    let keep = run_tables_keeper(&settings.config);
    let (stream, command, keep) = (&stream, &command, &keep);
    retry_on_conflict(|| {
        Box::pin(async move {
            let loaded: Loaded<WorkflowRun> = stream.load().await?;
            if let Some(start) = loaded.state.start()
                && &start.tenant_id != tenant_id
            {
                return Err(CommandError::NotFound("workflow run"));
            }
            let events = loaded
                .state
                .decide(command.clone(), now)
                .map_err(run_error)?;
            if events.is_empty() {
                return Ok(Advanced::Unchanged);
            }
            let mut after = loaded.state.clone();
            for event in &events {
                after.apply(event);
            }
            if let Some(start) = after.start() {
                for event in &events {
                    if let WorkflowRunEvent::StepCompleted {
                        outcome: StepOutcome::Sent { notification },
                        step,
                        ..
                    } = event
                    {
                        send_step(store, settings, tenant_id, &start.recipient, notification, actor)
                            .await
                            .inspect_err(|error| {
                                tracing::warn!(%run_id, %step, %error, "a workflow send failed; the run stays where it was");
                            })?;
                    }
                }
            }
            let status = after.status();
            stream.append(loaded, events, keep).await?;
            Ok(Advanced::Appended { status })
        })
    })
    .await
}

/// The pipeline's table hook of every run command.
fn run_tables_keeper<'k>(
    config: &'k WorkflowsConfig,
) -> impl for<'c> Fn(&'c mut Transaction<'k>, &'c Applied<WorkflowRun>) -> Step<'c, ()> + Sync + 'k
{
    move |tx, applied| Box::pin(keep_run_tables(tx, applied, config))
}

/// Sends a `send` step's notification through the normal send path under
/// its derived id. A send refused for good (a suppressed address is not a
/// refusal: it makes a SUPPRESSED notification) is logged and the run goes
/// on; a database error leaves the decision unappended, to be tried again.
async fn send_step(
    store: &EventStore,
    settings: &WorkflowSettings,
    tenant_id: &TenantId,
    recipient: &Recipient,
    notification: &NotificationToSend,
    actor: &Actor,
) -> Result<(), CommandError> {
    let input = send_input(recipient, notification);
    match notifications::send_as(
        store,
        tenant_id,
        notification.notification_id,
        input,
        &settings.policy,
        actor,
    )
    .await
    {
        Ok(_) => Ok(()),
        Err(
            error @ (CommandError::Store(_)
            | CommandError::Database(_)
            | CommandError::CorruptEvent { .. }),
        ) => Err(error),
        Err(refused) => {
            tracing::warn!(
                notification_id = %notification.notification_id,
                error = %refused,
                "a workflow's notification was refused"
            );
            metrics::counter!("workflow_sends_refused_total").increment(1);
            Ok(())
        }
    }
}

/// The send input of a step's notification for the run's recipient.
fn send_input(recipient: &Recipient, notification: &NotificationToSend) -> SendNotification {
    let recipient: RecipientInput = serde_json::to_value(recipient)
        .ok()
        .and_then(|value| serde_json::from_value(value).ok())
        .unwrap_or_default();
    let template = &notification.template;
    SendNotification {
        recipient,
        channels: notification
            .channels
            .iter()
            .map(|channel: &Channel| crate::domain::Given::Typed(*channel))
            .collect(),
        priority: Some(crate::domain::Given::Typed(notification.priority)),
        template: Some(TemplateRefInput {
            key: Some(template.key.as_str().to_string()),
            version: template.version.map(TemplateVersion::get),
            locale: template.locale.as_ref().map(|l| l.as_str().to_string()),
            variables: Some(Value::Object(template.variables.as_map().clone())),
        }),
        ..SendNotification::default()
    }
}

/// Writes the run's row, timer, waits, open digest and throttle passes as
/// `applied` leaves them.
async fn keep_run_tables(
    tx: &mut Transaction<'_>,
    applied: &Applied<WorkflowRun>,
    config: &WorkflowsConfig,
) -> Result<(), CommandError> {
    let state = &applied.state;
    let Some(start) = state.start() else {
        return Ok(());
    };
    let run_id = start.run_id.as_uuid();
    let tenant = start.tenant_id.as_str();
    let key = start.definition.key().as_str();
    let now = Utc::now();
    let conn = tx.connection();
    let status = match state.status() {
        Some(RunStatus::Completed) => "completed",
        Some(RunStatus::Cancelled) => "cancelled",
        _ => "waiting",
    };
    let rest = state.rest().filter(|_| status == "waiting");
    sqlx::query(
        "INSERT INTO workflow_runs (run_id, tenant_id, workflow_key, version, status, recipient, \
             trigger_id, current_step, waiting_until, stream_version, started_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
         ON CONFLICT (run_id) DO UPDATE SET status = EXCLUDED.status, \
             current_step = EXCLUDED.current_step, waiting_until = EXCLUDED.waiting_until, \
             stream_version = EXCLUDED.stream_version, updated_at = EXCLUDED.updated_at",
    )
    .bind(run_id)
    .bind(tenant)
    .bind(key)
    .bind(i32::try_from(start.version.get()).unwrap_or(i32::MAX))
    .bind(status)
    .bind(Json(&start.recipient))
    .bind(start.trigger_id.as_str())
    .bind(rest.map(|rest| rest.step.as_str()))
    .bind(rest.map(|rest| rest.until))
    .bind(applied.version)
    .bind(start.started_at)
    .bind(now)
    .execute(&mut *conn)
    .await?;

    // The timer: one per run, for the rest it is at.
    match rest {
        Some(rest) => {
            sqlx::query(
                "INSERT INTO workflow_timers (run_id, tenant_id, visit, until, due_at) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (run_id) DO UPDATE SET visit = EXCLUDED.visit, \
                     until = EXCLUDED.until, due_at = EXCLUDED.due_at, \
                     leased_until = NULL, lease_owner = NULL",
            )
            .bind(run_id)
            .bind(tenant)
            .bind(i32::try_from(rest.visit).unwrap_or(i32::MAX))
            .bind(rest.until)
            .bind(config.due_at(now, rest.until))
            .execute(&mut *conn)
            .await?;
        }
        None => {
            sqlx::query("DELETE FROM workflow_timers WHERE run_id = $1")
                .bind(run_id)
                .execute(&mut *conn)
                .await?;
        }
    }

    // The events it listens for. A `cancel_on` armed earlier keeps its row
    // (and the transaction it was armed in); the `wait_for` is the rest's.
    sqlx::query("DELETE FROM workflow_waits WHERE run_id = $1 AND (position = 0 OR NOT $2)")
        .bind(run_id)
        .bind(status == "waiting")
        .execute(&mut *conn)
        .await?;
    if status == "waiting" {
        let mut matchers = Vec::new();
        if let Some(wait_for) = rest.and_then(|rest| rest.wait_for.as_ref()) {
            matchers.push((0, wait_for));
        }
        for (index, (_, matcher)) in state.cancel_on().iter().enumerate() {
            matchers.push((index as i32 + 1, matcher));
        }
        for (position, matcher) in matchers {
            let match_value = matcher.fields.values().next().map(Value::to_string);
            sqlx::query(
                "INSERT INTO workflow_waits (run_id, position, tenant_id, event_type, match_value, matcher) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (run_id, position) DO NOTHING",
            )
            .bind(run_id)
            .bind(position)
            .bind(tenant)
            .bind(matcher.event_type.as_str())
            .bind(match_value)
            .bind(Json(matcher))
            .execute(&mut *conn)
            .await?;
        }
    }

    // Its open digest window, while it rests at the digest.
    sqlx::query("DELETE FROM workflow_digests WHERE run_id = $1")
        .bind(run_id)
        .execute(&mut *conn)
        .await?;
    let at_digest = rest.is_some_and(|rest| {
        start
            .definition
            .steps()
            .iter()
            .any(|step| step.name == rest.step && matches!(step.kind, StepKind::Digest(_)))
    });
    if let (true, Some(rest), Some(digest_key)) = (at_digest, rest, &start.digest_key) {
        sqlx::query(
            "INSERT INTO workflow_digests (tenant_id, workflow_key, digest_key, run_id, closes_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (tenant_id, workflow_key, digest_key) DO UPDATE \
                 SET run_id = EXCLUDED.run_id, closes_at = EXCLUDED.closes_at",
        )
        .bind(tenant)
        .bind(key)
        .bind(digest_key.as_str())
        .bind(run_id)
        .bind(rest.until)
        .execute(&mut *conn)
        .await?;
    }

    // The throttles it passed, counted by the runs that start after it.
    for event in &applied.events {
        if let WorkflowRunEvent::StepCompleted {
            step,
            outcome: StepOutcome::Passed {
                key: throttle_key, ..
            },
            at,
            ..
        } = event
        {
            sqlx::query(
                "INSERT INTO workflow_throttle_passes \
                     (run_id, step, tenant_id, workflow_key, throttle_key, passed_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (run_id, step) DO NOTHING",
            )
            .bind(run_id)
            .bind(step.as_str())
            .bind(tenant)
            .bind(key)
            .bind(throttle_key.as_str())
            .bind(at)
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

async fn open_digest(
    pool: &PgPool,
    tenant_id: &TenantId,
    key: &WorkflowKey,
    digest_key: &str,
) -> Result<Option<WorkflowRunId>, sqlx::Error> {
    let run: Option<Uuid> = sqlx::query_scalar(
        "SELECT run_id FROM workflow_digests \
         WHERE tenant_id = $1 AND workflow_key = $2 AND digest_key = $3",
    )
    .bind(tenant_id.as_str())
    .bind(key.as_str())
    .bind(digest_key)
    .fetch_optional(pool)
    .await?;
    Ok(run.map(WorkflowRunId::from))
}

/// The tenant of a run, read from its stream; `None` when it never started.
async fn run_tenant(
    store: &EventStore,
    run_id: WorkflowRunId,
) -> Result<Option<(TenantId, WorkflowRun)>, CommandError> {
    let loaded = load::<WorkflowRun>(store, &run_stream_id(run_id)).await?;
    Ok(loaded
        .state
        .start()
        .map(|start| start.tenant_id.clone())
        .map(|tenant| (tenant, loaded.state)))
}

/// The worker's step for a due timer of the rest at `visit`. The row being
/// due means the rest's time has come (with `time_scale` below 1 it comes
/// early), so the run decides at its rest's `until` when that is later than
/// the clock.
pub async fn fire_timer(
    store: &EventStore,
    settings: &WorkflowSettings,
    run_id: WorkflowRunId,
    visit: u32,
    actor: &Actor,
) -> Result<Advanced, CommandError> {
    let Some((tenant_id, run)) = run_tenant(store, run_id).await? else {
        return Ok(Advanced::Unchanged);
    };
    let now = Utc::now();
    let now = match run.rest() {
        Some(rest) if rest.visit == visit => now.max(rest.until),
        _ => now,
    };
    let command = WorkflowRunCommand::TimerFired { visit };
    advance(store, settings, &tenant_id, run_id, command, now, actor).await
}

/// Feeds an event of the log to a run that listens for it.
pub async fn observe(
    store: &EventStore,
    settings: &WorkflowSettings,
    run_id: WorkflowRunId,
    event: ObservedEvent,
    actor: &Actor,
) -> Result<Advanced, CommandError> {
    let Some((tenant_id, _)) = run_tenant(store, run_id).await? else {
        return Ok(Advanced::Unchanged);
    };
    let command = WorkflowRunCommand::EventObserved(event);
    advance(
        store,
        settings,
        &tenant_id,
        run_id,
        command,
        Utc::now(),
        actor,
    )
    .await
}

/// An operator's (or a tenant's) cancel of its run.
pub async fn cancel(
    store: &EventStore,
    tenant_id: &TenantId,
    run_id: WorkflowRunId,
    reason: Option<String>,
    settings: &WorkflowSettings,
    actor: &Actor,
) -> Result<RunRow, CommandError> {
    let command = WorkflowRunCommand::Cancel { reason };
    advance(
        store,
        settings,
        tenant_id,
        run_id,
        command,
        Utc::now(),
        actor,
    )
    .await?;
    run_row(store.pool(), tenant_id, run_id)
        .await?
        .ok_or(CommandError::NotFound("workflow run"))
}

/// A run as listed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RunRow {
    pub run_id: Uuid,
    pub workflow_key: String,
    pub version: i32,
    pub status: String,
    pub recipient: Json<Value>,
    pub trigger_id: String,
    pub current_step: Option<String>,
    pub waiting_until: Option<DateTime<Utc>>,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

macro_rules! run_columns {
    () => {
        "run_id, workflow_key, version, status, recipient, trigger_id, current_step, \
         waiting_until, started_at, updated_at"
    };
}

pub async fn run_row(
    pool: &PgPool,
    tenant_id: &TenantId,
    run_id: WorkflowRunId,
) -> Result<Option<RunRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        run_columns!(),
        " FROM workflow_runs WHERE tenant_id = $1 AND run_id = $2"
    ))
    .bind(tenant_id.as_str())
    .bind(run_id.as_uuid())
    .fetch_optional(pool)
    .await
}

/// Which runs a listing shows.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub workflow_key: Option<String>,
    /// `waiting`, `completed` or `cancelled`.
    pub status: Option<String>,
}

/// Up to `first` of the tenant's runs, newest first, before the run
/// `before`; and whether more follow.
pub async fn runs(
    pool: &PgPool,
    tenant_id: &TenantId,
    filter: &RunFilter,
    first: usize,
    before: Option<Uuid>,
) -> Result<(Vec<RunRow>, bool), sqlx::Error> {
    let rows = sqlx::query_as(concat!(
        "SELECT ",
        run_columns!(),
        " FROM workflow_runs WHERE tenant_id = $1 \
           AND ($2::text IS NULL OR workflow_key = $2) \
           AND ($3::text IS NULL OR status = $3) \
           AND ($4::uuid IS NULL OR run_id < $4) \
         ORDER BY run_id DESC LIMIT $5"
    ))
    .bind(tenant_id.as_str())
    .bind(filter.workflow_key.as_deref())
    .bind(filter.status.as_deref())
    .bind(before)
    .bind(first as i64 + 1)
    .fetch_all(pool)
    .await?;
    Ok(crate::projections::split_page(rows, first))
}

/// A run's events in order, with where each stands in the log, for its
/// timeline; empty when the run is not the tenant's.
pub async fn timeline(
    store: &EventStore,
    tenant_id: &TenantId,
    run_id: WorkflowRunId,
) -> Result<Vec<(crate::eventstore::RecordedEvent, WorkflowRunEvent)>, CommandError> {
    let recorded = store.read_stream(&run_stream_id(run_id), 1).await?;
    if recorded
        .first()
        .is_some_and(|first| first.tenant_id != tenant_id.as_str())
    {
        return Ok(Vec::new());
    }
    let events = super::pipeline::decode::<WorkflowRunEvent>(&recorded)?;
    Ok(recorded.into_iter().zip(events).collect())
}

/// The notifications a run's `send` steps made, by step and visit.
pub fn notifications_of(
    events: &[(crate::eventstore::RecordedEvent, WorkflowRunEvent)],
) -> Vec<(String, u32, NotificationId)> {
    events
        .iter()
        .filter_map(|(_, event)| match event {
            WorkflowRunEvent::StepCompleted {
                visit,
                step,
                outcome: StepOutcome::Sent { notification },
                ..
            } => Some((
                step.as_str().to_string(),
                *visit,
                notification.notification_id,
            )),
            _ => None,
        })
        .collect()
}

/// Timers due by now, claimed under a lease of `lease` by `owner`: each
/// run and the visit of its rest.
pub async fn claim_due_timers(
    pool: &PgPool,
    owner: Uuid,
    lease: TimeDelta,
    limit: u32,
) -> Result<Vec<(WorkflowRunId, u32)>, sqlx::Error> {
    let rows: Vec<(Uuid, i32)> = sqlx::query_as(
        "UPDATE workflow_timers t SET leased_until = now() + make_interval(secs => $1), \
             lease_owner = $2 \
         FROM (SELECT run_id FROM workflow_timers \
               WHERE due_at <= now() AND (leased_until IS NULL OR leased_until < now()) \
               ORDER BY due_at LIMIT $3 FOR UPDATE SKIP LOCKED) due \
         WHERE t.run_id = due.run_id \
         RETURNING t.run_id, t.visit",
    )
    .bind(lease.num_milliseconds() as f64 / 1000.0)
    .bind(owner)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(run_id, visit)| {
            (
                WorkflowRunId::from(run_id),
                u32::try_from(visit).unwrap_or(0),
            )
        })
        .collect())
}

/// Removes a claimed timer that fired nothing (its run moved on or ended).
pub async fn drop_stale_timer(
    pool: &PgPool,
    run_id: WorkflowRunId,
    visit: u32,
    owner: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM workflow_timers WHERE run_id = $1 AND visit = $2 AND lease_owner = $3",
    )
    .bind(run_id.as_uuid())
    .bind(i32::try_from(visit).unwrap_or(i32::MAX))
    .bind(owner)
    .execute(pool)
    .await?;
    Ok(())
}

/// When the earliest timer falls due.
pub async fn next_due(pool: &PgPool) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar("SELECT min(due_at) FROM workflow_timers")
        .fetch_one(pool)
        .await
}

/// The event types some waiting run listens for.
pub async fn listened_types(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT DISTINCT event_type FROM workflow_waits")
        .fetch_all(pool)
        .await
}

/// The runs of `tenant_id` listening for `event_type` whose matcher was
/// armed before the event's transaction `transaction_id`, with the matcher.
pub async fn listeners(
    pool: &PgPool,
    tenant_id: &str,
    event_type: &str,
    transaction_id: i64,
) -> Result<Vec<(WorkflowRunId, crate::domain::workflow::EventMatcher)>, sqlx::Error> {
    let rows: Vec<(Uuid, Json<crate::domain::workflow::EventMatcher>)> = sqlx::query_as(
        "SELECT run_id, matcher FROM workflow_waits \
         WHERE tenant_id = $1 AND event_type = $2 AND armed_xid < $3",
    )
    .bind(tenant_id)
    .bind(event_type)
    .bind(transaction_id)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(run_id, matcher)| (WorkflowRunId::from(run_id), matcher.0))
        .collect())
}

/// Where the observer read the log to; `None` before its first read.
pub async fn observer_checkpoint(
    pool: &PgPool,
) -> Result<Option<crate::eventstore::Checkpoint>, sqlx::Error> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT transaction_id, global_position FROM workflow_observer WHERE name = 'events'",
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(
        |(transaction_id, global_position)| crate::eventstore::Checkpoint {
            transaction_id,
            global_position,
        },
    ))
}

pub async fn save_observer_checkpoint(
    pool: &PgPool,
    checkpoint: crate::eventstore::Checkpoint,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO workflow_observer (name, transaction_id, global_position) \
         VALUES ('events', $1, $2) ON CONFLICT (name) DO UPDATE \
             SET transaction_id = EXCLUDED.transaction_id, \
                 global_position = EXCLUDED.global_position",
    )
    .bind(checkpoint.transaction_id)
    .bind(checkpoint.global_position)
    .execute(pool)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_scale_shortens_rests_and_never_lengthens_them() {
        let now = Utc::now();
        let hour = now + TimeDelta::hours(1);
        let real = WorkflowsConfig::default();
        assert_eq!(real.due_at(now, hour), hour);
        let fast = WorkflowsConfig {
            time_scale: 0.0005,
            ..WorkflowsConfig::default()
        };
        assert_eq!(fast.due_at(now, hour), now + TimeDelta::milliseconds(1_800));
        let past = now - TimeDelta::seconds(5);
        assert_eq!(fast.due_at(now, past), past, "a time already past stays");
        for odd in [2.0, f64::NAN, f64::INFINITY] {
            let odd = WorkflowsConfig {
                time_scale: odd,
                ..WorkflowsConfig::default()
            };
            assert_eq!(odd.due_at(now, hour), hour, "{odd:?}");
        }
    }

    #[test]
    fn a_trigger_reports_each_refusal_by_field() {
        let refused = TriggerWorkflow {
            key: Some("Not A Key".into()),
            recipients: vec![RecipientInput {
                email: Some("nope".into()),
                ..RecipientInput::default()
            }],
            payload: Some(Value::from(3)),
            idempotency_key: Some("a b".into()),
        }
        .parse()
        .err()
        .expect("refused");
        let paths: Vec<&str> = refused.errors().iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["key", "recipients[0].email", "payload", "idempotency_key"]
        );
    }
}
