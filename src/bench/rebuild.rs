//! `herald bench rebuild`: rebuilding `notification_status` and `analytics`
//! from a log of notification lifecycles, against the raw ordered export of
//! the same events with COPY.

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use futures::StreamExt;
use serde_json::{Value, json};
use sqlx::PgPool;

use super::ScratchDatabase;
use super::report::peak_rss_mib;
use crate::domain::values::{Channel, NotificationId, TenantId};
use crate::domain::{NotificationEvent, SendNotification};
use crate::eventstore::{Checkpoint, EventStore};
use crate::projections::{Projection, analytics, notification_status, rebuild};

#[derive(Debug, clap::Args)]
pub struct RebuildArgs {
    /// Events in the log (six per notification).
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Tenants the notifications are spread over.
    #[arg(long, default_value_t = 5)]
    tenants: usize,
}

/// Each lifecycle's events, in stream order; a notification follows script
/// `i % 10`, so six in ten are delivered and opened.
const SCRIPTS: [[&str; 6]; 5] = [
    [
        "NotificationRequested",
        "NotificationRanked",
        "DeliveryAttempted",
        "NotificationSent",
        "NotificationDelivered",
        "NotificationOpened",
    ],
    [
        "NotificationRequested",
        "NotificationRanked",
        "NotificationScheduled",
        "DeliveryAttempted",
        "NotificationSent",
        "NotificationDelivered",
    ],
    [
        "NotificationRequested",
        "NotificationRanked",
        "DeliveryAttempted",
        "DeliveryFailed",
        "DeliveryAttempted",
        "NotificationSent",
    ],
    [
        "NotificationRequested",
        "NotificationRanked",
        "NotificationScheduled",
        "DeliveryAttempted",
        "DeliveryFailed",
        "NotificationDeadLettered",
    ],
    [
        "NotificationRequested",
        "NotificationRanked",
        "DeliveryAttempted",
        "DeliveryFailed",
        "DeliveryAttempted",
        "NotificationCancelled",
    ],
];

/// How far after its request (in notifications requested meanwhile) each
/// event of a lifecycle lands in the log: ranking at once, the attempt soon,
/// receipts later, engagement much later. Nearly every notification's events
/// straddle batches, as in a busy log.
const LAG: [i64; 6] = [0, 20, 50, 100, 1_000, 10_000];

/// Notifications (their log keys) per INSERT transaction.
const KEYS_PER_INSERT: i64 = 10_000;

pub async fn run(scratch: &ScratchDatabase, args: RebuildArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.events >= 6 && args.tenants >= 1,
        "--events must be at least 6 and --tenants at least 1"
    );
    let pool = scratch.pool(4).await?;
    let notifications = (args.events / 6) as i64;
    println!(
        "herald bench rebuild: {} events, {notifications} notifications over {} tenants",
        notifications * 6,
        args.tenants
    );
    let started = Instant::now();
    fill(&pool, notifications, args.tenants).await?;
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await?;
    sqlx::query("VACUUM ANALYZE events").execute(&pool).await?;
    eprintln!(
        "filled the log: {events} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let store = EventStore::new(pool.clone());
    let (copied, copy_time) = copy_export(&pool).await?;
    anyhow::ensure!(copied == events, "COPY exported {copied} of {events} rows");
    let copy_rate = copied as f64 / copy_time.as_secs_f64();
    let (read, read_time) = read_only(&store).await?;
    let read_rate = read as f64 / read_time.as_secs_f64();

    let status = timed_rebuild(&store, &notification_status::NotificationStatusProjection).await?;
    let analytics = timed_rebuild(&store, &analytics::AnalyticsProjection::new()).await?;
    let status_rate = status.events as f64 / status.elapsed.as_secs_f64();
    let analytics_rate = analytics.events as f64 / analytics.elapsed.as_secs_f64();

    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM notification_status")
        .fetch_one(&pool)
        .await?;
    let counted: i64 =
        sqlx::query_scalar("SELECT coalesce(sum(count), 0)::int8 FROM analytics_counts")
            .fetch_one(&pool)
            .await?;
    anyhow::ensure!(
        rows == notifications,
        "{rows} status rows for {notifications} notifications"
    );

    println!();
    println!("{:<36} {:>10} {:>9} {:>8}", "", "events", "ev/s", "vs COPY");
    for (label, events, rate) in [
        ("raw COPY ordered export", copied as u64, copy_rate),
        ("read_all, notification_status filter", read, read_rate),
        ("rebuild notification_status", status.events, status_rate),
        ("rebuild analytics", analytics.events, analytics_rate),
    ] {
        println!(
            "{label:<36} {events:>10} {rate:>9.0} {:>8.2}",
            rate / copy_rate
        );
    }
    println!("notification_status rows: {rows}; analytics counted {counted} events");
    if let Some(rss) = peak_rss_mib() {
        println!("peak RSS of the benchmark process: {rss:.0} MiB");
    }
    println!(
        "rebuild events={events}: notification_status {status_rate:.0} ev/s, analytics {analytics_rate:.0} ev/s, raw COPY {copy_rate:.0} rows/s"
    );
    drop(store);
    pool.close().await;
    Ok(())
}

/// Generates the log in SQL: each notification's six events, interleaved
/// with the others' by [`LAG`], one INSERT per slice of the log.
async fn fill(pool: &PgPool, notifications: i64, tenants: usize) -> anyhow::Result<()> {
    sqlx::query(
        "CREATE TABLE bench_script (script int, version int, lag int8, event_type text, \
         payload jsonb, attempt int, PRIMARY KEY (script, version))",
    )
    .execute(pool)
    .await?;
    for (script, events) in SCRIPTS.iter().enumerate() {
        let mut attempts = 0;
        for (index, event_type) in events.iter().enumerate() {
            let attempt = (*event_type == "DeliveryAttempted").then(|| {
                attempts += 1;
                attempts
            });
            sqlx::query("INSERT INTO bench_script VALUES ($1, $2, $3, $4, $5, $6)")
                .bind(script as i32)
                .bind(index as i32 + 1)
                .bind(LAG[index])
                .bind(*event_type)
                .bind(template(event_type, attempts.max(1))?)
                .bind(attempt.map(|a: u32| a as i32))
                .execute(pool)
                .await?;
        }
    }
    let keys = notifications + LAG[5];
    let mut key = 0;
    while key < keys {
        let to = (key + KEYS_PER_INSERT).min(keys);
        sqlx::query(
            "INSERT INTO events (stream_id, stream_version, event_id, event_type, schema_version, \
                                 tenant_id, payload, metadata, recorded_at) \
             SELECT 'notification-' || n.id, s.version, md5(n.id::text || '/' || s.version)::uuid, \
                    s.event_type, 1, n.tenant, \
                    CASE WHEN s.version = 1 THEN jsonb_set(s.payload || jsonb_build_object( \
                             'tenant_id', n.tenant, 'notification_id', n.id, 'requested_at', n.at), \
                             '{request,channels}', n.channels) \
                         WHEN s.attempt IS NOT NULL THEN s.payload || jsonb_build_object( \
                             'channel', n.channels->((s.attempt - 1) % 2)) \
                         ELSE s.payload END, \
                    jsonb_build_object('actor', 'bench'), n.at + make_interval(secs => s.lag) \
             FROM generate_series($1::int8, $2::int8 - 1) AS key \
             CROSS JOIN bench_script s \
             CROSS JOIN LATERAL (SELECT key - s.lag AS i) AS k \
             CROSS JOIN LATERAL (SELECT \
                     (substr(md5('n' || k.i), 1, 12) || '7' || substr(md5('n' || k.i), 14, 19))::uuid AS id, \
                     'tenant-' || (k.i % $4) AS tenant, \
                     CASE WHEN k.i % 3 = 0 THEN '[\"sms\", \"email\"]'::jsonb \
                          ELSE '[\"email\", \"sms\"]'::jsonb END AS channels, \
                     timestamptz '2026-11-01 00:00:00+00' + make_interval(secs => k.i) AS at) AS n \
             WHERE k.i >= 0 AND k.i < $3 AND s.script = (k.i % 10) / 2 \
             ORDER BY key, s.version",
        )
        .bind(key)
        .bind(to)
        .bind(notifications)
        .bind(tenants as i64)
        .execute(pool)
        .await
        .context("generating events")?;
        key = to;
        eprint!("\rfilling the log: {:>3}%", key * 100 / keys);
    }
    eprintln!();
    Ok(())
}

/// A stored payload for `event_type`, read back by `NotificationEvent::upcast`;
/// the request's ids, tenant, time and channels are set per notification.
fn template(event_type: &str, attempt: u32) -> anyhow::Result<Value> {
    let at = Utc::now();
    let event = match event_type {
        "NotificationRequested" => {
            let request = serde_json::from_value::<SendNotification>(json!({
                "recipient": {"id": "user-1", "email": "user@example.com", "phone": "+447700900123"},
                "channels": ["email", "sms"],
                "priority": "high",
                "content": {"title": "Your code", "text": "Your code is 384921"},
                "category": "auth",
                "tags": ["otp", "login"]
            }))?
            .parse(at)
            .map_err(|e| anyhow::anyhow!("the bench request does not parse: {e:?}"))?;
            NotificationEvent::Requested {
                tenant_id: TenantId::parse("tenant-0")?,
                notification_id: NotificationId::new(),
                request,
                requested_at: at,
            }
        }
        "NotificationRanked" => NotificationEvent::Ranked {
            score: 0.8,
            breakdown: json!({"urgency": 0.8}),
            scorer: "rules".into(),
            send_after: None,
        },
        "NotificationScheduled" => NotificationEvent::Scheduled {
            schedule_at: at,
            reason: "quiet hours".into(),
        },
        "DeliveryAttempted" => NotificationEvent::DeliveryAttempted {
            attempt,
            channel: Channel::Email,
            provider: "ses".into(),
        },
        "NotificationSent" => NotificationEvent::Sent {
            attempt,
            provider: "ses".into(),
            provider_message_id: Some("0100018c-bench".into()),
            content: None,
        },
        "DeliveryFailed" => NotificationEvent::DeliveryFailed {
            attempt,
            provider: "ses".into(),
            error: "451 try again later".into(),
            permanent: false,
            retry_at: Some(at),
        },
        "NotificationDeadLettered" => NotificationEvent::DeadLettered {
            reason: "gave up".into(),
        },
        "NotificationDelivered" => NotificationEvent::Delivered { at },
        "NotificationOpened" => NotificationEvent::Opened {
            first: true,
            at,
            client: Default::default(),
        },
        "NotificationCancelled" => NotificationEvent::Cancelled {
            reason: Some("changed my mind".into()),
        },
        other => anyhow::bail!("no template for {other}"),
    };
    Ok(serde_json::to_value(&event)?)
}

/// The baseline: every event in read order, exported with COPY and drained.
async fn copy_export(pool: &PgPool) -> anyhow::Result<(i64, Duration)> {
    let mut conn = pool.acquire().await?;
    let started = Instant::now();
    let mut out = conn
        .copy_out_raw(
            "COPY (SELECT global_position, transaction_id, stream_id, stream_version, event_id, \
                          event_type, schema_version, tenant_id, payload, metadata, recorded_at \
                   FROM events ORDER BY transaction_id, global_position) TO STDOUT",
        )
        .await?;
    let (mut rows, mut bytes) = (0i64, 0usize);
    while let Some(chunk) = out.next().await {
        let chunk = chunk?;
        bytes += chunk.len();
        rows += chunk.iter().filter(|b| **b == b'\n').count() as i64;
    }
    let elapsed = started.elapsed();
    eprintln!(
        "COPY export: {rows} rows, {:.0} MiB in {:.2} s",
        bytes as f64 / (1024.0 * 1024.0),
        elapsed.as_secs_f64()
    );
    Ok((rows, elapsed))
}

/// The log as a rebuild reads it, in its batches, without applying anything:
/// what the handlers add is the rest of a rebuild's time.
async fn read_only(store: &EventStore) -> anyhow::Result<(u64, Duration)> {
    let filter = notification_status::NotificationStatusProjection.filter();
    let started = Instant::now();
    let mut checkpoint = Checkpoint::ORIGIN;
    let mut read = 0u64;
    loop {
        let batch = store.read_all(checkpoint, 5_000, &filter).await?;
        read += batch.events.len() as u64;
        checkpoint = batch.next;
        if batch.caught_up {
            break;
        }
    }
    Ok((read, started.elapsed()))
}

async fn timed_rebuild(
    store: &EventStore,
    projection: &dyn Projection,
) -> anyhow::Result<rebuild::Progress> {
    let name = projection.name().to_owned();
    let mut last = Instant::now();
    let done = rebuild::rebuild(store, projection, |progress| {
        if last.elapsed() >= Duration::from_secs(2) {
            last = Instant::now();
            eprintln!(
                "rebuilding {name}: {}/{} events, {:.0} ev/s",
                progress.events,
                progress.total,
                progress.events_per_second()
            );
        }
    })
    .await?;
    eprintln!(
        "rebuilt {name}: {} events in {:.2} s",
        done.events,
        done.elapsed.as_secs_f64()
    );
    Ok(done)
}
