//! Analyst queries over the `analytics` read model.

use std::collections::BTreeMap;

use async_graphql::{Context, Enum, InputObject, Object, Result, SimpleObject};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};

use super::types::{Channel, NotificationStatus};
use super::{ApiError, api, require};
use crate::domain::Scope;
use crate::projections::analytics;

/// What `analytics` rows are grouped by.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug, Ord, PartialOrd)]
pub enum AnalyticsDimension {
    Hour,
    Day,
    Channel,
    /// The provider of the latest delivery attempt, "none" before the first
    /// (so REQUESTED is always under "none", and rates by provider are null).
    Provider,
    /// The request's template key, "none" for content written out.
    Template,
    Status,
}

/// What `deliveryLatency` rows are grouped by.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug, Ord, PartialOrd)]
pub enum LatencyDimension {
    Hour,
    Day,
    Channel,
    Provider,
    Template,
}

/// Counts only the rows that match every field given.
#[derive(InputObject, Default, Debug)]
pub struct AnalyticsFilter {
    pub channel: Option<Channel>,
    /// A provider's name, or "none".
    pub provider: Option<String>,
    /// A template key, or "none".
    pub template: Option<String>,
    /// Counts notifications entering this status: with STATUS, the only
    /// status shown; without, `count` is of this status instead of REQUESTED.
    pub status: Option<NotificationStatus>,
}

/// One group: the dimensions asked for are set, the others are null.
#[derive(SimpleObject, Debug, Clone, PartialEq)]
pub struct AnalyticsRow {
    pub hour: Option<DateTime<Utc>>,
    pub day: Option<DateTime<Utc>>,
    pub channel: Option<String>,
    pub provider: Option<String>,
    pub template: Option<String>,
    pub status: Option<String>,
    /// Notifications that entered the status (or REQUESTED, or the filter's
    /// status, without STATUS).
    pub count: i64,
    /// With STATUS or a status filter: `count` over the group's REQUESTED
    /// count (e.g. the share delivered); null when nothing was requested in
    /// the group.
    pub rate: Option<f64>,
}

/// One group of `deliveryLatency`: the dimensions asked for are set, the
/// others are null. The percentiles are estimates from fixed buckets (upper
/// bounds 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000
/// and 300000 ms, then an open one), interpolated linearly within the bucket
/// that holds them; one in the open bucket reads 300000, a lower bound.
#[derive(SimpleObject, Debug, Clone, PartialEq)]
pub struct LatencyRow {
    pub hour: Option<DateTime<Utc>>,
    pub day: Option<DateTime<Utc>>,
    pub channel: Option<String>,
    pub provider: Option<String>,
    pub template: Option<String>,
    /// NotificationSent events in the group.
    pub count: i64,
    /// Median milliseconds from request to sent, estimated (see the type).
    pub p50_ms: f64,
    /// 90th percentile milliseconds, estimated (see the type).
    pub p90_ms: f64,
    /// 99th percentile milliseconds, estimated (see the type).
    pub p99_ms: f64,
}

/// The longest window one query may cover.
const MAX_WINDOW: TimeDelta = TimeDelta::days(366);

#[derive(Default)]
pub struct AnalyticsQuery;

#[Object]
impl AnalyticsQuery {
    /// Counts of notifications entering each status, per tenant, in `[from, to)`,
    /// grouped by the dimensions given (hour buckets are UTC). By provider or
    /// template, only once the read model that keeps them has been built.
    async fn analytics(
        &self,
        ctx: &Context<'_>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        group_by: Vec<AnalyticsDimension>,
        filter: Option<AnalyticsFilter>,
    ) -> Result<Vec<AnalyticsRow>> {
        let principal = require(ctx, Scope::Read)?;
        check_window(from, to)?;
        let filter = filter.unwrap_or_default();
        let pool = api(ctx)?.store.pool();
        let tenant = principal.tenant_id.as_str();
        // Without the new dimensions, from the table every version keeps, so
        // the answer does not wait for a new version's rebuild.
        let detailed = filter.provider.is_some()
            || filter.template.is_some()
            || group_by.contains(&AnalyticsDimension::Provider)
            || group_by.contains(&AnalyticsDimension::Template);
        let entries: Vec<Entry> = if detailed {
            analytics::detailed_counts(pool, tenant, from, to)
                .await?
                .into_iter()
                .map(|c| Entry {
                    hour: c.hour,
                    channel: c.channel,
                    provider: Some(c.provider),
                    template: Some(c.template),
                    status: c.status,
                    count: c.count,
                })
                .collect()
        } else {
            analytics::counts(pool, tenant, from, to)
                .await?
                .into_iter()
                .map(|c| Entry {
                    hour: c.hour,
                    channel: c.channel,
                    provider: None,
                    template: None,
                    status: c.status,
                    count: c.count,
                })
                .collect()
        };
        Ok(group(&entries, &group_by, &filter))
    }

    /// Time from each notification's request to its NotificationSent (per
    /// send: a notification sent again counts again), per tenant, for sends
    /// in `[from, to)`, grouped by the dimensions given (hour buckets are UTC).
    async fn delivery_latency(
        &self,
        ctx: &Context<'_>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        group_by: Vec<LatencyDimension>,
    ) -> Result<Vec<LatencyRow>> {
        let principal = require(ctx, Scope::Read)?;
        check_window(from, to)?;
        let buckets = analytics::latency(
            api(ctx)?.store.pool(),
            principal.tenant_id.as_str(),
            from,
            to,
        )
        .await?;
        Ok(latency_groups(&buckets, &group_by))
    }
}

fn check_window(from: DateTime<Utc>, to: DateTime<Utc>) -> Result<(), ApiError> {
    if to <= from || to - from > MAX_WINDOW {
        return Err(ApiError::field(
            "to",
            "must be after `from`, at most 366 days later",
        ));
    }
    Ok(())
}

/// A stored count; provider and template are `None` when read from the table
/// that does not keep them (and then never grouped or filtered by).
#[derive(Debug, Clone)]
struct Entry {
    hour: DateTime<Utc>,
    channel: String,
    provider: Option<String>,
    template: Option<String>,
    status: String,
    count: i64,
}

fn day_of(hour: DateTime<Utc>) -> DateTime<Utc> {
    hour.duration_trunc(TimeDelta::days(1)).unwrap_or(hour)
}

/// hour, day, channel, provider, template, status.
type Key = (
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn group(
    entries: &[Entry],
    by: &[AnalyticsDimension],
    filter: &AnalyticsFilter,
) -> Vec<AnalyticsRow> {
    use AnalyticsDimension as D;
    let has = |d| by.contains(&d);
    let key = |e: &Entry, status: Option<&str>| -> Key {
        (
            has(D::Hour).then_some(e.hour),
            has(D::Day).then(|| day_of(e.hour)),
            has(D::Channel).then(|| e.channel.clone()),
            has(D::Provider).then(|| e.provider.clone()).flatten(),
            has(D::Template).then(|| e.template.clone()).flatten(),
            status.map(str::to_string),
        )
    };
    let wanted_status = filter
        .status
        .map(|s| crate::domain::NotificationStatus::from(s).as_str());
    let counted = |status: &str| wanted_status.unwrap_or("REQUESTED") == status;
    let by_status = has(D::Status);
    let channel = filter
        .channel
        .map(|c| crate::domain::values::Channel::from(c).as_str());
    let matches = |e: &&Entry| {
        channel.is_none_or(|c| e.channel == c)
            && filter
                .provider
                .as_ref()
                .is_none_or(|p| e.provider.as_ref() == Some(p))
            && filter
                .template
                .as_ref()
                .is_none_or(|t| e.template.as_ref() == Some(t))
    };
    let mut totals: BTreeMap<Key, i64> = BTreeMap::new();
    let mut requested: BTreeMap<Key, i64> = BTreeMap::new();
    for e in entries.iter().filter(matches) {
        if by_status && wanted_status.is_none_or(|s| s == e.status) {
            *totals.entry(key(e, Some(&e.status))).or_default() += e.count;
        } else if !by_status && counted(&e.status) {
            *totals.entry(key(e, None)).or_default() += e.count;
        }
        if e.status == "REQUESTED" {
            *requested.entry(key(e, None)).or_default() += e.count;
        }
    }
    let rated = by_status || wanted_status.is_some();
    totals
        .into_iter()
        .map(
            |((hour, day, channel, provider, template, status), count)| {
                let base = requested
                    .get(&(
                        hour,
                        day,
                        channel.clone(),
                        provider.clone(),
                        template.clone(),
                        None,
                    ))
                    .copied();
                AnalyticsRow {
                    rate: base
                        .filter(|b| rated && *b > 0)
                        .map(|b| count as f64 / b as f64),
                    hour,
                    day,
                    channel,
                    provider,
                    template,
                    status,
                    count,
                }
            },
        )
        .collect()
}

fn latency_groups(buckets: &[analytics::LatencyCount], by: &[LatencyDimension]) -> Vec<LatencyRow> {
    use LatencyDimension as D;
    let has = |d| by.contains(&d);
    let mut groups: BTreeMap<Key, analytics::Histogram> = BTreeMap::new();
    for b in buckets {
        let key = (
            has(D::Hour).then_some(b.hour),
            has(D::Day).then(|| day_of(b.hour)),
            has(D::Channel).then(|| b.channel.clone()),
            has(D::Provider).then(|| b.provider.clone()),
            has(D::Template).then(|| b.template.clone()),
            None,
        );
        groups.entry(key).or_default().add(b.le_ms, b.count);
    }
    groups
        .into_iter()
        .filter_map(|((hour, day, channel, provider, template, _), histogram)| {
            Some(LatencyRow {
                p50_ms: histogram.quantile(0.5)?,
                p90_ms: histogram.quantile(0.9)?,
                p99_ms: histogram.quantile(0.99)?,
                count: histogram.count(),
                hour,
                day,
                channel,
                provider,
                template,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(hour: u32, channel: &str, provider: &str, status: &str, count: i64) -> Entry {
        Entry {
            hour: format!("2026-01-01T{hour:02}:00:00Z").parse().unwrap(),
            channel: channel.into(),
            provider: Some(provider.into()),
            template: Some("none".into()),
            status: status.into(),
            count,
        }
    }

    fn find<'a>(rows: &'a [AnalyticsRow], channel: &str, status: &str) -> &'a AnalyticsRow {
        rows.iter()
            .find(|r| r.channel.as_deref() == Some(channel) && r.status.as_deref() == Some(status))
            .unwrap()
    }

    #[test]
    fn groups_and_rates_follow_the_dimensions_asked_for() {
        let entries = [
            entry(10, "email", "none", "REQUESTED", 10),
            entry(10, "email", "ses", "DELIVERED", 8),
            entry(11, "email", "none", "REQUESTED", 10),
            entry(11, "sms", "none", "REQUESTED", 5),
            entry(11, "sms", "twilio", "DELIVERED", 5),
        ];
        let none = AnalyticsFilter::default();
        let by_channel = group(
            &entries,
            &[AnalyticsDimension::Channel, AnalyticsDimension::Status],
            &none,
        );
        assert_eq!(find(&by_channel, "email", "DELIVERED").count, 8);
        assert_eq!(find(&by_channel, "email", "DELIVERED").rate, Some(0.4));
        assert_eq!(find(&by_channel, "sms", "DELIVERED").rate, Some(1.0));

        let by_day = group(&entries, &[AnalyticsDimension::Day], &none);
        assert_eq!(by_day.len(), 1);
        assert_eq!(
            by_day[0].count, 25,
            "without STATUS, counts are of requested notifications"
        );
        assert_eq!(by_day[0].rate, None);

        // A status filter counts that status, rated against the requests
        // whatever their provider.
        let delivered = AnalyticsFilter {
            status: Some(NotificationStatus::Delivered),
            ..Default::default()
        };
        let by_channel = group(&entries, &[AnalyticsDimension::Channel], &delivered);
        assert_eq!(by_channel.len(), 2);
        assert_eq!((by_channel[0].count, by_channel[0].rate), (8, Some(0.4)));
        assert_eq!((by_channel[1].count, by_channel[1].rate), (5, Some(1.0)));

        let by_provider = group(
            &entries,
            &[AnalyticsDimension::Provider, AnalyticsDimension::Status],
            &AnalyticsFilter {
                channel: Some(Channel::Sms),
                ..Default::default()
            },
        );
        let shown: Vec<_> = by_provider
            .iter()
            .map(|r| {
                (
                    r.provider.as_deref().unwrap(),
                    r.status.as_deref().unwrap(),
                    r.count,
                )
            })
            .collect();
        assert_eq!(
            shown,
            [("none", "REQUESTED", 5), ("twilio", "DELIVERED", 5)]
        );
    }

    #[test]
    fn latency_rows_add_up_buckets_before_estimating() {
        let bucket = |provider: &str, le_ms: f64, count: i64| analytics::LatencyCount {
            hour: "2026-01-01T10:00:00Z".parse().unwrap(),
            channel: "email".into(),
            provider: provider.into(),
            template: "none".into(),
            le_ms,
            count,
        };
        let buckets = [
            bucket("ses", 250.0, 10),
            bucket("smtp", 500.0, 10),
            bucket("smtp", f64::INFINITY, 1),
        ];
        let all = latency_groups(&buckets, &[LatencyDimension::Channel]);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].count, 21);
        assert_eq!(all[0].p99_ms, 300_000.0);
        let by_provider = latency_groups(&buckets, &[LatencyDimension::Provider]);
        assert_eq!(by_provider[0].provider.as_deref(), Some("ses"));
        assert_eq!(by_provider[0].p50_ms, 175.0);
        assert_eq!(by_provider[1].count, 11);
    }
}
