//! Campaigns: events in `campaign-<uuid>` streams, with the
//! `campaigns`, `campaign_batches` and `campaign_messages` tables kept in
//! step in the same transaction as each append.
//!
//! Recipients arrive as a CSV stream ([`import_csv`]), from a URL
//! ([`import_url`]) or as a list ([`add_recipients`]). Rows are parsed one at
//! a time and stored a batch at a time, so a file of any size never sits in
//! memory; each stored batch is one `CampaignBatchCreated`.
//!
//! Released messages are plain notifications, sent with the idempotency key
//! `campaign:<id>:<row>`: releasing a batch twice (a crash between the sends
//! and the append, or two workers) finds the first notifications again.

mod callbacks;
mod import;
mod release;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

pub use self::callbacks::{
    CallbackOutcome, CallbackRow, callbacks, claim_due, next_due, record, signing_secrets,
};
pub use self::import::{
    ImportError, ImportProgress, ImportSummary, add_recipients, import_csv, import_errors,
    import_url,
};
pub use self::release::{Released, check_progress, release_next_batch, start};
use super::pipeline::{self, Applied, Loaded, Step, Stream, Transaction};
use super::{Actor, CommandError};
use crate::domain::campaign::{
    Campaign, CampaignCommand, CampaignEvent, CampaignSpec, CampaignStatus, CampaignSummary,
    CreateCampaign,
};
use crate::domain::template::VariableSpec;
use crate::domain::values::{NotificationId, TemplateVersion, TenantId};
use crate::domain::{Aggregate, NotificationStatus, ValidationErrors};
use crate::eventstore::EventStore;
use crate::projections::delivery_queue;

pub fn stream_id(campaign_id: Uuid) -> String {
    format!("campaign-{campaign_id}")
}

/// A campaign as listed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CampaignRow {
    pub campaign_id: Uuid,
    pub tenant_id: String,
    pub name: String,
    pub status: String,
    pub spec: Json<CampaignSpec>,
    pub batches: i32,
    pub released_batches: i32,
    pub total_messages: i64,
    pub rejected_rows: i64,
    pub progress_reached: i16,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "campaign_id, tenant_id, name, status, spec, batches, released_batches, \
     total_messages, rejected_rows, progress_reached, started_at, completed_at, created_at, updated_at";

/// A new campaign; `signing_secret` is the tenant's campaign secret, shown
/// only when this call created it.
#[derive(Debug, Clone)]
pub struct CreatedCampaign {
    pub campaign: CampaignRow,
    pub signing_secret: Option<String>,
}

/// `egress` judges the callback URL.
pub async fn create(
    store: &EventStore,
    tenant_id: &TenantId,
    input: CreateCampaign,
    egress: &crate::egress::Egress,
    actor: &Actor,
) -> Result<CreatedCampaign, CommandError> {
    let mut spec = input.parse()?;
    if let Some(url) = &spec.callback_url {
        super::check_urls(egress, [("callbackUrl".to_string(), url.as_url())]).await?;
    }
    spec.template_version = Some(pin_version(store.pool(), tenant_id, &spec).await?);
    let id = Uuid::now_v7();
    let events = Campaign::default().decide(
        CampaignCommand::Create {
            tenant_id: tenant_id.clone(),
            id,
            spec: Box::new(spec.clone()),
        },
        Utc::now(),
    )?;
    stream(store, tenant_id, id, actor)
        .append(Loaded::default(), events, &keep_tables)
        .await?;
    let signing_secret = match &spec.callback_url {
        Some(url) => callbacks::ensure_tenant_secret(store.pool(), tenant_id, url).await?,
        None => None,
    };
    let campaign = get(store.pool(), tenant_id, id)
        .await?
        .ok_or(CommandError::NotFound("campaign"))?;
    Ok(CreatedCampaign {
        campaign,
        signing_secret,
    })
}

/// Holds back every batch not yet released (a batch being released
/// finishes its current chunk of sends) and every released message not yet
/// handed to a provider: queued ones are held in the queue, and one a
/// dispatcher already took goes back there at its last look before the call.
pub async fn pause(
    store: &EventStore,
    tenant_id: &TenantId,
    id: Uuid,
    actor: &Actor,
) -> Result<CampaignRow, CommandError> {
    decide_and_commit(store, tenant_id, id, actor, || CampaignCommand::Pause).await
}

pub async fn resume(
    store: &EventStore,
    tenant_id: &TenantId,
    id: Uuid,
    actor: &Actor,
) -> Result<CampaignRow, CommandError> {
    decide_and_commit(store, tenant_id, id, actor, || CampaignCommand::Resume).await
}

/// Cancels the campaign: messages never released are marked cancelled with
/// the event, then each released notification not yet sent is cancelled
/// through its own Cancel command; one a dispatcher already took is
/// cancelled at its last look before the provider call. Sent ones are kept.
pub async fn cancel(
    store: &EventStore,
    tenant_id: &TenantId,
    id: Uuid,
    reason: Option<String>,
    actor: &Actor,
) -> Result<CampaignRow, CommandError> {
    let row = decide_and_commit(store, tenant_id, id, actor, || CampaignCommand::Cancel {
        reason: reason.clone(),
    })
    .await?;
    cancel_released(store, tenant_id, id, actor).await?;
    queue_cancelled_callback(store, tenant_id, id).await?;
    Ok(row)
}

/// Queues `campaign.cancelled` once the released notifications are
/// cancelled too, so its summary says what was sent and what was not. It
/// is queued once per campaign: cancelling again after a crash between the
/// event and here queues the missing callback.
async fn queue_cancelled_callback(
    store: &EventStore,
    tenant_id: &TenantId,
    id: Uuid,
) -> Result<(), CommandError> {
    let campaign = load(store, tenant_id, id).await?.state;
    let Some(url) = campaign.spec().and_then(|spec| spec.callback_url.clone()) else {
        return Ok(());
    };
    let (_, summary) = counts(store.pool(), id).await?;
    let now = Utc::now();
    let body = callback_body(
        id,
        &campaign,
        "campaign.cancelled",
        now,
        serde_json::json!({ "summary": summary }),
    );
    let mut conn = store.pool().acquire().await?;
    callbacks::queue(
        &mut conn,
        tenant_id,
        id,
        "campaign.cancelled",
        &url,
        &body,
        now,
        true,
    )
    .await?;
    Ok(())
}

/// A callback's body: `{transaction_id, campaign_id, event, status,
/// timestamp}` and `extra`'s fields.
fn callback_body(
    id: Uuid,
    state: &Campaign,
    event: &str,
    now: DateTime<Utc>,
    extra: Value,
) -> Value {
    let mut body = serde_json::json!({
        "transaction_id": id,
        "campaign_id": id,
        "event": event,
        "status": state.status().map(|s| s.as_str()),
        "timestamp": now,
    });
    if let (Value::Object(body), Value::Object(extra)) = (&mut body, extra) {
        body.extend(extra);
    }
    body
}

/// Cancels the campaign's released notifications that are still waiting to
/// go out; one that went out meanwhile stays as it is.
pub(crate) async fn cancel_released(
    store: &EventStore,
    tenant_id: &TenantId,
    id: Uuid,
    actor: &Actor,
) -> Result<u64, CommandError> {
    let waiting: Vec<Uuid> = sqlx::query_scalar(
        "SELECT m.notification_id FROM campaign_messages m \
         JOIN notification_status ns ON ns.notification_id = m.notification_id \
         WHERE m.campaign_id = $1 AND m.status = 'RELEASED' \
           AND ns.status IN ('REQUESTED', 'RANKED', 'SCHEDULED', 'RETRY_PENDING')",
    )
    .bind(id)
    .fetch_all(store.pool())
    .await?;
    let mut cancelled = 0;
    for notification_id in waiting {
        let reason = Some(format!("campaign {id} cancelled"));
        match super::notifications::cancel(
            store,
            tenant_id,
            &NotificationId::from(notification_id),
            reason,
            actor,
        )
        .await
        {
            Ok(_) => cancelled += 1,
            // It went out or ended between the query and the command.
            Err(CommandError::Domain(_)) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(cancelled)
}

pub async fn get(
    pool: &PgPool,
    tenant_id: &TenantId,
    id: Uuid,
) -> Result<Option<CampaignRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM campaigns WHERE campaign_id = $1 AND tenant_id = $2"
    )))
    .bind(id)
    .bind(tenant_id.as_str())
    .fetch_optional(pool)
    .await
}

/// The tenant's campaigns, newest first, `limit` after the `after` id.
pub async fn list(
    pool: &PgPool,
    tenant_id: &TenantId,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<CampaignRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM campaigns WHERE tenant_id = $1 \
           AND ($2::uuid IS NULL OR campaign_id < $2) \
         ORDER BY campaign_id DESC LIMIT $3"
    )))
    .bind(tenant_id.as_str())
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The message statuses a campaign's messages are counted by: a
/// message not released is `CREATED` (or `CANCELLED`), a released one
/// takes its notification's status.
pub const MESSAGE_STATUSES: [&str; 10] = [
    "CREATED",
    "READY_TO_SEND",
    "SENDING",
    "SENT",
    "DELIVERED",
    "BOUNCED",
    "COMPLAINED",
    "FAILED",
    "CANCELLED",
    "REJECTED",
];

/// Counts of the campaign's messages per message status, in
/// [`MESSAGE_STATUSES`] order, and the summary callbacks carry. One
/// aggregate over the campaign's rows joined to `notification_status` by
/// primary key.
pub async fn counts(
    pool: &PgPool,
    id: Uuid,
) -> Result<(Vec<(&'static str, i64)>, CampaignSummary), sqlx::Error> {
    let rows: Vec<(String, Option<String>, i64)> = sqlx::query_as(
        "SELECT m.status, ns.status, count(*) FROM campaign_messages m \
         LEFT JOIN notification_status ns ON ns.notification_id = m.notification_id \
         WHERE m.campaign_id = $1 GROUP BY 1, 2",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    let mut by_status: BTreeMap<&'static str, i64> = BTreeMap::new();
    let mut summary = CampaignSummary::default();
    for (message, notification, count) in rows {
        let status = message_status(&message, notification.as_deref());
        *by_status.entry(status).or_default() += count;
        let count = count.max(0) as u64;
        summary.total_messages += count;
        match status {
            "CREATED" | "READY_TO_SEND" | "SENDING" => summary.pending += count,
            "SENT" => summary.sent += count,
            "DELIVERED" => summary.delivered += count,
            "BOUNCED" => summary.bounced += count,
            "COMPLAINED" => summary.complained += count,
            "CANCELLED" => summary.cancelled += count,
            _ => summary.failed += count,
        }
    }
    let counts = MESSAGE_STATUSES
        .iter()
        .map(|status| (*status, by_status.get(status).copied().unwrap_or(0)))
        .collect();
    Ok((counts, summary))
}

fn message_status(message: &str, notification: Option<&str>) -> &'static str {
    let Some(notification) = notification else {
        return match message {
            "CANCELLED" => "CANCELLED",
            "REJECTED" => "REJECTED",
            // Released, and its notification row not visible yet.
            "RELEASED" => "READY_TO_SEND",
            _ => "CREATED",
        };
    };
    match NotificationStatus::ALL
        .into_iter()
        .find(|s| s.as_str() == notification)
    {
        Some(
            NotificationStatus::Requested
            | NotificationStatus::Ranked
            | NotificationStatus::Scheduled
            | NotificationStatus::RetryPending,
        ) => "READY_TO_SEND",
        Some(NotificationStatus::Sending) => "SENDING",
        Some(NotificationStatus::Sent) => "SENT",
        Some(NotificationStatus::Delivered) => "DELIVERED",
        Some(NotificationStatus::Bounced) => "BOUNCED",
        Some(NotificationStatus::Complained) => "COMPLAINED",
        Some(NotificationStatus::Cancelled) => "CANCELLED",
        Some(
            NotificationStatus::DeadLettered
            | NotificationStatus::Rejected
            | NotificationStatus::Suppressed
            | NotificationStatus::Expired,
        )
        | None => "FAILED",
    }
}

/// The template version a campaign sends: the one asked for, else the
/// latest published, fixed at creation so a later publish changes nothing.
async fn pin_version(
    pool: &PgPool,
    tenant_id: &TenantId,
    spec: &CampaignSpec,
) -> Result<TemplateVersion, CommandError> {
    let number: Option<i32> = sqlx::query_scalar(
        "SELECT v.version FROM templates t JOIN template_versions v \
             ON v.tenant_id = t.tenant_id AND v.template_key = t.template_key \
         WHERE t.tenant_id = $1 AND t.template_key = $2 \
             AND v.version = COALESCE($3, t.latest_version)",
    )
    .bind(tenant_id.as_str())
    .bind(spec.template_key.as_str())
    .bind(spec.template_version.map(|v| v.get() as i32))
    .fetch_optional(pool)
    .await?;
    let mut errors = ValidationErrors::default();
    match number
        .and_then(|n| u32::try_from(n).ok())
        .and_then(|n| TemplateVersion::parse(n).ok())
    {
        Some(version) => Ok(version),
        None => {
            match spec.template_version {
                Some(version) => errors.add(
                    "template.version",
                    format!(
                        "template {} has no published version {}",
                        spec.template_key,
                        version.get()
                    ),
                ),
                None => errors.add(
                    "template.key",
                    format!("no published template {}", spec.template_key),
                ),
            }
            Err(errors.into())
        }
    }
}

/// The variable schema of the campaign's pinned template version.
async fn variable_schema(
    pool: &PgPool,
    tenant_id: &TenantId,
    spec: &CampaignSpec,
) -> Result<BTreeMap<String, VariableSpec>, CommandError> {
    let schema: Option<Json<BTreeMap<String, VariableSpec>>> = sqlx::query_scalar(
        "SELECT COALESCE(definition -> 'variables', '{}'::jsonb) FROM template_versions \
         WHERE tenant_id = $1 AND template_key = $2 AND version = $3",
    )
    .bind(tenant_id.as_str())
    .bind(spec.template_key.as_str())
    .bind(spec.template_version.map(|v| v.get() as i32))
    .fetch_optional(pool)
    .await?;
    schema
        .map(|schema| schema.0)
        .ok_or(CommandError::NotFound("campaign template version"))
}

/// The campaign's stream, written by `actor` in the tenant's name.
fn stream<'a>(
    store: &'a EventStore,
    tenant_id: &'a TenantId,
    id: Uuid,
    actor: &'a Actor,
) -> Stream<'a> {
    Stream::new(store, stream_id(id), tenant_id, actor)
}

/// The tenant's campaign as its events have it; another tenant's is not found.
async fn load(
    store: &EventStore,
    tenant_id: &TenantId,
    id: Uuid,
) -> Result<Loaded<Campaign>, CommandError> {
    let loaded = pipeline::load::<Campaign>(store, &stream_id(id)).await?;
    if loaded.state.tenant_id() != Some(tenant_id) {
        return Err(CommandError::NotFound("campaign"));
    }
    Ok(loaded)
}

/// What the tenant's campaign records for `command`; another tenant's is
/// not found.
fn decide(
    campaign: &Campaign,
    tenant_id: &TenantId,
    command: CampaignCommand,
) -> Result<Vec<CampaignEvent>, CommandError> {
    if campaign.tenant_id() != Some(tenant_id) {
        return Err(CommandError::NotFound("campaign"));
    }
    Ok(campaign.decide(command, Utc::now())?)
}

/// Decides on the tenant's campaign with the table rows in step, and
/// answers its row.
async fn decide_and_commit(
    store: &EventStore,
    tenant_id: &TenantId,
    id: Uuid,
    actor: &Actor,
    command: impl Fn() -> CampaignCommand + Sync,
) -> Result<CampaignRow, CommandError> {
    stream(store, tenant_id, id, actor)
        .execute(
            |campaign: &Campaign| decide(campaign, tenant_id, command()),
            keep_tables,
        )
        .await?;
    get(store.pool(), tenant_id, id)
        .await?
        .ok_or(CommandError::NotFound("campaign"))
}

/// Brings the campaign's rows in step with the events: the `campaigns`
/// row, batch rows, messages cancelled, and a callback queued for each
/// event that has one.
fn keep_tables<'c>(tx: &'c mut Transaction<'_>, applied: &'c Applied<Campaign>) -> Step<'c, ()> {
    Box::pin(async move {
        let state = &applied.state;
        let (Some(tenant_id), Some(id)) = (state.tenant_id(), state.id()) else {
            return Err(CommandError::NotFound("campaign"));
        };
        let now = Utc::now();
        let conn = tx.connection();
        upsert_row(conn, tenant_id, id, state, applied.version, now).await?;
        for event in &applied.events {
            in_step(conn, tenant_id, id, state, event, now).await?;
        }
        Ok(())
    })
}

async fn upsert_row(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    id: Uuid,
    state: &Campaign,
    version: i64,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let spec = state
        .spec()
        .expect("a row is written only after the campaign was created");
    let status = state.status().unwrap_or(CampaignStatus::Accepted);
    let completed_at = matches!(
        status,
        CampaignStatus::Completed | CampaignStatus::Cancelled
    )
    .then_some(now);
    sqlx::query(
        "INSERT INTO campaigns (campaign_id, tenant_id, name, status, spec, schedule_at, batches, \
             released_batches, total_messages, rejected_rows, progress_reached, started_at, \
             completed_at, created_at, updated_at, stream_version) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14, $15) \
         ON CONFLICT (campaign_id) DO UPDATE SET status = EXCLUDED.status, \
             batches = EXCLUDED.batches, released_batches = EXCLUDED.released_batches, \
             total_messages = EXCLUDED.total_messages, rejected_rows = EXCLUDED.rejected_rows, \
             progress_reached = EXCLUDED.progress_reached, started_at = EXCLUDED.started_at, \
             completed_at = COALESCE(campaigns.completed_at, EXCLUDED.completed_at), \
             updated_at = EXCLUDED.updated_at, stream_version = EXCLUDED.stream_version",
    )
    .bind(id)
    .bind(tenant_id.as_str())
    .bind(&spec.name)
    .bind(status.as_str())
    .bind(Json(spec))
    .bind(spec.schedule_at)
    .bind(state.batches() as i32)
    .bind(state.released() as i32)
    .bind(state.messages() as i64)
    .bind(state.rejected() as i64)
    .bind(i16::from(state.progress_reached()))
    .bind(state.started_at())
    .bind(completed_at)
    .bind(now)
    .bind(version as i32)
    .execute(conn)
    .await?;
    Ok(())
}

/// What one event changes besides the campaign's own row.
async fn in_step(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    id: Uuid,
    state: &Campaign,
    event: &CampaignEvent,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let callback =
        |name: &str, extra: Value| (name.to_string(), callback_body(id, state, name, now, extra));
    let queued = match event {
        CampaignEvent::BatchCreated {
            batch, messages, ..
        } => {
            sqlx::query(
                "INSERT INTO campaign_batches (campaign_id, batch_no, message_count, status, created_at) \
                 VALUES ($1, $2, $3, 'READY', $4)",
            )
            .bind(id)
            .bind(*batch as i32)
            .bind(*messages as i32)
            .bind(now)
            .execute(&mut *conn)
            .await?;
            None
        }
        CampaignEvent::BatchReleased { batch } => {
            sqlx::query(
                "UPDATE campaign_batches SET status = 'SENT', released_at = $3 \
                 WHERE campaign_id = $1 AND batch_no = $2",
            )
            .bind(id)
            .bind(*batch as i32)
            .bind(now)
            .execute(&mut *conn)
            .await?;
            None
        }
        CampaignEvent::Cancelled { .. } => {
            sqlx::query(
                "UPDATE campaign_messages SET status = 'CANCELLED' \
                 WHERE campaign_id = $1 AND status = 'CREATED'",
            )
            .bind(id)
            .execute(&mut *conn)
            .await?;
            sqlx::query(
                "UPDATE campaign_batches SET status = 'CANCELLED' \
                 WHERE campaign_id = $1 AND status = 'READY'",
            )
            .bind(id)
            .execute(&mut *conn)
            .await?;
            // Back in reach: each is cancelled by `cancel`'s sweep or, if a
            // dispatcher claims it first, at its last look before the call.
            delivery_queue::unhold_campaign(conn, id).await?;
            // Queued by `cancel` once the released notifications are
            // cancelled too, with the summary.
            None
        }
        CampaignEvent::Paused => {
            delivery_queue::hold_campaign(conn, id).await?;
            None
        }
        CampaignEvent::Resumed => {
            delivery_queue::unhold_campaign(conn, id).await?;
            None
        }
        CampaignEvent::Started { .. } => Some(callback(
            "campaign.started",
            serde_json::json!({ "summary": { "total_messages": state.messages() } }),
        )),
        CampaignEvent::ProgressReached { step, summary } => Some(callback(
            "campaign.progress",
            serde_json::json!({ "progress_step": step, "summary": summary }),
        )),
        CampaignEvent::Completed { summary } => Some(callback(
            "campaign.completed",
            serde_json::json!({ "summary": summary }),
        )),
        _ => None,
    };
    if let (Some((name, body)), Some(url)) = (
        queued,
        state.spec().and_then(|spec| spec.callback_url.as_ref()),
    ) {
        callbacks::queue(conn, tenant_id, id, &name, url, &body, now, false).await?;
    }
    Ok(())
}

/// Engagement of a campaign's messages, each message counted once per
/// measure (a message opened twice is one open).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CampaignAnalytics {
    /// Messages that left for the provider: SENT, DELIVERED, BOUNCED or COMPLAINED.
    pub sent: i64,
    /// DELIVERED or COMPLAINED (a complaint implies delivery).
    pub delivered: i64,
    pub opened: i64,
    pub clicked: i64,
    pub bounced: i64,
    pub complained: i64,
    /// Addresses of the campaign put on the suppression list by an
    /// unsubscribe since the campaign started.
    pub unsubscribed: i64,
}

/// A campaign's analytics in one query: statuses from `notification_status`
/// by primary key; opens and clicks from each sent message's own stream
/// (one index range scan each: no read model keeps them per notification);
/// unsubscribes from `suppressions` by the address's key (campaign messages
/// go to bare addresses, so an unsubscribe link suppresses the address).
pub async fn analytics(pool: &PgPool, id: Uuid) -> Result<CampaignAnalytics, sqlx::Error> {
    let row: (i64, i64, i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT \
           count(*) FILTER (WHERE ns.status IN ('SENT', 'DELIVERED', 'BOUNCED', 'COMPLAINED')), \
           count(*) FILTER (WHERE ns.status IN ('DELIVERED', 'COMPLAINED')), \
           count(*) FILTER (WHERE ev.opened), \
           count(*) FILTER (WHERE ev.clicked), \
           count(*) FILTER (WHERE ns.status = 'BOUNCED'), \
           count(*) FILTER (WHERE ns.status = 'COMPLAINED'), \
           count(*) FILTER (WHERE EXISTS ( \
             SELECT 1 FROM suppressions s \
             WHERE s.tenant_id = c.tenant_id AND s.reason = 'unsubscribe' \
               AND s.address_key = CASE WHEN c.spec ->> 'channel' = 'sms' \
                 THEN 'sms:' || m.address ELSE 'email:' || lower(m.address) END \
               AND s.created_at >= COALESCE(c.started_at, c.created_at))) \
         FROM campaign_messages m \
         JOIN campaigns c ON c.campaign_id = m.campaign_id \
         LEFT JOIN notification_status ns ON ns.notification_id = m.notification_id \
         LEFT JOIN LATERAL ( \
           SELECT bool_or(e.event_type = 'NotificationOpened') AS opened, \
                  bool_or(e.event_type = 'NotificationClicked') AS clicked \
           FROM events e \
           WHERE e.stream_id = 'notification-' || m.notification_id::text \
             AND ns.status IN ('SENT', 'DELIVERED', 'BOUNCED', 'COMPLAINED') \
         ) ev ON true \
         WHERE m.campaign_id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await?;
    let (sent, delivered, opened, clicked, bounced, complained, unsubscribed) = row;
    Ok(CampaignAnalytics {
        sent,
        delivered,
        opened,
        clicked,
        bounced,
        complained,
        unsubscribed,
    })
}

/// The notifications the campaign's released messages became.
pub async fn notification_ids(pool: &PgPool, id: Uuid) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT notification_id FROM campaign_messages \
         WHERE campaign_id = $1 AND notification_id IS NOT NULL",
    )
    .bind(id)
    .fetch_all(pool)
    .await
}
