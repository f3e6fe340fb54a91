use std::fmt;

use serde::{Deserialize, Serialize};

use super::ValueError;

/// A template's version, counted from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct TemplateVersion(u32);

impl TemplateVersion {
    pub fn parse(version: u32) -> Result<Self, ValueError> {
        if version == 0 {
            return Err(ValueError::Invalid("must be at least 1".into()));
        }
        Ok(Self(version))
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for TemplateVersion {
    type Error = ValueError;

    fn try_from(version: u32) -> Result<Self, ValueError> {
        Self::parse(version)
    }
}

impl From<TemplateVersion> for u32 {
    fn from(version: TemplateVersion) -> u32 {
        version.0
    }
}

impl fmt::Display for TemplateVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_at_one() {
        assert!(TemplateVersion::parse(0).is_err());
        assert_eq!(TemplateVersion::parse(3).unwrap().get(), 3);
        assert!(serde_json::from_str::<TemplateVersion>("0").is_err());
        assert_eq!(
            serde_json::to_string(&TemplateVersion::parse(2).unwrap()).unwrap(),
            "2"
        );
    }
}
