//! The campaign callbacks' outbox: a row per callback, queued in the same
//! transaction as the event it reports, claimed and sent by the campaign
//! worker, each attempt recorded on the row.
//!
//! Signing: a callback URL that is one of the tenant's registered webhook
//! endpoints is signed with that endpoint's secrets (rotation included);
//! any other URL with the tenant's campaign secret, generated at the first
//! campaign that needs it and shown once in that `createCampaign` answer.

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::commands::CommandError;
use crate::commands::webhook_endpoints;
use crate::domain::values::{HttpUrl, TenantId};
use crate::signing::{WebhookSecret, generate_secret};

/// One callback and how its delivery went.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CallbackRow {
    pub callback_id: Uuid,
    pub campaign_id: Uuid,
    pub tenant_id: String,
    pub event: String,
    pub url: String,
    pub body: String,
    /// PENDING, RETRYING, DELIVERED or FAILED.
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str = "callback_id, campaign_id, tenant_id, event, url, body, status, attempts, \
     last_error, next_attempt_at, delivered_at, created_at";

/// Queues the callback; `once`: unless the campaign already has one for `event`.
#[allow(clippy::too_many_arguments)]
pub(super) async fn queue(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    campaign_id: Uuid,
    event: &str,
    url: &HttpUrl,
    body: &Value,
    now: DateTime<Utc>,
    once: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO campaign_callbacks \
             (callback_id, campaign_id, tenant_id, event, url, body, next_attempt_at, created_at) \
         SELECT $1, $2, $3, $4, $5, $6, $7, $7 \
         WHERE NOT $8 OR NOT EXISTS ( \
             SELECT 1 FROM campaign_callbacks WHERE campaign_id = $2 AND event = $4)",
    )
    .bind(Uuid::now_v7())
    .bind(campaign_id)
    .bind(tenant_id.as_str())
    .bind(event)
    .bind(url.as_str())
    .bind(body.to_string())
    .bind(now)
    .bind(once)
    .execute(conn)
    .await?;
    Ok(())
}

/// The campaign's callbacks, oldest first.
pub async fn callbacks(pool: &PgPool, campaign_id: Uuid) -> Result<Vec<CallbackRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM campaign_callbacks WHERE campaign_id = $1 ORDER BY created_at, callback_id"
    )))
    .bind(campaign_id)
    .fetch_all(pool)
    .await
}

/// The secret for callbacks to `url` when it is not a registered endpoint:
/// `Some` only when this call created the tenant's campaign secret.
pub(super) async fn ensure_tenant_secret(
    pool: &PgPool,
    tenant_id: &TenantId,
    url: &HttpUrl,
) -> Result<Option<String>, CommandError> {
    if webhook_endpoints::signing_secrets(pool, tenant_id, url)
        .await?
        .is_some_and(|secrets| !secrets.is_empty())
    {
        return Ok(None);
    }
    let secret = generate_secret();
    let created: Option<String> = sqlx::query_scalar(
        "INSERT INTO campaign_signing_secrets (tenant_id, secret, created_at) \
         VALUES ($1, $2, now()) ON CONFLICT (tenant_id) DO NOTHING RETURNING secret",
    )
    .bind(tenant_id.as_str())
    .bind(secret.expose())
    .fetch_optional(pool)
    .await?;
    Ok(created)
}

/// What signs a callback to `url` for the tenant now, newest first; empty
/// when nothing can.
pub async fn signing_secrets(
    pool: &PgPool,
    tenant_id: &TenantId,
    url: &HttpUrl,
) -> Result<Vec<WebhookSecret>, sqlx::Error> {
    if let Some(secrets) = webhook_endpoints::signing_secrets(pool, tenant_id, url).await?
        && !secrets.is_empty()
    {
        return Ok(secrets);
    }
    let secret: Option<String> =
        sqlx::query_scalar("SELECT secret FROM campaign_signing_secrets WHERE tenant_id = $1")
            .bind(tenant_id.as_str())
            .fetch_optional(pool)
            .await?;
    Ok(secret.map(WebhookSecret::new).into_iter().collect())
}

/// Up to `limit` due callbacks, leased to the caller for `lease`.
pub async fn claim_due(
    pool: &PgPool,
    limit: i64,
    lease: TimeDelta,
) -> Result<Vec<CallbackRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE campaign_callbacks SET next_attempt_at = now() + $2 \
         WHERE callback_id IN ( \
             SELECT callback_id FROM campaign_callbacks \
             WHERE status IN ('PENDING', 'RETRYING') AND next_attempt_at <= now() \
             ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
         RETURNING {COLUMNS}"
    )))
    .bind(limit)
    .bind(lease)
    .fetch_all(pool)
    .await
}

/// When the next callback falls due, if any is waiting.
pub async fn next_due(pool: &PgPool) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT min(next_attempt_at) FROM campaign_callbacks WHERE status IN ('PENDING', 'RETRYING')",
    )
    .fetch_one(pool)
    .await
}

/// How one attempt went.
#[derive(Debug, Clone, PartialEq)]
pub enum CallbackOutcome {
    Delivered,
    Retry { at: DateTime<Utc>, error: String },
    Failed { error: String },
}

pub async fn record(
    pool: &PgPool,
    callback_id: Uuid,
    outcome: &CallbackOutcome,
) -> Result<(), sqlx::Error> {
    let (status, error, next, delivered) = match outcome {
        CallbackOutcome::Delivered => ("DELIVERED", None, None, Some(Utc::now())),
        CallbackOutcome::Retry { at, error } => ("RETRYING", Some(error.as_str()), Some(*at), None),
        CallbackOutcome::Failed { error } => ("FAILED", Some(error.as_str()), None, None),
    };
    sqlx::query(
        "UPDATE campaign_callbacks SET status = $2, attempts = attempts + 1, \
             last_error = COALESCE($3, last_error), next_attempt_at = $4, delivered_at = $5 \
         WHERE callback_id = $1",
    )
    .bind(callback_id)
    .bind(status)
    .bind(error)
    .bind(next)
    .bind(delivered)
    .execute(pool)
    .await?;
    Ok(())
}
