//! Analyst queries over the `analytics` read model.

use std::collections::BTreeMap;

use async_graphql::{Context, Enum, Object, Result, SimpleObject};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};

use super::{ApiError, api, require};
use crate::domain::Scope;
use crate::projections::analytics;

/// What `analytics` rows are grouped by.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug, Ord, PartialOrd)]
pub enum AnalyticsDimension {
    Hour,
    Day,
    Channel,
    Status,
}

/// One group: the dimensions asked for are set, the others are null.
#[derive(SimpleObject, Debug, Clone, PartialEq)]
pub struct AnalyticsRow {
    pub hour: Option<DateTime<Utc>>,
    pub day: Option<DateTime<Utc>>,
    pub channel: Option<String>,
    pub status: Option<String>,
    /// Notifications that entered the status (or any status, without STATUS).
    pub count: i64,
    /// With STATUS: `count` over the group's REQUESTED count (e.g. the share
    /// delivered); null when nothing was requested in the group.
    pub rate: Option<f64>,
}

/// The longest window one query may cover.
const MAX_WINDOW: TimeDelta = TimeDelta::days(366);

#[derive(Default)]
pub struct AnalyticsQuery;

#[Object]
impl AnalyticsQuery {
    /// Counts of notifications entering each status, per tenant, in `[from, to)`,
    /// grouped by the dimensions given (hour buckets are UTC).
    async fn analytics(
        &self,
        ctx: &Context<'_>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        group_by: Vec<AnalyticsDimension>,
    ) -> Result<Vec<AnalyticsRow>> {
        let principal = require(ctx, Scope::Read)?;
        if to <= from || to - from > MAX_WINDOW {
            return Err(
                ApiError::field("to", "must be after `from`, at most 366 days later").into(),
            );
        }
        let counts = analytics::counts(
            api(ctx)?.store.pool(),
            principal.tenant_id.as_str(),
            from,
            to,
        )
        .await?;
        Ok(group(&counts, &group_by))
    }
}

type Key = (
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<String>,
    Option<String>,
);

fn group(counts: &[analytics::Count], by: &[AnalyticsDimension]) -> Vec<AnalyticsRow> {
    let has = |d| by.contains(&d);
    let key = |c: &analytics::Count, status: Option<&str>| -> Key {
        (
            has(AnalyticsDimension::Hour).then_some(c.hour),
            has(AnalyticsDimension::Day)
                .then(|| c.hour.duration_trunc(TimeDelta::days(1)).unwrap_or(c.hour)),
            has(AnalyticsDimension::Channel).then(|| c.channel.clone()),
            status.map(str::to_string),
        )
    };
    let by_status = has(AnalyticsDimension::Status);
    let mut totals: BTreeMap<Key, i64> = BTreeMap::new();
    let mut requested: BTreeMap<Key, i64> = BTreeMap::new();
    for c in counts {
        if by_status || c.status == "REQUESTED" {
            *totals
                .entry(key(c, by_status.then_some(c.status.as_str())))
                .or_default() += c.count;
        }
        if c.status == "REQUESTED" {
            *requested.entry(key(c, None)).or_default() += c.count;
        }
    }
    totals
        .into_iter()
        .map(|((hour, day, channel, status), count)| {
            let base = requested.get(&(hour, day, channel.clone(), None)).copied();
            AnalyticsRow {
                rate: status
                    .as_ref()
                    .and(base)
                    .filter(|b| *b > 0)
                    .map(|b| count as f64 / b as f64),
                hour,
                day,
                channel,
                status,
                count,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(hour: u32, channel: &str, status: &str, count: i64) -> analytics::Count {
        analytics::Count {
            hour: format!("2026-01-01T{hour:02}:00:00Z").parse().unwrap(),
            channel: channel.into(),
            status: status.into(),
            count,
        }
    }

    #[test]
    fn groups_and_rates_follow_the_dimensions_asked_for() {
        let counts = [
            count(10, "email", "REQUESTED", 10),
            count(10, "email", "DELIVERED", 8),
            count(11, "email", "REQUESTED", 10),
            count(11, "sms", "REQUESTED", 5),
            count(11, "sms", "DELIVERED", 5),
        ];
        let by_channel = group(
            &counts,
            &[AnalyticsDimension::Channel, AnalyticsDimension::Status],
        );
        let email_delivered = by_channel
            .iter()
            .find(|r| {
                r.channel.as_deref() == Some("email") && r.status.as_deref() == Some("DELIVERED")
            })
            .unwrap();
        assert_eq!(email_delivered.count, 8);
        assert_eq!(email_delivered.rate, Some(0.4));
        let sms_delivered = by_channel
            .iter()
            .find(|r| {
                r.channel.as_deref() == Some("sms") && r.status.as_deref() == Some("DELIVERED")
            })
            .unwrap();
        assert_eq!(sms_delivered.rate, Some(1.0));

        let by_day = group(&counts, &[AnalyticsDimension::Day]);
        assert_eq!(by_day.len(), 1);
        assert_eq!(
            by_day[0].count, 25,
            "without STATUS, counts are of requested notifications"
        );
        assert_eq!(by_day[0].rate, None);
    }
}
