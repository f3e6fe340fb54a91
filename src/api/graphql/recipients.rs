//! Recipients, their preferences and quiet hours: `recipient`, `quietHours`,
//! `upsertRecipient`, `setPreferences`, `setQuietHours`, `clearQuietHours`.

use async_graphql::{Context, Enum, InputObject, Json, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::types::Channel;
use super::{ApiError, NeedsScope, actor, api, require, run};
use crate::commands::recipients::{self, Audience};
use crate::domain::quiet_hours::QuietHours as Window;
use crate::domain::recipient::{
    self as domain, PreferenceChangeInput as ChangeInput, QuietHoursInput as WindowInput,
    UpsertRecipient, parse_preference_changes,
};
use crate::domain::values::RecipientId;
use crate::domain::{Scope, ValidationErrors};

/// A window in wall-clock time; `end` before `start` wraps midnight.
#[derive(SimpleObject)]
pub struct QuietHours {
    /// `HH:MM`, 24-hour clock.
    pub start: String,
    pub end: String,
}

impl From<Window> for QuietHours {
    fn from(window: Window) -> Self {
        QuietHours {
            start: window.start_text(),
            end: window.end_text(),
        }
    }
}

#[derive(InputObject)]
pub struct QuietHoursInput {
    /// `HH:MM`, 24-hour clock, in the recipient's timezone.
    pub start: String,
    pub end: String,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "crate::domain::recipient::PreferenceSource")]
pub enum PreferenceSource {
    /// The tenant, through this API.
    Api,
    /// The recipient, on a signed preferences page.
    SignedLink,
    /// The recipient, by an unsubscribe link or one-click List-Unsubscribe.
    Unsubscribe,
}

/// One opt-in or opt-out in effect. The most specific rule decides:
/// (category, channel), then (category, any channel), then (any category,
/// channel), then (any, any); without a rule a message is allowed.
#[derive(SimpleObject)]
pub struct PreferenceRule {
    /// Null: every category.
    pub category: Option<String>,
    /// Null: every channel.
    pub channel: Option<Channel>,
    pub opted_in: bool,
    pub source: PreferenceSource,
    pub changed_at: DateTime<Utc>,
}

/// A recipient's stored profile and preferences. The profile fields are null
/// until `upsertRecipient`; preferences may come first (an unsubscribe).
/// Addresses and attributes need the read scope: `setPreferences` answers a
/// `send` key with this object for any recipient id.
#[derive(SimpleObject)]
pub struct Recipient {
    pub id: String,
    pub has_profile: bool,
    #[graphql(guard = "NeedsScope(Scope::Read)")]
    pub email: Option<String>,
    #[graphql(guard = "NeedsScope(Scope::Read)")]
    pub phone: Option<String>,
    #[graphql(guard = "NeedsScope(Scope::Read)")]
    pub push_target: Option<String>,
    #[graphql(guard = "NeedsScope(Scope::Read)")]
    pub webhook_url: Option<String>,
    #[graphql(guard = "NeedsScope(Scope::Read)")]
    pub ntfy_topic: Option<String>,
    pub locale: Option<String>,
    /// IANA name; quiet hours are read in it.
    pub timezone: Option<String>,
    pub segment: Option<String>,
    #[graphql(guard = "NeedsScope(Scope::Read)")]
    pub attributes: Option<Json<Value>>,
    /// The recipient's own window; null means the tenant's default applies.
    pub quiet_hours: Option<QuietHours>,
    pub preferences: Vec<PreferenceRule>,
}

impl Recipient {
    fn new(id: &RecipientId, audience: Audience) -> Recipient {
        let profile = audience.profile.as_ref();
        Recipient {
            id: id.to_string(),
            has_profile: profile.is_some(),
            email: profile.and_then(|p| p.email.as_ref().map(ToString::to_string)),
            phone: profile.and_then(|p| p.phone.as_ref().map(ToString::to_string)),
            push_target: profile.and_then(|p| p.push_target.as_ref().map(ToString::to_string)),
            webhook_url: profile.and_then(|p| p.webhook_url.as_ref().map(ToString::to_string)),
            ntfy_topic: profile.and_then(|p| p.ntfy_topic.as_ref().map(ToString::to_string)),
            locale: profile.and_then(|p| p.locale.as_ref().map(ToString::to_string)),
            timezone: profile.and_then(|p| p.timezone.as_ref().map(ToString::to_string)),
            segment: profile.and_then(|p| p.segment.as_ref().map(ToString::to_string)),
            attributes: profile
                .and_then(|p| p.attributes.as_ref())
                .map(|attributes| Json(Value::Object(attributes.as_map().clone()))),
            quiet_hours: profile.and_then(|p| p.quiet_hours).map(Into::into),
            preferences: audience
                .preferences
                .rules()
                .map(|rule| PreferenceRule {
                    category: rule.category.as_ref().map(ToString::to_string),
                    channel: rule.channel.map(Into::into),
                    opted_in: rule.opted_in,
                    source: rule.source.into(),
                    changed_at: rule.changed_at,
                })
                .collect(),
        }
    }
}

/// A whole profile: a field left out is cleared.
#[derive(InputObject)]
pub struct UpsertRecipientInput {
    /// The tenant's own id for the recipient (1-255 characters).
    pub id: String,
    pub email: Option<String>,
    /// E.164 (`+33612345678`).
    pub phone: Option<String>,
    pub push_target: Option<String>,
    pub webhook_url: Option<String>,
    pub ntfy_topic: Option<String>,
    /// BCP 47 (`fr-CA`); templates fall back from it.
    pub locale: Option<String>,
    /// IANA name (`Europe/Paris`).
    pub timezone: Option<String>,
    pub segment: Option<String>,
    /// A JSON object of at most 16 KiB.
    pub attributes: Option<Json<Value>>,
    /// Overrides the tenant's default quiet hours.
    pub quiet_hours: Option<QuietHoursInput>,
}

#[derive(InputObject)]
pub struct PreferenceChangeInput {
    /// Null: every category.
    pub category: Option<String>,
    /// Null: every channel.
    pub channel: Option<Channel>,
    pub opted_in: bool,
}

fn parse_recipient_id(field: &str, raw: &str) -> Result<RecipientId, ApiError> {
    RecipientId::parse(raw).map_err(|e| ApiError::field(field, e.to_string()))
}

#[derive(Default)]
pub struct RecipientsQuery;

#[Object]
impl RecipientsQuery {
    /// A recipient's profile and preferences (requires `read`).
    async fn recipient(&self, ctx: &Context<'_>, id: String) -> Result<Recipient, ApiError> {
        let principal = require(ctx, Scope::Read)?;
        let id = parse_recipient_id("id", &id)?;
        let audience = recipients::get(api(ctx)?.store.pool(), &principal.tenant_id, &id)
            .await?
            .ok_or(ApiError::NotFound("recipient"))?;
        Ok(Recipient::new(&id, audience))
    }

    /// The tenant's default quiet hours (requires `read`); null when off.
    async fn quiet_hours(&self, ctx: &Context<'_>) -> Result<Option<QuietHours>, ApiError> {
        let principal = require(ctx, Scope::Read)?;
        let window =
            recipients::tenant_quiet_hours(api(ctx)?.store.pool(), &principal.tenant_id).await?;
        Ok(window.map(Into::into))
    }
}

#[derive(Default)]
pub struct RecipientsMutation;

#[Object]
impl RecipientsMutation {
    /// Creates or replaces a recipient's profile (requires `send`); a send
    /// may then name only the recipient's id.
    async fn upsert_recipient(
        &self,
        ctx: &Context<'_>,
        input: UpsertRecipientInput,
    ) -> Result<Recipient, ApiError> {
        let principal = require(ctx, Scope::Send)?;
        let input = UpsertRecipient {
            id: input.id,
            email: input.email,
            phone: input.phone,
            push_target: input.push_target,
            webhook_url: input.webhook_url,
            ntfy_topic: input.ntfy_topic,
            locale: input.locale,
            timezone: input.timezone,
            segment: input.segment,
            attributes: input.attributes.map(|attributes| attributes.0),
            quiet_hours: input.quiet_hours.map(|window| WindowInput {
                start: window.start,
                end: window.end,
            }),
        };
        let id = parse_recipient_id("id", &input.id)?;
        let audience = run(ctx, principal, input, recipients::upsert).await?;
        Ok(Recipient::new(&id, audience))
    }

    /// Opts a recipient in or out per category and channel (requires
    /// `send`); each change is recorded with source `API`. Works before any
    /// profile exists.
    async fn set_preferences(
        &self,
        ctx: &Context<'_>,
        recipient_id: String,
        changes: Vec<PreferenceChangeInput>,
    ) -> Result<Recipient, ApiError> {
        let principal = require(ctx, Scope::Send)?;
        let id = parse_recipient_id("recipient_id", &recipient_id)?;
        let changes = parse_preference_changes(
            changes
                .into_iter()
                .map(|change| ChangeInput {
                    category: change.category,
                    channel: change.channel.map(Into::into),
                    opted_in: change.opted_in,
                })
                .collect(),
        )?;
        let preferences = recipients::set_preferences(
            &api(ctx)?.store,
            &principal.tenant_id,
            &id,
            changes,
            domain::PreferenceSource::Api,
            &actor(principal),
        )
        .await?;
        let profile =
            recipients::profile(api(ctx)?.store.pool(), &principal.tenant_id, &id).await?;
        Ok(Recipient::new(
            &id,
            Audience {
                profile,
                preferences,
            },
        ))
    }

    /// Sets the tenant's default quiet hours (requires `admin`): NORMAL and
    /// LOW notifications due inside them wait until they end, in each
    /// recipient's timezone. A recipient's own window overrides it.
    async fn set_quiet_hours(
        &self,
        ctx: &Context<'_>,
        start: String,
        end: String,
    ) -> Result<QuietHours, ApiError> {
        let principal = require(ctx, Scope::Admin)?;
        let mut errors = ValidationErrors::default();
        let window = Window::check(&mut errors, "start", "end", &start, &end)
            .ok_or_else(|| ApiError::from(errors))?;
        let window = run(ctx, principal, window, recipients::set_tenant_quiet_hours).await?;
        Ok(window.into())
    }

    /// Turns the tenant's default quiet hours off (requires `admin`).
    async fn clear_quiet_hours(&self, ctx: &Context<'_>) -> Result<bool, ApiError> {
        let principal = require(ctx, Scope::Admin)?;
        recipients::clear_tenant_quiet_hours(
            &api(ctx)?.store,
            &principal.tenant_id,
            &actor(principal),
        )
        .await?;
        Ok(true)
    }
}
