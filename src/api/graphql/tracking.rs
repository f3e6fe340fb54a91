//! Tracking and links: `trackingSettings`, `setTrackingSettings`,
//! `createShortLink`, `preferencesLink`.

use async_graphql::{Context, ID, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};

use super::{ApiError, actor, api, require, run};
use crate::commands::links::{self, ShortLinkRow};
use crate::domain::Scope;
use crate::domain::signed_link::TrackingSettings as Settings;
use crate::domain::values::{Category, NotificationId, RecipientId};

/// Whether the tenant's emails carry an open pixel and tracked links.
#[derive(SimpleObject)]
pub struct TrackingSettings {
    pub opens: bool,
    pub clicks: bool,
}

impl From<Settings> for TrackingSettings {
    fn from(settings: Settings) -> Self {
        TrackingSettings {
            opens: settings.opens,
            clicks: settings.clicks,
        }
    }
}

/// A tracked short link: `shortUrl` redirects to `url` and, with a
/// notification, records a click on it.
#[derive(SimpleObject)]
pub struct ShortLink {
    pub code: String,
    pub short_url: String,
    pub url: String,
    pub notification_id: Option<ID>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Default)]
pub struct TrackingQuery;

#[Object]
impl TrackingQuery {
    /// The tenant's tracking settings; both off until set (requires `read`).
    async fn tracking_settings(&self, ctx: &Context<'_>) -> Result<TrackingSettings, ApiError> {
        let principal = require(ctx, Scope::Read)?;
        let settings =
            links::tracking_settings(api(ctx)?.store.pool(), &principal.tenant_id).await?;
        Ok(settings.into())
    }

    /// A signed link to the recipient's preference page, to put in a message
    /// of any channel (requires `send`). It expires after
    /// `links.unsubscribe_ttl_days`.
    async fn preferences_link(
        &self,
        ctx: &Context<'_>,
        recipient_id: String,
        category: Option<String>,
    ) -> Result<String> {
        let principal = require(ctx, Scope::Send)?;
        let recipient_id = RecipientId::parse(&recipient_id)
            .map_err(|error| ApiError::field("recipientId", error.to_string()))?;
        let category = category
            .as_deref()
            .map(Category::parse)
            .transpose()
            .map_err(|error| ApiError::field("category", error.to_string()))?;
        let url =
            api(ctx)?
                .links
                .preferences_url(&principal.tenant_id, &recipient_id, category.as_ref());
        Ok(url.to_string())
    }
}

#[derive(Default)]
pub struct TrackingMutation;

#[Object]
impl TrackingMutation {
    /// Turns the open pixel and click tracking on or off for emails sent
    /// from now on (requires `admin`); other processes follow within 30 s.
    async fn set_tracking_settings(
        &self,
        ctx: &Context<'_>,
        opens: bool,
        clicks: bool,
    ) -> Result<TrackingSettings, ApiError> {
        let principal = require(ctx, Scope::Admin)?;
        let settings = Settings { opens, clicks };
        let settings = run(ctx, principal, settings, links::set_tracking_settings).await?;
        Ok(settings.into())
    }

    /// A short tracked link to `url` for SMS, push and other channels where
    /// a signed link is too long (requires `send`). With `notificationId`,
    /// each click is recorded on that notification.
    async fn create_short_link(
        &self,
        ctx: &Context<'_>,
        url: String,
        notification_id: Option<ID>,
    ) -> Result<ShortLink, ApiError> {
        let principal = require(ctx, Scope::Send)?;
        let notification_id = notification_id
            .map(|id| NotificationId::parse(id.as_str()))
            .transpose()
            .map_err(|error| ApiError::field("notificationId", error.to_string()))?;
        let api = api(ctx)?;
        let row = links::create_short_link(
            &api.store,
            &api.links,
            &principal.tenant_id,
            &url,
            notification_id,
            &actor(principal),
        )
        .await?;
        Ok(short_link(&api.links, row))
    }
}

fn short_link(links: &links::Links, row: ShortLinkRow) -> ShortLink {
    ShortLink {
        short_url: links.short_url(&row.code).to_string(),
        code: row.code,
        url: row.url,
        notification_id: row.notification_id.map(|id| ID(id.to_string())),
        expires_at: row.expires_at,
    }
}
