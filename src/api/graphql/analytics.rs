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
    /// UTC hours: of the status event for `count`, of the send for `engagement`.
    Hour,
    /// UTC days: of the status event for `count`, of the send for `engagement`.
    Day,
    Channel,
    /// The provider of the latest delivery attempt, "none" before the first
    /// (so REQUESTED is always under "none", and rates by provider are
    /// null); for `engagement`, the provider that sent.
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
    /// `engagement` ignores it.
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
    /// What became of the notifications sent in the group; null when
    /// grouped by STATUS (engagement is not a status). Asking for it may add
    /// groups with sends but no `count` (then 0).
    pub engagement: Option<Engagement>,
}

/// A group's [`analytics::Engagement`], as the API shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Engagement(analytics::Engagement);

/// Engagement of the notifications sent in a group, counted in the hour of
/// the send (a cohort), whenever the recipient engaged: an email sent at
/// 09:10 on Monday and opened on Tuesday counts in Monday's 09:00. So every
/// measure is a share of the same sends and a rate is never above 1, at the
/// cost of a past hour's numbers growing while its messages are still read.
/// Each notification counts at most once per measure: an email opened five
/// times is one open. Kept by version 3 of the `analytics` read model, whose
/// rebuild counts the whole log; empty until it has been swapped in.
#[Object]
impl Engagement {
    /// Notifications sent (NotificationSent: taken by the provider) in the
    /// group: the base of every rate.
    async fn sent(&self) -> i64 {
        self.0.sent
    }

    /// Of those, notifications with a delivery receipt (NotificationDelivered);
    /// a provider that reports no deliveries (SMTP) shows none.
    async fn delivered(&self) -> i64 {
        self.0.delivered
    }

    /// Of those, notifications opened at least once (the tracking pixel
    /// loaded: email with open tracking on), each counted once.
    async fn opened(&self) -> i64 {
        self.0.opened
    }

    /// Of those, notifications with at least one tracked link followed,
    /// each counted once.
    async fn clicked(&self) -> i64 {
        self.0.clicked
    }

    /// Of those, notifications that bounced (a bounce receipt, hard or soft).
    async fn bounced(&self) -> i64 {
        self.0.bounced
    }

    /// Of those, notifications the recipient complained about (a complaint
    /// receipt: marked as spam).
    async fn complained(&self) -> i64 {
        self.0.complained
    }

    /// `delivered / sent`; null when nothing was sent (nothing to measure
    /// is not 0 %).
    async fn delivery_rate(&self) -> Option<f64> {
        self.0.share(self.0.delivered)
    }

    /// `opened / sent`, unique opens; null when nothing was sent.
    async fn open_rate(&self) -> Option<f64> {
        self.0.share(self.0.opened)
    }

    /// `clicked / sent`, unique clicks; null when nothing was sent.
    async fn click_rate(&self) -> Option<f64> {
        self.0.share(self.0.clicked)
    }

    /// `bounced / sent`; null when nothing was sent.
    async fn bounce_rate(&self) -> Option<f64> {
        self.0.share(self.0.bounced)
    }

    /// `complained / sent`; null when nothing was sent.
    async fn complaint_rate(&self) -> Option<f64> {
        self.0.share(self.0.complained)
    }
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
    /// `engagement`: of the notifications sent in `[from, to)` (see the type).
    async fn analytics(
        &self,
        ctx: &Context<'_>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        group_by: Vec<AnalyticsDimension>,
        filter: Option<AnalyticsFilter>,
    ) -> Result<Vec<AnalyticsRow>, ApiError> {
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
        let engagement = if ctx.look_ahead().field("engagement").exists() {
            Some(analytics::engagement(pool, tenant, from, to).await?)
        } else {
            None
        };
        Ok(group(&entries, engagement.as_deref(), &group_by, &filter))
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
    ) -> Result<Vec<LatencyRow>, ApiError> {
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

/// The rows of `entries` and, when asked for (`Some`), `engagement`.
fn group(
    entries: &[Entry],
    engagement: Option<&[analytics::EngagementCount]>,
    by: &[AnalyticsDimension],
    filter: &AnalyticsFilter,
) -> Vec<AnalyticsRow> {
    use AnalyticsDimension as D;
    let has = |d| by.contains(&d);
    let key_of = |hour: DateTime<Utc>,
                  channel: &str,
                  provider: Option<&str>,
                  template: Option<&str>,
                  status: Option<&str>|
     -> Key {
        (
            has(D::Hour).then_some(hour),
            has(D::Day).then(|| day_of(hour)),
            has(D::Channel).then(|| channel.to_string()),
            has(D::Provider)
                .then(|| provider.map(str::to_string))
                .flatten(),
            has(D::Template)
                .then(|| template.map(str::to_string))
                .flatten(),
            status.map(str::to_string),
        )
    };
    let key = |e: &Entry, status: Option<&str>| -> Key {
        key_of(
            e.hour,
            &e.channel,
            e.provider.as_deref(),
            e.template.as_deref(),
            status,
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
    let matches = |c: &str, p: Option<&str>, t: Option<&str>| {
        channel.is_none_or(|channel| c == channel)
            && filter.provider.as_deref().is_none_or(|f| p == Some(f))
            && filter.template.as_deref().is_none_or(|f| t == Some(f))
    };
    let mut totals: BTreeMap<Key, i64> = BTreeMap::new();
    let mut requested: BTreeMap<Key, i64> = BTreeMap::new();
    for e in entries
        .iter()
        .filter(|e| matches(&e.channel, e.provider.as_deref(), e.template.as_deref()))
    {
        if by_status && wanted_status.is_none_or(|s| s == e.status) {
            *totals.entry(key(e, Some(&e.status))).or_default() += e.count;
        } else if !by_status && counted(&e.status) {
            *totals.entry(key(e, None)).or_default() += e.count;
        }
        if e.status == "REQUESTED" {
            *requested.entry(key(e, None)).or_default() += e.count;
        }
    }
    // Engagement is not a status: not shown by STATUS.
    let mut engaged: BTreeMap<Key, analytics::Engagement> = BTreeMap::new();
    for e in engagement.filter(|_| !by_status).unwrap_or_default() {
        if matches(&e.channel, Some(&e.provider), Some(&e.template)) {
            let key = key_of(
                e.hour,
                &e.channel,
                Some(&e.provider),
                Some(&e.template),
                None,
            );
            totals.entry(key.clone()).or_default();
            *engaged.entry(key).or_default() += e.engagement;
        }
    }
    let shows_engagement = engagement.is_some() && !by_status;
    let rated = by_status || wanted_status.is_some();
    totals
        .into_iter()
        .map(
            |((hour, day, channel, provider, template, status), count)| {
                // What the rate and engagement are of: the group, whatever the status.
                let group = (hour, day, channel, provider, template, None);
                let base = requested.get(&group).copied();
                let engagement = shows_engagement
                    .then(|| Engagement(engaged.get(&group).copied().unwrap_or_default()));
                let (hour, day, channel, provider, template, _) = group;
                AnalyticsRow {
                    hour,
                    day,
                    channel,
                    provider,
                    template,
                    status,
                    count,
                    rate: base
                        .filter(|b| rated && *b > 0)
                        .map(|b| count as f64 / b as f64),
                    engagement,
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
            None,
            &[AnalyticsDimension::Channel, AnalyticsDimension::Status],
            &none,
        );
        assert_eq!(find(&by_channel, "email", "DELIVERED").count, 8);
        assert_eq!(find(&by_channel, "email", "DELIVERED").rate, Some(0.4));
        assert_eq!(find(&by_channel, "sms", "DELIVERED").rate, Some(1.0));

        let by_day = group(&entries, None, &[AnalyticsDimension::Day], &none);
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
        let by_channel = group(&entries, None, &[AnalyticsDimension::Channel], &delivered);
        assert_eq!(by_channel.len(), 2);
        assert_eq!((by_channel[0].count, by_channel[0].rate), (8, Some(0.4)));
        assert_eq!((by_channel[1].count, by_channel[1].rate), (5, Some(1.0)));

        let by_provider = group(
            &entries,
            None,
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
    fn engagement_adds_up_per_group_beside_the_counts() {
        let entries = [
            entry(10, "email", "none", "REQUESTED", 4),
            entry(10, "email", "ses", "SENT", 3),
        ];
        let sends = |hour: u32, template: &str, sent, opened| analytics::EngagementCount {
            hour: format!("2026-01-01T{hour:02}:00:00Z").parse().unwrap(),
            channel: "email".into(),
            provider: "ses".into(),
            template: template.into(),
            engagement: analytics::Engagement {
                sent,
                opened,
                ..Default::default()
            },
        };
        // Sent at 10:00 and at 11:00, the second hour without requests.
        let engagement = [sends(10, "none", 3, 1), sends(11, "welcome", 1, 1)];
        let none = AnalyticsFilter::default();
        let by_hour = group(
            &entries,
            Some(&engagement),
            &[AnalyticsDimension::Hour],
            &none,
        );
        let shown: Vec<_> = by_hour
            .iter()
            .map(|r| {
                let e = r.engagement.unwrap().0;
                (r.count, e.sent, e.opened, e.share(e.opened))
            })
            .collect();
        assert_eq!(shown, [(4, 3, 1, Some(1.0 / 3.0)), (0, 1, 1, Some(1.0))]);

        let by_day = group(
            &entries,
            Some(&engagement),
            &[AnalyticsDimension::Day],
            &none,
        );
        assert_eq!(by_day.len(), 1);
        assert_eq!(by_day[0].engagement.unwrap().0.sent, 4);

        // The template filter applies, the status filter does not.
        let welcome = AnalyticsFilter {
            template: Some("welcome".into()),
            status: Some(NotificationStatus::Sent),
            ..Default::default()
        };
        let filtered = group(&[], Some(&engagement), &[AnalyticsDimension::Day], &welcome);
        assert_eq!(filtered[0].engagement.unwrap().0.sent, 1);

        // Nothing sent: the rates have no base.
        let by_channel = group(&entries, Some(&[]), &[AnalyticsDimension::Channel], &none);
        assert_eq!(by_channel[0].engagement, Some(Engagement::default()));
        assert_eq!(Engagement::default().0.share(0), None);

        let by_status = group(
            &entries,
            Some(&engagement),
            &[AnalyticsDimension::Status],
            &none,
        );
        assert_eq!(by_status.len(), 2, "no rows from engagement");
        assert!(by_status.iter().all(|r| r.engagement.is_none()));
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
