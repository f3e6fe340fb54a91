//! `analytics_counts`: how many notifications entered each status, per tenant,
//! hour (UTC, of the event's `recorded_at`) and channel. A counter is not
//! idempotent, so this read model is kept by the runner alone: its counts and
//! its checkpoint commit together, which is what makes each event count once.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use futures::future::BoxFuture;
use sqlx::{PgConnection, PgPool};

use super::notification_status::{by_notification, decode, starts_the_stream};
use super::{Projection, ProjectionError};
use crate::domain::values::Channel;
use crate::domain::{Notification, NotificationEvent, NotificationState};
use crate::eventstore::{ReadFilter, RecordedEvent};

pub const NAME: &str = "analytics";
pub const VERSION: i32 = 1;

/// The runner's path. Keeps, per notification stream, what decides a count
/// besides the event itself (tenant, requested and attempted channel) as of
/// the last version it folded; these are facts of the log, so they stay true
/// whatever commits or rolls back. A batch continuing a stream right after
/// that version starts from them; any other reads them from the log.
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
#[derive(Debug, Clone)]
struct Context {
    version: i64,
    tenant_id: String,
    requested_channel: Option<Channel>,
    attempted_channel: Option<Channel>,
}

impl Context {
    fn of(state: &NotificationState, version: i64) -> Context {
        Context {
            version,
            tenant_id: state.tenant_id.as_str().to_owned(),
            requested_channel: state.request.channels.first().copied(),
            attempted_channel: state.channel,
        }
    }

    fn channel(&self) -> &'static str {
        self.attempted_channel
            .or(self.requested_channel)
            .map(|c| c.as_str())
            .unwrap_or("none")
    }
}

type Counts = HashMap<(String, DateTime<Utc>, &'static str, &'static str), i64>;

fn count(
    counts: &mut Counts,
    tenant_id: &str,
    event: &RecordedEvent,
    channel: &'static str,
    status: &'static str,
) {
    *counts
        .entry((
            tenant_id.to_owned(),
            hour_of(event.recorded_at),
            channel,
            status,
        ))
        .or_default() += 1;
}

impl Projection for AnalyticsProjection {
    fn name(&self) -> &str {
        NAME
    }

    fn version(&self) -> i32 {
        VERSION
    }

    fn tables(&self) -> &'static [&'static str] {
        &["analytics_counts"]
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
            let mut counts = Counts::new();
            let mut learnt = Vec::with_capacity(groups.len());
            for ((_, group), start) in groups.iter().zip(starts) {
                let last = group[group.len() - 1];
                if let Some(mut context) = start {
                    for event in group {
                        let decoded = decode(event)?;
                        if let NotificationEvent::DeliveryAttempted { channel, .. } = &decoded {
                            context.attempted_channel = Some(*channel);
                        }
                        if let Some(status) = decoded.status_after() {
                            count(
                                &mut counts,
                                &context.tenant_id,
                                event,
                                context.channel(),
                                status.as_str(),
                            );
                        }
                    }
                    context.version = last.stream_version;
                    learnt.push((last.stream_id.clone(), context));
                    continue;
                }
                let known = from_log.remove(last.stream_id.as_str()).unwrap_or_default();
                let mut known = known.into_iter().peekable();
                let mut notification = Notification::default();
                for event in group {
                    while let Some((version, _)) = known.peek()
                        && *version <= event.stream_version
                    {
                        let (version, earlier) = known.next().expect("peeked");
                        // The same event as this one: applied below.
                        if version < event.stream_version {
                            notification.apply(&earlier);
                        }
                    }
                    let decoded = decode(event)?;
                    notification.apply(&decoded);
                    // Events before NotificationRequested change nothing (the
                    // aggregate ignores them), nor does engagement.
                    let (Some(state), Some(_)) = (notification.state(), decoded.status_after())
                    else {
                        continue;
                    };
                    let context = Context::of(state, event.stream_version);
                    count(
                        &mut counts,
                        &context.tenant_id,
                        event,
                        context.channel(),
                        state.status.as_str(),
                    );
                }
                if let Some(state) = notification.state() {
                    learnt.push((
                        last.stream_id.clone(),
                        Context::of(state, last.stream_version),
                    ));
                }
            }
            if !counts.is_empty() {
                write(conn, counts).await?;
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

/// Adds the batch's counts, one statement.
async fn write(conn: &mut PgConnection, counts: Counts) -> Result<(), sqlx::Error> {
    let mut tenants = Vec::with_capacity(counts.len());
    let mut hours = Vec::with_capacity(counts.len());
    let mut channels = Vec::with_capacity(counts.len());
    let mut statuses = Vec::with_capacity(counts.len());
    let mut increments = Vec::with_capacity(counts.len());
    for ((tenant, hour, channel, status), count) in counts {
        tenants.push(tenant);
        hours.push(hour);
        channels.push(channel);
        statuses.push(status);
        increments.push(count);
    }
    sqlx::query(
        "INSERT INTO analytics_counts (tenant_id, hour, channel, status, count) \
         SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::int8[]) \
         ON CONFLICT (tenant_id, hour, channel, status) \
         DO UPDATE SET count = analytics_counts.count + EXCLUDED.count",
    )
    .bind(tenants)
    .bind(hours)
    .bind(channels)
    .bind(statuses)
    .bind(increments)
    .execute(conn)
    .await?;
    Ok(())
}

/// The events that decide a count's tenant and channel (the request and the
/// delivery attempts) of each stream up to its version, in stream order, in
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

/// A tenant's counts in `[from, to)`, by hour, channel and status.
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
