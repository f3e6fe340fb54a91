//! The `send` input as given, before anything is trusted.
//!
//! Each wire shape (the REST body, the GraphQL input, a campaign's release)
//! builds one [`SendNotification`]; [`SendNotification::parse`] then checks
//! every field and the rules between them, reporting every refusal by path,
//! so one bad field never hides another. The tenant is not here: it comes
//! from the caller's credentials.
//!
//! Serde reads and writes it as a schedule stores it (`ScheduleCreated`'s
//! `notification`, the REST body's field names) and as tests write sends.
//! It is not the REST contract: that is `api::rest::wire::SendNotification`,
//! which refuses unknown fields and documents each one.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::attachment::{
    AttachmentFilename, AttachmentSource, AttachmentSpec, InlineData, MAX_ATTACHMENTS,
    MAX_INLINE_ATTACHMENTS_BYTES, MediaType,
};
use super::notification_request::{
    Content, EventOrigin, Expiry, InlineContent, NotificationRequest, Recipient, TemplateRef,
};
use super::validation_errors::ValidationErrors;
use super::values::{
    Category, Channel, EmailAddress, ExternalEventId, HtmlBody, HttpUrl, IdempotencyKey,
    JsonObject, Locale, NtfyTopic, PhoneNumber, Priority, PushTarget, RecipientId, Segment,
    SourceName, Tag, TemplateKey, TemplateVersion, TextBody, Timezone, Title, TraceId, ValueError,
};

pub const MAX_CHANNELS: usize = 6;
pub const MAX_TAGS: usize = 20;
pub const MAX_TTL_SECONDS: u32 = 30 * 24 * 60 * 60;
pub const MAX_DATA_BYTES: usize = 16 * 1024;
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
pub const MAX_VARIABLES_BYTES: usize = 32 * 1024;

/// How far in the past `schedule_at` may be, to forgive clock skew.
const SCHEDULE_SKEW: TimeDelta = TimeDelta::minutes(1);

/// A value as a wire shape gives it: typed (GraphQL's enums, a campaign's
/// channel), or text that `parse` reads and refuses under its path (REST's
/// strings). Serde writes either as its text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Given<T> {
    Typed(T),
    Text(String),
}

impl<T> Given<T> {
    fn parse(self, parse: impl FnOnce(&str) -> Result<T, ValueError>) -> Result<T, ValueError> {
        match self {
            Given::Typed(value) => Ok(value),
            Given::Text(text) => parse(&text),
        }
    }
}

/// A notification to send. Give `content` or `template`, not both.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SendNotification {
    pub idempotency_key: Option<String>,
    #[serde(default)]
    pub recipient: RecipientInput,
    /// In order of preference.
    #[serde(default)]
    pub channels: Vec<Given<Channel>>,
    /// `NORMAL` when absent.
    pub priority: Option<Given<Priority>>,
    pub content: Option<InlineContentInput>,
    pub template: Option<TemplateRefInput>,
    pub category: Option<String>,
    pub schedule_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub ttl_seconds: Option<u64>,
    pub callback_url: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub metadata: Option<Value>,
    pub trace_id: Option<String>,
    pub source_event: Option<SourceEventInput>,
    #[serde(default)]
    pub attachments: Vec<AttachmentInput>,
    /// Only a campaign's release sets it; no send input can.
    #[serde(skip)]
    pub campaign_id: Option<uuid::Uuid>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RecipientInput {
    pub id: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub push_target: Option<String>,
    pub webhook_url: Option<String>,
    pub ntfy_topic: Option<String>,
    pub locale: Option<String>,
    pub timezone: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct InlineContentInput {
    pub title: Option<String>,
    pub text: Option<String>,
    pub html: Option<String>,
    pub cta_url: Option<String>,
    pub data: Option<Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TemplateRefInput {
    pub key: Option<String>,
    /// The latest version when absent.
    pub version: Option<u32>,
    pub locale: Option<String>,
    pub variables: Option<Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SourceEventInput {
    pub event_id: Option<String>,
    pub source: Option<String>,
    pub occurred_at: Option<DateTime<Utc>>,
    pub segment: Option<String>,
}

/// By `url` or as `content_base64`, exactly one of the two.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AttachmentInput {
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub url: Option<String>,
    pub content_base64: Option<String>,
}

impl SendNotification {
    /// Checks every field and the rules between them; `now` is the moment of
    /// the request, against which schedule and expiry are judged.
    pub fn parse(self, now: DateTime<Utc>) -> Result<NotificationRequest, ValidationErrors> {
        let mut errors = ValidationErrors::default();

        let idempotency_key = errors.optional(
            "idempotency_key",
            self.idempotency_key.as_deref(),
            IdempotencyKey::parse,
        );
        let channels = parse_channels(self.channels, &mut errors);
        require_addresses(&channels, &self.recipient, &mut errors);
        let recipient = self.recipient.parse(&mut errors);
        let priority = match self.priority {
            None => Some(Priority::default()),
            Some(given) => errors.check("priority", given.parse(Priority::parse)),
        };
        let content = match (self.content, self.template) {
            (Some(content), None) => content.parse(&mut errors).map(Content::Inline),
            (None, Some(template)) => template.parse(&mut errors).map(Content::Template),
            (Some(_), Some(_)) => {
                errors.add("template", "give either content or template, not both");
                None
            }
            (None, None) => {
                errors.add("content", "content or template is required");
                None
            }
        };
        let category = errors.optional("category", self.category.as_deref(), Category::parse);
        if let Some(schedule_at) = self.schedule_at
            && schedule_at < now - SCHEDULE_SKEW
        {
            errors.add("schedule_at", "is more than a minute in the past");
        }
        let expiry = parse_expiry(
            self.expires_at,
            self.ttl_seconds,
            self.schedule_at,
            now,
            &mut errors,
        );
        let callback_url =
            errors.optional("callback_url", self.callback_url.as_deref(), HttpUrl::parse);
        let tags = parse_tags(&self.tags, &mut errors);
        let metadata = self.metadata.and_then(|metadata| {
            errors.check("metadata", JsonObject::parse(metadata, MAX_METADATA_BYTES))
        });
        let trace_id = errors.optional("trace_id", self.trace_id.as_deref(), TraceId::parse);
        let source_event = self
            .source_event
            .and_then(|source_event| source_event.parse(&mut errors));
        let attachments = parse_attachments(self.attachments, &channels, &mut errors);

        let (Some(priority), Some(content)) = (priority, content) else {
            return Err(errors);
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(NotificationRequest {
            idempotency_key,
            recipient,
            channels,
            priority,
            content,
            category,
            schedule_at: self.schedule_at,
            expiry,
            callback_url,
            tags,
            metadata,
            trace_id,
            source_event,
            attachments,
            campaign_id: self.campaign_id,
        })
    }
}

fn parse_channels(raw: Vec<Given<Channel>>, errors: &mut ValidationErrors) -> Vec<Channel> {
    if raw.is_empty() {
        errors.add("channels", "at least one channel is required");
    }
    if raw.len() > MAX_CHANNELS {
        errors.add("channels", format!("at most {MAX_CHANNELS} channels"));
    }
    let mut channels = Vec::with_capacity(raw.len());
    for (index, given) in raw.into_iter().enumerate() {
        let path = format!("channels[{index}]");
        if let Some(channel) = errors.check(&path, given.parse(Channel::parse)) {
            if channels.contains(&channel) {
                errors.add(path, format!("{channel} is listed more than once"));
            } else {
                channels.push(channel);
            }
        }
    }
    channels
}

/// Judged on the raw input, so a present but malformed address reports only
/// its own error, not "missing" as well. A recipient named by id may have its
/// addresses in a stored profile, which the command side checks.
fn require_addresses(
    channels: &[Channel],
    recipient: &RecipientInput,
    errors: &mut ValidationErrors,
) {
    if recipient.id.is_some() {
        return;
    }
    for &channel in channels {
        let (field, present) = match channel {
            Channel::Email => ("email", recipient.email.is_some()),
            Channel::Sms => ("phone", recipient.phone.is_some()),
            Channel::Push => ("push_target", recipient.push_target.is_some()),
            Channel::Webhook => ("webhook_url", recipient.webhook_url.is_some()),
            Channel::Ntfy => ("ntfy_topic", recipient.ntfy_topic.is_some()),
            Channel::InApp => ("id", recipient.id.is_some()),
        };
        if !present {
            errors.add(
                format!("recipient.{field}"),
                format!("is required for the {channel} channel"),
            );
        }
    }
}

fn parse_expiry(
    expires_at: Option<DateTime<Utc>>,
    ttl_seconds: Option<u64>,
    schedule_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    errors: &mut ValidationErrors,
) -> Option<Expiry> {
    let ends_before_schedule = |end: DateTime<Utc>| schedule_at.is_some_and(|start| end <= start);
    match (expires_at, ttl_seconds) {
        (None, None) => None,
        (Some(_), Some(_)) => {
            errors.add(
                "ttl_seconds",
                "give either expires_at or ttl_seconds, not both",
            );
            None
        }
        (Some(at), None) => {
            if at <= now {
                errors.add("expires_at", "must be in the future");
            } else if ends_before_schedule(at) {
                errors.add("expires_at", "must be after schedule_at");
            }
            Some(Expiry::At(at))
        }
        (None, Some(ttl)) => match u32::try_from(ttl) {
            Ok(ttl @ 1..=MAX_TTL_SECONDS) => {
                if ends_before_schedule(now + TimeDelta::seconds(i64::from(ttl))) {
                    errors.add("ttl_seconds", "expires before schedule_at");
                }
                Some(Expiry::TtlSeconds(ttl))
            }
            _ => {
                errors.add(
                    "ttl_seconds",
                    format!("must be between 1 and {MAX_TTL_SECONDS} (30 days)"),
                );
                None
            }
        },
    }
}

fn parse_tags(raw: &[String], errors: &mut ValidationErrors) -> Vec<Tag> {
    if raw.len() > MAX_TAGS {
        errors.add("tags", format!("at most {MAX_TAGS} tags"));
    }
    let mut tags = Vec::with_capacity(raw.len());
    for (index, raw) in raw.iter().enumerate() {
        let path = format!("tags[{index}]");
        if let Some(tag) = errors.check(&path, Tag::parse(raw)) {
            if tags.contains(&tag) {
                errors.add(path, "is listed more than once");
            } else {
                tags.push(tag);
            }
        }
    }
    tags
}

/// Only email carries files; a send that may fall back to another channel
/// still may attach them, and that channel goes without.
fn parse_attachments(
    raw: Vec<AttachmentInput>,
    channels: &[Channel],
    errors: &mut ValidationErrors,
) -> Vec<AttachmentSpec> {
    if raw.is_empty() {
        return Vec::new();
    }
    if !channels.contains(&Channel::Email) {
        errors.add("attachments", "need the email channel in channels");
    }
    if raw.len() > MAX_ATTACHMENTS {
        errors.add(
            "attachments",
            format!("at most {MAX_ATTACHMENTS} attachments"),
        );
    }
    let attachments: Vec<AttachmentSpec> = raw
        .into_iter()
        .enumerate()
        .filter_map(|(index, attachment)| attachment.parse(index, errors))
        .collect();
    let inline_bytes: usize = attachments.iter().map(AttachmentSpec::inline_len).sum();
    if inline_bytes > MAX_INLINE_ATTACHMENTS_BYTES {
        errors.add(
            "attachments",
            format!(
                "inline attachments must total at most {MAX_INLINE_ATTACHMENTS_BYTES} bytes; \
                 send larger files by url"
            ),
        );
    }
    attachments
}

impl AttachmentInput {
    fn parse(self, index: usize, errors: &mut ValidationErrors) -> Option<AttachmentSpec> {
        let path = |field: &str| format!("attachments[{index}].{field}");
        let filename = errors.required(
            &path("filename"),
            self.filename.as_deref(),
            AttachmentFilename::parse,
        );
        let content_type = errors.optional(
            &path("content_type"),
            self.content_type.as_deref(),
            MediaType::parse,
        );
        let source = match (self.url, self.content_base64) {
            (Some(url), None) => errors
                .check(path("url"), HttpUrl::parse(&url))
                .map(AttachmentSource::Url),
            (None, Some(base64)) => errors
                .check(path("content_base64"), InlineData::parse(&base64))
                .map(AttachmentSource::Inline),
            (Some(_), Some(_)) => {
                errors.add(path("url"), "give either url or content_base64, not both");
                None
            }
            (None, None) => {
                errors.add(path("url"), "url or content_base64 is required");
                None
            }
        };
        Some(AttachmentSpec {
            filename: filename?,
            content_type,
            source: source?,
        })
    }
}

impl RecipientInput {
    /// The recipient alone (a workflow trigger's), each refusal under `recipient.`.
    pub fn parse_alone(self) -> Result<Recipient, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let recipient = self.parse(&mut errors);
        if errors.is_empty() {
            Ok(recipient)
        } else {
            Err(errors)
        }
    }

    fn parse(self, errors: &mut ValidationErrors) -> Recipient {
        Recipient {
            id: errors.optional("recipient.id", self.id.as_deref(), RecipientId::parse),
            email: errors.optional(
                "recipient.email",
                self.email.as_deref(),
                EmailAddress::parse,
            ),
            phone: errors.optional("recipient.phone", self.phone.as_deref(), PhoneNumber::parse),
            push_target: errors.optional(
                "recipient.push_target",
                self.push_target.as_deref(),
                PushTarget::parse,
            ),
            webhook_url: errors.optional(
                "recipient.webhook_url",
                self.webhook_url.as_deref(),
                HttpUrl::parse,
            ),
            ntfy_topic: errors.optional(
                "recipient.ntfy_topic",
                self.ntfy_topic.as_deref(),
                NtfyTopic::parse,
            ),
            locale: errors.optional("recipient.locale", self.locale.as_deref(), Locale::parse),
            timezone: errors.optional(
                "recipient.timezone",
                self.timezone.as_deref(),
                Timezone::parse,
            ),
        }
    }
}

impl InlineContentInput {
    fn parse(self, errors: &mut ValidationErrors) -> Option<InlineContent> {
        if self.title.is_none() && self.text.is_none() && self.html.is_none() && self.data.is_none()
        {
            errors.add("content", "needs at least one of title, text, html or data");
            return None;
        }
        Some(InlineContent {
            title: errors.optional("content.title", self.title.as_deref(), Title::parse),
            text: errors.optional("content.text", self.text.as_deref(), TextBody::parse),
            html: errors.optional("content.html", self.html.as_deref(), HtmlBody::parse),
            cta_url: errors.optional("content.cta_url", self.cta_url.as_deref(), HttpUrl::parse),
            data: self.data.and_then(|data| {
                errors.check("content.data", JsonObject::parse(data, MAX_DATA_BYTES))
            }),
        })
    }
}

impl TemplateRefInput {
    fn parse(self, errors: &mut ValidationErrors) -> Option<TemplateRef> {
        let key = errors.required("template.key", self.key.as_deref(), TemplateKey::parse);
        let version = self
            .version
            .and_then(|version| errors.check("template.version", TemplateVersion::parse(version)));
        let locale = errors.optional("template.locale", self.locale.as_deref(), Locale::parse);
        let variables = match self.variables {
            None => Some(JsonObject::default()),
            Some(variables) => errors.check(
                "template.variables",
                JsonObject::parse(variables, MAX_VARIABLES_BYTES),
            ),
        };
        Some(TemplateRef {
            key: key?,
            version,
            locale,
            variables: variables?,
        })
    }
}

impl SourceEventInput {
    fn parse(self, errors: &mut ValidationErrors) -> Option<EventOrigin> {
        let event_id = errors.required(
            "source_event.event_id",
            self.event_id.as_deref(),
            ExternalEventId::parse,
        );
        let source = errors.required(
            "source_event.source",
            self.source.as_deref(),
            SourceName::parse,
        );
        if self.occurred_at.is_none() {
            errors.add("source_event.occurred_at", "is required");
        }
        let segment = errors.optional(
            "source_event.segment",
            self.segment.as_deref(),
            Segment::parse,
        );
        Some(EventOrigin {
            event_id: event_id?,
            source: source?,
            occurred_at: self.occurred_at?,
            segment,
        })
    }
}

#[cfg(test)]
mod tests;
