//! Quiet hours in a recipient's timezone: when a NORMAL/LOW notification must wait, DST-correct.
//!
//! A window is wall-clock time (`22:00`–`07:00`) and may wrap midnight. Each
//! night's window runs from the first instant the local clock reads `start`
//! to the first instant after that it reads `end`. On a spring-forward day a
//! time inside the gap never shows, so it is reached at the jump itself; on a
//! fall-back day a repeated time is reached at its first showing, so a window
//! ends once and does not start again when the clock shows the hour twice.
//!
//! The tenant's default window is the `TenantQuietHours` aggregate:
//!
//! | command | legal when | records |
//! |---|---|---|
//! | Set | always; nothing when unchanged | TenantQuietHoursSet |
//! | Clear | always; nothing when already off | TenantQuietHoursCleared |

use chrono::{
    DateTime, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, TimeZone, Utc,
};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::aggregate::Aggregate;
use super::domain_error::DomainError;
use super::tagged_payload::upcast_current;
use super::validation_errors::ValidationErrors;
use super::values::ValueError;

/// The longest stretch a clock has ever skipped is a day (Samoa, 2011);
/// looking two days either side of a skipped time always finds its edges.
const MAX_GAP_MINUTES: i64 = 2 * 24 * 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuietHours {
    pub start: NaiveTime,
    pub end: NaiveTime,
}

/// A time of day as `HH:MM` on a 24-hour clock.
pub fn time_of_day(raw: &str) -> Result<NaiveTime, ValueError> {
    let well_formed = raw.len() == 5 && raw.as_bytes()[2] == b':';
    well_formed
        .then(|| NaiveTime::parse_from_str(raw, "%H:%M").ok())
        .flatten()
        .ok_or_else(|| {
            ValueError::Invalid("must be a time of day as HH:MM (00:00 to 23:59)".into())
        })
}

impl QuietHours {
    /// Two `HH:MM` times that differ; `end` before `start` wraps midnight.
    pub fn parse(start: &str, end: &str) -> Result<QuietHours, ValueError> {
        let mut errors = ValidationErrors::default();
        QuietHours::check(&mut errors, "start", "end", start, end).ok_or_else(|| {
            ValueError::Invalid(
                errors
                    .errors()
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })
    }

    /// Parses both ends, recording each refusal under its own path.
    pub(crate) fn check(
        errors: &mut ValidationErrors,
        start_path: &str,
        end_path: &str,
        start: &str,
        end: &str,
    ) -> Option<QuietHours> {
        let start = errors.check(start_path, time_of_day(start.trim()));
        let end = errors.check(end_path, time_of_day(end.trim()));
        let (start, end) = (start?, end?);
        if start == end {
            errors.add(end_path, "must differ from start");
            return None;
        }
        Some(QuietHours { start, end })
    }

    /// `HH:MM`, as [`parse`](Self::parse) reads it.
    pub fn start_text(&self) -> String {
        self.start.format("%H:%M").to_string()
    }

    pub fn end_text(&self) -> String {
        self.end.format("%H:%M").to_string()
    }

    /// None when `now` is outside the window in `tz`; else the first instant
    /// >= now when it ends.
    pub fn release_at(&self, now: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let today = now.with_timezone(&tz).date_naive();
        // Only the night that began yesterday (when the window wraps) or
        // today's can hold `now`.
        [today.pred_opt()?, today].into_iter().find_map(|day| {
            let (start, end) = self.window(day, tz)?;
            (start <= now && now < end).then_some(end)
        })
    }

    fn wraps_midnight(&self) -> bool {
        self.end < self.start
    }

    /// The window that starts on local date `day`, as instants.
    fn window(&self, day: NaiveDate, tz: Tz) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let end_day = if self.wraps_midnight() {
            day.succ_opt()?
        } else {
            day
        };
        Some((
            first_reading(tz, day.and_time(self.start))?,
            first_reading(tz, end_day.and_time(self.end))?,
        ))
    }
}

/// The first instant at which the clock in `tz` reads `local` or later.
fn first_reading(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(at) => Some(at.with_timezone(&Utc)),
        LocalResult::Ambiguous(first, _) => Some(first.with_timezone(&Utc)),
        LocalResult::None => gap_end(tz, local),
    }
}

/// `local` falls in a gap the clock jumps over: the jump is the first
/// instant reading `local` or later. Found between the last reading before
/// the gap and the first after it, to the second.
fn gap_end(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    let shown = |minutes: i64| {
        let naive = local.checked_add_signed(TimeDelta::minutes(minutes))?;
        match tz.from_local_datetime(&naive) {
            LocalResult::Single(at) => Some((at.with_timezone(&Utc), at.with_timezone(&Utc))),
            LocalResult::Ambiguous(first, last) => {
                Some((first.with_timezone(&Utc), last.with_timezone(&Utc)))
            }
            LocalResult::None => None,
        }
    };
    let (_, before) = (1..=MAX_GAP_MINUTES).find_map(|m| shown(-m))?;
    let (after, _) = (1..=MAX_GAP_MINUTES).find_map(shown)?;
    // The clock reads before `local` at `before` and after it at `after`;
    // the zone database changes offsets on whole seconds.
    let (mut before, mut after) = (before.timestamp(), after.timestamp());
    while after - before > 1 {
        let middle = before + (after - before) / 2;
        let reading = DateTime::from_timestamp(middle, 0)?.with_timezone(&tz);
        if reading.naive_local() >= local {
            after = middle;
        } else {
            before = middle;
        }
    }
    DateTime::from_timestamp(after, 0)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum TenantQuietHoursEvent {
    #[serde(rename = "TenantQuietHoursSet")]
    Set { quiet_hours: QuietHours },
    #[serde(rename = "TenantQuietHoursCleared")]
    Cleared,
}

impl TenantQuietHoursEvent {
    pub const SCHEMA_VERSION: i16 = 1;

    pub const EVENT_TYPES: [&'static str; 2] = ["TenantQuietHoursSet", "TenantQuietHoursCleared"];

    pub fn event_type(&self) -> &'static str {
        match self {
            TenantQuietHoursEvent::Set { .. } => "TenantQuietHoursSet",
            TenantQuietHoursEvent::Cleared => "TenantQuietHoursCleared",
        }
    }

    /// Reads a stored event of any schema version into today's shape.
    pub fn upcast(
        event_type: &str,
        schema_version: i16,
        payload: Value,
    ) -> Result<TenantQuietHoursEvent, DomainError> {
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
pub enum TenantQuietHoursCommand {
    Set(QuietHours),
    Clear,
}

/// A tenant's default quiet hours; `Default` is off.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TenantQuietHours {
    quiet_hours: Option<QuietHours>,
}

impl TenantQuietHours {
    pub fn quiet_hours(&self) -> Option<QuietHours> {
        self.quiet_hours
    }
}

impl Aggregate for TenantQuietHours {
    type Command = TenantQuietHoursCommand;
    type Event = TenantQuietHoursEvent;
    type Error = DomainError;

    fn apply(&mut self, event: &TenantQuietHoursEvent) {
        self.quiet_hours = match event {
            TenantQuietHoursEvent::Set { quiet_hours } => Some(*quiet_hours),
            TenantQuietHoursEvent::Cleared => None,
        };
    }

    fn decide(
        &self,
        command: TenantQuietHoursCommand,
        _now: DateTime<Utc>,
    ) -> Result<Vec<TenantQuietHoursEvent>, DomainError> {
        Ok(match command {
            TenantQuietHoursCommand::Set(quiet_hours) if self.quiet_hours != Some(quiet_hours) => {
                vec![TenantQuietHoursEvent::Set { quiet_hours }]
            }
            TenantQuietHoursCommand::Clear if self.quiet_hours.is_some() => {
                vec![TenantQuietHoursEvent::Cleared]
            }
            TenantQuietHoursCommand::Set(_) | TenantQuietHoursCommand::Clear => Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Offset, TimeZone};
    use proptest::prelude::*;

    use super::*;
    use crate::domain::given_when_then::given;

    fn window(start: &str, end: &str) -> QuietHours {
        QuietHours::parse(start, end).unwrap()
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    const PARIS: Tz = chrono_tz::Europe::Paris;
    const NEW_YORK: Tz = chrono_tz::America::New_York;

    #[test]
    fn parse_takes_distinct_hh_mm_times() {
        let night = window("22:00", "07:00");
        assert_eq!(night.start_text(), "22:00");
        assert_eq!(night.end_text(), "07:00");
        for (start, end) in [
            ("7:00", "08:00"),
            ("24:00", "07:00"),
            ("22:00", "07:60"),
            ("22h00", "07:00"),
            ("22:00:00", "07:00"),
            ("", "07:00"),
            ("22:00", "22:00"),
        ] {
            assert!(QuietHours::parse(start, end).is_err(), "{start:?}-{end:?}");
        }
        let mut errors = ValidationErrors::default();
        assert_eq!(
            QuietHours::check(&mut errors, "q.start", "q.end", "25:00", "nope"),
            None
        );
        assert_eq!(errors.at("q.start").len(), 1);
        assert_eq!(errors.at("q.end").len(), 1);
        let mut errors = ValidationErrors::default();
        QuietHours::check(&mut errors, "q.start", "q.end", "08:00", "08:00");
        assert_eq!(errors.at("q.end"), ["must differ from start"]);
    }

    #[test]
    fn a_window_wrapping_midnight_ends_on_the_next_local_morning() {
        let night = window("22:00", "07:00");
        // Paris in January is UTC+1.
        assert_eq!(
            night.release_at(utc(2026, 1, 15, 22, 30), PARIS),
            Some(utc(2026, 1, 16, 6, 0))
        );
        assert_eq!(
            night.release_at(utc(2026, 1, 16, 3, 0), PARIS),
            Some(utc(2026, 1, 16, 6, 0))
        );
        assert_eq!(
            night.release_at(utc(2026, 1, 15, 21, 0), PARIS),
            Some(utc(2026, 1, 16, 6, 0)),
            "the start is inside"
        );
        assert_eq!(
            night.release_at(utc(2026, 1, 16, 6, 0), PARIS),
            None,
            "the end is outside"
        );
    }

    #[test]
    fn now_outside_the_window_is_none() {
        let night = window("22:00", "07:00");
        assert_eq!(night.release_at(utc(2026, 1, 16, 12, 0), PARIS), None);
        assert_eq!(night.release_at(utc(2026, 1, 15, 20, 59), PARIS), None);
        let lunch = window("12:00", "13:30");
        // New York in June is UTC-4.
        assert_eq!(lunch.release_at(utc(2026, 6, 1, 15, 59), NEW_YORK), None);
        assert_eq!(
            lunch.release_at(utc(2026, 6, 1, 16, 0), NEW_YORK),
            Some(utc(2026, 6, 1, 17, 30))
        );
        assert_eq!(lunch.release_at(utc(2026, 6, 1, 17, 30), NEW_YORK), None);
    }

    #[test]
    fn paris_spring_forward_ends_at_the_summer_time_morning() {
        // 2026-03-29: 02:00 CET jumps to 03:00 CEST at 01:00 UTC.
        let night = window("22:00", "07:00");
        assert_eq!(
            night.release_at(utc(2026, 3, 28, 22, 0), PARIS),
            Some(utc(2026, 3, 29, 5, 0)),
            "07:00 CEST, not 07:00 CET"
        );
    }

    #[test]
    fn an_end_in_the_spring_forward_gap_ends_at_the_jump() {
        // 02:30 never shows in Paris on 2026-03-29: the first reading past it
        // is 03:00 CEST, 01:00 UTC.
        let night = window("22:00", "02:30");
        assert_eq!(
            night.release_at(utc(2026, 3, 28, 23, 0), PARIS),
            Some(utc(2026, 3, 29, 1, 0))
        );
        assert_eq!(
            night.release_at(utc(2026, 3, 29, 0, 59) + TimeDelta::seconds(59), PARIS),
            Some(utc(2026, 3, 29, 1, 0))
        );
        assert_eq!(night.release_at(utc(2026, 3, 29, 1, 0), PARIS), None);
        // New York, 2026-03-08: 02:00 EST jumps to 03:00 EDT at 07:00 UTC.
        let early = window("01:00", "02:30");
        assert_eq!(
            early.release_at(utc(2026, 3, 8, 6, 30), NEW_YORK),
            Some(utc(2026, 3, 8, 7, 0))
        );
    }

    #[test]
    fn a_start_in_the_spring_forward_gap_starts_at_the_jump() {
        let window = window("02:15", "05:00");
        assert_eq!(window.release_at(utc(2026, 3, 8, 6, 59), NEW_YORK), None);
        assert_eq!(
            window.release_at(utc(2026, 3, 8, 7, 0), NEW_YORK),
            Some(utc(2026, 3, 8, 9, 0)),
            "03:00 EDT is inside, released at 05:00 EDT"
        );
    }

    #[test]
    fn fall_back_ends_at_the_first_showing_of_a_repeated_time() {
        // New York, 2026-11-01: 02:00 EDT falls back to 01:00 EST at 06:00 UTC,
        // so 01:30 shows at 05:30 UTC (EDT) and 06:30 UTC (EST).
        let night = window("22:00", "01:30");
        assert_eq!(
            night.release_at(utc(2026, 11, 1, 3, 0), NEW_YORK),
            Some(utc(2026, 11, 1, 5, 30))
        );
        assert_eq!(
            night.release_at(utc(2026, 11, 1, 6, 10), NEW_YORK),
            None,
            "01:10 EST, the second showing, is after the window ended"
        );
        // Paris, 2026-10-25: 03:00 CEST falls back to 02:00 CET at 01:00 UTC.
        let late = window("23:00", "02:30");
        assert_eq!(
            late.release_at(utc(2026, 10, 24, 22, 0), PARIS),
            Some(utc(2026, 10, 25, 0, 30))
        );
        assert_eq!(late.release_at(utc(2026, 10, 25, 1, 15), PARIS), None);
    }

    #[test]
    fn fall_back_night_lasts_an_hour_longer() {
        let night = window("22:00", "07:00");
        assert_eq!(
            night.release_at(utc(2026, 11, 1, 3, 0), NEW_YORK),
            Some(utc(2026, 11, 1, 12, 0)),
            "07:00 EST"
        );
        assert_eq!(
            night.release_at(utc(2026, 10, 24, 21, 0), PARIS),
            Some(utc(2026, 10, 25, 6, 0)),
            "07:00 CET"
        );
    }

    fn wall_contains(window: &QuietHours, time: NaiveTime) -> bool {
        if window.wraps_midnight() {
            time >= window.start || time < window.end
        } else {
            time >= window.start && time < window.end
        }
    }

    fn any_tz() -> impl Strategy<Value = Tz> {
        prop_oneof![Just(PARIS), Just(NEW_YORK), Just(Tz::UTC)]
    }

    fn any_window() -> impl Strategy<Value = QuietHours> {
        (0u32..1440, 1u32..1440).prop_map(|(start, length)| {
            let time =
                |minutes: u32| NaiveTime::from_hms_opt(minutes / 60 % 24, minutes % 60, 0).unwrap();
            QuietHours {
                start: time(start),
                end: time((start + length) % 1440),
            }
        })
    }

    /// Any second of 2026, so every DST change of both zones is covered.
    fn any_instant() -> impl Strategy<Value = DateTime<Utc>> {
        (0i64..365 * 86_400).prop_map(|second| utc(2026, 1, 1, 0, 0) + TimeDelta::seconds(second))
    }

    proptest! {
        #[test]
        fn the_release_is_ahead_and_the_window_holds_until_then(
            window in any_window(), now in any_instant(), tz in any_tz(),
        ) {
            if let Some(release) = window.release_at(now, tz) {
                prop_assert!(release > now);
                prop_assert!(release - now <= TimeDelta::hours(25));
                let just_before = (release - TimeDelta::seconds(1)).max(now);
                prop_assert_eq!(window.release_at(just_before, tz), Some(release));
            }
        }

        #[test]
        fn away_from_clock_changes_quiet_means_the_wall_clock_is_inside(
            window in any_window(), now in any_instant(), tz in any_tz(),
        ) {
            let offset = |at: DateTime<Utc>| tz.offset_from_utc_datetime(&at.naive_utc()).fix();
            prop_assume!(offset(now - TimeDelta::hours(26)) == offset(now + TimeDelta::hours(26)));
            let local = now.with_timezone(&tz).time();
            prop_assert_eq!(window.release_at(now, tz).is_some(), wall_contains(&window, local));
            if let Some(release) = window.release_at(now, tz) {
                prop_assert_eq!(release.with_timezone(&tz).time(), window.end);
            }
        }
    }

    #[test]
    fn tenant_quiet_hours_set_and_clear_once() {
        let night = window("22:00", "07:00");
        let set = TenantQuietHoursEvent::Set { quiet_hours: night };
        given::<TenantQuietHours>([])
            .when(TenantQuietHoursCommand::Set(night))
            .then([set.clone()]);
        given::<TenantQuietHours>([set.clone()])
            .when(TenantQuietHoursCommand::Set(night))
            .then_nothing();
        given::<TenantQuietHours>([set.clone()])
            .when(TenantQuietHoursCommand::Clear)
            .then([TenantQuietHoursEvent::Cleared]);
        given::<TenantQuietHours>([set.clone(), TenantQuietHoursEvent::Cleared])
            .when(TenantQuietHoursCommand::Clear)
            .then_nothing();
        assert_eq!(
            TenantQuietHours::fold(std::slice::from_ref(&set)).quiet_hours(),
            Some(night)
        );
        assert_eq!(
            TenantQuietHours::fold(&[set, TenantQuietHoursEvent::Cleared]).quiet_hours(),
            None
        );
    }

    #[test]
    fn tenant_events_round_trip_through_upcast() {
        for event in [
            TenantQuietHoursEvent::Set {
                quiet_hours: window("22:00", "07:00"),
            },
            TenantQuietHoursEvent::Cleared,
        ] {
            let payload = serde_json::to_value(&event).unwrap();
            assert_eq!(
                TenantQuietHoursEvent::upcast(
                    event.event_type(),
                    TenantQuietHoursEvent::SCHEMA_VERSION,
                    payload
                ),
                Ok(event)
            );
        }
    }
}
