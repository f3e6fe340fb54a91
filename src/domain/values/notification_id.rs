use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::ValueError;

/// A notification's id. New ids are UUIDv7, so they sort by creation time and
/// index well.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NotificationId(Uuid);

impl NotificationId {
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

impl From<Uuid> for NotificationId {
    fn from(uuid: Uuid) -> Self {
        Self(uuid)
    }
}

impl fmt::Display for NotificationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_are_v7_and_round_trip() {
        let id = NotificationId::new();
        assert_eq!(id.as_uuid().get_version_num(), 7);
        assert_eq!(NotificationId::parse(&id.to_string()), Ok(id));
        assert!(NotificationId::parse("msg_9e2b4f").is_err());
    }
}
