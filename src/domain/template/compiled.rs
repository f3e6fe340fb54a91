//! A version compiled with tera, and its rendering: variables checked
//! against the schema, the locale chosen by the fallback chain, HTML parts
//! auto-escaped and the others not.
//!
//! Every part is a tera template named `<locale>/<part>` (`fr/email.html`);
//! partials and layouts are `partial:<name>` and `layout:<name>`. Only names
//! ending in `.html` are escaped, and tera escapes an included partial or an
//! extended layout as the part that uses it, so a partial is safe in HTML and
//! verbatim in text.

use std::collections::BTreeMap;
use std::io::{self, Write};

use serde_json::{Map, Value};
use tera::value::ValueKind;
use tera::{Context, ErrorKind, Kwargs, State, Tera};

use super::definition::{RESERVED_VARIABLE, TemplateDefinition, TitledParts};
use super::rendered::{RenderedEmail, RenderedTemplate, RenderedTitled};
use crate::domain::validation_errors::ValidationErrors;
use crate::domain::values::Locale;

/// The most one part may render to, so a runaway loop cannot eat the memory.
pub const MAX_RENDERED_BYTES: usize = 1024 * 1024;

/// The reserved values a template may use as `herald.<key>`; those the
/// caller does not supply render empty instead of failing.
pub const HERALD_KEYS: [&str; 5] = [
    "notification_id",
    "tenant_id",
    "recipient_id",
    "channel",
    "unsubscribe_url",
];

/// Why a render failed; every variant is permanent for that input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RenderError {
    /// Missing or mistyped variables, each named `template.variables.<name>`.
    #[error("{0}")]
    Variables(ValidationErrors),
    /// A part failed while rendering (`part` as `email.html`).
    #[error("{locale} {part}: {message}")]
    Part {
        locale: Locale,
        part: String,
        message: String,
    },
}

/// How the webhook part's JSON is rebuilt at render time.
#[derive(Debug, Clone)]
enum WebhookNode {
    Literal(Value),
    /// A string that is a template, compiled under this tera name.
    Template {
        name: String,
        path: String,
    },
    /// A string that is exactly `{{ a.b }}`: the variable's own JSON value,
    /// so numbers, objects and arrays keep their type.
    Variable(Vec<String>),
    Object(Vec<(String, WebhookNode)>),
    Array(Vec<WebhookNode>),
}

/// A published version, ready to render. Immutable, so shareable.
pub struct CompiledTemplate {
    definition: TemplateDefinition,
    tera: Tera,
    webhooks: BTreeMap<Locale, WebhookNode>,
}

impl std::fmt::Debug for CompiledTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledTemplate")
            .field("locales", &self.definition.locales.keys())
            .finish_non_exhaustive()
    }
}

impl CompiledTemplate {
    /// Compiles every part; a part that does not compile, or that uses a
    /// variable the schema does not declare, is refused by its path
    /// (`template.locales.fr.email.html`) with tera's line and reason.
    pub fn compile(definition: TemplateDefinition) -> Result<CompiledTemplate, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let mut tera = engine();
        if let Err(error) = tera.add_raw_templates(&definition.snippets) {
            errors.add("template.partials", describe(&error, ""));
            return Err(errors);
        }
        let mut webhooks = BTreeMap::new();
        let mut compiled: Vec<(String, String)> = Vec::new();
        for (locale, parts) in &definition.locales {
            let mut sources: Vec<(String, String, &str)> = parts
                .sources()
                .into_iter()
                .filter(|(part, _)| !part.starts_with("webhook"))
                .map(|(part, source)| (format!("{locale}/{part}"), part, source))
                .collect();
            if let Some(webhook) = &parts.webhook {
                let mut counter = 0;
                let node = webhook_object(webhook, locale, "webhook", &mut counter, &mut sources);
                webhooks.insert(locale.clone(), node);
            }
            for (name, part, source) in sources {
                let path = format!("template.locales.{locale}.{part}");
                match tera.add_raw_template(&name, source) {
                    Ok(()) => compiled.push((name, path)),
                    Err(error) => errors.add(path, describe(&error, &name)),
                }
            }
        }
        for (name, path) in &compiled {
            match tera.get_template_variables(name) {
                Ok(used) => {
                    let mut undeclared: Vec<&str> = used
                        .into_iter()
                        .filter(|v| {
                            *v != RESERVED_VARIABLE && !definition.variables.contains_key(*v)
                        })
                        .collect();
                    undeclared.sort_unstable();
                    for variable in undeclared {
                        errors.add(
                            path.clone(),
                            format!(
                                "uses the undeclared variable `{variable}`; declare it in variables"
                            ),
                        );
                    }
                }
                Err(error) => errors.add(path.clone(), describe(&error, name)),
            }
        }
        if errors.is_empty() {
            Ok(CompiledTemplate {
                definition,
                tera,
                webhooks,
            })
        } else {
            Err(errors)
        }
    }

    pub fn definition(&self) -> &TemplateDefinition {
        &self.definition
    }

    pub fn into_definition(self) -> TemplateDefinition {
        self.definition
    }

    /// The locale to render: for each preferred locale in turn, that exact
    /// locale (`fr-CA`), then its language (`fr`); then the default.
    pub fn resolve_locale(&self, preferred: &[Locale]) -> &Locale {
        for wanted in preferred {
            if let Some((locale, _)) = self.definition.locales.get_key_value(wanted) {
                return locale;
            }
            let language = wanted.as_str().split('-').next().unwrap_or_default();
            if let Some(locale) = self
                .definition
                .locales
                .keys()
                .find(|locale| locale.as_str() == language)
            {
                return locale;
            }
        }
        &self.definition.default_locale
    }

    /// Renders every part of the chosen locale. `herald` holds the reserved
    /// values (`herald.unsubscribe_url`), never checked against the schema.
    pub fn render(
        &self,
        variables: &Map<String, Value>,
        preferred: &[Locale],
        herald: &Map<String, Value>,
    ) -> Result<RenderedTemplate, RenderError> {
        self.definition
            .check_variables(variables)
            .map_err(RenderError::Variables)?;
        let locale = self.resolve_locale(preferred).clone();
        let Some(parts) = self.definition.locales.get(&locale) else {
            return Err(RenderError::Part {
                locale,
                part: "template".into(),
                message: "the default locale has no parts".into(),
            });
        };
        let scope = self.scope(variables, herald);
        let context = Context::from_serialize(&scope).map_err(|error| RenderError::Part {
            locale: locale.clone(),
            part: "variables".into(),
            message: error.to_string(),
        })?;
        let renderer = Renderer {
            tera: &self.tera,
            locale: &locale,
            context: &context,
        };
        let email = parts
            .email
            .as_ref()
            .map(|email| {
                Ok::<_, RenderError>(RenderedEmail {
                    subject: single_line(&renderer.part("email.subject")?),
                    html: email
                        .html
                        .as_ref()
                        .map(|_| renderer.part("email.html"))
                        .transpose()?,
                    text: email
                        .text
                        .as_ref()
                        .map(|_| renderer.part("email.text"))
                        .transpose()?,
                })
            })
            .transpose()?;
        let sms = parts
            .sms
            .as_ref()
            .map(|_| renderer.part("sms.text"))
            .transpose()?;
        let webhook = match self.webhooks.get(&locale) {
            Some(node) => match renderer.webhook(node, &scope)? {
                Value::Object(map) => Some(map),
                _ => None,
            },
            None => None,
        };
        Ok(RenderedTemplate {
            email,
            sms,
            push: renderer.titled("push", parts.push.as_ref())?,
            webhook,
            ntfy: renderer.titled("ntfy", parts.ntfy.as_ref())?,
            in_app: renderer.titled("in_app", parts.in_app.as_ref())?,
            locale,
        })
    }

    /// The render context: the caller's variables, declared optional ones
    /// left out as null (so `{{ x }}` renders empty instead of failing), and
    /// `herald` with every one of [`HERALD_KEYS`].
    fn scope(
        &self,
        variables: &Map<String, Value>,
        herald: &Map<String, Value>,
    ) -> Map<String, Value> {
        let mut scope: Map<String, Value> = variables
            .iter()
            .filter(|(name, _)| name.as_str() != RESERVED_VARIABLE)
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        for name in self.definition.variables.keys() {
            scope.entry(name.clone()).or_insert(Value::Null);
        }
        let mut reserved = herald.clone();
        for key in HERALD_KEYS {
            reserved.entry(key).or_insert(Value::Null);
        }
        scope.insert(RESERVED_VARIABLE.into(), Value::Object(reserved));
        scope
    }
}

/// A tera with Herald's rules: escaping for `.html` names only, and a
/// `default` filter that also replaces null (an optional variable left out).
fn engine() -> Tera {
    let mut tera = Tera::new();
    tera.autoescape_on([".html"]);
    tera.register_filter(
        "default",
        |value: tera::Value, kwargs: Kwargs, _: &State| -> tera::TeraResult<tera::Value> {
            let fallback = kwargs.must_get::<tera::Value>("value")?;
            let boolean = kwargs.get::<bool>("boolean")?.unwrap_or_default();
            let missing = matches!(value.kind(), ValueKind::Undefined | ValueKind::None)
                || (boolean && !value.is_truthy());
            Ok(if missing { fallback } else { value })
        },
    );
    tera
}

/// Builds the webhook tree, naming each templated string `<locale>/webhook#<n>`
/// (never ending in `.html`, so never escaped) and queueing it to compile.
fn webhook_node<'a>(
    value: &'a Value,
    locale: &Locale,
    path: &str,
    counter: &mut usize,
    sources: &mut Vec<(String, String, &'a str)>,
) -> WebhookNode {
    match value {
        Value::String(source) => {
            let name = format!("{locale}/webhook#{counter}");
            *counter += 1;
            sources.push((name.clone(), path.to_string(), source));
            match sole_variable(source) {
                Some(segments) => WebhookNode::Variable(segments),
                None => WebhookNode::Template {
                    name,
                    path: path.to_string(),
                },
            }
        }
        Value::Object(map) => webhook_object(map, locale, path, counter, sources),
        Value::Array(items) => WebhookNode::Array(
            items
                .iter()
                .enumerate()
                .map(|(index, item)| {
                    webhook_node(item, locale, &format!("{path}[{index}]"), counter, sources)
                })
                .collect(),
        ),
        scalar => WebhookNode::Literal(scalar.clone()),
    }
}

fn webhook_object<'a>(
    map: &'a Map<String, Value>,
    locale: &Locale,
    path: &str,
    counter: &mut usize,
    sources: &mut Vec<(String, String, &'a str)>,
) -> WebhookNode {
    WebhookNode::Object(
        map.iter()
            .map(|(key, value)| {
                let node = webhook_node(value, locale, &format!("{path}.{key}"), counter, sources);
                (key.clone(), node)
            })
            .collect(),
    )
}

/// `{{ a.b }}` and nothing else: the dotted variable path.
fn sole_variable(source: &str) -> Option<Vec<String>> {
    let inner = source.trim().strip_prefix("{{")?.strip_suffix("}}")?.trim();
    let segments: Vec<String> = inner.split('.').map(str::to_string).collect();
    let identifier = |s: &String| {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    segments.iter().all(identifier).then_some(segments)
}

struct Renderer<'a> {
    tera: &'a Tera,
    locale: &'a Locale,
    context: &'a Context,
}

impl Renderer<'_> {
    fn part(&self, part: &str) -> Result<String, RenderError> {
        self.named(&format!("{}/{part}", self.locale), part)
    }

    fn named(&self, name: &str, part: &str) -> Result<String, RenderError> {
        let mut out = Capped::default();
        match self.tera.render_to(name, self.context, &mut out) {
            Ok(()) => String::from_utf8(out.bytes)
                .map_err(|_| self.error(part, "rendered invalid UTF-8".into())),
            Err(_) if out.overflowed => Err(self.error(
                part,
                format!("renders to more than {MAX_RENDERED_BYTES} bytes"),
            )),
            Err(error) => Err(self.error(part, describe(&error, name))),
        }
    }

    fn titled(
        &self,
        channel: &str,
        parts: Option<&TitledParts>,
    ) -> Result<Option<RenderedTitled>, RenderError> {
        let Some(parts) = parts else {
            return Ok(None);
        };
        Ok(Some(RenderedTitled {
            title: parts
                .title
                .as_ref()
                .map(|_| {
                    self.part(&format!("{channel}.title"))
                        .map(|t| single_line(&t))
                })
                .transpose()?,
            body: self.part(&format!("{channel}.body"))?,
        }))
    }

    fn webhook(
        &self,
        node: &WebhookNode,
        scope: &Map<String, Value>,
    ) -> Result<Value, RenderError> {
        Ok(match node {
            WebhookNode::Literal(value) => value.clone(),
            WebhookNode::Template { name, path } => Value::String(self.named(name, path)?),
            WebhookNode::Variable(segments) => lookup(scope, segments),
            WebhookNode::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(key, node)| Ok((key.clone(), self.webhook(node, scope)?)))
                    .collect::<Result<_, RenderError>>()?,
            ),
            WebhookNode::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|node| self.webhook(node, scope))
                    .collect::<Result<_, RenderError>>()?,
            ),
        })
    }

    fn error(&self, part: &str, message: String) -> RenderError {
        RenderError::Part {
            locale: self.locale.clone(),
            part: part.to_string(),
            message,
        }
    }
}

fn lookup(scope: &Map<String, Value>, segments: &[String]) -> Value {
    let Some((first, rest)) = segments.split_first() else {
        return Value::Null;
    };
    let mut current = scope.get(first);
    for segment in rest {
        current = current.and_then(|value| value.get(segment));
    }
    current.cloned().unwrap_or(Value::Null)
}

/// Subjects and titles are one line: a newline in a subject would be a
/// header injection, and push titles are shown on one line anyway.
fn single_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// tera's report in one line: the reason, and where unless it is `own`.
pub(super) fn describe(error: &tera::Error, own: &str) -> String {
    let (message, file, line) = match error.kind() {
        ErrorKind::SyntaxError(report) | ErrorKind::RenderingError(report) => (
            report.message().to_string(),
            report.filename().to_string(),
            Some(report.span().start_line),
        ),
        _ => {
            // Other reports read "error: <reason>\n --> <file>:<line>:<col>\n...".
            let text = error.to_string();
            let mut lines = text.lines();
            let message = lines
                .next()
                .unwrap_or_default()
                .trim_start_matches("error: ")
                .to_string();
            let location =
                lines.find_map(|l| l.trim_start().strip_prefix("--> ").map(str::to_string));
            let parsed = location.and_then(|at| {
                let mut pieces = at.rsplitn(3, ':');
                let _column = pieces.next()?;
                let line = pieces.next()?.parse::<usize>().ok()?;
                Some((pieces.next()?.to_string(), line))
            });
            match parsed {
                Some((file, line)) => (message, file, Some(line)),
                None => (message, String::new(), None),
            }
        }
    };
    match line {
        Some(line) if file == own || file.is_empty() => format!("line {line}: {message}"),
        Some(line) => format!("{file} line {line}: {message}"),
        None => message,
    }
}

/// A sink that refuses to grow past [`MAX_RENDERED_BYTES`].
#[derive(Default)]
struct Capped {
    bytes: Vec<u8>,
    overflowed: bool,
}

impl Write for Capped {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.bytes.len() + data.len() > MAX_RENDERED_BYTES {
            self.overflowed = true;
            return Err(io::Error::other("rendered part too large"));
        }
        self.bytes.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
