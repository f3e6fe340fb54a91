//! `delivery_queue`: what the dispatcher has left to do, by priority and due
//! time (docs/architecture.md, "Workers").
//!
//! Unlike the runner's read models it is written in the same transaction as
//! the event that makes work due (an outbox): a send is claimable the moment
//! it commits, and a crash can never leave an accepted notification that no
//! worker will find. A row leaves as soon as its notification is sent or
//! ends, so the table holds only live work.
//!
//! A paused campaign's rows are held: their due time is kept in
//! `held_due_at` and `due_at` moved to [`held_due_at`], beyond any claim, so
//! the claim query never even looks at them ([`hold_campaign`],
//! [`unhold_campaign`]).

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::domain::NotificationState;
use crate::domain::values::{NotificationId, Priority, TenantId};

/// The queue's order: HIGH before NORMAL before LOW.
pub fn rank(priority: Priority) -> i16 {
    match priority {
        Priority::High => 0,
        Priority::Normal => 1,
        Priority::Low => 2,
    }
}

/// When a pending notification is next worth looking at: its retry, its
/// schedule or now, but never after its expiry (so an expired one is closed
/// on time rather than when it would have been sent).
pub fn due_at(state: &NotificationState, now: DateTime<Utc>) -> DateTime<Utc> {
    let wanted = [state.retry_at, state.schedule_at, state.send_after]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(now);
    match state.expires_at() {
        Some(expires_at) => wanted.min(expires_at),
        None => wanted,
    }
}

/// Where a held row's `due_at` waits: beyond any claim, yet a time chrono
/// reads (`next_due` decodes it; PostgreSQL's `infinity` would not decode).
/// Migration 0020 writes the same time.
pub fn held_due_at() -> DateTime<Utc> {
    DateTime::from_timestamp(253_402_214_400, 0).expect("9999-12-31 is a valid time")
}

/// A row to put in the queue (or move) in one statement with others.
#[derive(Debug, Clone)]
pub struct QueueEntry {
    pub notification_id: NotificationId,
    pub tenant_id: TenantId,
    pub priority: Priority,
    pub due_at: DateTime<Utc>,
    /// The campaign that released it: held while that campaign is paused.
    pub campaign_id: Option<Uuid>,
}

impl QueueEntry {
    pub fn of(state: &NotificationState, now: DateTime<Utc>) -> QueueEntry {
        QueueEntry {
            notification_id: state.notification_id,
            tenant_id: state.tenant_id.clone(),
            priority: state.request.priority,
            due_at: due_at(state, now),
            campaign_id: state.request.campaign_id,
        }
    }
}

/// Puts entries in the queue, or moves existing ones to their new due time
/// and releases their lease; an entry of a paused campaign goes in held.
pub async fn put(conn: &mut PgConnection, entries: &[QueueEntry]) -> Result<(), sqlx::Error> {
    if entries.is_empty() {
        return Ok(());
    }
    let paused = paused_campaigns(conn, entries).await?;
    let held = |e: &QueueEntry| e.campaign_id.is_some_and(|id| paused.contains(&id));
    let ids: Vec<Uuid> = entries
        .iter()
        .map(|e| e.notification_id.as_uuid())
        .collect();
    let tenants: Vec<&str> = entries.iter().map(|e| e.tenant_id.as_str()).collect();
    let priorities: Vec<i16> = entries.iter().map(|e| rank(e.priority)).collect();
    let due: Vec<DateTime<Utc>> = entries
        .iter()
        .map(|e| if held(e) { held_due_at() } else { e.due_at })
        .collect();
    let campaigns: Vec<Option<Uuid>> = entries.iter().map(|e| e.campaign_id).collect();
    let held_due: Vec<Option<DateTime<Utc>>> = entries
        .iter()
        .map(|e| held(e).then_some(e.due_at))
        .collect();
    sqlx::query(
        "INSERT INTO delivery_queue (notification_id, tenant_id, priority, due_at, campaign_id, held_due_at) \
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::int2[], $4::timestamptz[], $5::uuid[], $6::timestamptz[]) \
         ON CONFLICT (notification_id) DO UPDATE \
             SET due_at = EXCLUDED.due_at, held_due_at = EXCLUDED.held_due_at, \
                 priority = EXCLUDED.priority, leased_by = NULL, rechecks = 0",
    )
    .bind(&ids)
    .bind(&tenants)
    .bind(&priorities)
    .bind(&due)
    .bind(&campaigns)
    .bind(&held_due)
    .execute(conn)
    .await?;
    Ok(())
}

/// Which of the entries' campaigns are paused. Their rows stay locked (for
/// share) until the commit, so a pause or resume of one of them either
/// commits first and is seen here, or waits for this write and then holds
/// or releases its rows too: no row is left held once its campaign resumed.
async fn paused_campaigns(
    conn: &mut PgConnection,
    entries: &[QueueEntry],
) -> Result<HashSet<Uuid>, sqlx::Error> {
    let mut ids: Vec<Uuid> = entries.iter().filter_map(|e| e.campaign_id).collect();
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    ids.sort_unstable();
    ids.dedup();
    let rows: Vec<(Uuid, bool)> = sqlx::query_as(
        "SELECT campaign_id, status = 'PAUSED' FROM campaigns \
         WHERE campaign_id = ANY($1) ORDER BY campaign_id FOR SHARE",
    )
    .bind(&ids)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, paused)| paused.then_some(id))
        .collect())
}

/// Holds the campaign's rows, in the transaction that pauses it: none is
/// claimed until [`unhold_campaign`]. Rows leased now stay leased; their
/// outcome, if it puts them back, puts them back held.
pub async fn hold_campaign(conn: &mut PgConnection, campaign_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE delivery_queue SET held_due_at = due_at, due_at = $2 \
         WHERE campaign_id = $1 AND held_due_at IS NULL",
    )
    .bind(campaign_id)
    .bind(held_due_at())
    .execute(conn)
    .await?;
    Ok(())
}

/// Puts the campaign's held rows back at their own due time, in the
/// transaction that resumes (or cancels) it.
pub async fn unhold_campaign(
    conn: &mut PgConnection,
    campaign_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE delivery_queue SET due_at = held_due_at, held_due_at = NULL \
         WHERE campaign_id = $1 AND held_due_at IS NOT NULL",
    )
    .bind(campaign_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Takes finished notifications out of the queue.
pub async fn remove(
    executor: impl PgExecutor<'_>,
    ids: &[NotificationId],
) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = ids.iter().map(NotificationId::as_uuid).collect();
    sqlx::query("DELETE FROM delivery_queue WHERE notification_id = ANY($1)")
        .bind(&ids)
        .execute(executor)
        .await?;
    Ok(())
}

/// Hands leased rows back, each due again at its time, without an event:
/// a hold restated for the same reason (see `NotificationCommand::Schedule`).
/// `rechecks` counts these since the row's last event. A row held meanwhile
/// (its campaign paused) stays held, due then once its campaign resumes.
pub async fn recheck(
    executor: impl PgExecutor<'_>,
    rows: &[(NotificationId, DateTime<Utc>)],
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let (ids, due): (Vec<Uuid>, Vec<DateTime<Utc>>) =
        rows.iter().map(|(id, at)| (id.as_uuid(), *at)).unzip();
    sqlx::query(
        "UPDATE delivery_queue q SET leased_by = NULL, rechecks = q.rechecks + 1, \
             due_at = CASE WHEN q.held_due_at IS NULL THEN r.due_at ELSE q.due_at END, \
             held_due_at = CASE WHEN q.held_due_at IS NOT NULL THEN r.due_at END \
         FROM unnest($1::uuid[], $2::timestamptz[]) AS r(notification_id, due_at) \
         WHERE q.notification_id = r.notification_id",
    )
    .bind(&ids)
    .bind(&due)
    .execute(executor)
    .await?;
    Ok(())
}

/// Hands leased rows back, due now, for another look; a row held meanwhile
/// (its campaign paused) stays held, due now once its campaign resumes.
pub async fn release(
    executor: impl PgExecutor<'_>,
    ids: &[NotificationId],
) -> Result<(), sqlx::Error> {
    let ids: Vec<Uuid> = ids.iter().map(NotificationId::as_uuid).collect();
    sqlx::query(
        "UPDATE delivery_queue SET leased_by = NULL, \
             due_at = CASE WHEN held_due_at IS NULL THEN now() ELSE due_at END, \
             held_due_at = CASE WHEN held_due_at IS NOT NULL THEN now() END \
         WHERE notification_id = ANY($1)",
    )
    .bind(&ids)
    .execute(executor)
    .await?;
    Ok(())
}

/// A row a worker now holds until its lease runs out.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claim {
    pub notification_id: Uuid,
    pub tenant_id: String,
    pub claims: i32,
    pub priority: i16,
}

/// Tenants left out of a claim, by priority band: a tenant whose LOW rows
/// fill its share is still claimed for HIGH and NORMAL, and the reverse.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Excluded {
    /// Left out of HIGH and NORMAL rows.
    pub urgent: Vec<String>,
    /// Left out of LOW rows.
    pub bulk: Vec<String>,
}

impl Excluded {
    /// Only the tenants `keep` says, in both bands.
    pub fn retaining(&self, keep: impl Fn(&str) -> bool) -> Excluded {
        let band = |tenants: &[String]| tenants.iter().filter(|t| keep(t)).cloned().collect();
        Excluded {
            urgent: band(&self.urgent),
            bulk: band(&self.bulk),
        }
    }
}

/// Claims up to `limit` due rows, HIGH first then the longest due, of which
/// at most `low_limit` LOW ones, skipping rows another worker is claiming
/// right now and rows of the `excluded` tenants in their band (those
/// holding their share of this worker already). The claim moves each row's due time forward by
/// the lease: if this worker dies, the rows come back then.
pub async fn claim(
    executor: impl PgExecutor<'_>,
    worker: Uuid,
    limit: u32,
    low_limit: u32,
    lease_seconds: u64,
    excluded: &Excluded,
) -> Result<Vec<Claim>, sqlx::Error> {
    sqlx::query_as(
        "WITH urgent AS ( \
             SELECT notification_id FROM delivery_queue \
             WHERE due_at <= now() AND priority < $4 AND tenant_id <> ALL($6) \
             ORDER BY priority, due_at \
             LIMIT $2 \
             FOR UPDATE SKIP LOCKED), \
         bulk AS ( \
             SELECT notification_id FROM delivery_queue \
             WHERE due_at <= now() AND priority >= $4 AND tenant_id <> ALL($7) \
             ORDER BY priority, due_at \
             LIMIT GREATEST(0, LEAST($5, $2 - (SELECT count(*) FROM urgent))) \
             FOR UPDATE SKIP LOCKED), \
         due AS (SELECT notification_id FROM urgent UNION ALL SELECT notification_id FROM bulk) \
         UPDATE delivery_queue q \
            SET due_at = now() + make_interval(secs => $3), leased_by = $1, claims = q.claims + 1 \
           FROM due WHERE q.notification_id = due.notification_id \
         RETURNING q.notification_id, q.tenant_id, q.claims, q.priority",
    )
    .bind(worker)
    .bind(i64::from(limit))
    .bind(lease_seconds as f64)
    .bind(rank(Priority::Low))
    .bind(i64::from(low_limit))
    .bind(&excluded.urgent)
    .bind(&excluded.bulk)
    .fetch_all(executor)
    .await
}

/// When the next row falls due, if any: how long a worker may sleep.
pub async fn next_due(executor: impl PgExecutor<'_>) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar("SELECT min(due_at) FROM delivery_queue")
        .fetch_one(executor)
        .await
}

/// One line of the queue's ops view (GraphQL `deliveryQueue`, REST `/admin/queues`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct QueueStats {
    pub priority: i16,
    /// The notification's first requested channel.
    pub channel: Option<String>,
    /// Rows waiting, due or not, leased or not.
    pub depth: i64,
    /// Rows due now and not held by a worker.
    pub due: i64,
    /// Rows a worker holds right now.
    pub leased: i64,
    /// The longest-waiting due row's due time.
    pub oldest_due_at: Option<DateTime<Utc>>,
}

/// A tenant's queue by priority and channel.
pub async fn stats(
    executor: impl PgExecutor<'_>,
    tenant_id: &str,
) -> Result<Vec<QueueStats>, sqlx::Error> {
    sqlx::query_as(
        "SELECT q.priority, s.channels[1] AS channel, count(*) AS depth, \
                count(*) FILTER (WHERE q.due_at <= now()) AS due, \
                count(*) FILTER (WHERE q.leased_by IS NOT NULL AND q.due_at > now()) AS leased, \
                min(q.due_at) FILTER (WHERE q.due_at <= now()) AS oldest_due_at \
         FROM delivery_queue q LEFT JOIN notification_status s USING (notification_id) \
         WHERE q.tenant_id = $1 \
         GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .bind(tenant_id)
    .fetch_all(executor)
    .await
}

/// Rows per priority, every tenant: the `delivery_queue_depth` gauge.
pub async fn depth_by_priority(
    executor: impl PgExecutor<'_>,
) -> Result<Vec<(i16, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT priority, count(*) FROM delivery_queue GROUP BY priority")
        .fetch_all(executor)
        .await
}

/// Seconds the longest-waiting due row not claimed has been due (0 when
/// none is), and the dead letters not replayed, every tenant: the gauges
/// alerts watch.
pub async fn waiting(executor: impl PgExecutor<'_>) -> Result<(f64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT COALESCE(EXTRACT(EPOCH FROM now() - (SELECT min(due_at) FROM delivery_queue WHERE due_at <= now())), 0)::float8, \
                (SELECT count(*) FROM dead_letters WHERE NOT requeued)",
    )
    .fetch_one(executor)
    .await
}

/// One worker process's view of one provider.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProviderHealth {
    pub worker_id: Uuid,
    pub provider: String,
    pub state: String,
    pub recent_failures: i32,
    pub opened_at: Option<DateTime<Utc>>,
    pub in_flight: i32,
    pub updated_at: DateTime<Utc>,
    /// Webhook endpoints whose breaker is worth showing.
    pub endpoints: sqlx::types::Json<Vec<EndpointHealth>>,
}

/// One worker process's view of one webhook endpoint origin.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EndpointHealth {
    /// Each tenant's endpoints have breakers of their own.
    pub tenant_id: String,
    pub origin: String,
    /// `closed`, `open` or `half_open`.
    pub state: String,
    pub recent_failures: i32,
    pub opened_at: Option<DateTime<Utc>>,
    pub in_flight: i32,
}

/// What the worker processes last published about their providers, as
/// `tenant` may see it: providers are shared, endpoint breakers are each
/// tenant's own, so only its endpoints are kept.
pub async fn provider_health(
    executor: impl PgExecutor<'_>,
    tenant: &TenantId,
) -> Result<Vec<ProviderHealth>, sqlx::Error> {
    let mut rows: Vec<ProviderHealth> = sqlx::query_as(
        "SELECT worker_id, provider, state, recent_failures, opened_at, in_flight, updated_at, endpoints \
         FROM provider_health ORDER BY provider, worker_id",
    )
    .fetch_all(executor)
    .await?;
    for row in &mut rows {
        row.endpoints
            .0
            .retain(|endpoint| endpoint.tenant_id == tenant.as_str());
    }
    Ok(rows)
}
