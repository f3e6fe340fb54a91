//! Link signing keys and the tenant's tracking settings; recording opens, clicks and unsubscribes.
//!
//! Links are signed with `links.secret` when configured, else with a key
//! the first process generates and keeps in `link_signing_keys`, so a new
//! installation needs no setup and every process verifies what another
//! signed. Tracking settings live in `tracking-settings-<tenant>` and short
//! links in `short-link-<code>`, each with its table kept in step in the same
//! transaction.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use url::Url;

use super::notifications;
use super::pipeline::{Stream, in_transaction, retry_on_conflict};
use super::{Actor, CommandError, recipients, suppressions};
use crate::domain::recipient::{PreferenceChange, PreferenceSource, Preferences};
use crate::domain::signed_link::{
    ClientContext, LinkClaims, LinkError, LinkEvent, LinkKey, LinkKind, MIN_KEY_BYTES,
    SHORT_CODE_CHARS, TrackingSettings,
};
use crate::domain::suppression::{SuppressedAddress, SuppressionReason};
use crate::domain::values::{Category, HttpUrl, NotificationId, RecipientId, TenantId};
use crate::domain::{NotificationCommand, ValidationErrors};
use crate::eventstore::EventStore;

/// `[links]`: where links point and how long they stay valid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LinksConfig {
    /// Signs every link; at least 32 characters. Unset: a random key made
    /// once and kept in the database (shared by every process).
    pub secret: Option<LinkSecret>,
    /// The address recipients reach Herald at. Unset: `http://` and `listen`.
    pub public_base_url: Option<HttpUrl>,
    /// How long unsubscribe and preference links work.
    pub unsubscribe_ttl_days: u32,
    /// How long open pixels, tracked links and short links work.
    pub tracking_ttl_days: u32,
    /// The longest life `issueFeedToken` may give a browser's feed token.
    pub feed_token_max_ttl_seconds: u32,
}

impl Default for LinksConfig {
    fn default() -> Self {
        LinksConfig {
            secret: None,
            public_base_url: None,
            unsubscribe_ttl_days: 60,
            tracking_ttl_days: 180,
            feed_token_max_ttl_seconds: 24 * 60 * 60,
        }
    }
}

impl LinksConfig {
    /// Points links at `listen` unless a public URL is configured; an
    /// unspecified address (`0.0.0.0`) becomes loopback.
    pub fn default_base_url_from(&mut self, listen: SocketAddr) {
        if self.public_base_url.is_some() {
            return;
        }
        let ip = match listen.ip() {
            IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        self.public_base_url =
            HttpUrl::parse(&format!("http://{}", SocketAddr::new(ip, listen.port()))).ok();
    }

    fn base_url(&self) -> Url {
        match &self.public_base_url {
            Some(url) => url.as_url().clone(),
            None => Url::parse("http://127.0.0.1:8080").expect("a valid literal URL"),
        }
    }
}

/// `links.secret`: checked for length when the configuration is read.
#[derive(Clone, PartialEq)]
pub struct LinkSecret(String);

impl LinkSecret {
    pub fn parse(raw: &str) -> Result<LinkSecret, String> {
        if raw.len() < MIN_KEY_BYTES {
            return Err(format!(
                "links.secret must be at least {MIN_KEY_BYTES} characters"
            ));
        }
        Ok(LinkSecret(raw.to_string()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What `herald config` shows instead.
    pub fn redacted() -> LinkSecret {
        LinkSecret("****".into())
    }
}

impl fmt::Debug for LinkSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LinkSecret(<redacted>)")
    }
}

impl Serialize for LinkSecret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for LinkSecret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        LinkSecret::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// The key links are signed with: the configured secret, else the one in
/// the database, made by whichever process needs it first.
pub async fn signing_key(pool: &PgPool, config: &LinksConfig) -> Result<LinkKey, sqlx::Error> {
    let bytes = match &config.secret {
        Some(secret) => secret.expose().as_bytes().to_vec(),
        None => {
            let mut fresh = [0u8; 32];
            rand::fill(&mut fresh);
            sqlx::query(
                "INSERT INTO link_signing_keys (id, key) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
            )
            .bind(fresh.as_slice())
            .execute(pool)
            .await?;
            sqlx::query_scalar("SELECT key FROM link_signing_keys WHERE id = 1")
                .fetch_one(pool)
                .await?
        }
    };
    LinkKey::new(bytes).map_err(|error| sqlx::Error::Decode(Box::new(error)))
}

/// What a feed token starts with, so a bearer is told from an API key
/// (`hk_`) before any lookup.
pub const FEED_TOKEN_PREFIX: &str = "hf_";

/// What a valid feed token lets its holder do: read and mark one
/// recipient's in-app feed until it expires.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedGrant {
    pub tenant_id: TenantId,
    pub recipient_id: RecipientId,
    pub expires_at: DateTime<Utc>,
}

/// Signs and verifies the links Herald puts in messages, and feed tokens.
#[derive(Debug, Clone)]
pub struct Links {
    key: LinkKey,
    base: Url,
    unsubscribe_ttl: TimeDelta,
    tracking_ttl: TimeDelta,
    feed_token_max_ttl: TimeDelta,
}

impl Links {
    pub async fn new(pool: &PgPool, config: &LinksConfig) -> Result<Links, sqlx::Error> {
        Ok(Links::with_key(signing_key(pool, config).await?, config))
    }

    pub fn with_key(key: LinkKey, config: &LinksConfig) -> Links {
        Links {
            key,
            base: config.base_url(),
            unsubscribe_ttl: TimeDelta::days(config.unsubscribe_ttl_days.into()),
            tracking_ttl: TimeDelta::days(config.tracking_ttl_days.into()),
            feed_token_max_ttl: TimeDelta::seconds(config.feed_token_max_ttl_seconds.into()),
        }
    }

    /// The longest `ttl` `feed_token` takes.
    pub fn feed_token_max_ttl(&self) -> TimeDelta {
        self.feed_token_max_ttl
    }

    /// A token for `recipient`'s in-app feed and when it expires: after
    /// `ttl`, cut to `feed_token_max_ttl`.
    pub fn issue_feed_token(
        &self,
        tenant: &TenantId,
        recipient: &RecipientId,
        ttl: TimeDelta,
    ) -> (String, DateTime<Utc>) {
        let expires_at = Utc::now() + ttl.min(self.feed_token_max_ttl);
        let claims = LinkClaims::feed(tenant.clone(), recipient.clone(), expires_at);
        (
            format!("{FEED_TOKEN_PREFIX}{}", claims.sign(&self.key)),
            expires_at,
        )
    }

    /// What a feed token grants, if Herald sealed it and it has not expired.
    pub fn verify_feed_token(&self, token: &str) -> Result<FeedGrant, LinkError> {
        let sealed = token
            .strip_prefix(FEED_TOKEN_PREFIX)
            .ok_or(LinkError::Malformed)?;
        let claims = self.verify(sealed, LinkKind::Feed)?;
        Ok(FeedGrant {
            tenant_id: claims.tenant_id,
            recipient_id: claims.recipient_id.ok_or(LinkError::Malformed)?,
            expires_at: claims.expires_at,
        })
    }

    /// The one-click unsubscribe page for a message to `address`.
    pub fn unsubscribe_url(
        &self,
        tenant: &TenantId,
        notification_id: Option<NotificationId>,
        recipient_id: Option<&RecipientId>,
        address: &SuppressedAddress,
        category: Option<&Category>,
    ) -> Url {
        let claims = LinkClaims::unsubscribe(
            tenant.clone(),
            notification_id,
            recipient_id.cloned(),
            address.clone(),
            category.cloned(),
            Utc::now() + self.unsubscribe_ttl,
        );
        self.at(&["u", &claims.sign(&self.key)])
    }

    /// The recipient's preference page.
    pub fn preferences_url(
        &self,
        tenant: &TenantId,
        recipient_id: &RecipientId,
        category: Option<&Category>,
    ) -> Url {
        let claims = LinkClaims::preferences(
            tenant.clone(),
            recipient_id.clone(),
            category.cloned(),
            Utc::now() + self.unsubscribe_ttl,
        );
        self.at(&["p", &claims.sign(&self.key)])
    }

    /// The open pixel of one email.
    pub fn open_url(&self, tenant: &TenantId, notification_id: NotificationId) -> Url {
        let claims = LinkClaims::open(
            tenant.clone(),
            notification_id,
            Utc::now() + self.tracking_ttl,
        );
        self.at(&["t", "o", &claims.sign(&self.key)])
    }

    /// A tracked link to `url`.
    pub fn click_url(
        &self,
        tenant: &TenantId,
        notification_id: Option<NotificationId>,
        url: &HttpUrl,
    ) -> Url {
        let claims = LinkClaims::click(
            tenant.clone(),
            notification_id,
            url.clone(),
            Utc::now() + self.tracking_ttl,
        );
        self.at(&["t", "c", &claims.sign(&self.key)])
    }

    /// Where every link points below.
    pub fn base(&self) -> &Url {
        &self.base
    }

    pub fn short_url(&self, code: &str) -> Url {
        self.at(&["s", code])
    }

    /// The claims of a token for a page of `kind`, if Herald signed it and
    /// it has not expired.
    pub fn verify(&self, token: &str, kind: LinkKind) -> Result<LinkClaims, LinkError> {
        LinkClaims::verify(token, kind, &self.key, Utc::now())
    }

    fn at(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("an http(s) URL has a path")
            .pop_if_empty()
            .extend(segments);
        url
    }
}

/// What a followed unsubscribe link changed.
#[derive(Debug, Clone)]
pub enum Unsubscribed {
    /// The recipient's preferences after opting out.
    Preferences(Preferences),
    /// The address went on the suppression list.
    Suppressed,
}

/// Records an unsubscribe: a recipient's opt-out of the link's category on
/// the address's channel, or, for a message sent to a bare address, the
/// address on the suppression list.
pub async fn unsubscribe(
    store: &EventStore,
    claims: &LinkClaims,
    actor: &Actor,
) -> Result<Unsubscribed, CommandError> {
    let address = claims
        .address
        .clone()
        .ok_or(CommandError::NotFound("address"))?;
    match &claims.recipient_id {
        Some(recipient_id) => {
            let change = PreferenceChange {
                category: claims.category.clone(),
                channel: Some(address.channel()),
                opted_in: false,
            };
            let preferences = recipients::set_preferences(
                store,
                &claims.tenant_id,
                recipient_id,
                vec![change],
                PreferenceSource::Unsubscribe,
                actor,
            )
            .await?;
            Ok(Unsubscribed::Preferences(preferences))
        }
        None => {
            let note = match (&claims.category, claims.notification_id) {
                (Some(category), Some(id)) => {
                    format!("unsubscribe link ({category}) of notification {id}")
                }
                (None, Some(id)) => format!("unsubscribe link of notification {id}"),
                (Some(category), None) => format!("unsubscribe link ({category})"),
                (None, None) => "unsubscribe link".to_string(),
            };
            suppressions::add(
                store,
                &claims.tenant_id,
                address,
                SuppressionReason::Unsubscribe,
                Some(note),
                actor,
            )
            .await?;
            Ok(Unsubscribed::Suppressed)
        }
    }
}

/// Records an open of the notification; the domain says whether it is the first.
pub async fn record_open(
    store: &EventStore,
    tenant: &TenantId,
    notification_id: &NotificationId,
    client: ClientContext,
    actor: &Actor,
) -> Result<(), CommandError> {
    let at = Utc::now();
    notifications::handle(
        store,
        tenant,
        notification_id,
        || NotificationCommand::RecordOpen {
            at,
            client: client.clone(),
        },
        actor,
    )
    .await
    .map(|_| ())
}

/// Records a click on `url` in the notification.
pub async fn record_click(
    store: &EventStore,
    tenant: &TenantId,
    notification_id: &NotificationId,
    url: &HttpUrl,
    client: ClientContext,
    actor: &Actor,
) -> Result<(), CommandError> {
    let at = Utc::now();
    notifications::handle(
        store,
        tenant,
        notification_id,
        || NotificationCommand::RecordClick {
            url: url.clone(),
            at,
            client: client.clone(),
        },
        actor,
    )
    .await
    .map(|_| ())
}

pub fn tracking_stream_id(tenant: &TenantId) -> String {
    format!("tracking-settings-{tenant}")
}

pub fn short_link_stream_id(code: &str) -> String {
    format!("short-link-{code}")
}

/// The tenant's tracking settings; both off until set.
pub async fn tracking_settings(
    pool: &PgPool,
    tenant: &TenantId,
) -> Result<TrackingSettings, sqlx::Error> {
    let row: Option<(bool, bool)> =
        sqlx::query_as("SELECT opens, clicks FROM tracking_settings WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .fetch_optional(pool)
            .await?;
    Ok(row
        .map(|(opens, clicks)| TrackingSettings { opens, clicks })
        .unwrap_or_default())
}

/// Turns open and click tracking on or off for the tenant's future emails.
pub async fn set_tracking_settings(
    store: &EventStore,
    tenant: &TenantId,
    settings: TrackingSettings,
    actor: &Actor,
) -> Result<TrackingSettings, CommandError> {
    let stream = &Stream::new(store, tracking_stream_id(tenant), tenant, actor);
    retry_on_conflict(|| {
        Box::pin(async move {
            let version = store.read_stream(stream.id(), 1).await?.len() as i64;
            if version > 0 && tracking_settings(store.pool(), tenant).await? == settings {
                return Ok(settings);
            }
            let event = LinkEvent::TrackingSettingsChanged {
                opens: settings.opens,
                clicks: settings.clicks,
            };
            let append = stream.appending(version, &[event])?;
            in_transaction(store, |tx| {
                Box::pin(async move {
                    tx.append(&[append]).await?;
                    sqlx::query(
                        "INSERT INTO tracking_settings (tenant_id, opens, clicks, updated_at) \
                         VALUES ($1, $2, $3, now()) \
                         ON CONFLICT (tenant_id) DO UPDATE \
                             SET opens = EXCLUDED.opens, clicks = EXCLUDED.clicks, updated_at = EXCLUDED.updated_at",
                    )
                    .bind(tenant.as_str())
                    .bind(settings.opens)
                    .bind(settings.clicks)
                    .execute(tx.connection())
                    .await?;
                    Ok(settings)
                })
            })
            .await
        })
    })
    .await
}

/// A short link as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ShortLinkRow {
    pub code: String,
    pub tenant_id: String,
    pub notification_id: Option<uuid::Uuid>,
    pub url: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub clicks: i64,
}

/// A tracked short link to `url` for channels where a signed link is too
/// long; with a notification, each click is recorded on it.
pub async fn create_short_link(
    store: &EventStore,
    links: &Links,
    tenant: &TenantId,
    url: &str,
    notification_id: Option<NotificationId>,
    actor: &Actor,
) -> Result<ShortLinkRow, CommandError> {
    let mut errors = ValidationErrors::default();
    let url = errors.check("url", HttpUrl::parse(url.trim()));
    if let Some(id) = &notification_id
        && notifications::get(store, tenant, id).await?.is_none()
    {
        errors.add("notificationId", "no such notification for this tenant");
    }
    let Some(url) = url.filter(|_| errors.is_empty()) else {
        return Err(errors.into());
    };
    let expires_at = Utc::now() + links.tracking_ttl;
    // A conflict means two equal random codes: each attempt draws another.
    retry_on_conflict(|| {
        let url = url.clone();
        Box::pin(async move {
            let code = short_code();
            let event = LinkEvent::ShortLinkCreated {
                code: code.clone(),
                notification_id,
                url: url.clone(),
                expires_at,
            };
            let append =
                Stream::new(store, short_link_stream_id(&code), tenant, actor).appending(0, &[event])?;
            in_transaction(store, |tx| {
                Box::pin(async move {
                    tx.append(&[append]).await?;
                    Ok(sqlx::query_as(
                        "INSERT INTO short_links (code, tenant_id, notification_id, url, created_at, expires_at) \
                         VALUES ($1, $2, $3, $4, now(), $5) \
                         RETURNING code, tenant_id, notification_id, url, created_at, expires_at, clicks",
                    )
                    .bind(&code)
                    .bind(tenant.as_str())
                    .bind(notification_id.map(|id| id.as_uuid()))
                    .bind(url.as_str())
                    .bind(expires_at)
                    .fetch_one(tx.connection())
                    .await?)
                })
            })
            .await
        })
    })
    .await
}

/// The live short link `code`, counting this click.
pub async fn follow_short_link(
    pool: &PgPool,
    code: &str,
) -> Result<Option<ShortLinkRow>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE short_links SET clicks = clicks + 1, last_clicked_at = now() \
         WHERE code = $1 AND expires_at > now() \
         RETURNING code, tenant_id, notification_id, url, created_at, expires_at, clicks",
    )
    .bind(code)
    .fetch_optional(pool)
    .await
}

/// Ten characters of `A-Z a-z 0-9`: about 59 bits, unguessable in practice.
fn short_code() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..SHORT_CODE_CHARS)
        .map(|_| char::from(ALPHABET[rand::random_range(0..ALPHABET.len())]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> LinkKey {
        LinkKey::new(vec![3; 32]).unwrap()
    }

    #[test]
    fn a_feed_token_grants_its_one_recipient_until_it_expires() {
        let links = Links::with_key(key(), &LinksConfig::default());
        let tenant = TenantId::parse("acme").unwrap();
        let ada = RecipientId::parse("ada").unwrap();
        let (token, expires_at) = links.issue_feed_token(&tenant, &ada, TimeDelta::hours(1));
        assert!(token.starts_with(FEED_TOKEN_PREFIX), "{token}");
        let grant = links.verify_feed_token(&token).unwrap();
        assert_eq!(
            (grant.tenant_id, grant.recipient_id),
            (tenant.clone(), ada.clone())
        );
        assert_eq!(grant.expires_at.timestamp(), expires_at.timestamp());
        // Longer than allowed is cut to the maximum.
        let (_, capped) = links.issue_feed_token(&tenant, &ada, TimeDelta::days(30));
        assert!(capped <= Utc::now() + TimeDelta::days(1));
        // Without the prefix, or a link token of another kind: refused.
        let bare = token.strip_prefix(FEED_TOKEN_PREFIX).unwrap();
        assert_eq!(links.verify_feed_token(bare), Err(LinkError::Malformed));
        let open = links.open_url(&tenant, NotificationId::new());
        let open = open.path_segments().unwrap().next_back().unwrap();
        assert_eq!(
            links.verify_feed_token(&format!("{FEED_TOKEN_PREFIX}{open}")),
            Err(LinkError::WrongKind)
        );
        // Expired: a zero lifetime is over at once.
        let (expired, _) = links.issue_feed_token(&tenant, &ada, TimeDelta::zero());
        assert!(matches!(
            links.verify_feed_token(&expired),
            Err(LinkError::Expired { .. })
        ));
    }

    #[test]
    fn a_short_secret_is_refused_by_name() {
        let error = toml::from_str::<LinksConfig>("secret = \"too short\"")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("links.secret must be at least 32"),
            "{error}"
        );
        let config: LinksConfig =
            toml::from_str(&format!("secret = \"{}\"", "s".repeat(32))).unwrap();
        assert_eq!(
            format!("{:?}", config.secret),
            "Some(LinkSecret(<redacted>))"
        );
    }

    #[test]
    fn the_public_url_defaults_to_the_listen_address() {
        let mut config = LinksConfig::default();
        config.default_base_url_from("0.0.0.0:9000".parse().unwrap());
        assert_eq!(
            config.public_base_url.as_ref().map(HttpUrl::as_str),
            Some("http://127.0.0.1:9000/")
        );
        let mut configured = LinksConfig {
            public_base_url: Some(HttpUrl::parse("https://mail.example/herald/").unwrap()),
            ..LinksConfig::default()
        };
        configured.default_base_url_from("10.0.0.1:80".parse().unwrap());
        let links = Links::with_key(key(), &configured);
        let tenant = TenantId::parse("acme").unwrap();
        let url = links.open_url(&tenant, NotificationId::new());
        assert!(
            url.as_str()
                .starts_with("https://mail.example/herald/t/o/2."),
            "{url}"
        );
        assert_eq!(
            links.short_url("aZ09bY18cX").as_str(),
            "https://mail.example/herald/s/aZ09bY18cX"
        );
    }

    #[test]
    fn links_verify_what_they_signed() {
        let links = Links::with_key(key(), &LinksConfig::default());
        let tenant = TenantId::parse("acme").unwrap();
        let target = HttpUrl::parse("https://shop.example/p").unwrap();
        let url = links.click_url(&tenant, None, &target);
        let token = url.path().trim_start_matches("/t/c/");
        let claims = links.verify(token, LinkKind::Click).unwrap();
        assert_eq!(claims.url, Some(target));
        assert!(claims.expires_at > Utc::now() + TimeDelta::days(179));
        assert_eq!(
            links.verify(token, LinkKind::Open),
            Err(LinkError::WrongKind)
        );
    }

    #[test]
    fn short_codes_are_valid_codes() {
        for _ in 0..100 {
            assert!(crate::domain::signed_link::is_short_code(&short_code()));
        }
    }
}
