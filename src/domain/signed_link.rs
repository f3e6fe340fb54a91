//! Signed, expiring link tokens (HMAC-SHA256) for unsubscribe, preference and
//! tracking links; the tenant's tracking settings and short links; and what a
//! tracking request may keep about its client.
//!
//! A token is `2.<sealed>`: a version, then in base64url a 12-byte nonce and
//! the claims as compact JSON sealed with AES-256-GCM-SIV. The claims are
//! encrypted, not only signed, so a link in a forwarded email shows nobody
//! the address, recipient or tenant it acts on. The nonce is an HMAC of the
//! claims (a synthetic IV), which keeps signing pure and deterministic;
//! GCM-SIV stays safe if two equal claims meet the same nonce. Both keys are
//! derived from the one link key. Everything a link acts on (tenant,
//! notification, recipient, address, category, target URL) is inside the
//! sealed payload, so a link can only do what Herald sealed; nothing is read
//! from the query string.
//!
//! Version 1 tokens (`1.<payload>.<mac>`, claims in clear under an
//! HMAC-SHA256) are still accepted until they expire, because unsubscribe
//! links already delivered must keep working; they are no longer issued.

use std::fmt;
use std::net::IpAddr;

use aws_lc_rs::aead::{self, AES_256_GCM_SIV, Aad, LessSafeKey, Nonce, UnboundKey};
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

/// The token format this code writes.
const VERSION: &str = "2";
/// The format before claims were encrypted: still verified, never written.
const LEGACY_VERSION: &str = "1";
/// Bound to every sealed token, so a ciphertext made for another purpose
/// with the same key never opens as a link.
const AAD: &[u8] = b"herald-link-2";
const NONCE_BYTES: usize = aead::NONCE_LEN;
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

    /// A subkey for one purpose, HMAC(key, purpose): the sealing and nonce
    /// keys never equal each other or the legacy MAC key.
    fn subkey(&self, purpose: &[u8]) -> [u8; 32] {
        let mut mac = self.mac();
        mac.update(purpose);
        mac.finalize().into_bytes().into()
    }

    fn sealing_key(&self) -> LessSafeKey {
        let key = UnboundKey::new(&AES_256_GCM_SIV, &self.subkey(b"herald-link-2 seal"))
            .expect("32 bytes is an AES-256 key");
        LessSafeKey::new(key)
    }

    /// The synthetic nonce of `plaintext`.
    fn nonce_for(&self, plaintext: &[u8]) -> [u8; NONCE_BYTES] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.subkey(b"herald-link-2 nonce"))
            .expect("HMAC takes a key of any length");
        mac.update(plaintext);
        let digest = mac.finalize().into_bytes();
        let mut nonce = [0u8; NONCE_BYTES];
        nonce.copy_from_slice(&digest[..NONCE_BYTES]);
        nonce
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
    /// A browser's credential for one recipient's in-app feed (never a page).
    #[serde(rename = "f")]
    Feed,
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

    /// Lets a browser read and mark `recipient_id`'s in-app feed, nothing else.
    pub fn feed(
        tenant_id: TenantId,
        recipient_id: RecipientId,
        expires_at: DateTime<Utc>,
    ) -> LinkClaims {
        LinkClaims {
            kind: LinkKind::Feed,
            tenant_id,
            notification_id: None,
            recipient_id: Some(recipient_id),
            address: None,
            category: None,
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
        let mut sealed = serde_json::to_vec(&wire).expect("claims always serialise");
        let nonce = key.nonce_for(&sealed);
        key.sealing_key()
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(AAD),
                &mut sealed,
            )
            .expect("sealing a short payload cannot fail");
        let mut blob = nonce.to_vec();
        blob.append(&mut sealed);
        format!("{VERSION}.{}", URL_SAFE_NO_PAD.encode(blob))
    }

    /// The claims of a token Herald signed with `key` for a link of `kind`,
    /// still valid at `now`. The seal (or a legacy token's signature) is
    /// checked before anything in the payload is read.
    pub fn verify(
        token: &str,
        kind: LinkKind,
        key: &LinkKey,
        now: DateTime<Utc>,
    ) -> Result<LinkClaims, LinkError> {
        if token.len() > MAX_TOKEN_CHARS {
            return Err(LinkError::Malformed);
        }
        let (version, rest) = token.split_once('.').ok_or(LinkError::Malformed)?;
        let json = match version {
            VERSION => open(rest, key)?,
            LEGACY_VERSION => verify_legacy(token, key)?,
            _ => return Err(LinkError::UnsupportedVersion),
        };
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

/// The claims' JSON of a version 2 token's sealed part.
fn open(sealed: &str, key: &LinkKey) -> Result<Vec<u8>, LinkError> {
    let mut blob = URL_SAFE_NO_PAD
        .decode(sealed)
        .map_err(|_| LinkError::Malformed)?;
    if blob.len() < NONCE_BYTES + AES_256_GCM_SIV.tag_len() {
        return Err(LinkError::Malformed);
    }
    let mut sealed = blob.split_off(NONCE_BYTES);
    let nonce = Nonce::try_assume_unique_for_key(&blob).map_err(|_| LinkError::Malformed)?;
    let json = key
        .sealing_key()
        .open_in_place(nonce, Aad::from(AAD), &mut sealed)
        .map_err(|_| LinkError::BadSignature)?;
    Ok(json.to_vec())
}

/// The claims' JSON of a version 1 token (`1.<payload>.<mac>`), whose
/// HMAC is checked in constant time first.
fn verify_legacy(token: &str, key: &LinkKey) -> Result<Vec<u8>, LinkError> {
    let (signed, tag) = token.rsplit_once('.').ok_or(LinkError::Malformed)?;
    let (_, payload) = signed.split_once('.').ok_or(LinkError::Malformed)?;
    let tag = URL_SAFE_NO_PAD
        .decode(tag)
        .map_err(|_| LinkError::Malformed)?;
    let mut mac = key.mac();
    mac.update(signed.as_bytes());
    mac.verify_slice(&tag)
        .map_err(|_| LinkError::BadSignature)?;
    URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| LinkError::Malformed)
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
            LinkKind::Preferences | LinkKind::Feed => self.r.is_some(),
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
            LinkClaims::feed(
                tenant(),
                RecipientId::parse("user-1").unwrap(),
                t0() + TimeDelta::hours(1),
            ),
        ] {
            let token = claims.sign(&key());
            assert!(token.starts_with("2."), "{token}");
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
    fn a_token_shows_nothing_of_what_it_acts_on() {
        let token = unsubscribe().sign(&key());
        let (_, sealed) = token.split_once('.').unwrap();
        let bytes = URL_SAFE_NO_PAD.decode(sealed).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for secret in [
            "ada@example.com",
            "ada",
            "user-1",
            "billing",
            tenant().as_str(),
        ] {
            assert!(!text.contains(secret), "{secret} readable in {text:?}");
        }
        // Deterministic: the same claims make the same token.
        assert_eq!(token, unsubscribe().sign(&key()));
    }

    /// A token as Herald wrote them before claims were encrypted.
    fn legacy_token(claims: &LinkClaims) -> String {
        let wire = Wire {
            k: claims.kind,
            t: claims.tenant_id.clone(),
            n: claims.notification_id,
            r: claims.recipient_id.clone(),
            a: claims.address.as_ref().map(|a| a.as_str().to_string()),
            c: claims.category.clone(),
            u: claims.url.clone(),
            e: claims.expires_at.timestamp(),
        };
        let signed = format!(
            "1.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&wire).unwrap())
        );
        let mut mac = key().mac();
        mac.update(signed.as_bytes());
        format!(
            "{signed}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    }

    #[test]
    fn legacy_tokens_verify_until_they_expire_and_only_untampered() {
        let token = legacy_token(&unsubscribe());
        assert_eq!(
            LinkClaims::verify(&token, LinkKind::Unsubscribe, &key(), t0()),
            Ok(unsubscribe())
        );
        let (signed, tag) = token.rsplit_once('.').unwrap();
        let (_, payload) = signed.split_once('.').unwrap();
        let json = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        let forged = json.replace("ada@example.com", "eve@example.com");
        let forged = format!("1.{}.{tag}", URL_SAFE_NO_PAD.encode(forged));
        assert_eq!(
            LinkClaims::verify(&forged, LinkKind::Unsubscribe, &key(), t0()),
            Err(LinkError::BadSignature)
        );
        assert!(matches!(
            LinkClaims::verify(
                &token,
                LinkKind::Unsubscribe,
                &key(),
                t0() + TimeDelta::days(61)
            ),
            Err(LinkError::Expired { .. })
        ));
    }

    #[test]
    fn a_tampered_token_is_refused() {
        let token = click().sign(&key());
        let (_, sealed) = token.split_once('.').unwrap();
        let bytes = URL_SAFE_NO_PAD.decode(sealed).unwrap();
        // Any flipped bit, in the nonce, the ciphertext or the tag.
        for at in [0, NONCE_BYTES + 3, bytes.len() - 1] {
            let mut forged = bytes.clone();
            forged[at] ^= 1;
            let forged = format!("2.{}", URL_SAFE_NO_PAD.encode(forged));
            assert_eq!(
                LinkClaims::verify(&forged, LinkKind::Click, &key(), t0()),
                Err(LinkError::BadSignature),
                "bit flipped at {at}"
            );
        }
        // Another key.
        let other = LinkKey::new(vec![7; 32]).unwrap();
        assert_eq!(
            LinkClaims::verify(&token, LinkKind::Click, &other, t0()),
            Err(LinkError::BadSignature)
        );
        for junk in [
            "",
            "2",
            "2.x",
            "2.",
            "1..",
            "3.abc",
            "not a token",
            &"2.a".repeat(2000),
        ] {
            assert!(
                LinkClaims::verify(junk, LinkKind::Click, &key(), t0()).is_err(),
                "{junk:?}"
            );
        }
        assert_eq!(
            LinkClaims::verify("3.abc", LinkKind::Click, &key(), t0()),
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
