//! The per-tenant suppression list: addresses never to send to, and why.
//!
//! Each suppressed address is its own small aggregate, so adding one never
//! loads the whole list, and two receipts for one address race on one
//! stream instead of duplicating the entry.
//!
//! | command | legal when | records |
//! |---|---|---|
//! | Add | always | AddressSuppressed; nothing when already on the list (the first reason stands) |
//! | Remove | the address is on the list | AddressUnsuppressed |
//!
//! Addresses compare in a canonical form: an email address ignores case (the
//! way mailbox providers treat it in practice, so `Ada@X.com` bouncing
//! suppresses `ada@x.com`), a phone number is compared in E.164.

use std::fmt;
use std::hash::{Hash, Hasher};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::aggregate::Aggregate;
use super::domain_error::DomainError;
use super::sha256_hex::sha256_hex;
use super::tagged_payload::upcast_current;
use super::validation_errors::ValidationErrors;
use super::values::{Channel, EmailAddress, PhoneNumber, TenantId, ValueError};

pub const MAX_NOTE_CHARS: usize = 500;

/// An address that can be on the list: the channels whose addresses belong
/// to a person and can bounce or complain.
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "channel", content = "address", rename_all = "snake_case")]
pub enum SuppressedAddress {
    Email(EmailAddress),
    #[serde(rename = "sms")]
    Phone(PhoneNumber),
}

impl SuppressedAddress {
    /// Reads `raw` as an address of `channel`; without a channel, a leading
    /// `+` means a phone number and anything else an email address.
    pub fn parse(raw: &str, channel: Option<Channel>) -> Result<SuppressedAddress, ValueError> {
        let raw = raw.trim();
        match channel {
            Some(Channel::Email) => EmailAddress::parse(raw).map(SuppressedAddress::Email),
            Some(Channel::Sms) => PhoneNumber::parse(raw).map(SuppressedAddress::Phone),
            Some(other) => Err(ValueError::Invalid(format!(
                "only email and sms addresses can be suppressed, not {other}"
            ))),
            None if raw.starts_with('+') => PhoneNumber::parse(raw).map(SuppressedAddress::Phone),
            None => EmailAddress::parse(raw).map(SuppressedAddress::Email),
        }
    }

    pub fn channel(&self) -> Channel {
        match self {
            SuppressedAddress::Email(_) => Channel::Email,
            SuppressedAddress::Phone(_) => Channel::Sms,
        }
    }

    /// The address as given.
    pub fn as_str(&self) -> &str {
        match self {
            SuppressedAddress::Email(email) => email.as_str(),
            SuppressedAddress::Phone(phone) => phone.as_str(),
        }
    }

    /// The canonical form addresses are compared and stored by.
    pub fn key(&self) -> String {
        match self {
            SuppressedAddress::Email(email) => format!("email:{}", email.as_str().to_lowercase()),
            SuppressedAddress::Phone(phone) => format!("sms:{}", phone.as_str()),
        }
    }
}

impl PartialEq for SuppressedAddress {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for SuppressedAddress {}

impl Hash for SuppressedAddress {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

/// Never shows the address: it is personal data and ends up in logs.
impl fmt::Debug for SuppressedAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SuppressedAddress::Email(email) => write!(f, "Email({email:?})"),
            SuppressedAddress::Phone(phone) => write!(f, "Phone({phone:?})"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SuppressionReason {
    HardBounce,
    Complaint,
    Manual,
    Unsubscribe,
}

impl SuppressionReason {
    pub const ALL: [SuppressionReason; 4] = [
        SuppressionReason::HardBounce,
        SuppressionReason::Complaint,
        SuppressionReason::Manual,
        SuppressionReason::Unsubscribe,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SuppressionReason::HardBounce => "hard_bounce",
            SuppressionReason::Complaint => "complaint",
            SuppressionReason::Manual => "manual",
            SuppressionReason::Unsubscribe => "unsubscribe",
        }
    }

    pub fn parse(s: &str) -> Result<SuppressionReason, ValueError> {
        Self::ALL
            .into_iter()
            .find(|reason| reason.as_str() == s)
            .ok_or_else(|| ValueError::Invalid(format!("unknown suppression reason {s:?}")))
    }
}

impl fmt::Display for SuppressionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A manual entry as received (GraphQL `addSuppression`).
#[derive(Debug, Clone, Default)]
pub struct AddSuppression {
    pub address: String,
    pub channel: Option<Channel>,
    pub reason: Option<SuppressionReason>,
    pub note: Option<String>,
}

/// A valid entry to add.
#[derive(Debug, Clone, PartialEq)]
pub struct SuppressionSpec {
    pub address: SuppressedAddress,
    pub reason: SuppressionReason,
    pub note: Option<String>,
}

impl AddSuppression {
    /// Every refused field at once; the reason defaults to `manual`.
    pub fn parse(self) -> Result<SuppressionSpec, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let address = errors.check(
            "address",
            SuppressedAddress::parse(&self.address, self.channel),
        );
        let note = errors.check("note", parse_note(self.note));
        match (address, note) {
            (Some(address), Some(note)) if errors.is_empty() => Ok(SuppressionSpec {
                address,
                reason: self.reason.unwrap_or(SuppressionReason::Manual),
                note,
            }),
            _ => Err(errors),
        }
    }
}

/// Trimmed; blank is none; bounded and free of control characters.
pub fn parse_note(note: Option<String>) -> Result<Option<String>, ValueError> {
    let Some(note) = note.map(|n| n.trim().to_string()).filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    if note.chars().count() > MAX_NOTE_CHARS {
        return Err(ValueError::too_many_chars(MAX_NOTE_CHARS));
    }
    if note.chars().any(char::is_control) {
        return Err(ValueError::Invalid(
            "must not contain control characters".into(),
        ));
    }
    Ok(Some(note))
}

/// The stream of one address of one tenant. The address is hashed: stream
/// ids appear in logs and indexes, addresses must not.
pub fn stream_id(tenant_id: &TenantId, address: &SuppressedAddress) -> String {
    let digest = sha256_hex(format!("{}\n{}", tenant_id.as_str(), address.key()).as_bytes());
    format!("suppression-{}-{}", tenant_id.as_str(), &digest[..32])
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum SuppressionEvent {
    #[serde(rename = "AddressSuppressed")]
    Added {
        tenant_id: TenantId,
        address: SuppressedAddress,
        reason: SuppressionReason,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
        at: DateTime<Utc>,
    },
    #[serde(rename = "AddressUnsuppressed")]
    Removed {
        address: SuppressedAddress,
        at: DateTime<Utc>,
    },
}

impl SuppressionEvent {
    pub const SCHEMA_VERSION: i16 = 1;

    pub const EVENT_TYPES: [&'static str; 2] = ["AddressSuppressed", "AddressUnsuppressed"];

    pub fn event_type(&self) -> &'static str {
        match self {
            SuppressionEvent::Added { .. } => "AddressSuppressed",
            SuppressionEvent::Removed { .. } => "AddressUnsuppressed",
        }
    }

    /// Reads a stored event of any schema version into today's shape.
    pub fn upcast(
        event_type: &str,
        schema_version: i16,
        payload: Value,
    ) -> Result<SuppressionEvent, DomainError> {
        upcast_current(
            event_type,
            schema_version,
            payload,
            &Self::EVENT_TYPES,
            Self::SCHEMA_VERSION,
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum SuppressionCommand {
    Add {
        tenant_id: TenantId,
        spec: SuppressionSpec,
    },
    Remove,
}

/// An address's entry on the list, while it is on it.
#[derive(Debug, Clone, PartialEq)]
pub struct SuppressionEntry {
    pub address: SuppressedAddress,
    pub reason: SuppressionReason,
    pub note: Option<String>,
    pub since: DateTime<Utc>,
}

/// One address's place on a tenant's list; `Default` is not on it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Suppression {
    entry: Option<SuppressionEntry>,
}

impl Suppression {
    pub fn entry(&self) -> Option<&SuppressionEntry> {
        self.entry.as_ref()
    }
}

impl Aggregate for Suppression {
    type Command = SuppressionCommand;
    type Event = SuppressionEvent;
    type Error = DomainError;

    fn apply(&mut self, event: &SuppressionEvent) {
        match event {
            SuppressionEvent::Added {
                address,
                reason,
                note,
                at,
                ..
            } => {
                self.entry = Some(SuppressionEntry {
                    address: address.clone(),
                    reason: *reason,
                    note: note.clone(),
                    since: *at,
                });
            }
            SuppressionEvent::Removed { .. } => self.entry = None,
        }
    }

    fn decide(
        &self,
        command: SuppressionCommand,
        now: DateTime<Utc>,
    ) -> Result<Vec<SuppressionEvent>, DomainError> {
        match command {
            // A second bounce or a repeated manual add changes nothing: the
            // address is already never sent to.
            SuppressionCommand::Add { .. } if self.entry.is_some() => Ok(Vec::new()),
            SuppressionCommand::Add { tenant_id, spec } => Ok(vec![SuppressionEvent::Added {
                tenant_id,
                address: spec.address,
                reason: spec.reason,
                note: spec.note,
                at: now,
            }]),
            SuppressionCommand::Remove => match &self.entry {
                Some(entry) => Ok(vec![SuppressionEvent::Removed {
                    address: entry.address.clone(),
                    at: now,
                }]),
                None => Err(DomainError::InvalidCommand(
                    "the address is not on the suppression list",
                )),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::domain::given_when_then::given;
    use crate::domain::test_fixtures::{minute, t0};

    fn tenant() -> TenantId {
        TenantId::parse("acme").unwrap()
    }

    fn email(raw: &str) -> SuppressedAddress {
        SuppressedAddress::parse(raw, None).unwrap()
    }

    fn spec(reason: SuppressionReason) -> SuppressionSpec {
        SuppressionSpec {
            address: email("ada@example.com"),
            reason,
            note: None,
        }
    }

    fn added(reason: SuppressionReason) -> SuppressionEvent {
        SuppressionEvent::Added {
            tenant_id: tenant(),
            address: email("ada@example.com"),
            reason,
            note: None,
            at: t0(),
        }
    }

    #[test]
    fn add_records_the_entry_once() {
        given::<Suppression>([])
            .when(SuppressionCommand::Add {
                tenant_id: tenant(),
                spec: spec(SuppressionReason::HardBounce),
            })
            .then([added(SuppressionReason::HardBounce)]);
        given::<Suppression>([added(SuppressionReason::HardBounce)])
            .when(SuppressionCommand::Add {
                tenant_id: tenant(),
                spec: spec(SuppressionReason::Complaint),
            })
            .then_nothing();
    }

    #[test]
    fn remove_needs_an_entry_and_allows_a_new_one() {
        given::<Suppression>([])
            .when(SuppressionCommand::Remove)
            .then_error(DomainError::InvalidCommand(
                "the address is not on the suppression list",
            ));
        given::<Suppression>([added(SuppressionReason::Manual)])
            .when(SuppressionCommand::Remove)
            .then([SuppressionEvent::Removed {
                address: email("ada@example.com"),
                at: t0(),
            }]);
        let removed = SuppressionEvent::Removed {
            address: email("ada@example.com"),
            at: minute(1),
        };
        given::<Suppression>([added(SuppressionReason::Manual), removed])
            .when(SuppressionCommand::Add {
                tenant_id: tenant(),
                spec: spec(SuppressionReason::Unsubscribe),
            })
            .then([added(SuppressionReason::Unsubscribe)]);
    }

    #[test]
    fn addresses_compare_in_canonical_form() {
        assert_eq!(email("Ada@Example.COM"), email("ada@example.com"));
        assert_eq!(
            SuppressedAddress::parse("+1 (415) 555-2671", None).unwrap(),
            SuppressedAddress::parse("+14155552671", Some(Channel::Sms)).unwrap()
        );
        let mut map = HashMap::new();
        map.insert(email("ADA@example.com"), SuppressionReason::Manual);
        assert_eq!(
            map.get(&email("ada@example.com")),
            Some(&SuppressionReason::Manual)
        );
        assert_eq!(
            stream_id(&tenant(), &email("Ada@example.com")),
            stream_id(&tenant(), &email("ada@example.com"))
        );
        assert!(!stream_id(&tenant(), &email("ada@example.com")).contains("ada"));
    }

    #[test]
    fn parse_names_every_bad_field() {
        let errors = AddSuppression {
            address: "not an address".into(),
            note: Some("x".repeat(MAX_NOTE_CHARS + 1)),
            ..Default::default()
        }
        .parse()
        .unwrap_err();
        assert_eq!(errors.at("address").len(), 1);
        assert_eq!(errors.at("note"), ["must be at most 500 characters"]);
        let errors = AddSuppression {
            address: "ada@example.com".into(),
            channel: Some(Channel::Push),
            ..Default::default()
        }
        .parse()
        .unwrap_err();
        assert_eq!(
            errors.at("address"),
            ["only email and sms addresses can be suppressed, not push"]
        );
        let ok = AddSuppression {
            address: " ada@example.com ".into(),
            note: Some("  ".into()),
            ..Default::default()
        }
        .parse()
        .unwrap();
        assert_eq!(ok.reason, SuppressionReason::Manual);
        assert_eq!(ok.note, None);
    }

    #[test]
    fn debug_never_shows_the_address() {
        let shown = format!("{:?}", added(SuppressionReason::Manual));
        assert!(!shown.contains("ada"), "{shown}");
    }

    #[test]
    fn every_event_round_trips_through_upcast() {
        for event in [
            added(SuppressionReason::Complaint),
            SuppressionEvent::Added {
                tenant_id: tenant(),
                address: SuppressedAddress::parse("+447700900123", None).unwrap(),
                reason: SuppressionReason::Manual,
                note: Some("asked by phone".into()),
                at: t0(),
            },
            SuppressionEvent::Removed {
                address: email("ada@example.com"),
                at: minute(2),
            },
        ] {
            let payload = serde_json::to_value(&event).unwrap();
            assert_eq!(
                SuppressionEvent::upcast(event.event_type(), 1, payload),
                Ok(event)
            );
        }
        let payload = serde_json::to_value(added(SuppressionReason::HardBounce)).unwrap();
        assert_eq!(payload["address"]["channel"], "email");
        assert_eq!(payload["reason"], "hard_bounce");
    }
}
