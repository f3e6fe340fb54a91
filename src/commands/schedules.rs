//! Recurring schedules: events in `schedule-<uuid>` streams, with the
//! `schedules` table kept in step in the same transaction, for listing and
//! for the scheduler's due-schedule lookup.
//!
//! [`fire`] is the scheduler's step for one schedule. It decides from the
//! stream at version v, sends the due slot's notification with the slot's
//! idempotency key, then appends the firing expecting version v. Sending
//! first makes it exactly once: a crash or a lost append leaves the stream
//! at v, so the next attempt (here or in another process) decides the same
//! slot and its send returns the notification already made under that key;
//! of two processes racing, both sends resolve to one notification and only
//! one append succeeds. Recording first could lose a slot to a crash.

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::notifications::{self, SendPolicy};
use super::pipeline::{Applied, Executed, Loaded, Step, Stream, Transaction, load};
use super::{Actor, CommandError, templates};
use crate::domain::schedule::{
    CreateSchedule, CronExpression, Schedule, ScheduleCommand, ScheduleEvent,
};
use crate::domain::values::{TenantId, Timezone};
use crate::domain::{Aggregate, ValidationErrors};
use crate::eventstore::EventStore;

pub fn stream_id(schedule_id: Uuid) -> String {
    format!("schedule-{schedule_id}")
}

/// A live schedule as listed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ScheduleRow {
    pub schedule_id: Uuid,
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub missed_policy: String,
    pub notification: sqlx::types::Json<serde_json::Value>,
    pub paused: bool,
    pub next_fire_at: Option<DateTime<Utc>>,
    pub last_fired_at: Option<DateTime<Utc>>,
    pub last_failure: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl ScheduleRow {
    /// The next `count` slots, from `next_fire_at` on; none while paused.
    pub fn upcoming(&self, count: usize) -> Vec<DateTime<Utc>> {
        let (Some(first), Ok(cron), Ok(timezone)) = (
            self.next_fire_at,
            CronExpression::parse(&self.cron),
            Timezone::parse(&self.timezone),
        ) else {
            return Vec::new();
        };
        let mut slots = vec![first];
        slots.extend(cron.upcoming(timezone, first, count.saturating_sub(1)));
        slots.truncate(count);
        slots
    }
}

/// The columns of a [`ScheduleRow`]; a macro so queries stay `&'static str`.
macro_rules! columns {
    () => {
        "schedule_id, name, cron, timezone, missed_policy, notification, paused, \
         next_fire_at, last_fired_at, last_failure, created_at, updated_at"
    };
}

/// What one [`fire`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum FireOutcome {
    /// Nothing was due (or the schedule is paused or gone).
    NotDue,
    /// The slot's notification was sent; `duplicate` when an earlier attempt
    /// (a crash, another process) had already made it.
    Fired {
        slot: DateTime<Utc>,
        duplicate: bool,
    },
    /// The send was refused (a template unpublished, a quota used up...); the
    /// slot is recorded with the reason and the schedule goes on.
    Failed { slot: DateTime<Utc>, reason: String },
    /// Missed slots not fired, by the schedule's policy.
    Skipped { count: u32 },
    /// Another process recorded this step first; nothing appended here.
    LostRace,
}

pub async fn create(
    store: &EventStore,
    tenant_id: &TenantId,
    input: CreateSchedule,
    actor: &Actor,
) -> Result<ScheduleRow, CommandError> {
    let now = Utc::now();
    let (spec, template) = input.parse(now)?;
    if let Some(template) = &template {
        // Checked, not pinned: each firing takes the version latest then.
        templates::pin(store.pool(), tenant_id, template)
            .await
            .map_err(under_notification)?;
    }
    let id = Uuid::now_v7();
    let events = Schedule::default().decide(
        ScheduleCommand::Create {
            tenant_id: tenant_id.clone(),
            id,
            spec,
        },
        now,
    )?;
    Stream::new(store, stream_id(id), tenant_id, actor)
        .append(Loaded::default(), events, &keep_table_in_step)
        .await
}

pub async fn pause(
    store: &EventStore,
    tenant_id: &TenantId,
    schedule_id: Uuid,
    actor: &Actor,
) -> Result<ScheduleRow, CommandError> {
    decide_and_append(store, tenant_id, schedule_id, actor, ScheduleCommand::Pause).await
}

/// Continues from the first slot after now: slots passed while paused never fire.
pub async fn resume(
    store: &EventStore,
    tenant_id: &TenantId,
    schedule_id: Uuid,
    actor: &Actor,
) -> Result<ScheduleRow, CommandError> {
    decide_and_append(
        store,
        tenant_id,
        schedule_id,
        actor,
        ScheduleCommand::Resume,
    )
    .await
}

pub async fn delete(
    store: &EventStore,
    tenant_id: &TenantId,
    schedule_id: Uuid,
    actor: &Actor,
) -> Result<(), CommandError> {
    decide_and_append(
        store,
        tenant_id,
        schedule_id,
        actor,
        ScheduleCommand::Delete,
    )
    .await?;
    Ok(())
}

/// The tenant's live schedule `schedule_id`.
pub async fn get(
    pool: &PgPool,
    tenant_id: &TenantId,
    schedule_id: Uuid,
) -> Result<Option<ScheduleRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM schedules WHERE tenant_id = $1 AND schedule_id = $2"
    ))
    .bind(tenant_id.as_str())
    .bind(schedule_id)
    .fetch_optional(pool)
    .await
}

/// Up to `first` of the tenant's live schedules after `after`, oldest
/// first, and whether more follow.
pub async fn page(
    pool: &PgPool,
    tenant_id: &TenantId,
    first: usize,
    after: Option<Uuid>,
) -> Result<(Vec<ScheduleRow>, bool), sqlx::Error> {
    let rows = sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM schedules \
         WHERE tenant_id = $1 AND ($2::uuid IS NULL OR schedule_id > $2) \
         ORDER BY schedule_id LIMIT $3"
    ))
    .bind(tenant_id.as_str())
    .bind(after)
    .bind(first as i64 + 1)
    .fetch_all(pool)
    .await?;
    Ok(crate::projections::split_page(rows, first))
}

/// Schedules with a slot due by `now`, most overdue first: one short
/// statement, no transaction held.
pub async fn due(pool: &PgPool, now: DateTime<Utc>, limit: u32) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT schedule_id FROM schedules WHERE next_fire_at <= $1 \
         ORDER BY next_fire_at LIMIT $2",
    )
    .bind(now)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
}

/// When the earliest slot of any schedule falls due.
pub async fn next_due(pool: &PgPool) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar("SELECT min(next_fire_at) FROM schedules")
        .fetch_one(pool)
        .await
}

/// One scheduler step for one schedule at `now` (see the module docs for why
/// the send comes before the append). Slots more than `grace` late are
/// missed and follow the schedule's policy. A send refused for good is
/// recorded as a failed firing; a database error leaves the slot due.
pub async fn fire(
    store: &EventStore,
    schedule_id: Uuid,
    policy: &SendPolicy,
    grace: TimeDelta,
    now: DateTime<Utc>,
    actor: &Actor,
) -> Result<FireOutcome, CommandError> {
    let loaded = load::<Schedule>(store, &stream_id(schedule_id)).await?;
    let schedule = &loaded.state;
    let (Some(tenant_id), Some(spec)) = (schedule.tenant_id(), schedule.spec()) else {
        return Ok(FireOutcome::NotDue);
    };
    let mut events = schedule.decide(ScheduleCommand::Fire { grace }, now)?;
    let mut outcome = match events.last() {
        None => return Ok(FireOutcome::NotDue),
        Some(ScheduleEvent::SlotsSkipped { count, .. }) => FireOutcome::Skipped { count: *count },
        Some(_) => FireOutcome::NotDue,
    };
    if let Some(ScheduleEvent::Fired { slot, failure, .. }) = events.last_mut() {
        let key = Schedule::idempotency_key(schedule_id, *slot);
        let sent = match spec.notification_for(key) {
            Ok(input) => notifications::send(store, tenant_id, input, policy, actor).await,
            Err(error) => Err(error.into()),
        };
        outcome = match sent {
            Ok(sent) => FireOutcome::Fired {
                slot: *slot,
                duplicate: sent.duplicate,
            },
            Err(
                error @ (CommandError::Store(_)
                | CommandError::Database(_)
                | CommandError::CorruptEvent { .. }),
            ) => return Err(error),
            Err(refused) => {
                let reason = refused_reason(&refused);
                *failure = Some(reason.clone());
                FireOutcome::Failed {
                    slot: *slot,
                    reason,
                }
            }
        };
    }
    let tenant_id = tenant_id.clone();
    let stream = Stream::new(store, stream_id(schedule_id), &tenant_id, actor);
    match stream.append(loaded, events, &keep_table_in_step).await {
        Ok(_) => Ok(outcome),
        Err(CommandError::Store(error)) if error.is_conflict() => Ok(FireOutcome::LostRace),
        Err(error) => Err(error),
    }
}

fn refused_reason(error: &CommandError) -> String {
    match error {
        CommandError::Validation(errors) => format!("invalid notification: {errors}"),
        other => other.to_string(),
    }
}

/// A template check's errors, under the schedule input's `notification.`.
fn under_notification(error: CommandError) -> CommandError {
    match error {
        CommandError::Validation(errors) => {
            let mut prefixed = ValidationErrors::default();
            for error in errors.errors() {
                prefixed.add(
                    format!("notification.{}", error.path),
                    error.message.clone(),
                );
            }
            CommandError::Validation(prefixed)
        }
        other => other,
    }
}

/// Decides on the tenant's live schedule and writes its row; another
/// tenant's schedule is not found.
async fn decide_and_append(
    store: &EventStore,
    tenant_id: &TenantId,
    schedule_id: Uuid,
    actor: &Actor,
    command: ScheduleCommand,
) -> Result<ScheduleRow, CommandError> {
    let executed = Stream::new(store, stream_id(schedule_id), tenant_id, actor)
        .execute(
            |schedule: &Schedule| {
                if !schedule.is_live() || schedule.tenant_id() != Some(tenant_id) {
                    return Err(CommandError::NotFound("schedule"));
                }
                Ok(schedule.decide(command.clone(), Utc::now())?)
            },
            keep_table_in_step,
        )
        .await?;
    match executed {
        Executed::Appended(row) => Ok(row),
        // The domain records an event for every command it accepts here.
        Executed::Unchanged(_) => Err(CommandError::NotFound("schedule")),
    }
}

fn keep_table_in_step<'c>(
    tx: &'c mut Transaction<'_>,
    applied: &'c Applied<Schedule>,
) -> Step<'c, ScheduleRow> {
    Box::pin(write_row(tx.connection(), &applied.state, applied.version))
}

/// Writes the schedule's row as `state` has it; removes it once deleted.
async fn write_row(
    conn: &mut PgConnection,
    state: &Schedule,
    version: i64,
) -> Result<ScheduleRow, CommandError> {
    let (Some(tenant_id), Some(schedule_id), Some(spec)) =
        (state.tenant_id(), state.id(), state.spec())
    else {
        return Err(CommandError::NotFound("schedule"));
    };
    if !state.is_live() {
        return Ok(sqlx::query_as(concat!(
            "DELETE FROM schedules WHERE schedule_id = $1 RETURNING ",
            columns!()
        ))
        .bind(schedule_id)
        .fetch_one(conn)
        .await?);
    }
    let now = Utc::now();
    Ok(sqlx::query_as(concat!(
        "INSERT INTO schedules \
             (schedule_id, tenant_id, name, cron, timezone, missed_policy, notification, paused, \
              next_fire_at, last_fired_at, last_failure, version, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13) \
         ON CONFLICT (schedule_id) DO UPDATE \
             SET paused = EXCLUDED.paused, next_fire_at = EXCLUDED.next_fire_at, \
                 last_fired_at = EXCLUDED.last_fired_at, last_failure = EXCLUDED.last_failure, \
                 version = EXCLUDED.version, updated_at = EXCLUDED.updated_at \
         RETURNING ",
        columns!()
    ))
    .bind(schedule_id)
    .bind(tenant_id.as_str())
    .bind(&spec.name)
    .bind(spec.cron.as_str())
    .bind(spec.timezone.as_str())
    .bind(spec.missed_policy.as_str())
    .bind(sqlx::types::Json(&spec.notification))
    .bind(state.is_paused())
    .bind(state.next_slot())
    .bind(state.last_fired())
    .bind(state.last_failure())
    .bind(version)
    .bind(now)
    .fetch_one(conn)
    .await?)
}
