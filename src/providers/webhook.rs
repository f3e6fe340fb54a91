//! `webhook`: POSTs the message as JSON to the destination URL, signed per
//! Standard Webhooks (`signing`) so the receiver can check that Herald sent
//! it, unchanged, and recently.

use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::{Destination, OutboundMessage, Provider, Receipt, at_least_one, wrong_channel};
use crate::domain::values::{
    Category, Channel, HttpUrl, JsonObject, NotificationId, Priority, Tag, TenantId,
};
use crate::egress::{ClientOptions, Egress, EgressClient, SendError};
use crate::signing::{Purpose, USER_AGENT, post_signed};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// The whole call (connect, send, answer); longer fails as transient.
    pub timeout_seconds: u64,
    pub user_agent: String,
    /// How much of an answer is read (and dropped) before the connection
    /// goes back to the pool; what a receiver says is never shown to a tenant.
    pub max_response_bytes: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            timeout_seconds: 10,
            user_agent: USER_AGENT.to_string(),
            max_response_bytes: 64 * 1024,
        }
    }
}

pub struct WebhookProvider {
    name: String,
    client: EgressClient,
    purpose: Purpose,
}

impl WebhookProvider {
    pub fn new(name: &str, config: &WebhookConfig, egress: &Egress) -> anyhow::Result<Self> {
        at_least_one(name, "timeout_seconds", config.timeout_seconds)?;
        // A redirected POST would be re-sent as a GET or to a host nobody configured.
        let client = egress
            .client(&ClientOptions {
                timeout: Duration::from_secs(config.timeout_seconds),
                user_agent: config.user_agent.clone(),
                max_redirects: 0,
            })
            .map_err(|error| anyhow::anyhow!("provider {name}: {error}"))?;
        Ok(WebhookProvider {
            name: name.to_string(),
            client,
            purpose: Purpose {
                name: "webhook",
                max_answer_bytes: config.max_response_bytes,
            },
        })
    }

    async fn post(&self, url: &HttpUrl, message: &OutboundMessage) -> Result<Receipt, SendError> {
        let body = serde_json::to_vec(&WebhookBody::from(message))
            .map_err(|error| SendError::permanent(format!("webhook body: {error}")))?;
        let id = message.notification_id.to_string();
        post_signed(
            &self.client,
            url,
            &message.signing_secrets,
            &id,
            body,
            self.purpose,
        )
        .await?;
        Ok(Receipt {
            provider_message_id: Some(id),
        })
    }
}

impl Provider for WebhookProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn supports(&self, channel: Channel) -> bool {
        channel == Channel::Webhook
    }

    fn send<'a>(
        &'a self,
        message: &'a OutboundMessage,
    ) -> BoxFuture<'a, Result<Receipt, SendError>> {
        Box::pin(async move {
            match &message.destination {
                Destination::Webhook(url) => self.post(url, message).await,
                other => Err(wrong_channel("webhook", other)),
            }
        })
    }
}

/// What a receiver gets; absent values are left out rather than sent as null.
#[derive(Serialize)]
struct WebhookBody<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    notification_id: NotificationId,
    tenant_id: &'a TenantId,
    attempt: u32,
    priority: Priority,
    #[serde(skip_serializing_if = "Option::is_none")]
    category: Option<&'a Category>,
    tags: &'a [Tag],
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    html: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cta_url: Option<&'a HttpUrl>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a JsonObject>,
}

impl<'a> From<&'a OutboundMessage> for WebhookBody<'a> {
    fn from(message: &'a OutboundMessage) -> Self {
        WebhookBody {
            kind: "notification.message",
            notification_id: message.notification_id,
            tenant_id: &message.tenant_id,
            attempt: message.attempt,
            priority: message.priority,
            category: message.category.as_ref(),
            tags: &message.tags,
            title: message.title.as_deref(),
            text: message.text.as_deref(),
            html: message.html.as_deref(),
            cta_url: message.cta_url.as_ref(),
            data: message.data.as_ref(),
        }
    }
}
