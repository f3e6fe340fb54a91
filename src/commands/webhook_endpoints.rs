//! Webhook endpoints: events in `webhook-endpoint-<uuid>` streams, with the
//! `webhook_endpoints` table kept in step in the same transaction, for
//! listing and for the lookups that sign callbacks and webhook messages.
//!
//! The signing secrets are in the events, and the log is their source of
//! truth: an HMAC needs the secret itself, so unlike API keys they cannot be
//! stored as hashes. The table mirrors the secrets valid as of the last
//! change; readers drop the ones whose grace has run out.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::pipeline::{Applied, Executed, Loaded, Step, Stream, Transaction};
use super::{Actor, CommandError};
use crate::domain::values::{HttpUrl, TenantId};
use crate::domain::webhook_endpoint::{CreateWebhookEndpoint, EndpointSecret};
use crate::domain::{
    Aggregate, ValidationErrors, WebhookEndpoint, WebhookEndpointCommand, WebhookEndpointEvent,
};
use crate::eventstore::EventStore;
use crate::signing::{WebhookSecret, generate_secret};

pub fn stream_id(endpoint_id: Uuid) -> String {
    format!("webhook-endpoint-{endpoint_id}")
}

/// An endpoint as listed: never with its secrets.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EndpointRow {
    pub endpoint_id: Uuid,
    pub url: String,
    pub description: String,
    pub event_types: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A new endpoint and its first secret, shown to the caller once.
#[derive(Debug, Clone)]
pub struct CreatedEndpoint {
    pub endpoint: EndpointRow,
    pub secret: WebhookSecret,
}

/// A rotation's new secret, shown once; the previous one signs too until
/// `previous_valid_until`.
#[derive(Debug, Clone)]
pub struct RotatedSecret {
    pub endpoint: EndpointRow,
    pub secret: WebhookSecret,
    pub previous_valid_until: DateTime<Utc>,
}

/// Where a live endpoint is and what signs for it right now.
#[derive(Debug, Clone)]
pub struct SigningTarget {
    pub url: HttpUrl,
    /// Newest first; never empty.
    pub secrets: Vec<WebhookSecret>,
}

/// One element of the table's `secrets` column.
#[derive(Serialize, Deserialize)]
struct StoredSecret {
    secret: String,
    valid_until: Option<DateTime<Utc>>,
}

/// `egress` judges the endpoint's URL.
pub async fn create(
    store: &EventStore,
    tenant_id: &TenantId,
    input: CreateWebhookEndpoint,
    egress: &crate::egress::Egress,
    actor: &Actor,
) -> Result<CreatedEndpoint, CommandError> {
    let spec = input.parse()?;
    super::check_urls(egress, [("url".to_string(), spec.url.as_url())]).await?;
    if let Some(existing) = live_id_by_url(store.pool(), tenant_id, &spec.url).await? {
        return Err(url_taken(Some(existing)));
    }
    let id = Uuid::now_v7();
    let secret = generate_secret();
    let events = WebhookEndpoint::default().decide(
        WebhookEndpointCommand::Create {
            tenant_id: tenant_id.clone(),
            id,
            spec,
            secret: endpoint_secret(&secret)?,
        },
        Utc::now(),
    )?;
    let (endpoint, _) = Stream::new(store, stream_id(id), tenant_id, actor)
        .append(Loaded::default(), events, &keep_table_in_step)
        .await?;
    Ok(CreatedEndpoint { endpoint, secret })
}

/// Replaces the signing secret; the current one keeps signing for `grace`
/// (callers usually pass [`DEFAULT_ROTATION_GRACE`](crate::domain::webhook_endpoint::DEFAULT_ROTATION_GRACE)).
pub async fn rotate_secret(
    store: &EventStore,
    tenant_id: &TenantId,
    endpoint_id: Uuid,
    grace: TimeDelta,
    actor: &Actor,
) -> Result<RotatedSecret, CommandError> {
    let secret = generate_secret();
    let command = || {
        Ok(WebhookEndpointCommand::RotateSecret {
            secret: endpoint_secret(&secret)?,
            grace,
        })
    };
    let (endpoint, events) =
        decide_and_append(store, tenant_id, endpoint_id, actor, command).await?;
    // The domain records exactly one SecretRotated for an accepted rotation.
    let previous_valid_until = events
        .iter()
        .find_map(|event| match event {
            WebhookEndpointEvent::SecretRotated {
                previous_valid_until,
                ..
            } => Some(*previous_valid_until),
            _ => None,
        })
        .ok_or(CommandError::NotFound("webhook endpoint"))?;
    Ok(RotatedSecret {
        endpoint,
        secret,
        previous_valid_until,
    })
}

/// Stops every callback to the endpoint; deliveries in hand fail.
pub async fn delete(
    store: &EventStore,
    tenant_id: &TenantId,
    endpoint_id: Uuid,
    actor: &Actor,
) -> Result<(), CommandError> {
    decide_and_append(store, tenant_id, endpoint_id, actor, || {
        Ok(WebhookEndpointCommand::Delete)
    })
    .await?;
    Ok(())
}

/// The tenant's live endpoints, oldest first.
pub async fn list(pool: &PgPool, tenant_id: &TenantId) -> Result<Vec<EndpointRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT endpoint_id, url, description, event_types, created_at, updated_at \
         FROM webhook_endpoints WHERE tenant_id = $1 AND deleted_at IS NULL \
         ORDER BY endpoint_id",
    )
    .bind(tenant_id.as_str())
    .fetch_all(pool)
    .await
}

/// The secrets valid now (newest first) of the tenant's live endpoint at
/// exactly `url`, or `None` when no endpoint registers that URL. What the
/// dispatcher signs a webhook-channel message with.
pub async fn signing_secrets(
    pool: &PgPool,
    tenant_id: &TenantId,
    url: &HttpUrl,
) -> Result<Option<Vec<WebhookSecret>>, sqlx::Error> {
    let secrets: Option<sqlx::types::Json<Vec<StoredSecret>>> = sqlx::query_scalar(
        "SELECT secrets FROM webhook_endpoints \
         WHERE tenant_id = $1 AND url = $2 AND deleted_at IS NULL",
    )
    .bind(tenant_id.as_str())
    .bind(url.as_str())
    .fetch_optional(pool)
    .await?;
    Ok(secrets.map(|secrets| valid_now(secrets.0)))
}

/// The tenant's live endpoint `endpoint_id`, with the secrets valid now.
pub async fn signing_target(
    pool: &PgPool,
    tenant_id: &str,
    endpoint_id: Uuid,
) -> Result<Option<SigningTarget>, sqlx::Error> {
    let row: Option<(String, sqlx::types::Json<Vec<StoredSecret>>)> = sqlx::query_as(
        "SELECT url, secrets FROM webhook_endpoints \
         WHERE endpoint_id = $1 AND tenant_id = $2 AND deleted_at IS NULL",
    )
    .bind(endpoint_id)
    .bind(tenant_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|(url, secrets)| {
        let secrets = valid_now(secrets.0);
        Some(SigningTarget {
            url: HttpUrl::parse(&url).ok()?,
            secrets,
        })
        .filter(|target| !target.secrets.is_empty())
    }))
}

fn valid_now(stored: Vec<StoredSecret>) -> Vec<WebhookSecret> {
    let now = Utc::now();
    stored
        .into_iter()
        .filter(|s| s.valid_until.is_none_or(|until| until > now))
        .map(|s| WebhookSecret::new(s.secret))
        .collect()
}

fn endpoint_secret(secret: &WebhookSecret) -> Result<EndpointSecret, CommandError> {
    Ok(EndpointSecret::parse(secret.expose())?)
}

fn url_taken(existing: Option<Uuid>) -> CommandError {
    let mut errors = ValidationErrors::default();
    let message = match existing {
        Some(id) => format!("webhook endpoint {id} already registers this URL"),
        None => "another webhook endpoint already registers this URL".to_string(),
    };
    errors.add("url", message);
    CommandError::Validation(errors)
}

async fn live_id_by_url(
    pool: &PgPool,
    tenant_id: &TenantId,
    url: &HttpUrl,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT endpoint_id FROM webhook_endpoints \
         WHERE tenant_id = $1 AND url = $2 AND deleted_at IS NULL",
    )
    .bind(tenant_id.as_str())
    .bind(url.as_str())
    .fetch_optional(pool)
    .await
}

/// Decides on the tenant's live endpoint and writes its row; another
/// tenant's endpoint is not found.
async fn decide_and_append(
    store: &EventStore,
    tenant_id: &TenantId,
    endpoint_id: Uuid,
    actor: &Actor,
    command: impl Fn() -> Result<WebhookEndpointCommand, CommandError> + Sync,
) -> Result<(EndpointRow, Vec<WebhookEndpointEvent>), CommandError> {
    let executed = Stream::new(store, stream_id(endpoint_id), tenant_id, actor)
        .execute(
            |endpoint: &WebhookEndpoint| {
                if !endpoint.is_live() || endpoint.tenant_id() != Some(tenant_id) {
                    return Err(CommandError::NotFound("webhook endpoint"));
                }
                Ok(endpoint.decide(command()?, Utc::now())?)
            },
            keep_table_in_step,
        )
        .await?;
    match executed {
        Executed::Appended(done) => Ok(done),
        // The domain records an event for every command it accepts.
        Executed::Unchanged(_) => Err(CommandError::NotFound("webhook endpoint")),
    }
}

/// Writes the endpoint's row as the events leave it, handing back the row
/// and the events.
fn keep_table_in_step<'c>(
    tx: &'c mut Transaction<'_>,
    applied: &'c Applied<WebhookEndpoint>,
) -> Step<'c, (EndpointRow, Vec<WebhookEndpointEvent>)> {
    Box::pin(async move {
        let state = &applied.state;
        let endpoint_id = state
            .id()
            .expect("a row is written only after the endpoint was created");
        let tenant_id = state
            .tenant_id()
            .expect("a row is written only after the endpoint was created");
        match write_row(tx.connection(), tenant_id, endpoint_id, state).await {
            Ok(row) => Ok((row, applied.events.clone())),
            // Two creates of one URL raced past the check in `create`.
            Err(sqlx::Error::Database(db))
                if db.constraint() == Some("webhook_endpoints_live_url") =>
            {
                Err(url_taken(None))
            }
            Err(error) => Err(error.into()),
        }
    })
}

/// Writes the endpoint's row as `state` has it: the secrets valid now, none
/// once deleted.
async fn write_row(
    conn: &mut PgConnection,
    tenant_id: &TenantId,
    endpoint_id: Uuid,
    state: &WebhookEndpoint,
) -> Result<EndpointRow, sqlx::Error> {
    let now = Utc::now();
    let spec = state
        .spec()
        .expect("a row is written only after the endpoint was created");
    let secrets: Vec<StoredSecret> = state
        .valid_secrets(now)
        .into_iter()
        .map(|s| StoredSecret {
            secret: s.secret.expose().to_string(),
            valid_until: s.valid_until,
        })
        .collect();
    sqlx::query_as(
        "INSERT INTO webhook_endpoints \
             (endpoint_id, tenant_id, url, description, event_types, secrets, created_at, updated_at, deleted_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7, CASE WHEN $8 THEN NULL ELSE $7 END) \
         ON CONFLICT (endpoint_id) DO UPDATE \
             SET secrets = EXCLUDED.secrets, updated_at = EXCLUDED.updated_at, deleted_at = EXCLUDED.deleted_at \
         RETURNING endpoint_id, url, description, event_types, created_at, updated_at",
    )
    .bind(endpoint_id)
    .bind(tenant_id.as_str())
    .bind(spec.url.as_str())
    .bind(&spec.description)
    .bind(&spec.event_types)
    .bind(sqlx::types::Json(secrets))
    .bind(now)
    .bind(state.is_live())
    .fetch_one(conn)
    .await
}
