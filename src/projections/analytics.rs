//! The `analytics` read model, kept by the runner alone: a counter is not
//! idempotent, so the counts and the checkpoint commit together, which is
//! what makes each event count once. Per tenant and hour (UTC, of the event's
//! `recorded_at`):
//!
//! - `analytics_counts`: notifications entering each status, per channel. The
//!   shape version 1 wrote, kept so that binaries of the previous release
//!   read it right before and after the swap, and so that queries without
//!   the new dimensions are served by the old version until then.
//! - `analytics_counts_detailed`: the same, also per provider and template.
//! - `analytics_latency`: the time from each notification's request to each
//!   of its NotificationSent, in fixed buckets, per channel, provider and template.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use futures::future::BoxFuture;
use sqlx::{PgConnection, PgPool};

use super::notification_status::{by_notification, decode, starts_the_stream};
use super::{Projection, ProjectionError};
use crate::domain::values::Channel;
use crate::domain::{Content, NotificationEvent};
use crate::eventstore::{ReadFilter, RecordedEvent};

pub const NAME: &str = "analytics";
/// 2: the provider and template dimensions and the latency histogram. A
/// deployment rebuilds it beside version 1, whose tables serve until the swap.
pub const VERSION: i32 = 2;

/// Upper bounds of the latency buckets in milliseconds (a latency equal to a
/// bound falls in its bucket); an open last bucket follows. Changing them
/// needs a new version.
pub const LATENCY_BOUNDS_MS: [i64; 14] = [
    5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000,
];
const BUCKETS: usize = LATENCY_BOUNDS_MS.len() + 1;

/// The runner's path. Keeps, per notification stream, what decides a count
/// besides the event itself as of the last version it folded; these are
/// facts of the log, so they stay true whatever commits or rolls back. A
/// batch continuing a stream right after that version starts from them; any
/// other reads them from the log.
#[derive(Default)]
pub struct AnalyticsProjection {
    known: Mutex<Known>,
}

impl AnalyticsProjection {
    pub fn new() -> AnalyticsProjection {
        AnalyticsProjection::default()
    }
}

/// Streams remembered: two generations, the older dropped when the newer fills.
const KNOWN_PER_GENERATION: usize = 50_000;

#[derive(Default)]
struct Known {
    current: HashMap<String, Context>,
    older: HashMap<String, Context>,
}

impl Known {
    fn take(&mut self, stream_id: &str) -> Option<Context> {
        self.current
            .remove(stream_id)
            .or_else(|| self.older.remove(stream_id))
    }

    fn put(&mut self, stream_id: String, context: Context) {
        if self.current.len() >= KNOWN_PER_GENERATION {
            self.older = std::mem::take(&mut self.current);
        }
        self.current.insert(stream_id, context);
    }
}

/// A requested notification's stream as of `version`, as far as counts go.
/// Shared strings, so that counting an event clones no text.
#[derive(Debug, Clone)]
struct Context {
    version: i64,
    tenant_id: Arc<str>,
    requested_at: DateTime<Utc>,
    requested_channel: Option<Channel>,
    template: Option<Arc<str>>,
    attempted_channel: Option<Channel>,
    provider: Option<Arc<str>>,
}

impl Context {
    /// Folds the events that decide a count into what is known of a stream:
    /// nothing before its NotificationRequested, which a stream holds once
    /// (as in the aggregate, anything before it changes nothing), then each
    /// delivery attempt's channel and provider.
    fn fold(known: &mut Option<Context>, event: &NotificationEvent) {
        match event {
            NotificationEvent::Requested {
                tenant_id,
                request,
                requested_at,
                ..
            } if known.is_none() => {
                *known = Some(Context {
                    version: 0,
                    tenant_id: tenant_id.as_str().into(),
                    requested_at: *requested_at,
                    requested_channel: request.channels.first().copied(),
                    template: match &request.content {
                        Content::Template(template) => Some(template.key.as_str().into()),
                        Content::Inline(_) => None,
                    },
                    attempted_channel: None,
                    provider: None,
                });
            }
            NotificationEvent::DeliveryAttempted {
                channel, provider, ..
            } => {
                if let Some(context) = known {
                    context.attempted_channel = Some(*channel);
                    if context.provider.as_deref() != Some(provider.as_str()) {
                        context.provider = Some(provider.as_str().into());
                    }
                }
            }
            _ => {}
        }
    }

    fn dimensions(&self, event: &RecordedEvent) -> Dimensions {
        Dimensions {
            tenant_id: self.tenant_id.clone(),
            hour: hour_of(event.recorded_at),
            channel: self
                .attempted_channel
                .or(self.requested_channel)
                .map(|c| c.as_str())
                .unwrap_or("none"),
            provider: self.provider.clone(),
            template: self.template.clone(),
        }
    }
}

/// What a count is kept per, besides the status or the latency bucket; no
/// provider or template is stored as "none".
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Dimensions {
    tenant_id: Arc<str>,
    hour: DateTime<Utc>,
    channel: &'static str,
    provider: Option<Arc<str>>,
    template: Option<Arc<str>>,
}

/// A batch's increments.
#[derive(Default)]
struct Tally {
    counts: HashMap<(Dimensions, &'static str), i64>,
    latency: HashMap<(Dimensions, usize), i64>,
}

impl Tally {
    fn add(&mut self, context: &Context, event: &RecordedEvent, decoded: &NotificationEvent) {
        // Engagement moves no status and counts for nothing.
        let Some(status) = decoded.status_after() else {
            return;
        };
        let dimensions = context.dimensions(event);
        if let NotificationEvent::Sent { .. } = decoded {
            let bucket = bucket_of(event.recorded_at - context.requested_at);
            *self
                .latency
                .entry((dimensions.clone(), bucket))
                .or_default() += 1;
        }
        *self
            .counts
            .entry((dimensions, status.as_str()))
            .or_default() += 1;
    }
}

/// The latency bucket a time falls in; a negative one (clocks apart) in the first.
fn bucket_of(latency: TimeDelta) -> usize {
    LATENCY_BOUNDS_MS.partition_point(|bound| latency > TimeDelta::milliseconds(*bound))
}

impl Projection for AnalyticsProjection {
    fn name(&self) -> &str {
        NAME
    }

    fn version(&self) -> i32 {
        VERSION
    }

    /// In the order `write` writes them, which is the order a rebuild's swap
    /// locks them in: a batch in flight and a swap never wait on each other.
    fn tables(&self) -> &'static [&'static str] {
        &[
            "analytics_counts",
            "analytics_counts_detailed",
            "analytics_latency",
        ]
    }

    /// Every notification event: engagement counts for nothing, but without
    /// it a stream's versions would show gaps where they have none.
    fn filter(&self) -> ReadFilter {
        super::notification_events()
    }

    fn handle_batch<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(async move {
            let groups = by_notification(events)?;
            // Where each group starts from: the stream's first version, what
            // is known right before its first event here, or the log.
            let mut starts: Vec<Option<Context>> = Vec::with_capacity(groups.len());
            {
                let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
                for (_, group) in &groups {
                    let first = group[0];
                    let context = known
                        .take(&first.stream_id)
                        .filter(|c| c.version + 1 == first.stream_version && follows(group));
                    starts.push(context);
                }
            }
            let wanted: Vec<(&str, i32)> = groups
                .iter()
                .zip(&starts)
                .filter(|((_, group), start)| start.is_none() && !starts_the_stream(group))
                .map(|((_, group), _)| {
                    let last = group[group.len() - 1];
                    (last.stream_id.as_str(), last.stream_version as i32)
                })
                .collect();
            let mut from_log = context(conn, &wanted).await?;
            let mut tally = Tally::default();
            let mut learnt = Vec::with_capacity(groups.len());
            for ((_, group), mut context) in groups.iter().zip(starts) {
                let last = group[group.len() - 1];
                // Empty unless the group starts neither the stream nor from
                // what is known: then its earlier events, folded in stream
                // order up to each of its own (a skipped one included).
                let mut earlier = from_log
                    .remove(last.stream_id.as_str())
                    .unwrap_or_default()
                    .into_iter()
                    .peekable();
                for event in group {
                    while let Some((version, _)) = earlier.peek()
                        && *version <= event.stream_version
                    {
                        let (version, earlier) = earlier.next().expect("peeked");
                        // The same event as this one: folded below.
                        if version < event.stream_version {
                            Context::fold(&mut context, &earlier);
                        }
                    }
                    let decoded = decode(event)?;
                    Context::fold(&mut context, &decoded);
                    if let Some(context) = &context {
                        tally.add(context, event, &decoded);
                    }
                }
                if let Some(mut context) = context {
                    context.version = last.stream_version;
                    learnt.push((last.stream_id.clone(), context));
                }
            }
            if !tally.counts.is_empty() {
                write(conn, tally).await?;
            }
            let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
            for (stream_id, context) in learnt {
                known.put(stream_id, context);
            }
            Ok(())
        })
    }
}

/// Whether a group's versions follow one another without a gap.
fn follows(group: &[&RecordedEvent]) -> bool {
    group
        .windows(2)
        .all(|pair| pair[1].stream_version == pair[0].stream_version + 1)
}

/// Adds a batch's increments: one statement per table, in [`Projection::tables`] order.
async fn write(conn: &mut PgConnection, tally: Tally) -> Result<(), sqlx::Error> {
    let mut rollup: HashMap<(&str, DateTime<Utc>, &str, &str), i64> = HashMap::new();
    for ((d, status), count) in &tally.counts {
        *rollup
            .entry((&*d.tenant_id, d.hour, d.channel, *status))
            .or_default() += count;
    }
    let mut columns = Columns::with_capacity(rollup.len());
    for ((tenant, hour, channel, status), count) in rollup {
        columns.push(tenant, hour, channel, status, count);
    }
    sqlx::query(
        "INSERT INTO analytics_counts (tenant_id, hour, channel, status, count) \
         SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::int8[]) \
         ON CONFLICT (tenant_id, hour, channel, status) \
         DO UPDATE SET count = analytics_counts.count + EXCLUDED.count",
    )
    .bind(columns.tenants)
    .bind(columns.hours)
    .bind(columns.channels)
    .bind(columns.keys)
    .bind(columns.counts)
    .execute(&mut *conn)
    .await?;

    let (columns, providers, templates) = detailed(&tally.counts, |status| *status);
    sqlx::query(
        "INSERT INTO analytics_counts_detailed \
             (tenant_id, hour, channel, provider, template, status, count) \
         SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], \
                              $6::text[], $7::int8[]) \
         ON CONFLICT (tenant_id, hour, channel, provider, template, status) \
         DO UPDATE SET count = analytics_counts_detailed.count + EXCLUDED.count",
    )
    .bind(columns.tenants)
    .bind(columns.hours)
    .bind(columns.channels)
    .bind(providers)
    .bind(templates)
    .bind(columns.keys)
    .bind(columns.counts)
    .execute(&mut *conn)
    .await?;

    if tally.latency.is_empty() {
        return Ok(());
    }
    let (columns, providers, templates) = detailed(&tally.latency, |b| upper_bound_ms(*b));
    sqlx::query(
        "INSERT INTO analytics_latency \
             (tenant_id, hour, channel, provider, template, le_ms, count) \
         SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], \
                              $6::float8[], $7::int8[]) \
         ON CONFLICT (tenant_id, hour, channel, provider, template, le_ms) \
         DO UPDATE SET count = analytics_latency.count + EXCLUDED.count",
    )
    .bind(columns.tenants)
    .bind(columns.hours)
    .bind(columns.channels)
    .bind(providers)
    .bind(templates)
    .bind(columns.keys)
    .bind(columns.counts)
    .execute(conn)
    .await?;
    Ok(())
}

/// Increments as one array per column, for `unnest`; `keys` holds the
/// column that tells rows of the same dimensions apart.
struct Columns<'a, K> {
    tenants: Vec<&'a str>,
    hours: Vec<DateTime<Utc>>,
    channels: Vec<&'a str>,
    keys: Vec<K>,
    counts: Vec<i64>,
}

impl<'a, K> Columns<'a, K> {
    fn with_capacity(n: usize) -> Self {
        Columns {
            tenants: Vec::with_capacity(n),
            hours: Vec::with_capacity(n),
            channels: Vec::with_capacity(n),
            keys: Vec::with_capacity(n),
            counts: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, tenant: &'a str, hour: DateTime<Utc>, channel: &'a str, key: K, count: i64) {
        self.tenants.push(tenant);
        self.hours.push(hour);
        self.channels.push(channel);
        self.keys.push(key);
        self.counts.push(count);
    }
}

/// The columns of increments kept per provider and template, and those two.
fn detailed<'a, T, K>(
    increments: &'a HashMap<(Dimensions, T), i64>,
    key: impl Fn(&T) -> K,
) -> (Columns<'a, K>, Vec<&'a str>, Vec<&'a str>) {
    let mut columns = Columns::with_capacity(increments.len());
    let mut providers = Vec::with_capacity(increments.len());
    let mut templates = Vec::with_capacity(increments.len());
    for ((d, t), count) in increments {
        columns.push(&d.tenant_id, d.hour, d.channel, key(t), *count);
        providers.push(d.provider.as_deref().unwrap_or("none"));
        templates.push(d.template.as_deref().unwrap_or("none"));
    }
    (columns, providers, templates)
}

/// The `le_ms` a bucket is stored under.
fn upper_bound_ms(bucket: usize) -> f64 {
    LATENCY_BOUNDS_MS
        .get(bucket)
        .map_or(f64::INFINITY, |bound| *bound as f64)
}

/// The events that decide a count's dimensions (the request and the delivery
/// attempts) of each stream up to its version, in stream order, in
/// one query.
async fn context(
    conn: &mut PgConnection,
    streams: &[(&str, i32)],
) -> Result<HashMap<String, Vec<(i64, NotificationEvent)>>, ProjectionError> {
    let mut context: HashMap<String, Vec<(i64, NotificationEvent)>> = HashMap::new();
    if streams.is_empty() {
        return Ok(context);
    }
    let rows: Vec<(String, i64, i64, String, i16, serde_json::Value)> = sqlx::query_as(
        "SELECT e.stream_id, e.stream_version::int8, e.global_position, e.event_type, e.schema_version, e.payload \
         FROM unnest($1::text[], $2::int4[]) AS s(stream_id, upto) \
         JOIN events e ON e.stream_id = s.stream_id AND e.stream_version <= s.upto \
         WHERE e.event_type IN ('NotificationRequested', 'DeliveryAttempted') \
         ORDER BY e.stream_id, e.stream_version",
    )
    .bind(streams.iter().map(|(s, _)| *s).collect::<Vec<_>>())
    .bind(streams.iter().map(|(_, v)| *v).collect::<Vec<_>>())
    .fetch_all(conn)
    .await?;
    for (stream_id, version, position, event_type, schema_version, payload) in rows {
        let event =
            NotificationEvent::upcast(&event_type, schema_version, payload).map_err(|e| {
                ProjectionError::Decode {
                    position,
                    reason: e.to_string(),
                }
            })?;
        context.entry(stream_id).or_default().push((version, event));
    }
    Ok(context)
}

fn hour_of(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(TimeDelta::hours(1)).unwrap_or(at)
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Count {
    pub hour: DateTime<Utc>,
    pub channel: String,
    pub status: String,
    pub count: i64,
}

/// A tenant's counts in `[from, to)`, by hour, channel and status, from
/// `analytics_counts`: what the previous version wrote until the swap.
pub async fn counts(
    pool: &PgPool,
    tenant_id: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Count>, sqlx::Error> {
    sqlx::query_as(
        "SELECT hour, channel, status, count FROM analytics_counts \
         WHERE tenant_id = $1 AND hour >= $2 AND hour < $3 \
         ORDER BY hour, channel, status",
    )
    .bind(tenant_id)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DetailedCount {
    pub hour: DateTime<Utc>,
    pub channel: String,
    /// "none" before the first delivery attempt.
    pub provider: String,
    /// "none" for content written out in the request.
    pub template: String,
    pub status: String,
    pub count: i64,
}

/// A tenant's counts in `[from, to)`, by hour, channel, provider, template
/// and status; none until version 2 has been swapped in.
pub async fn detailed_counts(
    pool: &PgPool,
    tenant_id: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<DetailedCount>, sqlx::Error> {
    sqlx::query_as(
        "SELECT hour, channel, provider, template, status, count FROM analytics_counts_detailed \
         WHERE tenant_id = $1 AND hour >= $2 AND hour < $3 \
         ORDER BY hour, channel, provider, template, status",
    )
    .bind(tenant_id)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct LatencyCount {
    pub hour: DateTime<Utc>,
    pub channel: String,
    pub provider: String,
    pub template: String,
    /// The bucket's upper bound in milliseconds; infinite for the last.
    pub le_ms: f64,
    pub count: i64,
}

/// A tenant's latency buckets in `[from, to)` (hours of the NotificationSent).
pub async fn latency(
    pool: &PgPool,
    tenant_id: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<LatencyCount>, sqlx::Error> {
    sqlx::query_as(
        "SELECT hour, channel, provider, template, le_ms, count FROM analytics_latency \
         WHERE tenant_id = $1 AND hour >= $2 AND hour < $3 \
         ORDER BY hour, channel, provider, template, le_ms",
    )
    .bind(tenant_id)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await
}

/// Latency bucket counts added up over any set of [`LatencyCount`]s.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram([i64; BUCKETS]);

impl Histogram {
    pub fn add(&mut self, le_ms: f64, count: i64) {
        let bucket = LATENCY_BOUNDS_MS.partition_point(|bound| (*bound as f64) < le_ms);
        self.0[bucket] += count;
    }

    pub fn count(&self) -> i64 {
        self.0.iter().sum()
    }

    /// The `q` quantile in milliseconds, interpolated linearly within the
    /// bucket that holds it (from the bucket below's bound, or zero), as
    /// Prometheus' `histogram_quantile` does, and rounded to the microsecond
    /// (no float noise in answers); in the open last bucket, the last finite
    /// bound, so a lower bound. `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut below = 0;
        for (bucket, count) in self.0.iter().enumerate() {
            if *count > 0 && (below + count) as f64 >= rank {
                let Some(upper) = LATENCY_BOUNDS_MS.get(bucket) else {
                    break;
                };
                let lower = bucket.checked_sub(1).map_or(0, |b| LATENCY_BOUNDS_MS[b]);
                let within = (rank - below as f64) / *count as f64;
                let estimate = lower as f64 + (upper - lower) as f64 * within;
                return Some((estimate * 1000.0).round() / 1000.0);
            }
            below += count;
        }
        Some(LATENCY_BOUNDS_MS[LATENCY_BOUNDS_MS.len() - 1] as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_fall_in_the_bucket_whose_bound_they_reach() {
        assert_eq!(bucket_of(TimeDelta::milliseconds(-3)), 0);
        assert_eq!(bucket_of(TimeDelta::milliseconds(5)), 0);
        assert_eq!(bucket_of(TimeDelta::microseconds(5_001)), 1);
        assert_eq!(bucket_of(TimeDelta::seconds(300)), BUCKETS - 2);
        assert_eq!(bucket_of(TimeDelta::hours(2)), BUCKETS - 1);
        for bucket in 0..BUCKETS {
            let mut histogram = Histogram::default();
            histogram.add(upper_bound_ms(bucket), 1);
            assert_eq!(histogram.0[bucket], 1, "{bucket}");
        }
    }

    #[test]
    fn quantiles_interpolate_within_their_bucket() {
        let mut histogram = Histogram::default();
        assert_eq!(histogram.quantile(0.5), None);
        // 10 in (100, 250], 10 in (250, 500].
        histogram.add(250.0, 10);
        histogram.add(500.0, 10);
        assert_eq!(histogram.quantile(0.5), Some(250.0));
        assert_eq!(histogram.quantile(0.25), Some(175.0));
        assert_eq!(histogram.quantile(0.9), Some(450.0));
        assert_eq!(histogram.quantile(0.0), Some(100.0));
        histogram.add(f64::INFINITY, 20);
        assert_eq!(histogram.count(), 40);
        assert_eq!(histogram.quantile(0.99), Some(300_000.0));
        let mut first = Histogram::default();
        first.add(5.0, 4);
        assert_eq!(first.quantile(0.5), Some(2.5));
    }
}
