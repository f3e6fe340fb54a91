use std::collections::BTreeMap;

use crate::domain::template::VariableSpec;
use crate::domain::values::{TemplateKey, TemplateVersion};

/// The tenant's published templates, as the publisher of a workflow sees
/// them: the command side answers from its templates table.
pub trait TemplateCatalog {
    /// The variables `key` declares at `version` (the latest when `None`);
    /// `None` when no such template, or no such version of it, is published.
    fn variables(
        &self,
        key: &TemplateKey,
        version: Option<TemplateVersion>,
    ) -> Option<&BTreeMap<String, VariableSpec>>;
}

/// Each template's versions with their declared variables.
impl TemplateCatalog
    for BTreeMap<TemplateKey, BTreeMap<TemplateVersion, BTreeMap<String, VariableSpec>>>
{
    fn variables(
        &self,
        key: &TemplateKey,
        version: Option<TemplateVersion>,
    ) -> Option<&BTreeMap<String, VariableSpec>> {
        let versions = self.get(key)?;
        match version {
            Some(version) => versions.get(&version),
            None => versions.last_key_value().map(|(_, variables)| variables),
        }
    }
}
