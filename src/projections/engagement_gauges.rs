//! The engagement gauges `open_rate{tenant,template_id}` and
//! `click_rate{tenant,template_id}`: per tenant and template (its key, or
//! "none" for content written out in the request), the unique open and
//! click rates of the emails sent in a recent window. A loop of the
//! projections role reads them from `analytics_engagement` every
//! `gauge_interval_seconds`, so nothing on a send's or an open's path pays
//! for them.
//!
//! Cardinality is capped: a process shows at most `gauge_max_series`
//! (tenant, template) pairs, first come (the pairs with the most sends in
//! the window at each refresh). The `metrics` crate cannot drop one series,
//! so a pair once shown stays until the process restarts: when it has no
//! sends in the window any more, or falls out of the top, it reads NaN (no
//! rate; a threshold alert does not fire on it), and it keeps its place.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::analytics::{self, TemplateEngagement};

/// `[analytics]`: the engagement gauges.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyticsConfig {
    /// Seconds between two refreshes of the gauges.
    pub gauge_interval_seconds: u64,
    /// The rates are of the emails sent in the current hour and this many
    /// hours before it.
    pub gauge_window_hours: u32,
    /// The most (tenant, template) pairs a process shows.
    pub gauge_max_series: usize,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        AnalyticsConfig {
            gauge_interval_seconds: 60,
            gauge_window_hours: 24,
            gauge_max_series: 500,
        }
    }
}

/// A gauge's labels: tenant, template.
type Pair = (String, String);

/// Refreshes the gauges until `shutdown`.
pub fn spawn(pool: PgPool, config: AnalyticsConfig, shutdown: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let interval = Duration::from_secs(config.gauge_interval_seconds.max(1));
        let mut shown = BTreeSet::new();
        while !shutdown.is_cancelled() {
            let since = window_start(Utc::now(), config.gauge_window_hours);
            let limit = config.gauge_max_series.try_into().unwrap_or(i64::MAX);
            match analytics::email_engagement_by_template(&pool, since, limit).await {
                Ok(rows) => {
                    for ((tenant, template), (opens, clicks)) in
                        readings(&mut shown, rows, config.gauge_max_series)
                    {
                        let labels = [("tenant", tenant), ("template_id", template)];
                        metrics::gauge!("open_rate", &labels).set(opens);
                        metrics::gauge!("click_rate", &labels).set(clicks);
                    }
                }
                Err(error) => tracing::warn!(%error, "cannot refresh the engagement gauges"),
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.cancelled() => {}
            }
        }
    })
}

/// The first hour of the window that ends with the current one.
fn window_start(now: DateTime<Utc>, hours: u32) -> DateTime<Utc> {
    now.duration_trunc(TimeDelta::hours(1)).unwrap_or(now) - TimeDelta::hours(hours.into())
}

/// The (open, click) rates every shown pair reads after a refresh that
/// found `rows`: theirs, or NaN for a shown pair not among them. A pair of
/// `rows` not shown yet is shown while fewer than `max_series` are.
fn readings(
    shown: &mut BTreeSet<Pair>,
    rows: Vec<TemplateEngagement>,
    max_series: usize,
) -> BTreeMap<Pair, (f64, f64)> {
    let mut readings: BTreeMap<Pair, (f64, f64)> = shown
        .iter()
        .map(|pair| (pair.clone(), (f64::NAN, f64::NAN)))
        .collect();
    for row in rows {
        let pair = (row.tenant_id, row.template);
        if !shown.contains(&pair) {
            if shown.len() >= max_series {
                continue;
            }
            shown.insert(pair.clone());
        }
        let e = row.engagement;
        let rate = |measure| e.share(measure).unwrap_or(f64::NAN);
        readings.insert(pair, (rate(e.opened), rate(e.clicked)));
    }
    readings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(tenant: &str, template: &str, sent: i64, opened: i64) -> TemplateEngagement {
        TemplateEngagement {
            tenant_id: tenant.into(),
            template: template.into(),
            engagement: analytics::Engagement {
                sent,
                opened,
                clicked: 1,
                ..Default::default()
            },
        }
    }

    fn pair(tenant: &str, template: &str) -> Pair {
        (tenant.into(), template.into())
    }

    #[test]
    fn at_most_max_series_pairs_and_nan_for_those_gone_quiet() {
        let mut shown = BTreeSet::new();
        let first = readings(
            &mut shown,
            vec![row("t1", "welcome", 4, 2), row("t2", "none", 2, 0)],
            2,
        );
        assert_eq!(first.len(), 2);
        assert_eq!(first[&pair("t1", "welcome")], (0.5, 0.25));
        assert_eq!(first[&pair("t2", "none")], (0.0, 0.5));

        // t1's welcome has no sends in the window any more; t3 finds no room.
        let second = readings(
            &mut shown,
            vec![row("t3", "digest", 9, 9), row("t2", "none", 2, 1)],
            2,
        );
        assert_eq!(second.len(), 2);
        let (opens, clicks) = second[&pair("t1", "welcome")];
        assert!(opens.is_nan() && clicks.is_nan());
        assert_eq!(second[&pair("t2", "none")], (0.5, 0.5));
        assert!(!second.contains_key(&pair("t3", "digest")));
    }

    #[test]
    fn the_window_starts_on_the_hour() {
        let now: DateTime<Utc> = "2026-03-01T10:42:00Z".parse().unwrap();
        assert_eq!(
            window_start(now, 24),
            "2026-02-28T10:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
    }
}
