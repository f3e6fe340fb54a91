//! What a published version holds: the declared variables, the parts per
//! locale and the partials and layouts it used, copied in at publish time.
//! [`PublishTemplate::parse`] is the only way to a [`TemplateDefinition`].

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::compiled::CompiledTemplate;
use crate::domain::validation_errors::ValidationErrors;
use crate::domain::values::{Alphabet, Locale, TemplateKey, ValueError, bounded_string, holds_nul};

/// The largest template source of one part, partial or layout.
pub const MAX_PART_BYTES: usize = 128 * 1024;
pub const MAX_LOCALES: usize = 50;
pub const MAX_VARIABLES: usize = 100;
pub const MAX_VARIABLE_NAME_CHARS: usize = 64;
/// The variable the caller's reserved values (`herald.unsubscribe_url`, ...) live under.
pub const RESERVED_VARIABLE: &str = "herald";
/// Names a template cannot declare: the reserved one and tera's own words.
const UNDECLARABLE: [&str; 13] = [
    RESERVED_VARIABLE,
    "loop",
    "true",
    "false",
    "True",
    "False",
    "none",
    "None",
    "and",
    "or",
    "not",
    "in",
    "is",
];

/// What a template variable must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VariableType {
    String,
    Number,
    Boolean,
    Object,
    Array,
    /// Any value but null.
    Any,
}

impl VariableType {
    pub fn as_str(self) -> &'static str {
        match self {
            VariableType::String => "string",
            VariableType::Number => "number",
            VariableType::Boolean => "boolean",
            VariableType::Object => "object",
            VariableType::Array => "array",
            VariableType::Any => "any",
        }
    }

    fn accepts(self, value: &Value) -> bool {
        match self {
            VariableType::String => value.is_string(),
            VariableType::Number => value.is_number(),
            VariableType::Boolean => value.is_boolean(),
            VariableType::Object => value.is_object(),
            VariableType::Array => value.is_array(),
            VariableType::Any => !value.is_null(),
        }
    }
}

impl fmt::Display for VariableType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One declared variable's rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VariableSpec {
    #[serde(rename = "type")]
    pub kind: VariableType,
    pub required: bool,
}

bounded_string!(
    /// The name of a tenant's partial or layout: 1–128 of `a-z 0-9 _ . -`.
    PartialName,
    128,
    Alphabet::DottedSlug
);

/// A partial is included (`{% include "partial:footer" %}`); a layout is
/// extended by an email's HTML (`{% extends "layout:base" %}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartialKind {
    Partial,
    Layout,
}

impl PartialKind {
    pub const ALL: [PartialKind; 2] = [PartialKind::Partial, PartialKind::Layout];

    /// The prefix templates name it by: `partial` or `layout`.
    pub fn as_str(self) -> &'static str {
        match self {
            PartialKind::Partial => "partial",
            PartialKind::Layout => "layout",
        }
    }

    pub fn parse(s: &str) -> Result<Self, ValueError> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| ValueError::Invalid(format!("unknown partial kind {s:?}")))
    }

    /// The name templates use for it: `partial:footer`, `layout:base`.
    pub fn qualify(self, name: &PartialName) -> String {
        format!("{}:{}", self.as_str(), name.as_str())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EmailParts {
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TitledParts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    pub body: String,
}

/// One locale's template sources, one optional entry per channel. The
/// webhook part is a JSON object whose strings are templates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LocaleParts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailParts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sms: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<TitledParts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ntfy: Option<TitledParts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_app: Option<TitledParts>,
}

impl LocaleParts {
    fn is_empty(&self) -> bool {
        self == &LocaleParts::default()
    }

    /// Every template source with its path below the locale (`email.html`).
    pub(crate) fn sources(&self) -> Vec<(String, &str)> {
        let mut sources = Vec::new();
        if let Some(email) = &self.email {
            sources.push(("email.subject".to_string(), email.subject.as_str()));
            sources.extend(email.html.as_deref().map(|h| ("email.html".to_string(), h)));
            sources.extend(email.text.as_deref().map(|t| ("email.text".to_string(), t)));
        }
        sources.extend(self.sms.as_deref().map(|t| ("sms.text".to_string(), t)));
        for (channel, titled) in [
            ("push", &self.push),
            ("ntfy", &self.ntfy),
            ("in_app", &self.in_app),
        ] {
            if let Some(titled) = titled {
                if let Some(title) = &titled.title {
                    sources.push((format!("{channel}.title"), title.as_str()));
                }
                sources.push((format!("{channel}.body"), titled.body.as_str()));
            }
        }
        if let Some(webhook) = &self.webhook {
            let mut strings = Vec::new();
            json_strings(webhook, "webhook", &mut strings);
            sources.extend(strings);
        }
        sources
    }
}

/// Every string inside `map`, by its dotted path.
fn json_strings<'a>(map: &'a Map<String, Value>, path: &str, out: &mut Vec<(String, &'a str)>) {
    for (key, value) in map {
        json_value_strings(value, format!("{path}.{key}"), out);
    }
}

fn json_value_strings<'a>(value: &'a Value, path: String, out: &mut Vec<(String, &'a str)>) {
    match value {
        Value::String(s) => out.push((path, s)),
        Value::Object(map) => json_strings(map, &path, out),
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                json_value_strings(item, format!("{path}[{index}]"), out);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// The immutable body of one published version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateDefinition {
    pub default_locale: Locale,
    /// By name.
    pub variables: BTreeMap<String, VariableSpec>,
    pub locales: BTreeMap<Locale, LocaleParts>,
    /// The partials and layouts the parts use, by qualified name
    /// (`partial:footer`), as they were at publish time.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub snippets: BTreeMap<String, String>,
}

impl TemplateDefinition {
    /// Checks `variables` against the declared schema; see [`check_variables`].
    pub fn check_variables(&self, variables: &Map<String, Value>) -> Result<(), ValidationErrors> {
        check_variables(&self.variables, variables)
    }
}

/// Checks `variables` against `schema`; every refusal names
/// `template.variables.<name>`. Undeclared variables are passed through, but
/// no variable may hold a NUL: campaign recipients are stored as given, and
/// PostgreSQL refuses it.
pub fn check_variables(
    schema: &BTreeMap<String, VariableSpec>,
    variables: &Map<String, Value>,
) -> Result<(), ValidationErrors> {
    let mut errors = ValidationErrors::default();
    if variables.keys().any(|name| name.contains('\0')) {
        errors.add(
            "template.variables",
            "names must not contain NUL characters",
        );
    }
    for (name, value) in variables {
        if !name.contains('\0') && holds_nul(value) {
            errors.add(
                format!("template.variables.{name}"),
                "must not contain NUL characters",
            );
        }
    }
    if variables.contains_key(RESERVED_VARIABLE) {
        errors.add(
            format!("template.variables.{RESERVED_VARIABLE}"),
            "is reserved for the values Herald supplies",
        );
    }
    for (name, spec) in schema {
        let path = format!("template.variables.{name}");
        match variables.get(name) {
            None | Some(Value::Null) if spec.required => errors.add(path, "is required"),
            None | Some(Value::Null) => {}
            Some(value) if !spec.kind.accepts(value) => errors.add(
                path,
                match spec.kind {
                    VariableType::Any => "must not be null".to_string(),
                    VariableType::Object | VariableType::Array => {
                        format!("must be an {}", spec.kind)
                    }
                    _ => format!("must be a {}", spec.kind),
                },
            ),
            Some(_) => {}
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// A variable as declared by the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct VariableInput {
    pub name: String,
    pub kind: VariableType,
    pub required: bool,
}

/// One locale's parts as received.
#[derive(Debug, Clone, PartialEq)]
pub struct LocaleInput {
    pub locale: String,
    pub parts: LocaleParts,
}

/// A template to publish, as received.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishTemplate {
    pub key: String,
    pub default_locale: String,
    pub variables: Vec<VariableInput>,
    pub locales: Vec<LocaleInput>,
}

impl PublishTemplate {
    /// Every refused field at once. `partials` are the tenant's current
    /// partials and layouts by qualified name; the ones the parts use are
    /// copied into the definition. Every part must compile, and may use
    /// only declared variables and `herald`.
    pub fn parse(
        self,
        partials: &BTreeMap<String, String>,
    ) -> Result<(TemplateKey, TemplateDefinition), ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let key = errors.check("template.key", TemplateKey::parse(self.key.trim()));
        let default_locale = errors.check(
            "template.default_locale",
            Locale::parse(self.default_locale.trim()),
        );
        let variables = parse_variables(self.variables, &mut errors);
        let locales = parse_locales(self.locales, &mut errors);
        if let Some(default_locale) = &default_locale
            && !locales.is_empty()
            && !locales.contains_key(default_locale)
        {
            errors.add(
                "template.default_locale",
                format!("{default_locale} has no parts among template.locales"),
            );
        }
        let (Some(key), Some(default_locale), true) = (key, default_locale, errors.is_empty())
        else {
            return Err(errors);
        };
        let snippets = used_snippets(&locales, partials);
        let definition = TemplateDefinition {
            default_locale,
            variables,
            locales,
            snippets,
        };
        CompiledTemplate::compile(definition).map(|compiled| (key, compiled.into_definition()))
    }
}

fn parse_variables(
    inputs: Vec<VariableInput>,
    errors: &mut ValidationErrors,
) -> BTreeMap<String, VariableSpec> {
    if inputs.len() > MAX_VARIABLES {
        errors.add(
            "template.variables",
            format!("must declare at most {MAX_VARIABLES} variables"),
        );
    }
    let mut variables = BTreeMap::new();
    for (index, input) in inputs.into_iter().enumerate() {
        let path = format!("template.variables[{index}].name");
        let name = input.name.trim();
        if let Err(message) = check_variable_name(name) {
            errors.add(path, message);
            continue;
        }
        let spec = VariableSpec {
            kind: input.kind,
            required: input.required,
        };
        if variables.insert(name.to_string(), spec).is_some() {
            errors.add(path, format!("declares {name} a second time"));
        }
    }
    variables
}

fn check_variable_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let starts_well = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !starts_well || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(
            "must be an identifier: a letter or '_', then letters, digits or '_'".to_string(),
        );
    }
    if name.len() > MAX_VARIABLE_NAME_CHARS {
        return Err(format!(
            "must be at most {MAX_VARIABLE_NAME_CHARS} characters"
        ));
    }
    if UNDECLARABLE.contains(&name) {
        return Err(format!("{name} is reserved"));
    }
    Ok(())
}

fn parse_locales(
    inputs: Vec<LocaleInput>,
    errors: &mut ValidationErrors,
) -> BTreeMap<Locale, LocaleParts> {
    if inputs.is_empty() {
        errors.add("template.locales", "must have at least one locale");
    }
    if inputs.len() > MAX_LOCALES {
        errors.add(
            "template.locales",
            format!("must have at most {MAX_LOCALES} locales"),
        );
    }
    let mut locales = BTreeMap::new();
    for (index, input) in inputs.into_iter().enumerate() {
        let path = format!("template.locales[{index}]");
        let Some(locale) =
            errors.check(format!("{path}.locale"), Locale::parse(input.locale.trim()))
        else {
            continue;
        };
        let parts = normalise(input.parts);
        let before = errors.errors().len();
        check_parts(&parts, &path, errors);
        if errors.errors().len() > before {
            continue;
        }
        if locales.contains_key(&locale) {
            errors.add(format!("{path}.locale"), format!("{locale} is given twice"));
            continue;
        }
        locales.insert(locale, parts);
    }
    locales
}

/// Blank optional sources count as absent.
fn normalise(mut parts: LocaleParts) -> LocaleParts {
    let blank_to_none = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
    if let Some(email) = &mut parts.email {
        email.html = blank_to_none(email.html.take());
        email.text = blank_to_none(email.text.take());
    }
    for titled in [&mut parts.push, &mut parts.ntfy, &mut parts.in_app]
        .into_iter()
        .flatten()
    {
        titled.title = blank_to_none(titled.title.take());
    }
    parts
}

fn check_parts(parts: &LocaleParts, path: &str, errors: &mut ValidationErrors) {
    if parts.is_empty() {
        errors.add(
            path.to_string(),
            "must have a part for at least one channel",
        );
        return;
    }
    if let Some(email) = &parts.email {
        if email.subject.trim().is_empty() {
            errors.add(format!("{path}.email.subject"), "is required");
        }
        if email.html.is_none() && email.text.is_none() {
            errors.add(format!("{path}.email"), "needs html, text or both");
        }
    }
    if parts.sms.as_deref().is_some_and(|s| s.trim().is_empty()) {
        errors.add(format!("{path}.sms.text"), "is required");
    }
    for (channel, titled) in [
        ("push", &parts.push),
        ("ntfy", &parts.ntfy),
        ("in_app", &parts.in_app),
    ] {
        if titled.as_ref().is_some_and(|t| t.body.trim().is_empty()) {
            errors.add(format!("{path}.{channel}.body"), "is required");
        }
    }
    if let Some(webhook) = &parts.webhook
        && serde_json::to_string(webhook).map_or(0, |json| json.len()) > MAX_PART_BYTES
    {
        errors.add(
            format!("{path}.webhook"),
            format!("must be at most {MAX_PART_BYTES} bytes when serialised"),
        );
    }
    for (part, source) in parts.sources() {
        if source.len() > MAX_PART_BYTES {
            errors.add(
                format!("{path}.{part}"),
                format!("must be at most {MAX_PART_BYTES} bytes"),
            );
        }
    }
}

/// The partials and layouts the parts name, and those these name in turn.
/// Names are found as text (`partial:footer`), so one mentioned in a
/// comment is copied too; tera only accepts literal names, so none is missed.
fn used_snippets(
    locales: &BTreeMap<Locale, LocaleParts>,
    partials: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut pending: Vec<String> = locales
        .values()
        .flat_map(|parts| {
            parts
                .sources()
                .into_iter()
                .flat_map(|(_, source)| snippet_names(source))
        })
        .collect();
    let mut used = BTreeMap::new();
    while let Some(name) = pending.pop() {
        if used.contains_key(&name) {
            continue;
        }
        if let Some(body) = partials.get(&name) {
            pending.extend(snippet_names(body));
            used.insert(name, body.clone());
        }
    }
    used
}

/// `partial:<name>` and `layout:<name>` as they appear in `source`.
pub(crate) fn snippet_names(source: &str) -> Vec<String> {
    let mut names = Vec::new();
    for kind in PartialKind::ALL {
        let prefix = format!("{}:", kind.as_str());
        for (start, _) in source.match_indices(&prefix) {
            let rest = &source[start + prefix.len()..];
            let end = rest
                .find(|c: char| {
                    !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'))
                })
                .unwrap_or(rest.len());
            if end > 0 {
                names.push(format!("{prefix}{}", &rest[..end]));
            }
        }
    }
    names
}
