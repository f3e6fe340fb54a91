//! Templates: published, immutable, numbered versions with locale variants,
//! the tenant's shared partials and layouts, and pure rendering with tera.
//!
//! A version copies the partials and layouts it uses when it is published,
//! so nothing edited later changes what a queued notification renders.

mod compiled;
mod definition;
mod partial_library;
mod published_template;
mod rendered;

pub use compiled::{CompiledTemplate, HERALD_KEYS, MAX_RENDERED_BYTES, RenderError};
pub use definition::{
    EmailParts, LocaleInput, LocaleParts, MAX_LOCALES, MAX_PART_BYTES, MAX_VARIABLE_NAME_CHARS,
    MAX_VARIABLES, PartialKind, PartialName, PublishTemplate, RESERVED_VARIABLE,
    TemplateDefinition, TitledParts, VariableInput, VariableSpec, VariableType, check_variables,
};
pub use partial_library::{
    MAX_PARTIALS, PartialCommand, PartialEvent, PartialLibrary, UpsertPartial,
};
pub use published_template::{PublishedTemplate, TemplateCommand, TemplateEvent};
pub use rendered::{RenderedContent, RenderedEmail, RenderedTemplate, RenderedTitled};

#[cfg(test)]
mod tests;
