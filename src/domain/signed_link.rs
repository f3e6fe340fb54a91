//! Signed, expiring link tokens (HMAC-SHA256) for unsubscribe, preference and
//! tracking links; the tenant's tracking settings and short links; and what a
//! tracking request may keep about its client.
//!
//! A token is `1.<payload>.<mac>`: a version, the claims as compact JSON in
//! base64url, and the HMAC-SHA256 of `1.<payload>` in base64url. Everything a
//! link acts on (tenant, notification, recipient, address, category, target
//! URL) is inside the signed payload, so a link can only do what Herald
//! signed; nothing is read from the query string.

use std::fmt;
use std::net::IpAddr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, TimeZone, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;

use super::domain_error::DomainError;
use super::suppression::SuppressedAddress;
use super::tagged_payload::upcast_current;
use super::values::{Category, HttpUrl, NotificationId, RecipientId, TenantId};

/// The token format this code writes; older ones are refused by name.
const VERSION: &str = "1";
/// A key shorter than the hash's output weakens the MAC.
pub const MIN_KEY_BYTES: usize = 32;
/// The longest token accepted before any decoding work.
pub const MAX_TOKEN_CHARS: usize = 4096;
/// A user agent is kept up to this many characters.
pub const MAX_USER_AGENT_CHARS: usize = 512;

/// The secret that signs links. Debug never shows it.
#[derive(Clone)]
pub struct LinkKey(Vec<u8>);

impl LinkKey {
    pub fn new(bytes: Vec<u8>) -> Result<LinkKey, DomainError> {
        if bytes.len() < MIN_KEY_BYTES {
            return Err(DomainError::InvalidCommand(
                "a link signing key needs at least 32 bytes",
            ));
        }
        Ok(LinkKey(bytes))
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length")
    }
}

impl fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LinkKey(<redacted>)")
    }
}

/// What a link does when followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinkKind {
    /// `/u/{token}`: one-click unsubscribe.
    #[serde(rename = "u")]
    Unsubscribe,
    /// `/p/{token}`: the recipient's preference page.
    #[serde(rename = "p")]
    Preferences,
    /// `/t/o/{token}`: the open pixel.
    #[serde(rename = "o")]
    Open,
    /// `/t/c/{token}`: a tracked click, redirecting to the signed URL.
    #[serde(rename = "c")]
    Click,
}

/// What a token says; built by the constructors, which keep each kind's
/// required fields present.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkClaims {
    pub kind: LinkKind,
    pub tenant_id: TenantId,
    pub notification_id: Option<NotificationId>,
    pub recipient_id: Option<RecipientId>,
    pub address: Option<SuppressedAddress>,
    pub category: Option<Category>,
    pub url: Option<HttpUrl>,
    pub expires_at: DateTime<Utc>,
}

impl LinkClaims {
    /// Unsubscribes `address` (and, with an id, the recipient's preference)
    /// from `category`, or from everything without one.
    pub fn unsubscribe(
        tenant_id: TenantId,
        notification_id: Option<NotificationId>,
        recipient_id: Option<RecipientId>,
        address: SuppressedAddress,
        category: Option<Category>,
        expires_at: DateTime<Utc>,
    ) -> LinkClaims {
        LinkClaims {
            kind: LinkKind::Unsubscribe,
            tenant_id,
            notification_id,
            recipient_id,
            address: Some(address),
            category,
            url: None,
            expires_at,
        }
    }

    /// Opens the recipient's preference page; `category` is shown first.
    pub fn preferences(
        tenant_id: TenantId,
        recipient_id: RecipientId,
        category: Option<Category>,
        expires_at: DateTime<Utc>,
    ) -> LinkClaims {
        LinkClaims {
            kind: LinkKind::Preferences,
            tenant_id,
            notification_id: None,
            recipient_id: Some(recipient_id),
            address: None,
            category,
            url: None,
            expires_at,
        }
    }

    pub fn open(
        tenant_id: TenantId,
        notification_id: NotificationId,
        expires_at: DateTime<Utc>,
    ) -> LinkClaims {
        LinkClaims {
            kind: LinkKind::Open,
            tenant_id,
            notification_id: Some(notification_id),
            recipient_id: None,
            address: None,
            category: None,
            url: None,
            expires_at,
        }
    }

    /// A click to `url`, recorded on the notification when there is one.
    pub fn click(
        tenant_id: TenantId,
        notification_id: Option<NotificationId>,
        url: HttpUrl,
        expires_at: DateTime<Utc>,
    ) -> LinkClaims {
        LinkClaims {
            kind: LinkKind::Click,
            tenant_id,
            notification_id,
            recipient_id: None,
            address: None,
            category: None,
            url: Some(url),
            expires_at,
        }
    }

    /// The token for these claims.
    pub fn sign(&self, key: &LinkKey) -> String {
        let wire = Wire {
            k: self.kind,
            t: self.tenant_id.clone(),
            n: self.notification_id,
            r: self.recipient_id.clone(),
            a: self.address.as_ref().map(|a| a.as_str().to_string()),
            c: self.category.clone(),
            u: self.url.clone(),
            e: self.expires_at.timestamp(),
        };
        let json = serde_json::to_vec(&wire).expect("claims always serialise");
        let signed = format!("{VERSION}.{}", URL_SAFE_NO_PAD.encode(json));
        let mut mac = key.mac();
        mac.update(signed.as_bytes());
        let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signed}.{tag}")
    }

    /// The claims of a token Herald signed with `key` for a link of `kind`,
    /// still valid at `now`. The signature is checked (in constant time)
    /// before anything in the payload is read.
    pub fn verify(
        token: &str,
        kind: LinkKind,
        key: &LinkKey,
        now: DateTime<Utc>,
    ) -> Result<LinkClaims, LinkError> {
        if token.len() > MAX_TOKEN_CHARS {
            return Err(LinkError::Malformed);
        }
        let (signed, tag) = token.rsplit_once('.').ok_or(LinkError::Malformed)?;
        let (version, payload) = signed.split_once('.').ok_or(LinkError::Malformed)?;
        if version != VERSION {
            return Err(LinkError::UnsupportedVersion);
        }
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| LinkError::Malformed)?;
        let mut mac = key.mac();
        mac.update(signed.as_bytes());
        mac.verify_slice(&tag)
            .map_err(|_| LinkError::BadSignature)?;
        let json = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| LinkError::Malformed)?;
        let wire: Wire = serde_json::from_slice(&json).map_err(|_| LinkError::Malformed)?;
        let claims = wire.into_claims().ok_or(LinkError::Malformed)?;
        if claims.kind != kind {
            return Err(LinkError::WrongKind);
        }
        if claims.expires_at <= now {
            return Err(LinkError::Expired {
                expired_at: claims.expires_at,
            });
        }
        Ok(claims)
    }
}

/// The signed payload: short keys keep links short.
#[derive(Serialize, Deserialize)]
struct Wire {
    k: LinkKind,
    t: TenantId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    n: Option<NotificationId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    r: Option<RecipientId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    a: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    c: Option<Category>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    u: Option<HttpUrl>,
    /// Expiry in Unix seconds.
    e: i64,
}

impl Wire {
    /// `None` when a field a kind needs is missing: signed by a bug, or by
    /// a different Herald sharing the key.
    fn into_claims(self) -> Option<LinkClaims> {
        let address = match self.a {
            Some(raw) => Some(SuppressedAddress::parse(&raw, None).ok()?),
            None => None,
        };
        let complete = match self.k {
            LinkKind::Unsubscribe => address.is_some(),
            LinkKind::Preferences => self.r.is_some(),
            LinkKind::Open => self.n.is_some(),
            LinkKind::Click => self.u.is_some(),
        };
        complete.then_some(())?;
        Some(LinkClaims {
            kind: self.k,
            tenant_id: self.t,
            notification_id: self.n,
            recipient_id: self.r,
            address,
            category: self.c,
            url: self.u,
            expires_at: Utc.timestamp_opt(self.e, 0).single()?,
        })
    }
}

/// Why a link is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LinkError {
    #[error("the link is incomplete or not a Herald link")]
    Malformed,
    #[error("the link was made by a different version of Herald")]
    UnsupportedVersion,
    #[error("the link's signature does not match: it was altered")]
    BadSignature,
    #[error("the link is for a different page")]
    WrongKind,
    #[error("the link expired at {expired_at}")]
    Expired { expired_at: DateTime<Utc> },
}

/// What an open or click request says about its client, cut to what
/// analytics need: the user agent, and the network the request came from
/// (an IPv4 /24 or IPv6 /48), never the full address.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClientContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// e.g. `203.0.113.0/24`, `2001:db8:1::/48`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_prefix: Option<String>,
}

impl ClientContext {
    pub fn new(user_agent: Option<&str>, ip: Option<IpAddr>) -> ClientContext {
        let user_agent = user_agent
            .map(|agent| {
                agent
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(MAX_USER_AGENT_CHARS)
                    .collect::<String>()
            })
            .map(|agent| agent.trim().to_string())
            .filter(|agent| !agent.is_empty());
        ClientContext {
            user_agent,
            ip_prefix: ip.map(truncate_ip),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.user_agent.is_none() && self.ip_prefix.is_none()
    }
}

/// The network an address is in: IPv4 to /24, IPv6 to /48 (an IPv4-mapped
/// IPv6 address counts as IPv4).
pub fn truncate_ip(ip: IpAddr) -> String {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let network = std::net::Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0);
            format!("{network}/48")
        }
    }
}

/// Whether a tenant's emails carry an open pixel and tracked links. Both
/// are off until the tenant turns them on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackingSettings {
    pub opens: bool,
    pub clicks: bool,
}

/// Facts of a tenant's links: tracking settings (`tracking-settings-<tenant>`)
/// and short links (`short-link-<code>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum LinkEvent {
    #[serde(rename = "TrackingSettingsChanged")]
    TrackingSettingsChanged { opens: bool, clicks: bool },
    #[serde(rename = "ShortLinkCreated")]
    ShortLinkCreated {
        code: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        notification_id: Option<NotificationId>,
        url: HttpUrl,
        expires_at: DateTime<Utc>,
    },
}

impl LinkEvent {
    pub const SCHEMA_VERSION: i16 = 1;

    pub const EVENT_TYPES: [&'static str; 2] = ["TrackingSettingsChanged", "ShortLinkCreated"];

    pub fn event_type(&self) -> &'static str {
        match self {
            LinkEvent::TrackingSettingsChanged { .. } => "TrackingSettingsChanged",
            LinkEvent::ShortLinkCreated { .. } => "ShortLinkCreated",
        }
    }

    /// Reads a stored event of any schema version into today's shape.
    pub fn upcast(
        event_type: &str,
        schema_version: i16,
        payload: Value,
    ) -> Result<LinkEvent, DomainError> {
        upcast_current(
            event_type,
            schema_version,
            payload,
            &Self::EVENT_TYPES,
            Self::SCHEMA_VERSION,
        )
    }
}

/// A short link's code: the part after `/s/`.
pub const SHORT_CODE_CHARS: usize = 10;

/// Whether `code` can be a short link's code (checked before any lookup).
pub fn is_short_code(code: &str) -> bool {
    code.len() == SHORT_CODE_CHARS && code.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use chrono::TimeDelta;

    use super::*;
    use crate::domain::test_fixtures::{minute, notification_id, t0, tenant};

    fn key() -> LinkKey {
        LinkKey::new(b"0123456789abcdef0123456789abcdef".to_vec()).unwrap()
    }

    fn unsubscribe() -> LinkClaims {
        LinkClaims::unsubscribe(
            tenant(),
            Some(notification_id()),
            Some(RecipientId::parse("user-1").unwrap()),
            SuppressedAddress::parse("ada@example.com", None).unwrap(),
            Some(Category::parse("billing").unwrap()),
            t0() + TimeDelta::days(60),
        )
    }

    fn click() -> LinkClaims {
        LinkClaims::click(
            tenant(),
            Some(notification_id()),
            HttpUrl::parse("https://example.com/a?b=c").unwrap(),
            t0() + TimeDelta::days(1),
        )
    }

    #[test]
    fn a_signed_token_verifies_to_its_claims() {
        for claims in [
            unsubscribe(),
            click(),
            LinkClaims::open(tenant(), notification_id(), t0() + TimeDelta::days(1)),
            LinkClaims::preferences(
                tenant(),
                RecipientId::parse("user 42 / Zoë").unwrap(),
                None,
                t0() + TimeDelta::days(1),
            ),
        ] {
            let token = claims.sign(&key());
            assert!(token.starts_with("1."), "{token}");
            assert!(
                token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
                "{token} must be safe in a URL path"
            );
            assert_eq!(
                LinkClaims::verify(&token, claims.kind, &key(), t0()),
                Ok(claims)
            );
        }
    }

    #[test]
    fn a_tampered_token_is_refused() {
        let token = click().sign(&key());
        let (signed, tag) = token.rsplit_once('.').unwrap();
        let (_, payload) = signed.split_once('.').unwrap();
        // Another URL, re-encoded: the signature no longer matches.
        let json = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        let forged = json.replace("example.com", "evil.example");
        let forged = format!("1.{}.{tag}", URL_SAFE_NO_PAD.encode(forged));
        assert_eq!(
            LinkClaims::verify(&forged, LinkKind::Click, &key(), t0()),
            Err(LinkError::BadSignature)
        );
        // One flipped character of the signature.
        let mut flipped = token.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert!(LinkClaims::verify(&flipped, LinkKind::Click, &key(), t0()).is_err());
        // Another key.
        let other = LinkKey::new(vec![7; 32]).unwrap();
        assert_eq!(
            LinkClaims::verify(&token, LinkKind::Click, &other, t0()),
            Err(LinkError::BadSignature)
        );
        for junk in [
            "",
            "1",
            "1.x",
            "1..",
            "2.abc.def",
            "not a token",
            &"1.a".repeat(2000),
        ] {
            assert!(
                LinkClaims::verify(junk, LinkKind::Click, &key(), t0()).is_err(),
                "{junk:?}"
            );
        }
        assert_eq!(
            LinkClaims::verify("2.abc.def", LinkKind::Click, &key(), t0()),
            Err(LinkError::UnsupportedVersion)
        );
    }

    #[test]
    fn a_token_is_valid_only_until_it_expires_and_for_its_own_page() {
        let token = unsubscribe().sign(&key());
        let expiry = t0() + TimeDelta::days(60);
        assert!(
            LinkClaims::verify(
                &token,
                LinkKind::Unsubscribe,
                &key(),
                expiry - TimeDelta::seconds(1)
            )
            .is_ok()
        );
        assert_eq!(
            LinkClaims::verify(&token, LinkKind::Unsubscribe, &key(), expiry),
            Err(LinkError::Expired { expired_at: expiry })
        );
        assert_eq!(
            LinkClaims::verify(&token, LinkKind::Click, &key(), minute(1)),
            Err(LinkError::WrongKind)
        );
    }

    #[test]
    fn keys_must_be_long_and_never_show() {
        assert!(LinkKey::new(vec![1; 31]).is_err());
        assert_eq!(format!("{:?}", key()), "LinkKey(<redacted>)");
    }

    #[test]
    fn ip_addresses_are_truncated_to_their_network() {
        assert_eq!(
            truncate_ip(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 77))),
            "203.0.113.0/24"
        );
        assert_eq!(
            truncate_ip("2001:db8:85a3:8d3:1319:8a2e:370:7348".parse().unwrap()),
            "2001:db8:85a3::/48"
        );
        assert_eq!(
            truncate_ip(IpAddr::V6(Ipv4Addr::new(198, 51, 100, 9).to_ipv6_mapped())),
            "198.51.100.0/24"
        );
        assert_eq!(truncate_ip(IpAddr::V6(Ipv6Addr::LOCALHOST)), "::/48");
    }

    #[test]
    fn client_context_keeps_a_clean_bounded_user_agent() {
        let context = ClientContext::new(
            Some(&format!("Mozilla/5.0\r\n{}", "x".repeat(1000))),
            Some(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3))),
        );
        let agent = context.user_agent.as_deref().unwrap();
        assert!(!agent.contains('\n') && agent.chars().count() == MAX_USER_AGENT_CHARS);
        assert_eq!(context.ip_prefix.as_deref(), Some("10.1.2.0/24"));
        assert!(ClientContext::new(Some("  "), None).is_empty());
    }

    #[test]
    fn short_codes_are_ten_alphanumerics() {
        assert!(is_short_code("aZ09bY18cX"));
        for bad in ["", "short", "aZ09bY18cX1", "aZ09bY18c/", "aZ09bY18c."] {
            assert!(!is_short_code(bad), "{bad:?}");
        }
    }

    #[test]
    fn every_event_round_trips_through_upcast() {
        for event in [
            LinkEvent::TrackingSettingsChanged {
                opens: true,
                clicks: false,
            },
            LinkEvent::ShortLinkCreated {
                code: "aZ09bY18cX".into(),
                notification_id: Some(notification_id()),
                url: HttpUrl::parse("https://example.com/x").unwrap(),
                expires_at: t0(),
            },
        ] {
            let payload = serde_json::to_value(&event).unwrap();
            assert_eq!(LinkEvent::upcast(event.event_type(), 1, payload), Ok(event));
        }
    }
}
