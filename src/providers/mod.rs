//! Drivers that hand a rendered message to the outside world: one trait,
//! [`Provider`], and one file per driver. Providers know domain types only;
//! the dispatcher (`workers/`) decides which one to call and what to record.
//!
//! Every message carries its notification id as the idempotency key (a
//! header or a provider field), so a receiver can drop the duplicates that
//! at-least-once delivery may produce.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

pub mod console;
pub mod inapp;
pub mod ntfy;
pub mod smtp;
pub mod sns;
pub mod twilio;
pub mod webhook;

use crate::domain::values::{
    Category, Channel, EmailAddress, HttpUrl, JsonObject, NotificationId, NtfyTopic, PhoneNumber,
    Priority, PushTarget, RecipientId, Tag, TenantId,
};
use crate::egress::SendError;
use crate::signing::WebhookSecret;

/// A message ready to go: content rendered, destination chosen.
#[derive(Debug, Clone)]
pub struct OutboundMessage {
    /// Also the idempotency key every driver passes on.
    pub notification_id: NotificationId,
    pub tenant_id: TenantId,
    /// 1 for the first attempt; a receiver may see the same id with a higher one.
    pub attempt: u32,
    pub destination: Destination,
    pub priority: Priority,
    pub category: Option<Category>,
    pub tags: Vec<Tag>,
    /// Subject line, push or ntfy title.
    pub title: Option<String>,
    pub text: Option<String>,
    pub html: Option<String>,
    pub cta_url: Option<HttpUrl>,
    pub data: Option<JsonObject>,
    /// Extra email headers (e.g. `List-Unsubscribe`), added by the dispatcher.
    pub headers: Vec<(String, String)>,
    /// Secrets that sign a webhook body: each signs, so a receiver holding
    /// either verifies during a rotation. Empty for other channels.
    pub signing_secrets: Vec<WebhookSecret>,
    /// Files to attach, already fetched and checked; only email carries them.
    pub attachments: Vec<Attachment>,
}

/// A file ready to attach to an email.
#[derive(Clone, PartialEq)]
pub struct Attachment {
    pub filename: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

// The bytes can be megabytes of personal documents: a log line gets the size.
impl fmt::Debug for Attachment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attachment")
            .field("filename", &self.filename)
            .field("content_type", &self.content_type)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

/// Where a message goes; the variant fixes the channel.
#[derive(Clone, PartialEq)]
pub enum Destination {
    Email(EmailAddress),
    Sms(PhoneNumber),
    Push(PushTarget),
    Webhook(HttpUrl),
    Ntfy(NtfyTopic),
    InApp(RecipientId),
}

impl Destination {
    pub fn channel(&self) -> Channel {
        match self {
            Destination::Email(_) => Channel::Email,
            Destination::Sms(_) => Channel::Sms,
            Destination::Push(_) => Channel::Push,
            Destination::Webhook(_) => Channel::Webhook,
            Destination::Ntfy(_) => Channel::Ntfy,
            Destination::InApp(_) => Channel::InApp,
        }
    }
}

// Addresses are personal data; the channel is all a log line needs.
impl fmt::Debug for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Destination({}, <redacted>)", self.channel())
    }
}

/// What the provider said when it took the message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Receipt {
    pub provider_message_id: Option<String>,
}

/// A message for a channel the driver does not carry: routing sent it to
/// the wrong instance, and no retry will change that.
fn wrong_channel(kind: &str, destination: &Destination) -> SendError {
    SendError::permanent(format!(
        "the {kind} provider cannot carry {} messages",
        destination.channel()
    ))
}

/// The text, or the title when there is none: an SMS has no subject line.
fn sms_text(message: &OutboundMessage) -> Result<String, SendError> {
    [&message.text, &message.title]
        .into_iter()
        .flatten()
        .map(|s| s.trim())
        .find(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or_else(|| SendError::permanent("an SMS needs a text or a title"))
}

/// Refuses a setting of 0 (a timeout no send could meet, a pool without a connection).
fn at_least_one(name: &str, setting: &str, value: u64) -> anyhow::Result<()> {
    anyhow::ensure!(value > 0, "provider {name}: {setting} must be at least 1");
    Ok(())
}

/// One configured driver instance.
pub trait Provider: Send + Sync {
    /// The instance name from config (`smtp-main`), recorded on every attempt.
    fn name(&self) -> &str;
    /// Whether it can carry messages of this channel (console carries all).
    fn supports(&self, channel: Channel) -> bool;
    /// Sends one message. A driver must not retry by itself: the dispatcher
    /// owns retries, failover and the record of each attempt.
    fn send<'a>(
        &'a self,
        message: &'a OutboundMessage,
    ) -> BoxFuture<'a, Result<Receipt, SendError>>;
}

/// The configured provider instances, by name.
#[derive(Clone, Default)]
pub struct Providers {
    by_name: BTreeMap<String, Arc<dyn Provider>>,
}

impl Providers {
    pub fn insert(&mut self, provider: Arc<dyn Provider>) {
        self.by_name.insert(provider.name().to_string(), provider);
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Provider>> {
        self.by_name.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }
}

/// A provider instance in config: `[providers.NAME]` with `kind = "..."` and
/// the kind's own settings (see each driver's file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProviderConfig {
    Smtp(smtp::SmtpConfig),
    Sns(sns::SnsConfig),
    Twilio(twilio::TwilioConfig),
    Webhook(webhook::WebhookConfig),
    Ntfy(ntfy::NtfyConfig),
    InApp(inapp::InAppConfig),
    Console(console::ConsoleConfig),
}

/// The instances a fresh install has, so every channel goes somewhere:
/// `console` logs, `webhook` posts signed JSON, `inapp` fills the feed.
pub fn default_provider_configs() -> BTreeMap<String, ProviderConfig> {
    BTreeMap::from([
        (
            "console".to_string(),
            ProviderConfig::Console(console::ConsoleConfig::default()),
        ),
        (
            "webhook".to_string(),
            ProviderConfig::Webhook(webhook::WebhookConfig::default()),
        ),
        (
            "inapp".to_string(),
            ProviderConfig::InApp(inapp::InAppConfig::default()),
        ),
    ])
}

/// Builds every configured instance; a bad setting names its provider.
/// The webhook provider reaches tenants' URLs through `egress`.
pub async fn build(
    configs: &BTreeMap<String, ProviderConfig>,
    egress: &crate::egress::Egress,
) -> anyhow::Result<Providers> {
    let mut providers = Providers::default();
    for (name, config) in configs {
        let provider: Arc<dyn Provider> = match config {
            ProviderConfig::Smtp(c) => Arc::new(smtp::SmtpProvider::new(name, c)?),
            ProviderConfig::Sns(c) => Arc::new(sns::SnsProvider::new(name, c).await?),
            ProviderConfig::Twilio(c) => Arc::new(twilio::TwilioProvider::new(name, c)?),
            ProviderConfig::Webhook(c) => Arc::new(webhook::WebhookProvider::new(name, c, egress)?),
            ProviderConfig::Ntfy(c) => Arc::new(ntfy::NtfyProvider::new(name, c)?),
            ProviderConfig::InApp(c) => Arc::new(inapp::InAppProvider::new(name, c)),
            ProviderConfig::Console(c) => Arc::new(console::ConsoleProvider::new(name, c)),
        };
        providers.insert(provider);
    }
    Ok(providers)
}
