//! The domain: values, the message model, events, commands and the
//! aggregates that decide them (docs/architecture.md).
//!
//! Pure: no IO, no async, no SQL. Everything here is tested without a
//! database. Inputs are parsed into typed values once, at the edge; commands
//! are decided by pure functions returning events; state is a fold of events.

mod aggregate;
pub mod attachment;
pub mod campaign;
pub mod delivery_plan;
mod domain_error;
pub mod inapp_feed;
mod limits_config;
mod notification;
mod notification_command;
mod notification_event;
mod notification_request;
mod notification_status;
pub mod quiet_hours;
pub mod ranking;
pub mod recipient;
pub mod schedule;
mod scope;
mod send_notification;
pub(crate) mod sha256_hex;
pub mod signed_link;
mod source_event;
mod source_event_ingested;
pub mod suppression;
mod tagged_payload;
pub mod template;
mod tenant;
mod validation_errors;
pub mod values;
pub mod webhook_endpoint;
pub mod workflow;

#[cfg(test)]
mod given_when_then;
#[cfg(test)]
mod test_fixtures;

pub use aggregate::Aggregate;
pub use domain_error::DomainError;
pub use limits_config::{DEFAULT_API_RATE, LimitAuthority, LimitsConfig};
pub use notification::{
    MAX_BREAKDOWN_BYTES, MAX_EVENT_TEXT_CHARS, Notification, NotificationState,
};
pub use notification_command::NotificationCommand;
pub use notification_event::{DeliveredContent, NotificationEvent};
pub use notification_request::{
    Content, EventOrigin, Expiry, InlineContent, NotificationRequest, Recipient, TemplateRef,
};
pub use notification_status::NotificationStatus;
pub use scope::Scope;
pub use send_notification::{
    AttachmentInput, Given, InlineContentInput, MAX_CHANNELS, MAX_DATA_BYTES, MAX_METADATA_BYTES,
    MAX_TAGS, MAX_TTL_SECONDS, MAX_VARIABLES_BYTES, RecipientInput, SendNotification,
    SourceEventInput, TemplateRefInput,
};
pub use source_event::{MAX_PAYLOAD_BYTES, SourceEvent};
pub use source_event_ingested::SourceEventIngested;
pub use tenant::{
    API_KEY_PREFIX_CHARS, ApiKey, MAX_API_KEY_SECRET_CHARS, MIN_API_KEY_SECRET_CHARS, Tenant,
    TenantCommand, TenantEvent, hash_api_key,
};
pub use tenant::{Budget, FrequencyCap, Quota, RateLimit, SoftCapFraction, TenantLimits};
pub use validation_errors::{FieldError, ValidationErrors};
pub use webhook_endpoint::{WebhookEndpoint, WebhookEndpointCommand, WebhookEndpointEvent};
