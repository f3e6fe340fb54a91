//! A validated request to notify someone: what `send`, `ingestEvent` and
//! campaigns turn into, and what `NotificationRequested` carries.
//!
//! Build one with [`SendNotification::parse`](super::SendNotification::parse).
//! Optional fields are left out of the JSON when empty, so adding a field
//! later does not change the fingerprint of requests that do not use it.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::attachment::AttachmentSpec;
use super::sha256_hex::sha256_hex;
use super::values::{
    Category, Channel, EmailAddress, ExternalEventId, HtmlBody, HttpUrl, IdempotencyKey,
    JsonObject, Locale, NtfyTopic, PhoneNumber, Priority, PushTarget, RecipientId, Segment,
    SourceName, Tag, TemplateKey, TemplateVersion, TextBody, Timezone, Title, TraceId,
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotificationRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<IdempotencyKey>,
    pub recipient: Recipient,
    /// In order of preference, without duplicates, never empty.
    pub channels: Vec<Channel>,
    pub priority: Priority,
    pub content: Content,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<Category>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry: Option<Expiry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<HttpUrl>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<JsonObject>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<TraceId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_event: Option<EventOrigin>,
    /// Email only; the request's order is the email's order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<AttachmentSpec>,
    /// The campaign that released it, whose pause or cancel stops it up to
    /// the provider call. Set by the campaign's release, never by a send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign_id: Option<Uuid>,
}

impl NotificationRequest {
    /// When the notification stops being worth sending, if ever.
    pub fn expires_at(&self, requested_at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self.expiry? {
            Expiry::At(at) => Some(at),
            Expiry::TtlSeconds(seconds) => {
                requested_at.checked_add_signed(TimeDelta::seconds(i64::from(seconds)))
            }
        }
    }

    /// Hex SHA-256 of the request's canonical JSON (keys sorted, no spaces).
    ///
    /// Two sends with one idempotency key are the same send when their
    /// fingerprints match. The trace id is left out: a client retrying a send
    /// may well start a new trace. So is the campaign, which its messages'
    /// keys name already: a message released before the campaign was kept
    /// in the request is the same send when released again.
    pub fn fingerprint(&self) -> String {
        let mut value = serde_json::to_value(self)
            .expect("a NotificationRequest has only string keys and infallible fields");
        if let Value::Object(fields) = &mut value {
            fields.remove("trace_id");
            fields.remove("campaign_id");
        }
        sha256_hex(canonical(value).to_string().as_bytes())
    }
}

/// Rebuilds every object with its keys in sorted order, whatever map
/// serde_json was built with (`preserve_order` keeps insertion order).
pub(crate) fn canonical(value: Value) -> Value {
    match value {
        Value::Object(fields) => {
            let mut sorted: Vec<(String, Value)> = fields.into_iter().collect();
            sorted.sort_by(|(a, _), (b, _)| a.cmp(b));
            Value::Object(
                sorted
                    .into_iter()
                    .map(|(key, value)| (key, canonical(value)))
                    .collect::<Map<String, Value>>(),
            )
        }
        Value::Array(items) => Value::Array(items.into_iter().map(canonical).collect()),
        scalar => scalar,
    }
}

/// Who to notify, and where each channel reaches them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Recipient {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RecipientId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailAddress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<PhoneNumber>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_target: Option<PushTarget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<HttpUrl>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ntfy_topic: Option<NtfyTopic>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<Locale>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<Timezone>,
}

/// What to say: written out, or a template to render.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Content {
    Inline(InlineContent),
    Template(TemplateRef),
}

/// Content given in the request; at least one of its fields is present.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InlineContent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<Title>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextBody>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<HtmlBody>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cta_url: Option<HttpUrl>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<JsonObject>,
}

/// A template to render at dispatch; no version means the latest published one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateRef {
    pub key: TemplateKey,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<TemplateVersion>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<Locale>,
    #[serde(default, skip_serializing_if = "JsonObject::is_empty")]
    pub variables: JsonObject,
}

/// When a notification stops being worth sending.
///
/// A TTL is kept as given rather than turned into an instant, so the same
/// request sent twice has the same fingerprint; it counts from the moment the
/// notification is requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expiry {
    At(DateTime<Utc>),
    TtlSeconds(u32),
}

/// The source event a notification was made from (the canonical incoming
/// event's `eventId`, `source`, `occurredAt` and the user's `segment`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventOrigin {
    pub event_id: ExternalEventId,
    pub source: SourceName,
    pub occurred_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<Segment>,
}
