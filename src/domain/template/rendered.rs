//! A rendered template: what each channel's message carries.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::domain::values::{Channel, Locale};

/// Every part of a template version rendered, as dispatch renders it (the
/// REST twin's preview answer, hence `ToSchema`).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RenderedTemplate {
    /// The locale the fallback chain chose.
    #[schema(value_type = String)]
    pub locale: Locale,
    pub email: Option<RenderedEmail>,
    pub sms: Option<String>,
    pub push: Option<RenderedTitled>,
    #[schema(value_type = Option<Object>)]
    pub webhook: Option<Map<String, Value>>,
    pub ntfy: Option<RenderedTitled>,
    pub in_app: Option<RenderedTitled>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RenderedEmail {
    pub subject: String,
    /// Auto-escaped.
    pub html: Option<String>,
    pub text: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RenderedTitled {
    pub title: Option<String>,
    pub body: String,
}

/// One channel's share of a rendered template, in the shape of inline content.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RenderedContent {
    pub title: Option<String>,
    pub text: Option<String>,
    pub html: Option<String>,
    pub data: Option<Map<String, Value>>,
}

impl RenderedTemplate {
    /// What the outbound message carries for `channel`: the email subject
    /// or push/ntfy/in-app title as `title`, the body as `text`, the email
    /// HTML as `html`, the webhook JSON as `data`. `None` when the template
    /// has no part for the channel.
    pub fn content_for(&self, channel: Channel) -> Option<RenderedContent> {
        let titled = |parts: &RenderedTitled| RenderedContent {
            title: parts.title.clone(),
            text: Some(parts.body.clone()),
            ..RenderedContent::default()
        };
        match channel {
            Channel::Email => self.email.as_ref().map(|email| RenderedContent {
                title: Some(email.subject.clone()),
                text: email.text.clone(),
                html: email.html.clone(),
                data: None,
            }),
            Channel::Sms => self.sms.as_ref().map(|text| RenderedContent {
                text: Some(text.clone()),
                ..RenderedContent::default()
            }),
            Channel::Push => self.push.as_ref().map(titled),
            Channel::Webhook => self.webhook.as_ref().map(|data| RenderedContent {
                data: Some(data.clone()),
                ..RenderedContent::default()
            }),
            Channel::Ntfy => self.ntfy.as_ref().map(titled),
            Channel::InApp => self.in_app.as_ref().map(titled),
        }
    }
}
