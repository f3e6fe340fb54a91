//! The `Tenant` aggregate: a tenant and its API keys.
//!
//! | command | legal when | records |
//! |---|---|---|
//! | Create | the tenant does not exist | TenantCreated |
//! | IssueApiKey | the tenant exists, the key id is new, at least one scope, a strong secret | ApiKeyIssued |
//! | RevokeApiKey | the key exists and is not revoked | ApiKeyRevoked |
//!
//! Only a key's SHA-256 is recorded. The secret is random and long, so a
//! plain hash suffices (no salt or stretching): there is no dictionary to
//! attack, and a lookup by hash stays one indexed read. Generating the secret
//! is the caller's job, as randomness is IO.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::aggregate::Aggregate;
use super::domain_error::DomainError;
use super::scope::Scope;
use super::sha256_hex::sha256_hex;
use super::tagged_payload::upcast_current;
use super::values::{ApiKeyId, DisplayName, TenantId};

/// Characters of the secret kept in clear, so people can tell keys apart.
pub const API_KEY_PREFIX_CHARS: usize = 8;
/// 32 characters of any reasonable alphabet carry well over 128 bits.
pub const MIN_API_KEY_SECRET_CHARS: usize = 32;
pub const MAX_API_KEY_SECRET_CHARS: usize = 256;

/// The hex SHA-256 of an API key's secret, as stored and looked up.
pub fn hash_api_key(secret: &str) -> String {
    sha256_hex(secret.as_bytes())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum TenantEvent {
    TenantCreated {
        tenant_id: TenantId,
        name: DisplayName,
    },
    ApiKeyIssued {
        key_id: ApiKeyId,
        name: DisplayName,
        scopes: Vec<Scope>,
        key_hash: String,
        prefix: String,
    },
    ApiKeyRevoked {
        key_id: ApiKeyId,
    },
}

impl TenantEvent {
    pub const SCHEMA_VERSION: i16 = 1;

    pub const EVENT_TYPES: [&'static str; 3] = ["TenantCreated", "ApiKeyIssued", "ApiKeyRevoked"];

    pub fn event_type(&self) -> &'static str {
        match self {
            TenantEvent::TenantCreated { .. } => "TenantCreated",
            TenantEvent::ApiKeyIssued { .. } => "ApiKeyIssued",
            TenantEvent::ApiKeyRevoked { .. } => "ApiKeyRevoked",
        }
    }

    /// Reads a stored event of any schema version into today's shape.
    pub fn upcast(
        event_type: &str,
        schema_version: i16,
        payload: Value,
    ) -> Result<TenantEvent, DomainError> {
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
pub enum TenantCommand {
    Create {
        tenant_id: TenantId,
        name: DisplayName,
    },
    IssueApiKey {
        key_id: ApiKeyId,
        name: DisplayName,
        scopes: Vec<Scope>,
        /// Shown to the caller once and never recorded.
        secret: String,
    },
    RevokeApiKey {
        key_id: ApiKeyId,
    },
}

/// An issued key as the tenant knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub name: DisplayName,
    /// Sorted, without duplicates.
    pub scopes: Vec<Scope>,
    pub key_hash: String,
    pub prefix: String,
    pub revoked: bool,
}

impl ApiKey {
    /// Whether this key may perform an action that needs `required`.
    pub fn allows(&self, required: Scope) -> bool {
        !self.revoked && self.scopes.iter().any(|scope| scope.allows(required))
    }
}

/// A tenant's state; `Default` is one not yet created.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tenant {
    profile: Option<(TenantId, DisplayName)>,
    keys: BTreeMap<ApiKeyId, ApiKey>,
}

impl Tenant {
    pub fn id(&self) -> Option<&TenantId> {
        self.profile.as_ref().map(|(id, _)| id)
    }

    pub fn name(&self) -> Option<&DisplayName> {
        self.profile.as_ref().map(|(_, name)| name)
    }

    pub fn api_key(&self, key_id: ApiKeyId) -> Option<&ApiKey> {
        self.keys.get(&key_id)
    }

    pub fn api_keys(&self) -> impl Iterator<Item = (ApiKeyId, &ApiKey)> {
        self.keys.iter().map(|(id, key)| (*id, key))
    }

    pub fn apply(&mut self, event: &TenantEvent) {
        match event {
            TenantEvent::TenantCreated { tenant_id, name } => {
                self.profile = Some((tenant_id.clone(), name.clone()));
            }
            TenantEvent::ApiKeyIssued {
                key_id,
                name,
                scopes,
                key_hash,
                prefix,
            } => {
                self.keys.insert(
                    *key_id,
                    ApiKey {
                        name: name.clone(),
                        scopes: scopes.clone(),
                        key_hash: key_hash.clone(),
                        prefix: prefix.clone(),
                        revoked: false,
                    },
                );
            }
            TenantEvent::ApiKeyRevoked { key_id } => {
                if let Some(key) = self.keys.get_mut(key_id) {
                    key.revoked = true;
                }
            }
        }
    }

    pub fn decide(&self, command: TenantCommand) -> Result<Vec<TenantEvent>, DomainError> {
        match command {
            TenantCommand::Create { tenant_id, name } => {
                if self.profile.is_some() {
                    return Err(DomainError::TenantAlreadyCreated);
                }
                Ok(vec![TenantEvent::TenantCreated { tenant_id, name }])
            }
            TenantCommand::IssueApiKey {
                key_id,
                name,
                mut scopes,
                secret,
            } => {
                if self.profile.is_none() {
                    return Err(DomainError::TenantNotCreated);
                }
                if self.keys.contains_key(&key_id) {
                    return Err(DomainError::ApiKeyAlreadyIssued(key_id));
                }
                scopes.sort();
                scopes.dedup();
                if scopes.is_empty() {
                    return Err(DomainError::InvalidCommand(
                        "an API key needs at least one scope",
                    ));
                }
                let length = secret.chars().count();
                if !(MIN_API_KEY_SECRET_CHARS..=MAX_API_KEY_SECRET_CHARS).contains(&length)
                    || !secret.chars().all(|c| c.is_ascii_graphic())
                {
                    return Err(DomainError::InvalidCommand(
                        "an API key secret must be 32 to 256 printable ASCII characters",
                    ));
                }
                Ok(vec![TenantEvent::ApiKeyIssued {
                    key_id,
                    name,
                    scopes,
                    key_hash: hash_api_key(&secret),
                    prefix: secret.chars().take(API_KEY_PREFIX_CHARS).collect(),
                }])
            }
            TenantCommand::RevokeApiKey { key_id } => {
                if self.profile.is_none() {
                    return Err(DomainError::TenantNotCreated);
                }
                match self.keys.get(&key_id) {
                    None => Err(DomainError::UnknownApiKey(key_id)),
                    Some(key) if key.revoked => Err(DomainError::ApiKeyAlreadyRevoked(key_id)),
                    Some(_) => Ok(vec![TenantEvent::ApiKeyRevoked { key_id }]),
                }
            }
        }
    }
}

impl Aggregate for Tenant {
    type Command = TenantCommand;
    type Event = TenantEvent;
    type Error = DomainError;

    fn apply(&mut self, event: &TenantEvent) {
        Tenant::apply(self, event);
    }

    /// Tenant rules do not depend on the time.
    fn decide(
        &self,
        command: TenantCommand,
        _now: DateTime<Utc>,
    ) -> Result<Vec<TenantEvent>, DomainError> {
        Tenant::decide(self, command)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::given_when_then::given;

    const SECRET: &str = "hk_live_0123456789abcdefghijklmnopqrstuv";

    fn acme() -> TenantId {
        TenantId::parse("acme").unwrap()
    }

    fn name(s: &str) -> DisplayName {
        DisplayName::parse(s).unwrap()
    }

    fn key_id() -> ApiKeyId {
        ApiKeyId::from(uuid::Uuid::from_u128(7))
    }

    fn created() -> TenantEvent {
        TenantEvent::TenantCreated {
            tenant_id: acme(),
            name: name("Acme"),
        }
    }

    fn issued() -> TenantEvent {
        TenantEvent::ApiKeyIssued {
            key_id: key_id(),
            name: name("ci"),
            scopes: vec![Scope::Send, Scope::Read],
            key_hash: hash_api_key(SECRET),
            prefix: "hk_live_".into(),
        }
    }

    fn issue(scopes: Vec<Scope>, secret: &str) -> TenantCommand {
        TenantCommand::IssueApiKey {
            key_id: key_id(),
            name: name("ci"),
            scopes,
            secret: secret.into(),
        }
    }

    #[test]
    fn create_a_new_tenant() {
        given::<Tenant>([])
            .when(TenantCommand::Create {
                tenant_id: acme(),
                name: name("Acme"),
            })
            .then([created()]);
    }

    #[test]
    fn create_twice_is_refused() {
        given::<Tenant>([created()])
            .when(TenantCommand::Create {
                tenant_id: acme(),
                name: name("Acme"),
            })
            .then_error(DomainError::TenantAlreadyCreated);
    }

    #[test]
    fn issue_records_the_hash_and_prefix_never_the_secret() {
        given::<Tenant>([created()])
            .when(issue(vec![Scope::Read, Scope::Send, Scope::Read], SECRET))
            .then([issued()]);
    }

    #[test]
    fn issue_before_create_is_refused() {
        given::<Tenant>([])
            .when(issue(vec![Scope::Send], SECRET))
            .then_error(DomainError::TenantNotCreated);
    }

    #[test]
    fn issue_with_a_used_key_id_is_refused() {
        given::<Tenant>([created(), issued()])
            .when(issue(vec![Scope::Send], SECRET))
            .then_error(DomainError::ApiKeyAlreadyIssued(key_id()));
    }

    #[test]
    fn issue_without_scopes_or_with_a_weak_secret_is_refused() {
        given::<Tenant>([created()])
            .when(issue(vec![], SECRET))
            .then_error(DomainError::InvalidCommand(
                "an API key needs at least one scope",
            ));
        given::<Tenant>([created()])
            .when(issue(vec![Scope::Send], "short"))
            .then_error(DomainError::InvalidCommand(
                "an API key secret must be 32 to 256 printable ASCII characters",
            ));
    }

    #[test]
    fn revoke_an_issued_key() {
        given::<Tenant>([created(), issued()])
            .when(TenantCommand::RevokeApiKey { key_id: key_id() })
            .then([TenantEvent::ApiKeyRevoked { key_id: key_id() }]);
    }

    #[test]
    fn revoke_an_unknown_key_is_refused() {
        given::<Tenant>([created()])
            .when(TenantCommand::RevokeApiKey { key_id: key_id() })
            .then_error(DomainError::UnknownApiKey(key_id()));
    }

    #[test]
    fn revoke_twice_is_refused() {
        given::<Tenant>([
            created(),
            issued(),
            TenantEvent::ApiKeyRevoked { key_id: key_id() },
        ])
        .when(TenantCommand::RevokeApiKey { key_id: key_id() })
        .then_error(DomainError::ApiKeyAlreadyRevoked(key_id()));
    }

    #[test]
    fn revoked_keys_allow_nothing_and_admin_allows_everything() {
        let mut tenant = Tenant::fold(&[created(), issued()]);
        let key = tenant.api_key(key_id()).unwrap();
        assert!(key.allows(Scope::Send) && !key.allows(Scope::Ops));
        tenant.apply(&TenantEvent::ApiKeyRevoked { key_id: key_id() });
        assert!(!tenant.api_key(key_id()).unwrap().allows(Scope::Send));

        let admin = ApiKey {
            scopes: vec![Scope::Admin],
            revoked: false,
            ..tenant.api_key(key_id()).unwrap().clone()
        };
        assert!(Scope::ALL.into_iter().all(|scope| admin.allows(scope)));
    }

    #[test]
    fn every_event_round_trips_through_upcast() {
        for event in [
            created(),
            issued(),
            TenantEvent::ApiKeyRevoked { key_id: key_id() },
        ] {
            let payload = serde_json::to_value(&event).unwrap();
            assert_eq!(
                TenantEvent::upcast(event.event_type(), TenantEvent::SCHEMA_VERSION, payload),
                Ok(event)
            );
        }
        assert!(TenantEvent::upcast("TenantDeleted", 1, serde_json::json!({})).is_err());
    }

    #[test]
    fn hashes_are_hex_sha256() {
        let hash = hash_api_key(SECRET);
        assert_eq!(hash.len(), 64);
        assert!(hash.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(
            hash,
            hash_api_key("hk_live_0123456789abcdefghijklmnopqrstuw")
        );
    }
}
