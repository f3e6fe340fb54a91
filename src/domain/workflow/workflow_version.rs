use std::fmt;

use serde::{Deserialize, Serialize};

use crate::domain::values::ValueError;

/// A workflow's version, counted from 1; a run is pinned to the one it started with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct WorkflowVersion(u32);

impl WorkflowVersion {
    pub const FIRST: WorkflowVersion = WorkflowVersion(1);

    pub fn parse(version: u32) -> Result<Self, ValueError> {
        if version == 0 {
            return Err(ValueError::Invalid("must be at least 1".into()));
        }
        Ok(Self(version))
    }

    pub fn get(self) -> u32 {
        self.0
    }

    /// The version after this one; `None` once the numbers run out.
    pub fn next(self) -> Option<Self> {
        self.0.checked_add(1).map(Self)
    }
}

impl TryFrom<u32> for WorkflowVersion {
    type Error = ValueError;

    fn try_from(version: u32) -> Result<Self, ValueError> {
        Self::parse(version)
    }
}

impl From<WorkflowVersion> for u32 {
    fn from(version: WorkflowVersion) -> u32 {
        version.0
    }
}

impl fmt::Display for WorkflowVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_at_one_and_counts_up() {
        assert!(WorkflowVersion::parse(0).is_err());
        assert!(serde_json::from_str::<WorkflowVersion>("0").is_err());
        assert_eq!(
            WorkflowVersion::FIRST.next().map(WorkflowVersion::get),
            Some(2)
        );
        assert_eq!(WorkflowVersion(u32::MAX).next(), None);
    }
}
