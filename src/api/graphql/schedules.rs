//! Recurring schedules: `schedules`, `schedule`, `createSchedule`,
//! `pauseSchedule`, `resumeSchedule`, `deleteSchedule`. Each firing sends
//! the schedule's notification through the ordinary send path.

use async_graphql::{Context, Enum, ID, InputObject, Json, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::connection::Connection;
use super::types::SendNotificationInput;
use super::{ApiError, NeedsScope, api, parse_uuid, require, run};
use crate::api::cursor::{self, page_size};
use crate::commands::schedules::{self, ScheduleRow};
use crate::domain::Scope;
use crate::domain::schedule::{self as domain, CreateSchedule};

/// Most firing times one `nextFirings` lists.
const MAX_NEXT_FIRINGS: i32 = 50;

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "crate::domain::schedule::MissedPolicy")]
pub enum MissedPolicy {
    /// Fire none of the slots missed while no scheduler ran.
    Skip,
    /// Fire once, for the latest missed slot.
    CatchUpOnce,
}

#[derive(InputObject)]
pub struct CreateScheduleInput {
    pub name: String,
    /// 5 fields (minute hour day-of-month month day-of-week), or 6 with
    /// seconds first, e.g. `30 2 * * *` or `*/10 * * * * *`.
    pub cron: String,
    /// The IANA time zone the expression is read in, e.g. `Europe/Paris`.
    pub timezone: String,
    #[graphql(default_with = "MissedPolicy::Skip")]
    pub missed_policy: MissedPolicy,
    /// What each firing sends. Without `idempotencyKey`, `scheduleAt` and
    /// `expiresAt` (set per firing; use `ttlSeconds`). A template is checked
    /// now and its latest published version taken at each firing.
    pub notification: SendNotificationInput,
}

/// One slot: the same instant in UTC and in the schedule's time zone.
#[derive(SimpleObject)]
pub struct Firing {
    pub at: DateTime<Utc>,
    /// RFC 3339 with the zone's offset at that instant.
    pub local: String,
}

pub struct Schedule(ScheduleRow);

#[Object]
impl Schedule {
    async fn id(&self) -> ID {
        ID(self.0.schedule_id.to_string())
    }

    async fn name(&self) -> &str {
        &self.0.name
    }

    async fn cron(&self) -> &str {
        &self.0.cron
    }

    async fn timezone(&self) -> &str {
        &self.0.timezone
    }

    async fn missed_policy(&self) -> MissedPolicy {
        match self.0.missed_policy.as_str() {
            "CATCH_UP_ONCE" => MissedPolicy::CatchUpOnce,
            _ => MissedPolicy::Skip,
        }
    }

    async fn paused(&self) -> bool {
        self.0.paused
    }

    /// The send input each firing replays (snake_case, as the REST API takes it).
    #[graphql(guard = "NeedsScope(Scope::Read)")]
    async fn notification(&self) -> Json<Value> {
        Json(self.0.notification.0.clone())
    }

    /// The next slots, the first being the one due next; empty while paused.
    async fn next_firings(
        &self,
        #[graphql(default = 5)] count: i32,
    ) -> Result<Vec<Firing>, ApiError> {
        if !(1..=MAX_NEXT_FIRINGS).contains(&count) {
            return Err(ApiError::field(
                "count",
                format!("must be between 1 and {MAX_NEXT_FIRINGS}"),
            ));
        }
        let timezone = self.0.timezone.parse::<chrono_tz::Tz>().ok();
        Ok(self
            .0
            .upcoming(count as usize)
            .into_iter()
            .map(|at| Firing {
                at,
                local: match timezone {
                    Some(tz) => at.with_timezone(&tz).to_rfc3339(),
                    None => at.to_rfc3339(),
                },
            })
            .collect())
    }

    /// The latest slot fired (or refused), if any.
    async fn last_fired_at(&self) -> Option<DateTime<Utc>> {
        self.0.last_fired_at
    }

    /// Why the latest firing's send was refused; null when it was sent.
    async fn last_failure(&self) -> Option<&str> {
        self.0.last_failure.as_deref()
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
}

#[derive(Default)]
pub struct SchedulesQuery;

#[Object]
impl SchedulesQuery {
    /// The tenant's schedules, oldest first (requires `read`).
    async fn schedules(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> Result<Connection<Schedule>, ApiError> {
        let principal = require(ctx, Scope::Read)?;
        let first = page_size("first", first.into())?;
        let after = cursor::decode(after.as_deref())?;
        let page =
            schedules::page(api(ctx)?.store.pool(), &principal.tenant_id, first, after).await?;
        Ok(Connection::page(page, |row| row.schedule_id, Schedule))
    }

    /// One of the tenant's schedules (requires `read`); null if there is none.
    async fn schedule(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Schedule>, ApiError> {
        let principal = require(ctx, Scope::Read)?;
        let schedule_id = parse_uuid("id", &id, "schedule")?;
        let row = schedules::get(api(ctx)?.store.pool(), &principal.tenant_id, schedule_id).await?;
        Ok(row.map(Schedule))
    }
}

#[derive(Default)]
pub struct SchedulesMutation;

#[Object]
impl SchedulesMutation {
    /// Sends `notification` at every slot of `cron` in `timezone` (requires
    /// `send`). Invalid input is a VALIDATION error naming the field, the
    /// notification's under `notification.`.
    async fn create_schedule(
        &self,
        ctx: &Context<'_>,
        input: CreateScheduleInput,
    ) -> Result<Schedule, ApiError> {
        let principal = require(ctx, Scope::Send)?;
        let input = CreateSchedule {
            name: input.name,
            cron: input.cron,
            timezone: input.timezone,
            missed_policy: domain::MissedPolicy::from(input.missed_policy),
            notification: input.notification.into(),
        };
        Ok(Schedule(
            run(ctx, principal, input, schedules::create).await?,
        ))
    }

    /// Stops firing until resumed (requires `send`).
    async fn pause_schedule(&self, ctx: &Context<'_>, id: ID) -> Result<Schedule, ApiError> {
        let principal = require(ctx, Scope::Send)?;
        let id = parse_uuid("id", &id, "schedule")?;
        Ok(Schedule(run(ctx, principal, id, schedules::pause).await?))
    }

    /// Fires again from the first slot after now; slots passed while paused
    /// are not fired (requires `send`).
    async fn resume_schedule(&self, ctx: &Context<'_>, id: ID) -> Result<Schedule, ApiError> {
        let principal = require(ctx, Scope::Send)?;
        let id = parse_uuid("id", &id, "schedule")?;
        Ok(Schedule(run(ctx, principal, id, schedules::resume).await?))
    }

    /// Stops the schedule for good (requires `send`); notifications already
    /// sent are kept.
    async fn delete_schedule(&self, ctx: &Context<'_>, id: ID) -> Result<bool, ApiError> {
        let principal = require(ctx, Scope::Send)?;
        let id = parse_uuid("id", &id, "schedule")?;
        run(ctx, principal, id, schedules::delete).await?;
        Ok(true)
    }
}
