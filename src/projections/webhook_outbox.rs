//! `webhook_outbox`: one status callback per notification event and target,
//! queued in `webhook_deliveries` for the callback sender
//! (`workers::callbacks`).
//!
//! The runner hands each event to one process once, so each callback is
//! queued once; the unique `(event_id, endpoint_id)` index makes handling an
//! event again (an operator's retry) queue nothing new. Targets are the
//! tenant's live endpoints subscribed to the event type and created before
//! the event, plus the notification's `callback_url` when it names one of
//! them. A `callback_url` no endpoint registers has no secret to sign with:
//! its delivery is recorded failed, never sent unsigned.
//!
//! Targets are chosen from the endpoints as they are when the event is
//! handled, which is why the projection has no rebuild: refolding the log
//! would send the history again.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde_json::json;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use super::notification_status::notification_id;
use super::{Projection, ProjectionError};
use crate::domain::NotificationEvent;
use crate::eventstore::{ReadFilter, RecordedEvent};

pub const NAME: &str = "webhook_outbox";
pub const VERSION: i32 = 1;

pub struct WebhookOutboxProjection;

impl Projection for WebhookOutboxProjection {
    fn name(&self) -> &str {
        NAME
    }

    fn version(&self) -> i32 {
        VERSION
    }

    fn filter(&self) -> ReadFilter {
        super::notification_events()
    }

    fn handle_batch<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(enqueue(conn, events))
    }
}

/// A live endpoint as the outbox matches it.
#[derive(sqlx::FromRow)]
struct LiveEndpoint {
    endpoint_id: Uuid,
    tenant_id: String,
    url: String,
    event_types: Vec<String>,
    created_at: DateTime<Utc>,
}

impl LiveEndpoint {
    fn subscribes_to(&self, event: &RecordedEvent) -> bool {
        event.recorded_at >= self.created_at
            && (self.event_types.is_empty() || self.event_types.contains(&event.event_type))
    }
}

/// A row to queue.
struct NewDelivery {
    tenant_id: String,
    event_id: Uuid,
    endpoint_id: Option<Uuid>,
    url: String,
    notification_id: Uuid,
    event_type: String,
    global_position: i64,
    body: String,
    /// `Some`: recorded failed at once, with this error.
    failed: Option<String>,
}

async fn enqueue(conn: &mut PgConnection, events: &[RecordedEvent]) -> Result<(), ProjectionError> {
    let mut items = Vec::with_capacity(events.len());
    for event in events {
        if let Some(id) = notification_id(event)? {
            items.push((event, id));
        }
    }
    if items.is_empty() {
        return Ok(());
    }
    let tenants: Vec<&str> = items
        .iter()
        .map(|(event, _)| event.tenant_id.as_str())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let endpoints: Vec<LiveEndpoint> = sqlx::query_as(
        "SELECT endpoint_id, tenant_id, url, event_types, created_at FROM webhook_endpoints \
         WHERE tenant_id = ANY($1) AND deleted_at IS NULL",
    )
    .bind(&tenants)
    .fetch_all(&mut *conn)
    .await?;
    let callback_urls = callback_urls(conn, &items).await?;

    let mut rows = Vec::new();
    let mut queued = HashSet::new();
    for (event, notification_id) in items {
        let status = NotificationEvent::status_after_type(&event.event_type)
            .map_err(|e| ProjectionError::unreadable(event.global_position, e))?;
        // Built only for events that have a target: most have none.
        let body = std::cell::OnceCell::new();
        let row = |endpoint_id: Option<Uuid>, url: &str, failed: Option<String>| NewDelivery {
            tenant_id: event.tenant_id.clone(),
            event_id: event.event_id,
            endpoint_id,
            url: url.to_string(),
            notification_id,
            event_type: event.event_type.clone(),
            global_position: event.global_position,
            body: body
                .get_or_init(|| {
                    json!({
                        "type": event.event_type,
                        "notification_id": notification_id,
                        "tenant_id": event.tenant_id,
                        "status": status.map(|s| s.as_str()),
                        "position": event.global_position,
                        "recorded_at": event.recorded_at,
                        "data": event.payload,
                    })
                    .to_string()
                })
                .clone(),
            failed,
        };
        let of_tenant = || endpoints.iter().filter(|e| e.tenant_id == event.tenant_id);
        for endpoint in of_tenant().filter(|e| e.subscribes_to(event)) {
            queued.insert((event.event_id, endpoint.endpoint_id));
            rows.push(row(Some(endpoint.endpoint_id), &endpoint.url, None));
        }
        let Some(Some(callback_url)) = callback_urls.get(&event.stream_id) else {
            continue;
        };
        match of_tenant().find(|e| &e.url == callback_url) {
            Some(endpoint) => {
                if queued.insert((event.event_id, endpoint.endpoint_id)) {
                    rows.push(row(Some(endpoint.endpoint_id), &endpoint.url, None));
                }
            }
            None => rows.push(row(
                None,
                callback_url,
                Some(
                    "callback_url is not a registered webhook endpoint, so there is no secret \
                     to sign with; register it (createWebhookEndpoint) to receive callbacks"
                        .to_string(),
                ),
            )),
        }
    }
    insert(conn, &rows).await?;
    Ok(())
}

/// Each notification stream's `callback_url`, from its NotificationRequested:
/// in the batch when it is there, else its stream's first event. Only that
/// one field is read (most events continue a stream whose request came in an
/// earlier batch, so decoding whole requests would be most of the work).
async fn callback_urls(
    conn: &mut PgConnection,
    items: &[(&RecordedEvent, Uuid)],
) -> Result<HashMap<String, Option<String>>, ProjectionError> {
    let mut urls = HashMap::new();
    for (event, _) in items {
        if event.stream_version == 1 && event.event_type == "NotificationRequested" {
            urls.insert(
                event.stream_id.clone(),
                callback_url_of(event.schema_version, &event.payload, event.global_position)?,
            );
        }
    }
    let missing: Vec<&str> = items
        .iter()
        .map(|(event, _)| event.stream_id.as_str())
        .filter(|stream_id| !urls.contains_key(*stream_id))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    if missing.is_empty() {
        return Ok(urls);
    }
    let firsts: Vec<(i64, String, i16, Option<serde_json::Value>)> = sqlx::query_as(
        "SELECT global_position, stream_id, schema_version, payload #> '{request,callback_url}' FROM events \
         WHERE stream_id = ANY($1) AND stream_version = 1 AND event_type = 'NotificationRequested'",
    )
    .bind(&missing)
    .fetch_all(&mut *conn)
    .await?;
    for (global_position, stream_id, schema_version, url) in firsts {
        let payload = json!({ "request": { "callback_url": url } });
        urls.insert(
            stream_id,
            callback_url_of(schema_version, &payload, global_position)?,
        );
    }
    Ok(urls)
}

/// The `callback_url` of a NotificationRequested payload of today's schema.
fn callback_url_of(
    schema_version: i16,
    payload: &serde_json::Value,
    position: i64,
) -> Result<Option<String>, ProjectionError> {
    if schema_version != NotificationEvent::SCHEMA_VERSION {
        return Err(ProjectionError::unreadable(
            position,
            format!("NotificationRequested schema version {schema_version} is not known here"),
        ));
    }
    match payload.pointer("/request/callback_url") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(url)) => Ok(Some(url.clone())),
        Some(other) => Err(ProjectionError::unreadable(
            position,
            format!("callback_url is not a string: {other}"),
        )),
    }
}

async fn insert(conn: &mut PgConnection, rows: &[NewDelivery]) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = rows.iter().map(|_| Uuid::now_v7()).collect();
    let tenants: Vec<&str> = rows.iter().map(|r| r.tenant_id.as_str()).collect();
    let event_ids: Vec<Uuid> = rows.iter().map(|r| r.event_id).collect();
    let endpoint_ids: Vec<Option<Uuid>> = rows.iter().map(|r| r.endpoint_id).collect();
    let urls: Vec<&str> = rows.iter().map(|r| r.url.as_str()).collect();
    let notification_ids: Vec<Uuid> = rows.iter().map(|r| r.notification_id).collect();
    let types: Vec<&str> = rows.iter().map(|r| r.event_type.as_str()).collect();
    let positions: Vec<i64> = rows.iter().map(|r| r.global_position).collect();
    let bodies: Vec<&str> = rows.iter().map(|r| r.body.as_str()).collect();
    let errors: Vec<Option<&str>> = rows.iter().map(|r| r.failed.as_deref()).collect();
    sqlx::query(
        "INSERT INTO webhook_deliveries (delivery_id, tenant_id, event_id, endpoint_id, url, notification_id, \
             event_type, global_position, body, status, last_error, next_attempt_at) \
         SELECT id, tenant, event, endpoint, url, notification, type, position, body, \
                CASE WHEN error IS NULL THEN 'pending' ELSE 'failed' END, error, \
                CASE WHEN error IS NULL THEN now() END \
         FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::uuid[], $5::text[], $6::uuid[], $7::text[], \
                     $8::int8[], $9::text[], $10::text[]) \
              AS t(id, tenant, event, endpoint, url, notification, type, position, body, error) \
         ON CONFLICT DO NOTHING",
    )
    .bind(&ids)
    .bind(&tenants)
    .bind(&event_ids)
    .bind(&endpoint_ids)
    .bind(&urls)
    .bind(&notification_ids)
    .bind(&types)
    .bind(&positions)
    .bind(&bodies)
    .bind(&errors)
    .execute(conn)
    .await?;
    Ok(())
}

/// A delivery a sender now holds until its lease runs out.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedDelivery {
    pub delivery_id: Uuid,
    pub tenant_id: String,
    pub event_id: Uuid,
    pub endpoint_id: Option<Uuid>,
    pub body: String,
    /// Attempts before this one, each a transient failure.
    pub attempts: i32,
}

/// Claims up to `limit` due deliveries, the longest due first, skipping rows
/// another sender is claiming right now and rows of the `excluded` tenants
/// (those holding their share of this sender already). The claim moves each
/// row's due time forward by the lease: if this sender dies, the rows come
/// back then.
pub async fn claim(
    executor: impl PgExecutor<'_>,
    worker: Uuid,
    limit: u32,
    lease_seconds: u64,
    excluded: &[String],
) -> Result<Vec<ClaimedDelivery>, sqlx::Error> {
    sqlx::query_as(
        "WITH due AS ( \
             SELECT delivery_id FROM webhook_deliveries \
             WHERE next_attempt_at <= now() AND tenant_id <> ALL($4) \
             ORDER BY next_attempt_at \
             LIMIT $2 \
             FOR UPDATE SKIP LOCKED) \
         UPDATE webhook_deliveries d \
            SET next_attempt_at = now() + make_interval(secs => $3), leased_by = $1 \
           FROM due WHERE d.delivery_id = due.delivery_id \
         RETURNING d.delivery_id, d.tenant_id, d.event_id, d.endpoint_id, d.body, d.attempts",
    )
    .bind(worker)
    .bind(i64::from(limit))
    .bind(lease_seconds as f64)
    .bind(excluded)
    .fetch_all(executor)
    .await
}

/// When the next delivery falls due, if any: how long a sender may sleep.
pub async fn next_due(executor: impl PgExecutor<'_>) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar("SELECT min(next_attempt_at) FROM webhook_deliveries")
        .fetch_one(executor)
        .await
}

/// How a claimed delivery ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The receiver took it: the row leaves.
    Delivered,
    /// A transient failure with schedule left.
    Retry { at: DateTime<Utc>, error: String },
    /// Nothing more will be tried; the row stays for the tenant to see.
    Failed { error: String, attempted: bool },
    /// Not attempted (its endpoint or tenant is at its limit): due again at
    /// `at`, with no attempt counted.
    Deferred { at: DateTime<Utc> },
}

/// Records an outcome, unless the lease ran out and another sender holds the row.
pub async fn record(
    executor: impl PgExecutor<'_>,
    worker: Uuid,
    delivery_id: Uuid,
    outcome: &Outcome,
) -> Result<(), sqlx::Error> {
    let (status, attempted, error, next_attempt_at) = match outcome {
        Outcome::Delivered => {
            sqlx::query("DELETE FROM webhook_deliveries WHERE delivery_id = $1 AND leased_by = $2")
                .bind(delivery_id)
                .bind(worker)
                .execute(executor)
                .await?;
            return Ok(());
        }
        Outcome::Deferred { at } => return defer(executor, worker, &[delivery_id], *at).await,
        Outcome::Retry { at, error } => ("retrying", true, error, Some(*at)),
        Outcome::Failed { error, attempted } => ("failed", *attempted, error, None),
    };
    sqlx::query(
        "UPDATE webhook_deliveries SET status = $3, attempts = attempts + $4, last_error = $5, \
             next_attempt_at = $6, leased_by = NULL, updated_at = now() \
         WHERE delivery_id = $1 AND leased_by = $2",
    )
    .bind(delivery_id)
    .bind(worker)
    .bind(status)
    .bind(i32::from(attempted))
    .bind(error)
    .bind(next_attempt_at)
    .execute(executor)
    .await?;
    Ok(())
}

/// Hands claimed deliveries back unattempted, due at `at`, unless the lease
/// ran out and another sender holds them.
pub async fn defer(
    executor: impl PgExecutor<'_>,
    worker: Uuid,
    delivery_ids: &[Uuid],
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    if delivery_ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE webhook_deliveries SET next_attempt_at = $3, leased_by = NULL \
         WHERE delivery_id = ANY($1) AND leased_by = $2",
    )
    .bind(delivery_ids)
    .bind(worker)
    .bind(at)
    .execute(executor)
    .await?;
    Ok(())
}

/// A delivery as a tenant sees it, without its body.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryRow {
    pub delivery_id: Uuid,
    pub endpoint_id: Option<Uuid>,
    pub url: String,
    pub event_id: Uuid,
    pub event_type: String,
    pub notification_id: Uuid,
    pub global_position: i64,
    /// `pending`, `retrying` or `failed`.
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A page of a tenant's deliveries in hand or failed, newest first, after
/// `after` (the last row of the previous page); the flag says whether more follow.
pub async fn page(
    executor: impl PgExecutor<'_>,
    tenant_id: &str,
    endpoint_id: Option<Uuid>,
    status: Option<&str>,
    first: usize,
    after: Option<Uuid>,
) -> Result<(Vec<DeliveryRow>, bool), sqlx::Error> {
    let rows = sqlx::query_as(
        "SELECT delivery_id, endpoint_id, url, event_id, event_type, notification_id, global_position, \
                status, attempts, last_error, next_attempt_at, created_at, updated_at \
         FROM webhook_deliveries \
         WHERE tenant_id = $1 \
           AND ($2::uuid IS NULL OR endpoint_id = $2) \
           AND ($3::text IS NULL OR status = $3) \
           AND ($4::uuid IS NULL OR delivery_id < $4) \
         ORDER BY delivery_id DESC LIMIT $5",
    )
    .bind(tenant_id)
    .bind(endpoint_id)
    .bind(status)
    .bind(after)
    .bind(first as i64 + 1)
    .fetch_all(executor)
    .await?;
    Ok(super::split_page(rows, first))
}
