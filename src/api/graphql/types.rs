//! GraphQL object, input and enum types, and their conversions to the domain.

use async_graphql::{
    Enum, InputObject, InputValueError, InputValueResult, Json, Scalar, ScalarType, SimpleObject,
    Value as GraphQLValue,
};
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::{commands, domain};

/// A log position, typed for GraphQL (whose `Int` is 32-bit) as a string.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct Position(pub i64);

/// A position in Herald's event log: a 64-bit integer written as a string of
/// digits, e.g. `"4294967296"`. An `Int` is accepted as input too.
#[Scalar]
impl ScalarType for Position {
    fn parse(value: GraphQLValue) -> InputValueResult<Self> {
        let position = match &value {
            GraphQLValue::String(digits) => digits.parse::<i64>().ok(),
            GraphQLValue::Number(number) => number.as_i64(),
            _ => return Err(InputValueError::expected_type(value)),
        };
        position
            .filter(|position| *position >= 0)
            .map(Position)
            .ok_or_else(|| InputValueError::custom("a log position is an integer from 0 to 2^63-1"))
    }

    fn to_value(&self) -> GraphQLValue {
        GraphQLValue::String(self.0.to_string())
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "crate::domain::values::Channel")]
pub enum Channel {
    Email,
    Sms,
    Push,
    Webhook,
    Ntfy,
    InApp,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "crate::domain::values::Priority")]
pub enum Priority {
    High,
    Normal,
    Low,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "crate::domain::NotificationStatus")]
pub enum NotificationStatus {
    Requested,
    Ranked,
    Scheduled,
    Sending,
    Sent,
    RetryPending,
    DeadLettered,
    Delivered,
    Bounced,
    Complained,
    Rejected,
    Suppressed,
    Expired,
    Cancelled,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "crate::domain::Scope")]
pub enum Scope {
    Send,
    Read,
    Ops,
    Admin,
}

#[derive(InputObject, Default)]
pub struct RecipientInput {
    /// Your id for the recipient (required for the in-app channel).
    pub id: Option<String>,
    pub email: Option<String>,
    /// E.164, e.g. +447700900123.
    pub phone: Option<String>,
    /// A mobile push endpoint ARN or device token.
    pub push_target: Option<String>,
    pub webhook_url: Option<String>,
    pub ntfy_topic: Option<String>,
    /// BCP 47, e.g. fr-CA.
    pub locale: Option<String>,
    /// IANA, e.g. Europe/Paris.
    pub timezone: Option<String>,
}

#[derive(InputObject, Default)]
pub struct InlineContentInput {
    /// Email subject, push or in-app title.
    pub title: Option<String>,
    pub text: Option<String>,
    pub html: Option<String>,
    /// Call-to-action URL.
    pub cta_url: Option<String>,
    pub data: Option<Json<Value>>,
}

#[derive(InputObject)]
pub struct TemplateRefInput {
    pub key: String,
    pub version: Option<u32>,
    pub locale: Option<String>,
    pub variables: Option<Json<Value>>,
}

#[derive(InputObject)]
pub struct SourceEventInput {
    pub event_id: String,
    pub source: String,
    pub occurred_at: DateTime<Utc>,
    pub segment: Option<String>,
}

/// A notification to send. Give `content` or `template`, not both.
#[derive(InputObject, Default)]
pub struct SendNotificationInput {
    /// The same key within the idempotency window returns the original notification.
    pub idempotency_key: Option<String>,
    pub recipient: RecipientInput,
    /// In order of preference: the first allowed channel is tried first.
    pub channels: Vec<Channel>,
    #[graphql(default_with = "Some(Priority::Normal)")]
    pub priority: Option<Priority>,
    pub content: Option<InlineContentInput>,
    pub template: Option<TemplateRefInput>,
    /// For preferences, e.g. `billing` or `marketing`.
    pub category: Option<String>,
    pub schedule_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub ttl_seconds: Option<u64>,
    /// Receives a signed POST for each status change.
    pub callback_url: Option<String>,
    #[graphql(default)]
    pub tags: Vec<String>,
    pub metadata: Option<Json<Value>>,
    pub trace_id: Option<String>,
    pub source_event: Option<SourceEventInput>,
    /// Files for the email channel (the email channel must be listed).
    #[graphql(default)]
    pub attachments: Vec<AttachmentInput>,
}

/// A file to attach to the email: give `url` or `contentBase64`, not both.
#[derive(InputObject)]
pub struct AttachmentInput {
    /// As the recipient sees it, without path separators, e.g. `invoice.pdf`.
    pub filename: String,
    /// A MIME type such as `application/pdf`; without it, the type comes from
    /// the URL's answer or the file name's extension.
    pub content_type: Option<String>,
    /// http(s), fetched when the email is sent (a signed URL must outlive the queue).
    pub url: Option<String>,
    /// The file's bytes in standard base64, at most 5 MiB decoded.
    pub content_base64: Option<String>,
}

impl From<RecipientInput> for domain::RecipientInput {
    fn from(recipient: RecipientInput) -> Self {
        domain::RecipientInput {
            id: recipient.id,
            email: recipient.email,
            phone: recipient.phone,
            push_target: recipient.push_target,
            webhook_url: recipient.webhook_url,
            ntfy_topic: recipient.ntfy_topic,
            locale: recipient.locale,
            timezone: recipient.timezone,
        }
    }
}

impl From<SendNotificationInput> for domain::SendNotification {
    fn from(input: SendNotificationInput) -> Self {
        let recipient = input.recipient;
        domain::SendNotification {
            idempotency_key: input.idempotency_key,
            recipient: recipient.into(),
            channels: input
                .channels
                .into_iter()
                .map(|c| domain::Given::Typed(c.into()))
                .collect(),
            priority: input.priority.map(|p| domain::Given::Typed(p.into())),
            content: input.content.map(|c| domain::InlineContentInput {
                title: c.title,
                text: c.text,
                html: c.html,
                cta_url: c.cta_url,
                data: c.data.map(|d| d.0),
            }),
            template: input.template.map(|t| domain::TemplateRefInput {
                key: Some(t.key),
                version: t.version,
                locale: t.locale,
                variables: t.variables.map(|v| v.0),
            }),
            category: input.category,
            schedule_at: input.schedule_at,
            expires_at: input.expires_at,
            ttl_seconds: input.ttl_seconds,
            callback_url: input.callback_url,
            tags: input.tags,
            metadata: input.metadata.map(|m| m.0),
            trace_id: input.trace_id,
            source_event: input.source_event.map(|s| domain::SourceEventInput {
                event_id: Some(s.event_id),
                source: Some(s.source),
                occurred_at: Some(s.occurred_at),
                segment: s.segment,
            }),
            attachments: input
                .attachments
                .into_iter()
                .map(|a| domain::AttachmentInput {
                    filename: Some(a.filename),
                    content_type: a.content_type,
                    url: a.url,
                    content_base64: a.content_base64,
                })
                .collect(),
            campaign_id: None,
        }
    }
}

/// A raw event from a source system, stored as it came. Every field is required;
/// a bad value is reported by field (`VALIDATION`, `extensions.fields`).
/// The JSON Schema of the same event is served at `/schemas/event.json`.
#[derive(InputObject)]
pub struct IngestEventInput {
    /// The system the event comes from, e.g. `billing` or `s3.orders`.
    pub source: String,
    /// The kind of entity the event is about, e.g. `order`.
    pub entity_type: String,
    /// The source's id of that entity.
    pub entity_id: String,
    /// What happened, e.g. `order.created`.
    pub event_type: String,
    /// At most five minutes ahead of Herald's clock.
    pub occurred_at: DateTime<Utc>,
    /// A JSON object of at most 256 KiB.
    pub payload: Json<Value>,
    /// The source's id for this event: a repeat is stored as a duplicate.
    pub event_id: String,
}

impl From<IngestEventInput> for commands::ingest::IngestEventInput {
    fn from(input: IngestEventInput) -> Self {
        commands::ingest::IngestEventInput {
            source: Some(input.source),
            entity_type: Some(input.entity_type),
            entity_id: Some(input.entity_id),
            event_type: Some(input.event_type),
            occurred_at: Some(input.occurred_at),
            payload: Some(input.payload.0),
            event_id: Some(input.event_id),
        }
    }
}

/// A stored source event.
#[derive(SimpleObject)]
pub struct IngestEventPayload {
    /// The id of the stored event in Herald's log (not the source's event id).
    pub event_id: async_graphql::ID,
    /// Its position in the log.
    pub position: Position,
    /// The source had already sent this event id: it is stored, flagged as a
    /// duplicate, and is not a second original.
    pub duplicate: bool,
}

#[derive(InputObject, Default)]
pub struct NotificationFilter {
    pub status: Option<Vec<NotificationStatus>>,
    pub channel: Option<Channel>,
    pub recipient_id: Option<String>,
    pub tag: Option<String>,
    /// Created at or after.
    pub from: Option<DateTime<Utc>>,
    /// Created before.
    pub to: Option<DateTime<Utc>>,
}

/// One event in a notification's life.
#[derive(SimpleObject, Clone)]
pub struct TimelineEvent {
    #[graphql(name = "type")]
    pub event_type: String,
    /// Position in the global log.
    pub position: Position,
    pub version: i64,
    pub recorded_at: DateTime<Utc>,
    /// The stored payload as it is, readable or not.
    pub data: Json<Value>,
    /// Why this event cannot be read (a malformed payload, an unknown type or
    /// schema version); null when it can. The notification's state is folded
    /// from the readable events only.
    pub read_error: Option<String>,
}

#[derive(SimpleObject)]
#[graphql(name = "FieldError")]
pub struct FieldErrorObject {
    pub path: String,
    pub message: String,
}

#[derive(SimpleObject)]
pub struct ItemError {
    pub code: String,
    pub message: String,
    pub fields: Vec<FieldErrorObject>,
}

#[derive(SimpleObject)]
#[graphql(name = "ApiKey")]
pub struct ApiKeyObject {
    pub id: async_graphql::ID,
    pub name: String,
    /// The first characters of the secret, to tell keys apart.
    pub prefix: String,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(SimpleObject)]
pub struct IssuedApiKey {
    pub id: async_graphql::ID,
    /// Shown once; store it now.
    pub api_key: String,
    pub scopes: Vec<Scope>,
}

#[derive(SimpleObject)]
pub struct Viewer {
    pub tenant_id: String,
    pub key_id: async_graphql::ID,
    pub scopes: Vec<Scope>,
}
