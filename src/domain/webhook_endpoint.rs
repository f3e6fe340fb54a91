//! The `WebhookEndpoint` aggregate: a URL a tenant registered to receive
//! notification status callbacks, signed with the endpoint's secrets
//! (Standard Webhooks).
//!
//! | command | legal when | records |
//! |---|---|---|
//! | Create | the endpoint does not exist | WebhookEndpointCreated |
//! | RotateSecret | the endpoint exists and is not deleted | WebhookEndpointSecretRotated |
//! | Delete | the endpoint exists and is not deleted | WebhookEndpointDeleted |
//!
//! Unlike an API key, a signing secret cannot be stored as a hash: Herald
//! needs the secret itself to compute each HMAC. The events therefore carry
//! the secrets, and the log is their source of truth; the `webhook_endpoints`
//! table only mirrors them for fast lookup. Generating a secret is the
//! caller's job, as randomness is IO.

use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::aggregate::Aggregate;
use super::domain_error::DomainError;
use super::notification_event::NotificationEvent;
use super::tagged_payload::upcast_current;
use super::validation_errors::ValidationErrors;
use super::values::{HttpUrl, TenantId};

/// How long the previous secret stays valid after a rotation by default, so
/// receivers can switch over without dropping a callback.
pub const DEFAULT_ROTATION_GRACE: TimeDelta = TimeDelta::hours(24);
/// The longest grace a rotation may give the previous secret.
pub const MAX_ROTATION_GRACE: TimeDelta = TimeDelta::days(30);
pub const MAX_DESCRIPTION_CHARS: usize = 500;

/// A Standard Webhooks signing secret (`whsec_` and a base64 key). Debug
/// never shows it; only [`EndpointSecret::expose`] does.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EndpointSecret(String);

impl EndpointSecret {
    /// At least 24 characters after the prefix: a key of 18 bytes or more.
    pub fn parse(raw: &str) -> Result<EndpointSecret, DomainError> {
        let key = raw.strip_prefix("whsec_").unwrap_or_default();
        if key.len() < 24
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='))
        {
            return Err(DomainError::InvalidCommand(
                "a webhook secret must be whsec_ followed by a base64 key of at least 18 bytes",
            ));
        }
        Ok(EndpointSecret(raw.to_string()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for EndpointSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EndpointSecret(<redacted>)")
    }
}

/// What a tenant asks to register, as received; [`parse`](Self::parse) is
/// the only way to an [`EndpointSpec`].
#[derive(Debug, Clone, Default)]
pub struct CreateWebhookEndpoint {
    pub url: String,
    pub description: Option<String>,
    /// Notification event types (`NotificationSent`, ...); empty means all.
    pub event_types: Vec<String>,
}

/// A valid endpoint registration.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointSpec {
    pub url: HttpUrl,
    pub description: String,
    /// Known notification event types, sorted, without duplicates.
    pub event_types: Vec<String>,
}

impl CreateWebhookEndpoint {
    /// Every refused field at once, with its path.
    pub fn parse(self) -> Result<EndpointSpec, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let url = errors.check("url", HttpUrl::parse(self.url.trim()));
        let description = self.description.unwrap_or_default().trim().to_string();
        if description.chars().count() > MAX_DESCRIPTION_CHARS {
            errors.add(
                "description",
                format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
            );
        } else if description.chars().any(char::is_control) {
            errors.add("description", "must not contain control characters");
        }
        let mut event_types = Vec::new();
        for (index, event_type) in self.event_types.iter().enumerate() {
            if NotificationEvent::EVENT_TYPES.contains(&event_type.as_str()) {
                event_types.push(event_type.clone());
            } else {
                errors.add(
                    format!("event_types[{index}]"),
                    format!(
                        "unknown event type {event_type:?}; known types: {}",
                        NotificationEvent::EVENT_TYPES.join(", ")
                    ),
                );
            }
        }
        event_types.sort();
        event_types.dedup();
        match url {
            Some(url) if errors.is_empty() => Ok(EndpointSpec {
                url,
                description,
                event_types,
            }),
            _ => Err(errors),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum WebhookEndpointEvent {
    #[serde(rename = "WebhookEndpointCreated")]
    Created {
        tenant_id: TenantId,
        id: Uuid,
        url: HttpUrl,
        description: String,
        /// Empty: every notification event type.
        event_types: Vec<String>,
        secret: EndpointSecret,
    },
    #[serde(rename = "WebhookEndpointSecretRotated")]
    SecretRotated {
        secret: EndpointSecret,
        /// Until then the secret it replaces still signs too.
        previous_valid_until: DateTime<Utc>,
    },
    #[serde(rename = "WebhookEndpointDeleted")]
    Deleted,
}

impl WebhookEndpointEvent {
    pub const SCHEMA_VERSION: i16 = 1;

    pub const EVENT_TYPES: [&'static str; 3] = [
        "WebhookEndpointCreated",
        "WebhookEndpointSecretRotated",
        "WebhookEndpointDeleted",
    ];

    pub fn event_type(&self) -> &'static str {
        match self {
            WebhookEndpointEvent::Created { .. } => "WebhookEndpointCreated",
            WebhookEndpointEvent::SecretRotated { .. } => "WebhookEndpointSecretRotated",
            WebhookEndpointEvent::Deleted => "WebhookEndpointDeleted",
        }
    }

    /// Reads a stored event of any schema version into today's shape.
    pub fn upcast(
        event_type: &str,
        schema_version: i16,
        payload: Value,
    ) -> Result<WebhookEndpointEvent, DomainError> {
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
pub enum WebhookEndpointCommand {
    Create {
        tenant_id: TenantId,
        id: Uuid,
        spec: EndpointSpec,
        secret: EndpointSecret,
    },
    RotateSecret {
        secret: EndpointSecret,
        /// How long the current secret stays valid beside the new one.
        grace: TimeDelta,
    },
    Delete,
}

/// A secret and, once rotated out, when it stops signing.
#[derive(Debug, Clone, PartialEq)]
pub struct SigningSecret {
    pub secret: EndpointSecret,
    pub valid_until: Option<DateTime<Utc>>,
}

/// An endpoint's state; `Default` is one not yet created.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WebhookEndpoint {
    created: Option<(TenantId, Uuid, EndpointSpec)>,
    /// Newest first: the current secret, then those rotated out.
    secrets: Vec<SigningSecret>,
    deleted: bool,
}

impl WebhookEndpoint {
    pub fn tenant_id(&self) -> Option<&TenantId> {
        self.created.as_ref().map(|(tenant_id, _, _)| tenant_id)
    }

    pub fn id(&self) -> Option<Uuid> {
        self.created.as_ref().map(|(_, id, _)| *id)
    }

    pub fn spec(&self) -> Option<&EndpointSpec> {
        self.created.as_ref().map(|(_, _, spec)| spec)
    }

    /// Created and not deleted.
    pub fn is_live(&self) -> bool {
        self.created.is_some() && !self.deleted
    }

    /// The secrets that sign at `now`, newest first; none once deleted.
    pub fn valid_secrets(&self, now: DateTime<Utc>) -> Vec<SigningSecret> {
        if self.deleted {
            return Vec::new();
        }
        self.secrets
            .iter()
            .filter(|s| s.valid_until.is_none_or(|until| until > now))
            .cloned()
            .collect()
    }

    fn require_live(&self) -> Result<(), DomainError> {
        if self.is_live() {
            Ok(())
        } else {
            Err(DomainError::InvalidCommand(
                "the webhook endpoint does not exist or was deleted",
            ))
        }
    }
}

impl Aggregate for WebhookEndpoint {
    type Command = WebhookEndpointCommand;
    type Event = WebhookEndpointEvent;
    type Error = DomainError;

    fn apply(&mut self, event: &WebhookEndpointEvent) {
        match event {
            WebhookEndpointEvent::Created {
                tenant_id,
                id,
                url,
                description,
                event_types,
                secret,
            } => {
                let spec = EndpointSpec {
                    url: url.clone(),
                    description: description.clone(),
                    event_types: event_types.clone(),
                };
                self.created = Some((tenant_id.clone(), *id, spec));
                self.secrets = vec![SigningSecret {
                    secret: secret.clone(),
                    valid_until: None,
                }];
            }
            WebhookEndpointEvent::SecretRotated {
                secret,
                previous_valid_until,
            } => {
                // Only the current secret gets the new deadline; older ones
                // keep the one they were given, so a quick second rotation
                // never extends them.
                if let Some(current) = self.secrets.first_mut() {
                    current.valid_until = Some(*previous_valid_until);
                }
                self.secrets.insert(
                    0,
                    SigningSecret {
                        secret: secret.clone(),
                        valid_until: None,
                    },
                );
            }
            WebhookEndpointEvent::Deleted => self.deleted = true,
        }
    }

    fn decide(
        &self,
        command: WebhookEndpointCommand,
        now: DateTime<Utc>,
    ) -> Result<Vec<WebhookEndpointEvent>, DomainError> {
        match command {
            WebhookEndpointCommand::Create {
                tenant_id,
                id,
                spec,
                secret,
            } => {
                if self.created.is_some() {
                    return Err(DomainError::InvalidCommand(
                        "the webhook endpoint already exists",
                    ));
                }
                Ok(vec![WebhookEndpointEvent::Created {
                    tenant_id,
                    id,
                    url: spec.url,
                    description: spec.description,
                    event_types: spec.event_types,
                    secret,
                }])
            }
            WebhookEndpointCommand::RotateSecret { secret, grace } => {
                self.require_live()?;
                if grace < TimeDelta::zero() || grace > MAX_ROTATION_GRACE {
                    return Err(DomainError::InvalidCommand(
                        "the previous secret's grace must be between 0 and 30 days",
                    ));
                }
                if self.secrets.iter().any(|s| s.secret == secret) {
                    return Err(DomainError::InvalidCommand(
                        "a rotation needs a secret the endpoint never had",
                    ));
                }
                Ok(vec![WebhookEndpointEvent::SecretRotated {
                    secret,
                    previous_valid_until: now + grace,
                }])
            }
            WebhookEndpointCommand::Delete => {
                self.require_live()?;
                Ok(vec![WebhookEndpointEvent::Deleted])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::given_when_then::given;
    use crate::domain::test_fixtures::t0;

    const FIRST: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SECOND: &str = "whsec_c2Vjb25kIHNlY3JldCBvZiBlbm91Z2g=";
    const THIRD: &str = "whsec_dGhpcmQgc2VjcmV0IG9mIGVub3VnaCE=";

    fn secret(raw: &str) -> EndpointSecret {
        EndpointSecret::parse(raw).unwrap()
    }

    fn id() -> Uuid {
        Uuid::from_u128(42)
    }

    fn spec() -> EndpointSpec {
        CreateWebhookEndpoint {
            url: "https://hooks.example.com/herald".into(),
            description: Some("status feed".into()),
            event_types: vec!["NotificationSent".into(), "NotificationDelivered".into()],
        }
        .parse()
        .unwrap()
    }

    fn created() -> WebhookEndpointEvent {
        WebhookEndpointEvent::Created {
            tenant_id: TenantId::parse("acme").unwrap(),
            id: id(),
            url: HttpUrl::parse("https://hooks.example.com/herald").unwrap(),
            description: "status feed".into(),
            event_types: vec!["NotificationDelivered".into(), "NotificationSent".into()],
            secret: secret(FIRST),
        }
    }

    fn rotated(raw: &str, hours: i64) -> WebhookEndpointEvent {
        WebhookEndpointEvent::SecretRotated {
            secret: secret(raw),
            previous_valid_until: t0() + TimeDelta::hours(hours),
        }
    }

    fn rotate(raw: &str) -> WebhookEndpointCommand {
        WebhookEndpointCommand::RotateSecret {
            secret: secret(raw),
            grace: DEFAULT_ROTATION_GRACE,
        }
    }

    #[test]
    fn create_records_the_spec_and_the_secret() {
        given::<WebhookEndpoint>([])
            .when(WebhookEndpointCommand::Create {
                tenant_id: TenantId::parse("acme").unwrap(),
                id: id(),
                spec: spec(),
                secret: secret(FIRST),
            })
            .then([created()]);
    }

    #[test]
    fn create_twice_is_refused() {
        given::<WebhookEndpoint>([created()])
            .when(WebhookEndpointCommand::Create {
                tenant_id: TenantId::parse("acme").unwrap(),
                id: id(),
                spec: spec(),
                secret: secret(FIRST),
            })
            .then_error(DomainError::InvalidCommand(
                "the webhook endpoint already exists",
            ));
    }

    #[test]
    fn rotation_keeps_the_previous_secret_for_the_grace() {
        given::<WebhookEndpoint>([created()])
            .when(rotate(SECOND))
            .then([rotated(SECOND, 24)]);
        let endpoint = WebhookEndpoint::fold(&[created(), rotated(SECOND, 24)]);
        let exposed = |now| -> Vec<String> {
            endpoint
                .valid_secrets(now)
                .iter()
                .map(|s| s.secret.expose().to_string())
                .collect()
        };
        assert_eq!(exposed(t0()), [SECOND, FIRST]);
        assert_eq!(exposed(t0() + TimeDelta::hours(24)), [SECOND]);
    }

    #[test]
    fn a_second_rotation_never_extends_an_older_secret() {
        let endpoint = WebhookEndpoint::fold(&[created(), rotated(SECOND, 1), rotated(THIRD, 24)]);
        let valid = endpoint.valid_secrets(t0() + TimeDelta::hours(2));
        let exposed: Vec<&str> = valid.iter().map(|s| s.secret.expose()).collect();
        assert_eq!(exposed, [THIRD, SECOND]);
    }

    #[test]
    fn rotation_refuses_a_reused_secret_or_a_bad_grace() {
        given::<WebhookEndpoint>([created()])
            .when(rotate(FIRST))
            .then_error(DomainError::InvalidCommand(
                "a rotation needs a secret the endpoint never had",
            ));
        given::<WebhookEndpoint>([created()])
            .when(WebhookEndpointCommand::RotateSecret {
                secret: secret(SECOND),
                grace: TimeDelta::days(31),
            })
            .then_error(DomainError::InvalidCommand(
                "the previous secret's grace must be between 0 and 30 days",
            ));
    }

    #[test]
    fn nothing_but_create_before_create_or_after_delete() {
        let gone =
            DomainError::InvalidCommand("the webhook endpoint does not exist or was deleted");
        given::<WebhookEndpoint>([])
            .when(rotate(SECOND))
            .then_error(gone.clone());
        given::<WebhookEndpoint>([])
            .when(WebhookEndpointCommand::Delete)
            .then_error(gone.clone());
        given::<WebhookEndpoint>([created()])
            .when(WebhookEndpointCommand::Delete)
            .then([WebhookEndpointEvent::Deleted]);
        given::<WebhookEndpoint>([created(), WebhookEndpointEvent::Deleted])
            .when(WebhookEndpointCommand::Delete)
            .then_error(gone.clone());
        given::<WebhookEndpoint>([created(), WebhookEndpointEvent::Deleted])
            .when(rotate(SECOND))
            .then_error(gone);
        let deleted = WebhookEndpoint::fold(&[created(), WebhookEndpointEvent::Deleted]);
        assert!(!deleted.is_live() && deleted.valid_secrets(t0()).is_empty());
    }

    #[test]
    fn parse_names_every_bad_field() {
        let errors = CreateWebhookEndpoint {
            url: "ftp://example.com".into(),
            description: Some("x".repeat(501)),
            event_types: vec!["NotificationSent".into(), "NotificationTeleported".into()],
        }
        .parse()
        .unwrap_err();
        assert_eq!(errors.at("url"), ["must use http or https"]);
        assert_eq!(errors.at("description").len(), 1);
        assert_eq!(errors.at("event_types[1]").len(), 1);
        assert!(
            errors.at("event_types[1]")[0]
                .starts_with("unknown event type \"NotificationTeleported\"")
        );
        let all = CreateWebhookEndpoint {
            url: "https://example.com/hook".into(),
            ..Default::default()
        }
        .parse()
        .unwrap();
        assert!(all.event_types.is_empty() && all.description.is_empty());
    }

    #[test]
    fn secrets_never_show_in_debug_and_must_look_like_keys() {
        let endpoint = WebhookEndpoint::fold(&[created(), rotated(SECOND, 24)]);
        let debug = format!("{endpoint:?} {:?}", created());
        assert!(
            !debug.contains("MfKQ9r8") && !debug.contains("c2Vjb25k"),
            "{debug}"
        );
        for bad in [
            "",
            "whsec_",
            "whsec_short",
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_not base64 at all, no no no",
        ] {
            assert!(EndpointSecret::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_event_round_trips_through_upcast() {
        for event in [
            created(),
            rotated(SECOND, 24),
            WebhookEndpointEvent::Deleted,
        ] {
            let payload = serde_json::to_value(&event).unwrap();
            assert_eq!(
                WebhookEndpointEvent::upcast(
                    event.event_type(),
                    WebhookEndpointEvent::SCHEMA_VERSION,
                    payload
                ),
                Ok(event)
            );
        }
    }
}
