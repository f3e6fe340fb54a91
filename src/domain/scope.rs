use std::fmt;

use serde::{Deserialize, Serialize};

use super::values::ValueError;

/// What an API key may do. `Admin` implies every other scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Send notifications and ingest events.
    Send,
    /// Read notifications, their events and analytics.
    Read,
    /// Operate: replay dead letters, rebuild projections, inspect queues.
    Ops,
    /// Manage the tenant: keys, templates, configuration.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Send, Scope::Read, Scope::Ops, Scope::Admin];

    pub fn parse(s: &str) -> Result<Self, ValueError> {
        Self::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| {
                ValueError::Invalid(format!(
                    "unknown scope {s:?}; expected send, read, ops or admin"
                ))
            })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Send => "send",
            Scope::Read => "read",
            Scope::Ops => "ops",
            Scope::Admin => "admin",
        }
    }

    /// Whether holding `self` is enough for an action that needs `required`.
    pub fn allows(self, required: Scope) -> bool {
        self == Scope::Admin || self == required
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_implies_every_scope_and_others_only_themselves() {
        for required in Scope::ALL {
            assert!(Scope::Admin.allows(required));
            assert!(required.allows(required));
        }
        assert!(!Scope::Send.allows(Scope::Read));
        assert!(!Scope::Ops.allows(Scope::Admin));
    }

    #[test]
    fn parse_and_serde_agree() {
        for scope in Scope::ALL {
            assert_eq!(Scope::parse(scope.as_str()), Ok(scope));
            assert_eq!(
                serde_json::to_value(scope).unwrap(),
                serde_json::json!(scope.as_str())
            );
        }
        assert!(Scope::parse("root").is_err());
    }
}
