//! What one attempt sends: the content (written out in the request, or the
//! template version pinned at request time rendered in the recipient's
//! locale), the email's unsubscribe link, tracking and attachments.

use anyhow::Context;
use serde_json::{Map, Value};

use super::WorkerOptions;
use super::attachments::Attachments;
use super::email_links::EmailLinks;
use super::routing::Route;
use crate::commands::templates::TemplateCache;
use crate::domain::values::{JsonObject, Locale};
use crate::domain::{Content, NotificationState};
use crate::egress::SendError;
use crate::providers::{Destination, OutboundMessage};

/// Compiled template versions kept per process; versions never change.
const TEMPLATE_CACHE_SIZE: usize = 1_000;

pub struct Composer {
    templates: TemplateCache,
    email_links: EmailLinks,
    attachments: Attachments,
}

impl Composer {
    /// As the options say; loads (or first creates) the link signing key.
    pub async fn new(pool: &sqlx::PgPool, options: &WorkerOptions) -> anyhow::Result<Composer> {
        let email_links = EmailLinks::new(pool, &options.links)
            .await
            .context("loading the link signing key")?;
        Ok(Composer {
            templates: TemplateCache::new(TEMPLATE_CACHE_SIZE),
            email_links,
            attachments: Attachments::new(
                &options.attachments,
                &crate::egress::Egress::new(&options.egress),
            ),
        })
    }

    /// The message for this attempt. `profile_locale` is the stored
    /// recipient's, used after the request's own locales.
    pub async fn compose(
        &self,
        pool: &sqlx::PgPool,
        state: &NotificationState,
        route: &Route,
        profile_locale: Option<&Locale>,
    ) -> Result<OutboundMessage, SendError> {
        let request = &state.request;
        let unsubscribe_url = match &route.destination {
            Destination::Email(address) => Some(self.email_links.unsubscribe_url(
                &state.tenant_id,
                state.notification_id,
                request.recipient.id.as_ref(),
                address,
                request.category.as_ref(),
            )),
            _ => None,
        };
        let mut message = OutboundMessage {
            notification_id: state.notification_id,
            tenant_id: state.tenant_id.clone(),
            attempt: state.attempts,
            destination: route.destination.clone(),
            priority: request.priority,
            category: request.category.clone(),
            tags: request.tags.clone(),
            title: None,
            text: None,
            html: None,
            cta_url: None,
            data: None,
            headers: Vec::new(),
            signing_secrets: Vec::new(),
            attachments: Vec::new(),
        };
        match &request.content {
            Content::Inline(content) => {
                message.title = content.title.as_ref().map(|t| t.as_str().to_string());
                message.text = content.text.as_ref().map(|t| t.as_str().to_string());
                message.html = content.html.as_ref().map(|h| h.as_str().to_string());
                message.cta_url = content.cta_url.clone();
                message.data = content.data.clone();
            }
            Content::Template(template) => {
                // The template's own locale, when the send names one, comes first.
                let locales: Vec<Locale> = [request.recipient.locale.as_ref(), profile_locale]
                    .into_iter()
                    .flatten()
                    .cloned()
                    .collect();
                let mut herald = Map::new();
                herald.insert(
                    "notification_id".into(),
                    Value::String(state.notification_id.to_string()),
                );
                herald.insert(
                    "tenant_id".into(),
                    Value::String(state.tenant_id.to_string()),
                );
                herald.insert("channel".into(), Value::String(route.channel.to_string()));
                if let Some(id) = &request.recipient.id {
                    herald.insert("recipient_id".into(), Value::String(id.to_string()));
                }
                if let Some(url) = &unsubscribe_url {
                    herald.insert("unsubscribe_url".into(), Value::String(url.to_string()));
                }
                let rendered = self
                    .templates
                    .render(pool, &state.tenant_id, template, &locales, &herald)
                    .await
                    .map_err(|failure| {
                        if failure.is_permanent() {
                            SendError::permanent(failure.to_string())
                        } else {
                            SendError::transient(failure.to_string())
                        }
                    })?;
                let content = rendered.content_for(route.channel).ok_or_else(|| {
                    SendError::permanent(format!(
                        "template {} has no {} part",
                        template.key.as_str(),
                        route.channel
                    ))
                })?;
                message.title = content.title;
                message.text = content.text;
                message.html = content.html;
                message.data = content
                    .data
                    .map(|data| JsonObject::parse(Value::Object(data), usize::MAX))
                    .transpose()
                    .map_err(|e| SendError::permanent(format!("the rendered webhook body {e}")))?;
            }
        }
        if let Some(url) = &unsubscribe_url {
            self.email_links
                .decorate(&mut message, url)
                .await
                .map_err(|e| {
                    SendError::transient(format!("preparing the email's links failed: {e}"))
                })?;
            if !request.attachments.is_empty() {
                message.attachments = self
                    .attachments
                    .load(&state.tenant_id, &request.attachments)
                    .await?;
            }
        }
        Ok(message)
    }
}
