//! The `analytics` read model, kept by the runner alone: a counter is not
//! idempotent, so the counts and the checkpoint commit together, which is
//! what makes each event count once. Per tenant and hour (UTC):
//!
//! - `analytics_counts`: notifications entering each status, per channel, in
//!   the hour of the event's `recorded_at`. The shape version 1 wrote, kept
//!   so that binaries of the previous release read it right before and
//!   after the swap, and so that queries without the new dimensions are
//!   served by the old version until then.
//! - `analytics_counts_detailed`: the same, also per provider and template.
//! - `analytics_latency`: the time from each notification's request to each
//!   of its NotificationSent, in fixed buckets, per channel, provider and template.
//! - `analytics_engagement`: per channel, provider and template, the
//!   notifications sent in the hour (of their NotificationSent) and how many
//!   of those were delivered, opened, clicked, bounced and complained about,
//!   whenever that happened: a send's cohort, so that every measure is a
//!   share of the sends in the same row. Each notification counts once per
//!   measure: the aggregate records a delivery, a bounce and a complaint at
//!   most once, and marks a notification's first open and first click.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use futures::future::BoxFuture;
use sqlx::{PgConnection, PgPool};

use super::notification_status::{by_notification, decode, events_up_to, starts_the_stream};
use super::{ATTEMPTED, Projection, ProjectionError, REQUESTED, Recent, SENT};
use crate::domain::values::Channel;
use crate::domain::{Content, NotificationEvent};
use crate::eventstore::{ReadFilter, RecordedEvent};

pub const NAME: &str = "analytics";
/// 2: the provider and template dimensions and the latency histogram.
/// 3: engagement per send cohort. A deployment rebuilds it beside the
/// previous version, whose tables serve until the swap.
pub const VERSION: i32 = 3;

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
    known: Mutex<Recent<String, Context, KNOWN_PER_GENERATION>>,
}

impl AnalyticsProjection {
    pub fn new() -> AnalyticsProjection {
        AnalyticsProjection::default()
    }
}

/// Streams remembered per generation.
const KNOWN_PER_GENERATION: usize = 50_000;

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
    /// The hour of the NotificationSent, which engagement counts in.
    sent_hour: Option<DateTime<Utc>>,
}

impl Context {
    /// Folds the events that decide a count into what is known of a stream:
    /// nothing before its NotificationRequested, which a stream holds once
    /// (as in the aggregate, anything before it changes nothing), then each
    /// delivery attempt's channel and provider, and the hour of the send
    /// (`recorded_at` is the event's).
    fn fold(known: &mut Option<Context>, event: &NotificationEvent, recorded_at: DateTime<Utc>) {
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
                    sent_hour: None,
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
            NotificationEvent::Sent { .. } => {
                if let Some(context) = known {
                    context.sent_hour = Some(hour_of(recorded_at));
                }
            }
            _ => {}
        }
    }

    fn dimensions(&self, hour: DateTime<Utc>) -> Dimensions {
        Dimensions {
            tenant_id: self.tenant_id.clone(),
            hour,
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

/// A notification's engagement, or any sum of them: `analytics_engagement`'s
/// measures, in its column order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct Engagement {
    pub sent: i64,
    pub delivered: i64,
    pub opened: i64,
    pub clicked: i64,
    pub bounced: i64,
    pub complained: i64,
}

impl Engagement {
    /// The one measure `event` counts for, if any: the send, its delivery
    /// receipt, the first open, the first click, the bounce, the complaint.
    fn of(event: &NotificationEvent) -> Option<Engagement> {
        let none = Engagement::default();
        Some(match event {
            NotificationEvent::Sent { .. } => Engagement { sent: 1, ..none },
            NotificationEvent::Delivered { .. } => Engagement {
                delivered: 1,
                ..none
            },
            NotificationEvent::Opened { first: true, .. } => Engagement { opened: 1, ..none },
            NotificationEvent::Clicked { first: true, .. } => Engagement { clicked: 1, ..none },
            NotificationEvent::Bounced { .. } => Engagement { bounced: 1, ..none },
            NotificationEvent::Complained { .. } => Engagement {
                complained: 1,
                ..none
            },
            _ => return None,
        })
    }

    /// The measures in column order.
    fn columns(&self) -> [i64; 6] {
        [
            self.sent,
            self.delivered,
            self.opened,
            self.clicked,
            self.bounced,
            self.complained,
        ]
    }

    /// `measure` as a share of the sends; `None` without any.
    pub fn share(&self, measure: i64) -> Option<f64> {
        (self.sent > 0).then(|| measure as f64 / self.sent as f64)
    }
}

impl std::ops::AddAssign for Engagement {
    fn add_assign(&mut self, other: Engagement) {
        self.sent += other.sent;
        self.delivered += other.delivered;
        self.opened += other.opened;
        self.clicked += other.clicked;
        self.bounced += other.bounced;
        self.complained += other.complained;
    }
}

impl Dimensions {
    /// As stored: "none" for no provider or no template.
    fn provider_and_template(&self) -> (&str, &str) {
        (
            self.provider.as_deref().unwrap_or("none"),
            self.template.as_deref().unwrap_or("none"),
        )
    }
}

/// A batch's increments.
#[derive(Default)]
struct Tally {
    counts: HashMap<(Dimensions, &'static str), i64>,
    latency: HashMap<(Dimensions, usize), i64>,
    engagement: HashMap<Dimensions, Engagement>,
}

impl Tally {
    /// Counts `event`, recorded at `recorded_at`, already folded into `context`.
    fn add(&mut self, context: &Context, recorded_at: DateTime<Utc>, event: &NotificationEvent) {
        // In the send's hour; the aggregate takes engagement only after a
        // send, so a stream without one (which the log does not hold) counts none.
        if let (Some(engagement), Some(sent_hour)) = (Engagement::of(event), context.sent_hour) {
            *self
                .engagement
                .entry(context.dimensions(sent_hour))
                .or_default() += engagement;
        }
        // Opens and clicks move no status.
        let Some(status) = event.status_after() else {
            return;
        };
        let dimensions = context.dimensions(hour_of(recorded_at));
        if let NotificationEvent::Sent { .. } = event {
            let bucket = bucket_of(recorded_at - context.requested_at);
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
            "analytics_engagement",
        ]
    }

    /// Every notification event: the ones that count for nothing are read
    /// too, or a stream's versions would show gaps where they have none.
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
            let wanted: Vec<(&str, i64)> = groups
                .iter()
                .zip(&starts)
                .filter(|((_, group), start)| start.is_none() && !starts_the_stream(group))
                .map(|((_, group), _)| {
                    let last = group[group.len() - 1];
                    (last.stream_id.as_str(), last.stream_version)
                })
                .collect();
            // The events that decide a count's dimensions: the request, the
            // delivery attempts and the send.
            let mut from_log = events_up_to(conn, &wanted, &[REQUESTED, ATTEMPTED, SENT]).await?;
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
                    while let Some((version, _, _)) = earlier.peek()
                        && *version <= event.stream_version
                    {
                        let (version, recorded_at, earlier) = earlier.next().expect("peeked");
                        // The same event as this one: folded below.
                        if version < event.stream_version {
                            Context::fold(&mut context, &earlier, recorded_at);
                        }
                    }
                    let decoded = decode(event)?;
                    Context::fold(&mut context, &decoded, event.recorded_at);
                    if let Some(context) = &context {
                        tally.add(context, event.recorded_at, &decoded);
                    }
                }
                if let Some(mut context) = context {
                    context.version = last.stream_version;
                    learnt.push((last.stream_id.clone(), context));
                }
            }
            write(conn, tally).await?;
            let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
            for (stream_id, context) in learnt {
                known.insert(stream_id, context);
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

/// Adds a batch's increments: one statement per table that has any, in
/// [`Projection::tables`] order.
async fn write(conn: &mut PgConnection, tally: Tally) -> Result<(), sqlx::Error> {
    // Every latency is of a send, which is also a status count.
    if !tally.counts.is_empty() {
        write_counts(conn, &tally).await?;
    }
    if !tally.engagement.is_empty() {
        write_engagement(conn, &tally.engagement).await?;
    }
    Ok(())
}

/// The status counts and latency buckets.
async fn write_counts(conn: &mut PgConnection, tally: &Tally) -> Result<(), sqlx::Error> {
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

async fn write_engagement(
    conn: &mut PgConnection,
    increments: &HashMap<Dimensions, Engagement>,
) -> Result<(), sqlx::Error> {
    let n = increments.len();
    let (mut tenants, mut hours, mut channels) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut providers, mut templates) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut measures: [Vec<i64>; 6] = Default::default();
    for (d, engagement) in increments {
        tenants.push(&*d.tenant_id);
        hours.push(d.hour);
        channels.push(d.channel);
        let (provider, template) = d.provider_and_template();
        providers.push(provider);
        templates.push(template);
        for (column, value) in measures.iter_mut().zip(engagement.columns()) {
            column.push(value);
        }
    }
    let [sent, delivered, opened, clicked, bounced, complained] = measures;
    sqlx::query(
        "INSERT INTO analytics_engagement \
             (tenant_id, hour, channel, provider, template, \
              sent, delivered, opened, clicked, bounced, complained) \
         SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], \
                              $6::int8[], $7::int8[], $8::int8[], $9::int8[], $10::int8[], $11::int8[]) \
         ON CONFLICT (tenant_id, hour, channel, provider, template) DO UPDATE SET \
             sent = analytics_engagement.sent + EXCLUDED.sent, \
             delivered = analytics_engagement.delivered + EXCLUDED.delivered, \
             opened = analytics_engagement.opened + EXCLUDED.opened, \
             clicked = analytics_engagement.clicked + EXCLUDED.clicked, \
             bounced = analytics_engagement.bounced + EXCLUDED.bounced, \
             complained = analytics_engagement.complained + EXCLUDED.complained",
    )
    .bind(tenants)
    .bind(hours)
    .bind(channels)
    .bind(providers)
    .bind(templates)
    .bind(sent)
    .bind(delivered)
    .bind(opened)
    .bind(clicked)
    .bind(bounced)
    .bind(complained)
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
        let (provider, template) = d.provider_and_template();
        providers.push(provider);
        templates.push(template);
    }
    (columns, providers, templates)
}

/// The `le_ms` a bucket is stored under.
fn upper_bound_ms(bucket: usize) -> f64 {
    LATENCY_BOUNDS_MS
        .get(bucket)
        .map_or(f64::INFINITY, |bound| *bound as f64)
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

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EngagementCount {
    /// The hour of the sends.
    pub hour: DateTime<Utc>,
    pub channel: String,
    /// The provider that sent.
    pub provider: String,
    pub template: String,
    #[sqlx(flatten)]
    pub engagement: Engagement,
}

/// The engagement of a tenant's notifications sent in `[from, to)`; none
/// until version 3 has been swapped in.
pub async fn engagement(
    pool: &PgPool,
    tenant_id: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<EngagementCount>, sqlx::Error> {
    sqlx::query_as(
        "SELECT hour, channel, provider, template, \
                sent, delivered, opened, clicked, bounced, complained \
         FROM analytics_engagement \
         WHERE tenant_id = $1 AND hour >= $2 AND hour < $3 \
         ORDER BY hour, channel, provider, template",
    )
    .bind(tenant_id)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TemplateEngagement {
    pub tenant_id: String,
    pub template: String,
    #[sqlx(flatten)]
    pub engagement: Engagement,
}

/// Every tenant's email engagement per template for the sends in hours
/// from `since`, at most `limit` templates: those with the most sends.
pub async fn email_engagement_by_template(
    pool: &PgPool,
    since: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<TemplateEngagement>, sqlx::Error> {
    sqlx::query_as(
        "SELECT tenant_id, template, \
                sum(sent)::int8 AS sent, sum(delivered)::int8 AS delivered, \
                sum(opened)::int8 AS opened, sum(clicked)::int8 AS clicked, \
                sum(bounced)::int8 AS bounced, sum(complained)::int8 AS complained \
         FROM analytics_engagement \
         WHERE hour >= $1 AND channel = 'email' \
         GROUP BY tenant_id, template \
         HAVING sum(sent) > 0 \
         ORDER BY sum(sent) DESC, tenant_id, template \
         LIMIT $2",
    )
    .bind(since)
    .bind(limit)
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
    use serde_json::json;

    use super::*;
    use crate::domain::SendNotification;
    use crate::domain::signed_link::ClientContext;
    use crate::domain::values::{HttpUrl, NotificationId, TenantId};

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    /// Folds and counts `events` as `handle_batch` does, one stream.
    fn tally(events: &[(&str, NotificationEvent)]) -> Tally {
        let (mut context, mut tally) = (None, Tally::default());
        for (recorded_at, event) in events {
            Context::fold(&mut context, event, at(recorded_at));
            if let Some(context) = &context {
                tally.add(context, at(recorded_at), event);
            }
        }
        tally
    }

    #[test]
    fn engagement_counts_once_per_notification_in_the_hour_of_the_send() {
        let requested_at = at("2026-03-01T09:58:00Z");
        let request = serde_json::from_value::<SendNotification>(json!({
            "recipient": { "email": "ada@example.com" },
            "channels": ["email"],
            "template": { "key": "welcome" },
        }))
        .unwrap()
        .parse(requested_at)
        .unwrap();
        let opened = |first| NotificationEvent::Opened {
            first,
            at: requested_at,
            client: ClientContext::default(),
        };
        let clicked = |first| NotificationEvent::Clicked {
            first,
            url: HttpUrl::parse("https://shop.example/").unwrap(),
            at: requested_at,
            client: ClientContext::default(),
        };
        let tally = tally(&[
            (
                "2026-03-01T09:58:00Z",
                NotificationEvent::Requested {
                    tenant_id: TenantId::parse("acme").unwrap(),
                    notification_id: NotificationId::new(),
                    request,
                    requested_at,
                },
            ),
            (
                "2026-03-01T09:59:00Z",
                NotificationEvent::DeliveryAttempted {
                    attempt: 1,
                    channel: Channel::Email,
                    provider: "ses".into(),
                },
            ),
            (
                "2026-03-01T10:00:01Z",
                NotificationEvent::Sent {
                    attempt: 1,
                    provider: "ses".into(),
                    provider_message_id: None,
                    content: None,
                },
            ),
            (
                "2026-03-01T10:00:02Z",
                NotificationEvent::Delivered { at: requested_at },
            ),
            ("2026-03-01T11:30:00Z", opened(true)),
            ("2026-03-02T08:00:00Z", opened(false)),
            ("2026-03-02T08:00:05Z", clicked(true)),
            ("2026-03-05T20:00:00Z", clicked(false)),
            (
                "2026-03-06T07:00:00Z",
                NotificationEvent::Complained { at: requested_at },
            ),
        ]);
        let rows: Vec<_> = tally
            .engagement
            .iter()
            .map(|(d, e)| (d.hour, d.channel, d.provider_and_template(), *e))
            .collect();
        assert_eq!(
            rows,
            [(
                at("2026-03-01T10:00:00Z"),
                "email",
                ("ses", "welcome"),
                Engagement {
                    sent: 1,
                    delivered: 1,
                    opened: 1,
                    clicked: 1,
                    bounced: 0,
                    complained: 1,
                },
            )],
            "every measure in the hour of the send, each once"
        );
        // Statuses still count in the hour of their own event.
        let complained = tally
            .counts
            .keys()
            .find(|(_, status)| *status == "COMPLAINED")
            .unwrap();
        assert_eq!(complained.0.hour, at("2026-03-06T07:00:00Z"));
    }

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
