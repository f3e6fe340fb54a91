//! Webhook endpoints and their status callbacks: `webhookEndpoints`,
//! `webhookDeliveries`, `createWebhookEndpoint`,
//! `rotateWebhookEndpointSecret`, `deleteWebhookEndpoint`. A secret is shown
//! once, in the answer to the mutation that made it, and never listed.

use async_graphql::{Context, Enum, ID, InputObject, Object, Result, SimpleObject};
use chrono::{DateTime, TimeDelta, Utc};

use super::connection::Connection;
use super::types::Position;
use super::{ApiError, actor, api, parse_uuid, require, run};
use crate::api::cursor::{self, page_size};
use crate::commands::webhook_endpoints::{self, EndpointRow};
use crate::domain::Scope;
use crate::domain::webhook_endpoint::{
    CreateWebhookEndpoint, DEFAULT_ROTATION_GRACE, MAX_ROTATION_GRACE,
};
use crate::projections::webhook_outbox::{self, DeliveryRow};

#[derive(SimpleObject)]
pub struct WebhookEndpoint {
    pub id: ID,
    pub url: String,
    pub description: String,
    /// Notification event types it receives; empty means all of them.
    pub event_types: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<EndpointRow> for WebhookEndpoint {
    fn from(row: EndpointRow) -> Self {
        WebhookEndpoint {
            id: ID(row.endpoint_id.to_string()),
            url: row.url,
            description: row.description,
            event_types: row.event_types,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

#[derive(InputObject)]
pub struct CreateWebhookEndpointInput {
    pub url: String,
    pub description: Option<String>,
    /// Notification event types (e.g. `NotificationSent`); empty or absent
    /// means all of them.
    #[graphql(default)]
    pub event_types: Vec<String>,
}

#[derive(SimpleObject)]
pub struct CreatedWebhookEndpoint {
    pub endpoint: WebhookEndpoint,
    /// The signing secret (`whsec_...`), shown this once.
    pub secret: String,
}

#[derive(SimpleObject)]
pub struct RotatedWebhookSecret {
    pub endpoint: WebhookEndpoint,
    /// The new signing secret, shown this once.
    pub secret: String,
    /// Until then callbacks carry a signature by the previous secret too.
    pub previous_secret_valid_until: DateTime<Utc>,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum WebhookDeliveryStatus {
    /// Not tried yet.
    Pending,
    /// Failed transiently; tried again at `nextAttemptAt`.
    Retrying,
    /// Given up: a permanent answer, the retry schedule used up, or nothing
    /// to sign with. Delivered callbacks are not kept.
    Failed,
}

impl WebhookDeliveryStatus {
    fn as_str(self) -> &'static str {
        match self {
            WebhookDeliveryStatus::Pending => "pending",
            WebhookDeliveryStatus::Retrying => "retrying",
            WebhookDeliveryStatus::Failed => "failed",
        }
    }

    fn parse(stored: &str) -> Result<Self, ApiError> {
        match stored {
            "pending" => Ok(WebhookDeliveryStatus::Pending),
            "retrying" => Ok(WebhookDeliveryStatus::Retrying),
            "failed" => Ok(WebhookDeliveryStatus::Failed),
            other => Err(ApiError::internal(format!(
                "unknown delivery status {other:?}"
            ))),
        }
    }
}

/// One status callback to one target.
#[derive(SimpleObject)]
pub struct WebhookDelivery {
    pub id: ID,
    /// Null when the notification's callback_url is not a registered endpoint.
    pub endpoint_id: Option<ID>,
    pub url: String,
    /// The notification event reported; also the `webhook-id` header.
    pub event_id: ID,
    pub event_type: String,
    pub notification_id: ID,
    pub position: Position,
    pub status: WebhookDeliveryStatus,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl TryFrom<DeliveryRow> for WebhookDelivery {
    type Error = ApiError;

    fn try_from(row: DeliveryRow) -> Result<Self, ApiError> {
        Ok(WebhookDelivery {
            id: ID(row.delivery_id.to_string()),
            endpoint_id: row.endpoint_id.map(|id| ID(id.to_string())),
            url: row.url,
            event_id: ID(row.event_id.to_string()),
            event_type: row.event_type,
            notification_id: ID(row.notification_id.to_string()),
            position: Position(row.global_position),
            status: WebhookDeliveryStatus::parse(&row.status)?,
            attempts: row.attempts,
            last_error: row.last_error,
            next_attempt_at: row.next_attempt_at,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

#[derive(Default)]
pub struct WebhooksQuery;

#[Object]
impl WebhooksQuery {
    /// The tenant's webhook endpoints (requires `read`), never with secrets.
    async fn webhook_endpoints(&self, ctx: &Context<'_>) -> Result<Vec<WebhookEndpoint>, ApiError> {
        let principal = require(ctx, Scope::Read)?;
        let rows = webhook_endpoints::list(api(ctx)?.store.pool(), &principal.tenant_id).await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// Status callbacks in hand or failed, newest first (requires `read`).
    /// Delivered callbacks are not kept.
    async fn webhook_deliveries(
        &self,
        ctx: &Context<'_>,
        endpoint_id: Option<ID>,
        status: Option<WebhookDeliveryStatus>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> Result<Connection<WebhookDelivery>, ApiError> {
        let principal = require(ctx, Scope::Read)?;
        let first = page_size("first", first.into())?;
        let endpoint_id = endpoint_id
            .as_ref()
            .map(|id| parse_uuid("endpointId", id, "webhook endpoint"))
            .transpose()?;
        let after = cursor::decode(after.as_deref())?;
        let page = webhook_outbox::page(
            api(ctx)?.store.pool(),
            principal.tenant_id.as_str(),
            endpoint_id,
            status.map(WebhookDeliveryStatus::as_str),
            first,
            after,
        )
        .await?;
        Connection::try_page(page, |row| row.delivery_id, WebhookDelivery::try_from)
    }
}

#[derive(Default)]
pub struct WebhooksMutation;

#[Object]
impl WebhooksMutation {
    /// Registers an endpoint for status callbacks (requires `admin`). The
    /// answer carries its signing secret, shown this once.
    async fn create_webhook_endpoint(
        &self,
        ctx: &Context<'_>,
        input: CreateWebhookEndpointInput,
    ) -> Result<CreatedWebhookEndpoint, ApiError> {
        let principal = require(ctx, Scope::Admin)?;
        let created = webhook_endpoints::create(
            &api(ctx)?.store,
            &principal.tenant_id,
            CreateWebhookEndpoint {
                url: input.url,
                description: input.description,
                event_types: input.event_types,
            },
            &api(ctx)?.egress,
            &actor(principal),
        )
        .await?;
        Ok(CreatedWebhookEndpoint {
            endpoint: created.endpoint.into(),
            secret: created.secret.expose().to_string(),
        })
    }

    /// Replaces an endpoint's signing secret (requires `admin`); the previous
    /// one keeps signing for `previousSecretValidSeconds` (default 24 h, at
    /// most 30 days) so receivers can switch without losing a callback.
    async fn rotate_webhook_endpoint_secret(
        &self,
        ctx: &Context<'_>,
        id: ID,
        previous_secret_valid_seconds: Option<i32>,
    ) -> Result<RotatedWebhookSecret, ApiError> {
        let principal = require(ctx, Scope::Admin)?;
        let endpoint_id = parse_uuid("id", &id, "webhook endpoint")?;
        let grace = match previous_secret_valid_seconds {
            None => DEFAULT_ROTATION_GRACE,
            Some(seconds) => Some(TimeDelta::seconds(seconds.into()))
                .filter(|grace| *grace >= TimeDelta::zero() && *grace <= MAX_ROTATION_GRACE)
                .ok_or_else(|| {
                    ApiError::field(
                        "previousSecretValidSeconds",
                        format!("must be between 0 and {}", MAX_ROTATION_GRACE.num_seconds()),
                    )
                })?,
        };
        let rotated = webhook_endpoints::rotate_secret(
            &api(ctx)?.store,
            &principal.tenant_id,
            endpoint_id,
            grace,
            &actor(principal),
        )
        .await?;
        Ok(RotatedWebhookSecret {
            endpoint: rotated.endpoint.into(),
            secret: rotated.secret.expose().to_string(),
            previous_secret_valid_until: rotated.previous_valid_until,
        })
    }

    /// Deletes an endpoint (requires `admin`): no callback goes to it any
    /// more, and those in hand fail.
    async fn delete_webhook_endpoint(&self, ctx: &Context<'_>, id: ID) -> Result<bool, ApiError> {
        let principal = require(ctx, Scope::Admin)?;
        let endpoint_id = parse_uuid("id", &id, "webhook endpoint")?;
        run(ctx, principal, endpoint_id, webhook_endpoints::delete).await?;
        Ok(true)
    }
}
