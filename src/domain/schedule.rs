//! The `Schedule` aggregate: a notification a tenant has sent on a cron
//! schedule, in the schedule's own time zone.
//!
//! | command | legal when | records |
//! |---|---|---|
//! | Create | the schedule does not exist | ScheduleCreated |
//! | Pause | live and active | SchedulePaused |
//! | Resume | live and paused | ScheduleResumed (next slot after now: paused slots never fire) |
//! | Delete | live | ScheduleDeleted |
//! | Fire | always; nothing when nothing is due | ScheduleSlotsSkipped and/or ScheduleFired |
//!
//! Every event that moves the schedule on carries the next slot it leads
//! to, so `apply` never evaluates the cron expression. The scheduler sends
//! the notification of a `ScheduleFired` slot with the idempotency key
//! [`Schedule::idempotency_key`] before appending the event (see
//! `workers::scheduler`).
//!
//! Cron expressions have 5 fields (minute hour day-of-month month
//! day-of-week) or 6 with seconds first; `@daily`-style aliases, `L`, `W`
//! and `#` are accepted (croner, POSIX/Vixie semantics). Slots are computed
//! in the schedule's time zone. Across a spring-forward gap a fixed-time
//! slot (e.g. 02:30 daily) fires once, at the first instant after the gap
//! (03:00 local); across a fall-back overlap it fires once, at its first
//! occurrence. Wildcard/interval slots inside a gap do not exist and are not
//! fired; in an overlap each real instant that matches fires.

use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::aggregate::Aggregate;
use super::domain_error::DomainError;
use super::notification_request::{Content, TemplateRef};
use super::send_notification::SendNotification;
use super::tagged_payload::upcast_current;
use super::validation_errors::ValidationErrors;
use super::values::{TenantId, Timezone, ValueError};

pub const MAX_NAME_CHARS: usize = 200;
/// Missed slots are counted up to this many; beyond, the count says "at least".
pub const MAX_COUNTED_SLOTS: u32 = 100_000;

/// A parsed cron expression; stored and shown as written.
#[derive(Clone)]
pub struct CronExpression {
    source: String,
    /// Boxed: the parsed pattern is large and rides in events and commands.
    cron: Box<Cron>,
}

impl CronExpression {
    /// 5 fields, or 6 with seconds first, or an alias such as `@daily`.
    pub fn parse(raw: &str) -> Result<CronExpression, ValueError> {
        let source = raw.split_whitespace().collect::<Vec<_>>().join(" ");
        if source.is_empty() {
            return Err(ValueError::Empty);
        }
        let fields = source.split(' ').count();
        if !source.starts_with('@') && !(5..=6).contains(&fields) {
            return Err(ValueError::Invalid(format!(
                "must have 5 fields (minute hour day-of-month month day-of-week) or 6 with seconds first, not {fields}"
            )));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(&source)
            .map_err(|error| ValueError::Invalid(format!("is not a cron expression: {error}")))?;
        Ok(CronExpression {
            source,
            cron: Box::new(cron),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The first slot strictly after `after`, computed in `timezone`.
    pub fn next_after(&self, timezone: Timezone, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&timezone.tz());
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|slot| slot.with_timezone(&Utc))
    }

    /// The last slot strictly before `before`.
    pub fn previous_before(
        &self,
        timezone: Timezone,
        before: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let local = before.with_timezone(&timezone.tz());
        self.cron
            .find_previous_occurrence(&local, false)
            .ok()
            .map(|slot| slot.with_timezone(&Utc))
    }

    /// Up to `count` slots strictly after `after`.
    pub fn upcoming(
        &self,
        timezone: Timezone,
        after: DateTime<Utc>,
        count: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut slots = Vec::with_capacity(count);
        let mut cursor = after;
        while slots.len() < count {
            match self.next_after(timezone, cursor) {
                Some(slot) => {
                    slots.push(slot);
                    cursor = slot;
                }
                None => break,
            }
        }
        slots
    }
}

impl fmt::Debug for CronExpression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CronExpression({:?})", self.source)
    }
}

impl PartialEq for CronExpression {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Serialize for CronExpression {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for CronExpression {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        CronExpression::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// What to do with slots that passed while no scheduler ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MissedPolicy {
    /// Fire none of them; go on with the next slot to come.
    #[default]
    Skip,
    /// Fire once, for the latest missed slot; go on from there.
    CatchUpOnce,
}

impl MissedPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            MissedPolicy::Skip => "SKIP",
            MissedPolicy::CatchUpOnce => "CATCH_UP_ONCE",
        }
    }
}

/// A schedule as asked for, before anything is trusted.
#[derive(Debug, Clone, Default)]
pub struct CreateSchedule {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub missed_policy: MissedPolicy,
    pub notification: SendNotification,
}

/// A valid schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleSpec {
    pub name: String,
    pub cron: CronExpression,
    pub timezone: Timezone,
    pub missed_policy: MissedPolicy,
    /// The send input as given, in [`SendNotification`]'s serde shape (the
    /// REST body's field names, `null` for what was not given), replayed at
    /// each firing so a templated one takes the version latest then.
    pub notification: Value,
}

impl ScheduleSpec {
    /// The send of one firing, under its slot's idempotency key.
    pub fn notification_for(
        &self,
        idempotency_key: String,
    ) -> Result<SendNotification, DomainError> {
        let mut send: SendNotification = serde_json::from_value(self.notification.clone())
            .map_err(|_| {
                DomainError::InvalidCommand("the schedule's notification cannot be read")
            })?;
        send.idempotency_key = Some(idempotency_key);
        Ok(send)
    }
}

impl CreateSchedule {
    /// Every refused field at once, the notification's under `notification.`.
    /// Also returns the template the notification names, for the caller to
    /// check it is published (without pinning it).
    pub fn parse(
        self,
        now: DateTime<Utc>,
    ) -> Result<(ScheduleSpec, Option<TemplateRef>), ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let name = self.name.trim().to_string();
        if name.is_empty() {
            errors.add("name", ValueError::Empty.to_string());
        } else if name.chars().count() > MAX_NAME_CHARS {
            errors.add(
                "name",
                ValueError::too_many_chars(MAX_NAME_CHARS).to_string(),
            );
        } else if name.chars().any(char::is_control) {
            errors.add("name", "must not contain control characters");
        }
        let cron = errors.check("cron", CronExpression::parse(&self.cron));
        let timezone = errors.check("timezone", Timezone::parse(self.timezone.trim()));
        if let (Some(cron), Some(timezone)) = (&cron, timezone)
            && cron.next_after(timezone, now).is_none()
        {
            errors.add("cron", "never matches a future time");
        }
        let notification = self.notification;
        let stored = serde_json::to_value(&notification)
            .expect("a SendNotification has only string keys and infallible fields");
        // Absolute times would be stale at every firing after the first;
        // the key is the scheduler's, one per slot.
        for (field, given) in [
            ("idempotency_key", notification.idempotency_key.is_some()),
            ("schedule_at", notification.schedule_at.is_some()),
            ("expires_at", notification.expires_at.is_some()),
        ] {
            if given {
                errors.add(
                    format!("notification.{field}"),
                    "is set by the schedule at each firing; leave it out (use ttl_seconds for expiry)",
                );
            }
        }
        let template = match notification.parse(now) {
            Ok(request) => match request.content {
                Content::Template(template) => Some(template),
                Content::Inline(_) => None,
            },
            Err(refused) => {
                for error in refused.errors() {
                    errors.add(
                        format!("notification.{}", error.path),
                        error.message.clone(),
                    );
                }
                None
            }
        };
        match (cron, timezone) {
            (Some(cron), Some(timezone)) if errors.is_empty() => Ok((
                ScheduleSpec {
                    name,
                    cron,
                    timezone,
                    missed_policy: self.missed_policy,
                    notification: stored,
                },
                template,
            )),
            _ => Err(errors),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ScheduleEvent {
    #[serde(rename = "ScheduleCreated")]
    Created {
        tenant_id: TenantId,
        id: Uuid,
        name: String,
        cron: CronExpression,
        timezone: Timezone,
        missed_policy: MissedPolicy,
        notification: Value,
        next_slot: Option<DateTime<Utc>>,
    },
    #[serde(rename = "SchedulePaused")]
    Paused,
    #[serde(rename = "ScheduleResumed")]
    Resumed { next_slot: Option<DateTime<Utc>> },
    #[serde(rename = "ScheduleDeleted")]
    Deleted,
    /// The slot's notification was sent (or refused: `failure` says why).
    #[serde(rename = "ScheduleFired")]
    Fired {
        slot: DateTime<Utc>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failure: Option<String>,
        next_slot: Option<DateTime<Utc>>,
    },
    /// Missed slots `from..=to` were not fired (`count` saturates at
    /// [`MAX_COUNTED_SLOTS`]).
    #[serde(rename = "ScheduleSlotsSkipped")]
    SlotsSkipped {
        count: u32,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        next_slot: Option<DateTime<Utc>>,
    },
}

impl ScheduleEvent {
    pub const SCHEMA_VERSION: i16 = 1;

    pub const EVENT_TYPES: [&'static str; 6] = [
        "ScheduleCreated",
        "SchedulePaused",
        "ScheduleResumed",
        "ScheduleDeleted",
        "ScheduleFired",
        "ScheduleSlotsSkipped",
    ];

    pub fn event_type(&self) -> &'static str {
        match self {
            ScheduleEvent::Created { .. } => "ScheduleCreated",
            ScheduleEvent::Paused => "SchedulePaused",
            ScheduleEvent::Resumed { .. } => "ScheduleResumed",
            ScheduleEvent::Deleted => "ScheduleDeleted",
            ScheduleEvent::Fired { .. } => "ScheduleFired",
            ScheduleEvent::SlotsSkipped { .. } => "ScheduleSlotsSkipped",
        }
    }

    /// Reads a stored event of any schema version into today's shape.
    pub fn upcast(
        event_type: &str,
        schema_version: i16,
        payload: Value,
    ) -> Result<ScheduleEvent, DomainError> {
        upcast_current(
            event_type,
            schema_version,
            payload,
            &Self::EVENT_TYPES,
            Self::SCHEMA_VERSION,
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ScheduleCommand {
    Create {
        tenant_id: TenantId,
        id: Uuid,
        spec: ScheduleSpec,
    },
    Pause,
    Resume,
    Delete,
    /// The scheduler's tick: settle every slot due by `now`. A slot more
    /// than `grace` late counts as missed and follows the missed policy;
    /// one within `grace` is merely late and fires.
    Fire {
        grace: TimeDelta,
    },
}

/// A schedule's state; `Default` is one not yet created.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Schedule {
    created: Option<(TenantId, Uuid, ScheduleSpec)>,
    paused: bool,
    deleted: bool,
    next_slot: Option<DateTime<Utc>>,
    last_fired: Option<DateTime<Utc>>,
    last_failure: Option<String>,
}

impl Schedule {
    /// The key of the notification sent for `slot` of schedule `id`: the same
    /// in every process and after any restart.
    pub fn idempotency_key(id: Uuid, slot: DateTime<Utc>) -> String {
        format!(
            "schedule:{id}:{}",
            slot.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    }

    pub fn tenant_id(&self) -> Option<&TenantId> {
        self.created.as_ref().map(|(tenant_id, _, _)| tenant_id)
    }

    pub fn id(&self) -> Option<Uuid> {
        self.created.as_ref().map(|(_, id, _)| *id)
    }

    pub fn spec(&self) -> Option<&ScheduleSpec> {
        self.created.as_ref().map(|(_, _, spec)| spec)
    }

    pub fn is_live(&self) -> bool {
        self.created.is_some() && !self.deleted
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// The next slot to fire; `None` while paused, once deleted, or when the
    /// expression never matches again.
    pub fn next_slot(&self) -> Option<DateTime<Utc>> {
        self.next_slot.filter(|_| self.is_live() && !self.paused)
    }

    pub fn last_fired(&self) -> Option<DateTime<Utc>> {
        self.last_fired
    }

    pub fn last_failure(&self) -> Option<&str> {
        self.last_failure.as_deref()
    }

    /// What the scheduler records at `now`: nothing when no slot is due; a
    /// `Fired` for a due slot within `grace`; for missed slots, `SlotsSkipped`
    /// and (catching up) a `Fired` for the latest of them. At most one
    /// `Fired`, always last, so one notification is sent per decision.
    fn fire(&self, now: DateTime<Utc>, grace: TimeDelta) -> Vec<ScheduleEvent> {
        let (Some(spec), Some(due)) = (self.spec(), self.next_slot()) else {
            return Vec::new();
        };
        if due > now {
            return Vec::new();
        }
        let next = |after| spec.cron.next_after(spec.timezone, after);
        let missed_before = now - grace;
        if due >= missed_before {
            return vec![ScheduleEvent::Fired {
                slot: due,
                failure: None,
                next_slot: next(due),
            }];
        }
        // Count the missed slots (`due` up to the last before `missed_before`).
        let mut count = 1;
        let mut latest = due;
        while let Some(slot) = next(latest).filter(|slot| *slot < missed_before) {
            if count == MAX_COUNTED_SLOTS {
                latest = spec
                    .cron
                    .previous_before(spec.timezone, missed_before)
                    .unwrap_or(slot);
                break;
            }
            count += 1;
            latest = slot;
        }
        let following = next(latest);
        match spec.missed_policy {
            MissedPolicy::Skip => vec![ScheduleEvent::SlotsSkipped {
                count,
                from: due,
                to: latest,
                next_slot: following,
            }],
            MissedPolicy::CatchUpOnce => {
                let mut events = Vec::new();
                if let Some(before_latest) = spec
                    .cron
                    .previous_before(spec.timezone, latest)
                    .filter(|_| count > 1)
                {
                    events.push(ScheduleEvent::SlotsSkipped {
                        count: count - 1,
                        from: due,
                        to: before_latest,
                        next_slot: Some(latest),
                    });
                }
                events.push(ScheduleEvent::Fired {
                    slot: latest,
                    failure: None,
                    next_slot: following,
                });
                events
            }
        }
    }

    fn require_live(&self) -> Result<&ScheduleSpec, DomainError> {
        match self.spec() {
            Some(spec) if !self.deleted => Ok(spec),
            _ => Err(DomainError::InvalidCommand(
                "the schedule does not exist or was deleted",
            )),
        }
    }
}

impl Aggregate for Schedule {
    type Command = ScheduleCommand;
    type Event = ScheduleEvent;
    type Error = DomainError;

    fn apply(&mut self, event: &ScheduleEvent) {
        match event {
            ScheduleEvent::Created {
                tenant_id,
                id,
                name,
                cron,
                timezone,
                missed_policy,
                notification,
                next_slot,
            } => {
                let spec = ScheduleSpec {
                    name: name.clone(),
                    cron: cron.clone(),
                    timezone: *timezone,
                    missed_policy: *missed_policy,
                    notification: notification.clone(),
                };
                self.created = Some((tenant_id.clone(), *id, spec));
                self.next_slot = *next_slot;
            }
            ScheduleEvent::Paused => self.paused = true,
            ScheduleEvent::Resumed { next_slot } => {
                self.paused = false;
                self.next_slot = *next_slot;
            }
            ScheduleEvent::Deleted => self.deleted = true,
            ScheduleEvent::Fired {
                slot,
                failure,
                next_slot,
            } => {
                self.last_fired = Some(*slot);
                self.last_failure = failure.clone();
                self.next_slot = *next_slot;
            }
            ScheduleEvent::SlotsSkipped { next_slot, .. } => self.next_slot = *next_slot,
        }
    }

    fn decide(
        &self,
        command: ScheduleCommand,
        now: DateTime<Utc>,
    ) -> Result<Vec<ScheduleEvent>, DomainError> {
        match command {
            ScheduleCommand::Create {
                tenant_id,
                id,
                spec,
            } => {
                if self.created.is_some() {
                    return Err(DomainError::InvalidCommand("the schedule already exists"));
                }
                let next_slot = spec.cron.next_after(spec.timezone, now);
                Ok(vec![ScheduleEvent::Created {
                    tenant_id,
                    id,
                    name: spec.name,
                    cron: spec.cron,
                    timezone: spec.timezone,
                    missed_policy: spec.missed_policy,
                    notification: spec.notification,
                    next_slot,
                }])
            }
            ScheduleCommand::Pause => {
                self.require_live()?;
                if self.paused {
                    return Err(DomainError::InvalidCommand(
                        "the schedule is already paused",
                    ));
                }
                Ok(vec![ScheduleEvent::Paused])
            }
            ScheduleCommand::Resume => {
                let spec = self.require_live()?;
                if !self.paused {
                    return Err(DomainError::InvalidCommand("the schedule is not paused"));
                }
                Ok(vec![ScheduleEvent::Resumed {
                    next_slot: spec.cron.next_after(spec.timezone, now),
                }])
            }
            ScheduleCommand::Delete => {
                self.require_live()?;
                Ok(vec![ScheduleEvent::Deleted])
            }
            ScheduleCommand::Fire { grace } => Ok(self.fire(now, grace)),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;
    use crate::domain::Given;
    use crate::domain::given_when_then::given;
    use crate::domain::values::{Channel, Priority};

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    fn paris() -> Timezone {
        Timezone::parse("Europe/Paris").unwrap()
    }

    fn cron(raw: &str) -> CronExpression {
        CronExpression::parse(raw).unwrap()
    }

    fn send() -> SendNotification {
        serde_json::from_value(json!({
            "recipient": { "ntfy_topic": "alerts" },
            "channels": ["ntfy"],
            "content": { "title": "Daily digest", "text": "Good morning" },
            "ttl_seconds": 3600,
        }))
        .unwrap()
    }

    fn spec(raw: &str, missed_policy: MissedPolicy) -> ScheduleSpec {
        CreateSchedule {
            name: "digest".into(),
            cron: raw.into(),
            timezone: "Europe/Paris".into(),
            missed_policy,
            notification: send(),
        }
        .parse(utc(2026, 1, 1, 0, 0, 0))
        .unwrap()
        .0
    }

    fn created(raw: &str, missed_policy: MissedPolicy, next_slot: DateTime<Utc>) -> ScheduleEvent {
        let spec = spec(raw, missed_policy);
        ScheduleEvent::Created {
            tenant_id: TenantId::parse("acme").unwrap(),
            id: Uuid::from_u128(7),
            name: spec.name,
            cron: spec.cron,
            timezone: spec.timezone,
            missed_policy,
            notification: spec.notification,
            next_slot: Some(next_slot),
        }
    }

    const GRACE: TimeDelta = TimeDelta::seconds(60);

    #[test]
    fn five_or_six_fields_and_nothing_else() {
        let every_minute = cron("*/1 * * * *");
        let after = utc(2026, 1, 1, 10, 0, 30);
        assert_eq!(
            every_minute.next_after(paris(), after),
            Some(utc(2026, 1, 1, 10, 1, 0))
        );
        let every_second = cron("*/1 * * * * *");
        assert_eq!(
            every_second.upcoming(paris(), after, 2),
            [utc(2026, 1, 1, 10, 0, 31), utc(2026, 1, 1, 10, 0, 32)]
        );
        assert_eq!(cron("  0  9 * *   MON ").as_str(), "0 9 * * MON");
        for bad in [
            "",
            "* * * *",
            "0 0 0 * * * 2030",
            "61 * * * *",
            "nonsense x y z w",
        ] {
            assert!(CronExpression::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_slot_lost_to_spring_forward_fires_right_after_the_gap() {
        // Paris skips 02:00-03:00 on 2026-03-29: a 02:30 daily schedule fires
        // at 03:00 local that day, once, and at 02:30 again the next.
        let daily = cron("30 2 * * *");
        let slots = daily.upcoming(paris(), utc(2026, 3, 27, 12, 0, 0), 3);
        assert_eq!(
            slots,
            [
                utc(2026, 3, 28, 1, 30, 0), // 02:30 CET
                utc(2026, 3, 29, 1, 0, 0),  // 03:00 CEST, right after the gap
                utc(2026, 3, 30, 0, 30, 0), // 02:30 CEST
            ]
        );
    }

    #[test]
    fn a_slot_repeated_by_fall_back_fires_once() {
        // 02:00-03:00 happens twice in Paris on 2026-10-25.
        let daily = cron("30 2 * * *");
        let slots = daily.upcoming(paris(), utc(2026, 10, 24, 12, 0, 0), 2);
        assert_eq!(
            slots,
            [
                utc(2026, 10, 25, 0, 30, 0), // the first 02:30, CEST
                utc(2026, 10, 26, 1, 30, 0), // 02:30 CET the next day
            ]
        );
    }

    #[test]
    fn create_records_the_first_slot_in_the_time_zone() {
        let now = utc(2026, 1, 5, 6, 0, 0);
        given::<Schedule>([])
            .at(now)
            .when(ScheduleCommand::Create {
                tenant_id: TenantId::parse("acme").unwrap(),
                id: Uuid::from_u128(7),
                spec: spec("0 9 * * *", MissedPolicy::Skip),
            })
            // 09:00 in Paris in winter is 08:00 UTC.
            .then([created(
                "0 9 * * *",
                MissedPolicy::Skip,
                utc(2026, 1, 5, 8, 0, 0),
            )]);
    }

    #[test]
    fn a_due_slot_fires_once_and_moves_on() {
        let first = utc(2026, 1, 5, 8, 0, 0);
        let history = [created("0 9 * * *", MissedPolicy::Skip, first)];
        given::<Schedule>(history.clone())
            .at(first - TimeDelta::seconds(1))
            .when(ScheduleCommand::Fire { grace: GRACE })
            .then_nothing();
        let fired = ScheduleEvent::Fired {
            slot: first,
            failure: None,
            next_slot: Some(utc(2026, 1, 6, 8, 0, 0)),
        };
        given::<Schedule>(history.clone())
            .at(first + TimeDelta::seconds(59))
            .when(ScheduleCommand::Fire { grace: GRACE })
            .then([fired.clone()]);
        given::<Schedule>([history[0].clone(), fired])
            .at(first + TimeDelta::seconds(59))
            .when(ScheduleCommand::Fire { grace: GRACE })
            .then_nothing();
    }

    #[test]
    fn missed_slots_are_skipped_by_default() {
        let first = utc(2026, 1, 5, 8, 0, 0);
        // Down from before the 5th's slot until 08:30 UTC on the 8th.
        given::<Schedule>([created("0 9 * * *", MissedPolicy::Skip, first)])
            .at(utc(2026, 1, 8, 8, 30, 0))
            .when(ScheduleCommand::Fire { grace: GRACE })
            .then([ScheduleEvent::SlotsSkipped {
                count: 4,
                from: first,
                to: utc(2026, 1, 8, 8, 0, 0),
                next_slot: Some(utc(2026, 1, 9, 8, 0, 0)),
            }]);
    }

    #[test]
    fn catch_up_once_fires_the_latest_missed_slot_only() {
        let first = utc(2026, 1, 5, 8, 0, 0);
        let history = [created("0 9 * * *", MissedPolicy::CatchUpOnce, first)];
        given::<Schedule>(history.clone())
            .at(utc(2026, 1, 8, 8, 30, 0))
            .when(ScheduleCommand::Fire { grace: GRACE })
            .then([
                ScheduleEvent::SlotsSkipped {
                    count: 3,
                    from: first,
                    to: utc(2026, 1, 7, 8, 0, 0),
                    next_slot: Some(utc(2026, 1, 8, 8, 0, 0)),
                },
                ScheduleEvent::Fired {
                    slot: utc(2026, 1, 8, 8, 0, 0),
                    failure: None,
                    next_slot: Some(utc(2026, 1, 9, 8, 0, 0)),
                },
            ]);
        // One missed slot: it fires, nothing is skipped.
        given::<Schedule>(history)
            .at(first + TimeDelta::hours(1))
            .when(ScheduleCommand::Fire { grace: GRACE })
            .then([ScheduleEvent::Fired {
                slot: first,
                failure: None,
                next_slot: Some(utc(2026, 1, 6, 8, 0, 0)),
            }]);
    }

    #[test]
    fn a_paused_schedule_never_fires_and_resumes_after_now() {
        let first = utc(2026, 1, 5, 8, 0, 0);
        let history = [
            created("0 9 * * *", MissedPolicy::CatchUpOnce, first),
            ScheduleEvent::Paused,
        ];
        given::<Schedule>(history.clone())
            .at(first + TimeDelta::days(3))
            .when(ScheduleCommand::Fire { grace: GRACE })
            .then_nothing();
        given::<Schedule>(history.clone())
            .at(utc(2026, 1, 8, 8, 30, 0))
            .when(ScheduleCommand::Resume)
            .then([ScheduleEvent::Resumed {
                next_slot: Some(utc(2026, 1, 9, 8, 0, 0)),
            }]);
        given::<Schedule>(history.clone())
            .when(ScheduleCommand::Pause)
            .then_error(DomainError::InvalidCommand(
                "the schedule is already paused",
            ));
        given::<Schedule>([history[0].clone()])
            .when(ScheduleCommand::Resume)
            .then_error(DomainError::InvalidCommand("the schedule is not paused"));
    }

    #[test]
    fn nothing_after_delete() {
        let first = utc(2026, 1, 5, 8, 0, 0);
        let gone = DomainError::InvalidCommand("the schedule does not exist or was deleted");
        let history = [
            created("0 9 * * *", MissedPolicy::Skip, first),
            ScheduleEvent::Deleted,
        ];
        for command in [
            ScheduleCommand::Pause,
            ScheduleCommand::Resume,
            ScheduleCommand::Delete,
        ] {
            given::<Schedule>(history.clone())
                .when(command.clone())
                .then_error(gone.clone());
            given::<Schedule>([]).when(command).then_error(gone.clone());
        }
        given::<Schedule>(history)
            .at(first + TimeDelta::seconds(1))
            .when(ScheduleCommand::Fire { grace: GRACE })
            .then_nothing();
    }

    #[test]
    fn parse_names_every_bad_field_with_the_notification_prefixed() {
        let mut notification = send();
        notification.idempotency_key = Some("mine".into());
        notification.channels = vec![Given::Text("pigeon".into())];
        let errors = CreateSchedule {
            name: " ".into(),
            cron: "* * *".into(),
            timezone: "Mars/Olympus".into(),
            missed_policy: MissedPolicy::Skip,
            notification,
        }
        .parse(utc(2026, 1, 1, 0, 0, 0))
        .unwrap_err();
        for path in [
            "name",
            "cron",
            "timezone",
            "notification.idempotency_key",
            "notification.channels[0]",
        ] {
            assert_eq!(errors.at(path).len(), 1, "{path}: {errors}");
        }
        let never = CreateSchedule {
            name: "leap".into(),
            cron: "0 0 30 2 *".into(),
            timezone: "UTC".into(),
            missed_policy: MissedPolicy::Skip,
            notification: send(),
        }
        .parse(utc(2026, 1, 1, 0, 0, 0));
        assert!(never.is_err());
    }

    #[test]
    fn the_notification_replays_with_the_slot_key() {
        let spec = spec("0 9 * * *", MissedPolicy::Skip);
        let key = Schedule::idempotency_key(Uuid::from_u128(7), utc(2026, 1, 5, 8, 0, 0));
        assert_eq!(
            key,
            "schedule:00000000-0000-0000-0000-000000000007:2026-01-05T08:00:00Z"
        );
        let replayed = spec.notification_for(key.clone()).unwrap();
        assert_eq!(replayed.idempotency_key, Some(key));
        assert!(replayed.parse(utc(2026, 1, 5, 8, 0, 0)).is_ok());
    }

    #[test]
    fn a_notification_stored_in_todays_shape_reads_back_and_is_written_alike() {
        // What `ScheduleCreated` holds for a schedule created over GraphQL
        // (typed channels and default priority, written as text).
        let stored = json!({
            "idempotency_key": null,
            "recipient": {
                "id": null, "email": "ada@example.com", "phone": null, "push_target": null,
                "webhook_url": null, "ntfy_topic": "alerts", "locale": null, "timezone": null,
            },
            "channels": ["ntfy", "email"],
            "priority": "NORMAL",
            "content": {"title": "Digest", "text": null, "html": null, "cta_url": null, "data": null},
            "template": null,
            "category": "digest",
            "schedule_at": null,
            "expires_at": null,
            "ttl_seconds": 3600,
            "callback_url": null,
            "tags": ["daily"],
            "metadata": null,
            "trace_id": null,
            "source_event": null,
            "attachments": [],
        });
        let read = |notification: &Value| {
            let payload = json!({
                "type": "ScheduleCreated", "tenant_id": "acme", "id": Uuid::from_u128(7),
                "name": "digest", "cron": "0 9 * * *", "timezone": "Europe/Paris",
                "missed_policy": "SKIP", "notification": notification,
                "next_slot": "2026-01-05T08:00:00Z",
            });
            let mut schedule = Schedule::default();
            schedule.apply(&ScheduleEvent::upcast("ScheduleCreated", 1, payload).unwrap());
            let send = schedule
                .spec()
                .unwrap()
                .notification_for("k".into())
                .unwrap();
            send.parse(utc(2026, 1, 5, 8, 0, 0)).unwrap()
        };
        let request = read(&stored);
        assert_eq!(request.channels, [Channel::Ntfy, Channel::Email]);
        assert_eq!(request.priority, Priority::Normal);
        let mut lower = stored.clone();
        lower["priority"] = json!("high");
        assert_eq!(read(&lower).priority, Priority::High);

        // Read as typed values ("ntfy", "NORMAL"), it is written back the same.
        let send: SendNotification = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(send.channels[0], Given::Typed(Channel::Ntfy));
        assert_eq!(serde_json::to_value(&send).unwrap(), stored);
    }

    #[test]
    fn every_event_round_trips_through_upcast() {
        let slot = utc(2026, 1, 5, 8, 0, 0);
        for event in [
            created("0 9 * * *", MissedPolicy::CatchUpOnce, slot),
            ScheduleEvent::Paused,
            ScheduleEvent::Resumed { next_slot: None },
            ScheduleEvent::Deleted,
            ScheduleEvent::Fired {
                slot,
                failure: Some("quota".into()),
                next_slot: Some(slot),
            },
            ScheduleEvent::SlotsSkipped {
                count: 2,
                from: slot,
                to: slot,
                next_slot: None,
            },
        ] {
            let payload = serde_json::to_value(&event).unwrap();
            assert_eq!(
                ScheduleEvent::upcast(event.event_type(), ScheduleEvent::SCHEMA_VERSION, payload),
                Ok(event)
            );
        }
    }
}
