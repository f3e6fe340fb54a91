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

/// Escapes text for an HTML element or attribute the way templates' autoescape
/// does, for the HTML Herald writes itself (links, the unsubscribe pages).
pub fn escape_html(text: &str) -> String {
    let mut escaped = Vec::with_capacity(text.len());
    tera::escape_html(text, &mut escaped).expect("writing to a Vec cannot fail");
    String::from_utf8(escaped).expect("escaping keeps UTF-8")
}

#[cfg(test)]
mod tests;
