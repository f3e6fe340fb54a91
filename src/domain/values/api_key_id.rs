use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::ValueError;

/// An API key's id: public, unlike the key's secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ApiKeyId(Uuid);

impl ApiKeyId {
    #[allow(clippy::new_without_default)] // a default id would be a random one: say so at the call site
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn parse(s: &str) -> Result<Self, ValueError> {
        Uuid::parse_str(s)
            .map(Self)
            .map_err(|_| ValueError::Invalid("is not a UUID".into()))
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl From<Uuid> for ApiKeyId {
    fn from(uuid: Uuid) -> Self {
        Self(uuid)
    }
}

impl fmt::Display for ApiKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
