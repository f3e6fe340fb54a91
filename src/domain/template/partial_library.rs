//! The `PartialLibrary` aggregate: a tenant's partials and layouts, shared
//! by its templates. Editing one never changes a published version, which
//! copied what it used at publish time.
//!
//! | command | legal when | records |
//! |---|---|---|
//! | Upsert | the body compiles beside the others; the same body records nothing | TemplatePartialUpserted |

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::compiled::describe;
use super::definition::{MAX_PART_BYTES, PartialKind, PartialName};
use crate::domain::aggregate::Aggregate;
use crate::domain::domain_error::DomainError;
use crate::domain::tagged_payload::upcast_current;
use crate::domain::validation_errors::ValidationErrors;
use crate::domain::values::TenantId;

/// A tenant keeps at most this many partials and layouts together.
pub const MAX_PARTIALS: usize = 200;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum PartialEvent {
    #[serde(rename = "TemplatePartialUpserted")]
    Upserted {
        tenant_id: TenantId,
        kind: PartialKind,
        name: PartialName,
        body: String,
    },
}

impl PartialEvent {
    pub const SCHEMA_VERSION: i16 = 1;

    pub const EVENT_TYPES: [&'static str; 1] = ["TemplatePartialUpserted"];

    pub fn event_type(&self) -> &'static str {
        match self {
            PartialEvent::Upserted { .. } => "TemplatePartialUpserted",
        }
    }

    /// Reads a stored event of any schema version into today's shape.
    pub fn upcast(
        event_type: &str,
        schema_version: i16,
        payload: Value,
    ) -> Result<PartialEvent, DomainError> {
        upcast_current(
            event_type,
            schema_version,
            payload,
            &Self::EVENT_TYPES,
            Self::SCHEMA_VERSION,
        )
    }
}

/// A partial or layout as received.
#[derive(Debug, Clone, PartialEq)]
pub struct UpsertPartial {
    pub kind: PartialKind,
    pub name: String,
    pub body: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PartialCommand {
    Upsert {
        tenant_id: TenantId,
        kind: PartialKind,
        name: PartialName,
        body: String,
    },
}

/// A tenant's partials and layouts by qualified name (`partial:footer`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PartialLibrary {
    bodies: BTreeMap<String, String>,
}

impl PartialLibrary {
    /// Refuses a name or body that does not fit, or a body that does not
    /// compile beside the tenant's other partials (a partial it includes
    /// must exist first).
    pub fn parse(&self, input: UpsertPartial) -> Result<(PartialName, String), ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let name = errors.check("name", PartialName::parse(input.name.trim()));
        if input.body.trim().is_empty() {
            errors.add("body", "must not be empty");
        } else if input.body.len() > MAX_PART_BYTES {
            errors.add("body", format!("must be at most {MAX_PART_BYTES} bytes"));
        } else if input.body.contains('\0') {
            // The body is stored in an event, and jsonb refuses NUL.
            errors.add("body", "must not contain NUL characters");
        }
        let Some(name) = name.filter(|_| errors.is_empty()) else {
            return Err(errors);
        };
        let qualified = input.kind.qualify(&name);
        if !self.bodies.contains_key(&qualified) && self.bodies.len() >= MAX_PARTIALS {
            errors.add(
                "name",
                format!("the tenant already has {MAX_PARTIALS} partials and layouts"),
            );
            return Err(errors);
        }
        let mut library = self.bodies.clone();
        library.insert(qualified.clone(), input.body.clone());
        let mut tera = tera::Tera::new();
        if let Err(error) = tera.add_raw_templates(&library) {
            errors.add("body", describe(&error, &qualified));
            return Err(errors);
        }
        Ok((name, input.body))
    }
}

impl Aggregate for PartialLibrary {
    type Command = PartialCommand;
    type Event = PartialEvent;
    type Error = DomainError;

    fn apply(&mut self, event: &PartialEvent) {
        match event {
            PartialEvent::Upserted {
                kind, name, body, ..
            } => {
                self.bodies.insert(kind.qualify(name), body.clone());
            }
        }
    }

    fn decide(
        &self,
        command: PartialCommand,
        _now: DateTime<Utc>,
    ) -> Result<Vec<PartialEvent>, DomainError> {
        match command {
            PartialCommand::Upsert {
                tenant_id,
                kind,
                name,
                body,
            } => {
                if self.bodies.get(&kind.qualify(&name)) == Some(&body) {
                    return Ok(Vec::new());
                }
                Ok(vec![PartialEvent::Upserted {
                    tenant_id,
                    kind,
                    name,
                    body,
                }])
            }
        }
    }
}
