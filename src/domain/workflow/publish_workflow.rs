//! A workflow definition as given (a JSON or TOML file, an API body), before
//! anything is trusted.
//!
//! [`PublishWorkflow::parse`] checks every field, then the graph the steps
//! make, then the templates they name, and reports every refusal by path
//! (`steps[2].send.template`), so one bad field never hides another.
//! Unknown fields are refused by serde: in a file kept by hand, a misspelt
//! field silently ignored is a step that does not do what it says.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::condition::{Condition, Test};
use super::definition::{
    BranchCase, BranchStep, DelayStep, DigestStep, END, SendStep, Step, StepKind, Target,
    ThrottleStep, WaitForStep, WorkflowDefinition, outcomes_of,
};
use super::event_matcher::{EventMatcherSpec, MAX_MATCH_FIELDS, MatchSource};
use super::field_path::{FieldRef, PayloadPath, StepField};
use super::step_duration::StepDuration;
use super::template_catalog::TemplateCatalog;
use super::workflow_key::{StepName, WorkflowKey};
use crate::domain::MAX_CHANNELS;
use crate::domain::template::VariableType;
use crate::domain::validation_errors::ValidationErrors;
use crate::domain::values::{
    Channel, ExternalEventType, Priority, TemplateKey, TemplateVersion, ValueError, holds_nul,
};

pub const MAX_STEPS: usize = 50;
pub const MAX_CASES: usize = 10;
/// Conditions in all the cases of one branch step.
pub const MAX_CONDITIONS: usize = 20;
/// Paths in a digest's or a throttle's key.
pub const MAX_KEY_PATHS: usize = 5;
pub const MAX_DIGEST_ITEMS: u32 = 100;
pub const MAX_DIGEST_WINDOW_SECONDS: u32 = 7 * 86_400;
/// A digest may close early once this many triggers joined; it may count
/// more than it lists (`max_items`).
pub const MAX_SEND_AT_ONCE_WHEN: u32 = 10_000;
pub const MAX_THROTTLE_LIMIT: u32 = 10_000;
/// The template variable a digest's payloads arrive in.
pub const DIGEST_VARIABLE: &str = "digest";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishWorkflow {
    pub key: Option<String>,
    #[serde(default)]
    pub steps: Vec<StepInput>,
}

/// A step: its `name` and exactly one of the kinds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepInput {
    pub name: Option<String>,
    pub send: Option<SendInput>,
    pub delay: Option<DelayInput>,
    pub digest: Option<DigestInput>,
    pub wait_for: Option<WaitForInput>,
    pub branch: Option<BranchInput>,
    pub throttle: Option<ThrottleInput>,
    pub cancel_on: Option<MatcherInput>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendInput {
    /// In order of preference.
    #[serde(default)]
    pub channels: Vec<String>,
    pub template: Option<String>,
    /// The latest at send time when absent.
    pub version: Option<u32>,
    /// `NORMAL` when absent.
    pub priority: Option<String>,
}

/// `duration` (`30m`) or `until` (a `payload.` path holding an RFC 3339 time).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelayInput {
    pub duration: Option<String>,
    pub until: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestInput {
    pub window: Option<String>,
    #[serde(default)]
    pub key: Vec<String>,
    /// [`MAX_DIGEST_ITEMS`] when absent.
    pub max_items: Option<u32>,
    pub send_at_once_when: Option<u32>,
}

/// An event type and, under `where`, the fields of its payload that must
/// hold a value of the run (`"order.id": "payload.order_id"`) or a value
/// written out (`"status": {"value": "final"}`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatcherInput {
    pub event: Option<String>,
    #[serde(rename = "where", default)]
    pub fields: BTreeMap<String, MatchSourceInput>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MatchSourceInput {
    Field(String),
    Literal { value: Value },
}

/// Gotos name a step or `end`; the next step in order when absent.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitForInput {
    pub event: Option<String>,
    #[serde(rename = "where", default)]
    pub fields: BTreeMap<String, MatchSourceInput>,
    pub timeout: Option<String>,
    pub on_match: Option<String>,
    pub on_timeout: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BranchInput {
    #[serde(default)]
    pub cases: Vec<CaseInput>,
    /// The next step in order when absent.
    pub otherwise: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseInput {
    #[serde(default)]
    pub when: Vec<ConditionInput>,
    pub goto: Option<String>,
}

/// A `field` and exactly one test.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionInput {
    pub field: Option<String>,
    pub equals: Option<Value>,
    pub not_equals: Option<Value>,
    pub one_of: Option<Vec<Value>>,
    pub exists: Option<bool>,
    pub greater_than: Option<f64>,
    pub less_than: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleInput {
    pub limit: Option<u32>,
    pub window: Option<String>,
    #[serde(default)]
    pub key: Vec<String>,
}

impl PublishWorkflow {
    /// Every refusal at once: fields first, then (when every step parsed)
    /// the graph and what the templates need. `catalog` says which
    /// templates are published.
    pub fn parse(
        self,
        catalog: &impl TemplateCatalog,
    ) -> Result<WorkflowDefinition, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let key = errors.required("key", self.key.as_deref(), WorkflowKey::parse);
        if self.steps.is_empty() {
            errors.add("steps", "at least one step is required");
        }
        if self.steps.len() > MAX_STEPS {
            errors.add("steps", format!("at most {MAX_STEPS} steps"));
        }
        let index = StepIndex::new(&self.steps, &mut errors);
        let mut steps = Vec::with_capacity(self.steps.len());
        for (position, input) in self.steps.into_iter().enumerate() {
            let name = index.names[position].clone();
            let kind = input.parse_kind(position, &index, catalog, &mut errors);
            if let (Some(name), Some(kind)) = (name, kind) {
                steps.push(Step { name, kind });
            }
        }
        let (Some(key), true) = (key, steps.len() == index.names.len()) else {
            return Err(errors);
        };
        // Names and gotos were checked above; what `new` refuses is reported already.
        let Ok(definition) = WorkflowDefinition::new(key, steps) else {
            return Err(errors);
        };
        check_graph(&definition, &mut errors);
        check_digest_variable(&definition, catalog, &mut errors);
        if errors.is_empty() {
            Ok(definition)
        } else {
            Err(errors)
        }
    }
}

/// The steps' names by position, and the kind written for each name, which
/// gotos, conditions and matchers refer to before the steps are parsed.
struct StepIndex {
    names: Vec<Option<StepName>>,
    kinds: BTreeMap<StepName, &'static str>,
}

impl StepIndex {
    fn new(inputs: &[StepInput], errors: &mut ValidationErrors) -> Self {
        let mut names = Vec::with_capacity(inputs.len());
        let mut kinds = BTreeMap::new();
        let mut first_at: BTreeMap<StepName, usize> = BTreeMap::new();
        for (position, input) in inputs.iter().enumerate() {
            let path = format!("steps[{position}].name");
            let mut name = errors.required(&path, input.name.as_deref(), StepName::parse);
            if name.as_ref().is_some_and(|name| name.as_str() == END) {
                errors.add(&path, "end is reserved: a goto to end ends the run");
                name = None;
            }
            if let Some(name) = &name {
                if let Some(first) = first_at.get(name) {
                    errors.add(&path, format!("{name} is also the name of steps[{first}]"));
                } else {
                    first_at.insert(name.clone(), position);
                    if let [kind] = input.kinds_given()[..] {
                        kinds.insert(name.clone(), kind);
                    }
                }
            }
            names.push(name);
        }
        Self { names, kinds }
    }

    /// Where `raw` leads from the step at `position`: the next step in order when absent.
    fn target(
        &self,
        position: usize,
        raw: Option<&str>,
        path: &str,
        errors: &mut ValidationErrors,
    ) -> Option<Target> {
        match raw {
            None => match self.names.get(position + 1) {
                None => Some(Target::End),
                // The next step's name was refused; that is reported at its own path.
                Some(next) => next.clone().map(Target::Step),
            },
            Some(END) => Some(Target::End),
            Some(raw) => {
                let name = errors.check(path, StepName::parse(raw))?;
                if self.names.iter().flatten().any(|known| *known == name) {
                    Some(Target::Step(name))
                } else {
                    errors.add(path, format!("no step is named {name}"));
                    None
                }
            }
        }
    }
}

impl StepInput {
    fn kinds_given(&self) -> Vec<&'static str> {
        [
            ("send", self.send.is_some()),
            ("delay", self.delay.is_some()),
            ("digest", self.digest.is_some()),
            ("wait_for", self.wait_for.is_some()),
            ("branch", self.branch.is_some()),
            ("throttle", self.throttle.is_some()),
            ("cancel_on", self.cancel_on.is_some()),
        ]
        .into_iter()
        .filter_map(|(kind, given)| given.then_some(kind))
        .collect()
    }

    fn parse_kind(
        self,
        position: usize,
        index: &StepIndex,
        catalog: &impl TemplateCatalog,
        errors: &mut ValidationErrors,
    ) -> Option<StepKind> {
        let at = |kind: &str| format!("steps[{position}].{kind}");
        if self.kinds_given().len() != 1 {
            errors.add(
                format!("steps[{position}]"),
                "give exactly one of send, delay, digest, wait_for, branch, throttle, cancel_on",
            );
            return None;
        }
        if let Some(send) = self.send {
            send.parse(&at("send"), catalog, errors).map(StepKind::Send)
        } else if let Some(delay) = self.delay {
            delay.parse(&at("delay"), errors).map(StepKind::Delay)
        } else if let Some(digest) = self.digest {
            digest.parse(&at("digest"), errors).map(StepKind::Digest)
        } else if let Some(wait_for) = self.wait_for {
            wait_for
                .parse(position, &at("wait_for"), index, errors)
                .map(StepKind::WaitFor)
        } else if let Some(branch) = self.branch {
            branch
                .parse(position, &at("branch"), index, errors)
                .map(StepKind::Branch)
        } else if let Some(throttle) = self.throttle {
            throttle
                .parse(&at("throttle"), errors)
                .map(StepKind::Throttle)
        } else {
            self.cancel_on?
                .parse(&at("cancel_on"), index, errors)
                .map(StepKind::CancelOn)
        }
    }
}

impl SendInput {
    fn parse(
        self,
        path: &str,
        catalog: &impl TemplateCatalog,
        errors: &mut ValidationErrors,
    ) -> Option<SendStep> {
        let channels = parse_channels(&self.channels, &format!("{path}.channels"), errors);
        let template_path = format!("{path}.template");
        let template =
            errors.required(&template_path, self.template.as_deref(), TemplateKey::parse);
        let version_path = format!("{path}.version");
        let version = self
            .version
            .and_then(|version| errors.check(&version_path, TemplateVersion::parse(version)));
        let priority = match self.priority {
            None => Some(Priority::default()),
            Some(priority) => errors.check(format!("{path}.priority"), Priority::parse(&priority)),
        };
        if let Some(template) = &template {
            if catalog.variables(template, None).is_none() {
                errors.add(
                    &template_path,
                    format!("no template {template} is published"),
                );
            } else if let Some(version) = version
                && catalog.variables(template, Some(version)).is_none()
            {
                errors.add(
                    &version_path,
                    format!("{template} has no version {}", version.get()),
                );
            }
        }
        Some(SendStep {
            channels,
            template: template?,
            version,
            priority: priority?,
        })
    }
}

fn parse_channels(raw: &[String], path: &str, errors: &mut ValidationErrors) -> Vec<Channel> {
    if raw.is_empty() {
        errors.add(path, "at least one channel is required");
    }
    if raw.len() > MAX_CHANNELS {
        errors.add(path, format!("at most {MAX_CHANNELS} channels"));
    }
    let mut channels = Vec::with_capacity(raw.len());
    for (position, raw) in raw.iter().enumerate() {
        let path = format!("{path}[{position}]");
        if let Some(channel) = errors.check(&path, Channel::parse(raw)) {
            if channels.contains(&channel) {
                errors.add(path, format!("{channel} is listed more than once"));
            } else {
                channels.push(channel);
            }
        }
    }
    channels
}

impl DelayInput {
    fn parse(self, path: &str, errors: &mut ValidationErrors) -> Option<DelayStep> {
        match (self.duration, self.until) {
            (Some(duration), None) => errors
                .check(format!("{path}.duration"), StepDuration::parse(&duration))
                .map(DelayStep::Duration),
            (None, Some(until)) => {
                let path = format!("{path}.until");
                let field = errors.check(&path, FieldRef::parse(&until))?;
                if matches!(field, FieldRef::Payload(_)) {
                    Some(DelayStep::Until(field))
                } else {
                    errors.add(path, "must be a payload. path holding an RFC 3339 time");
                    None
                }
            }
            _ => {
                errors.add(path, "give either duration or until");
                None
            }
        }
    }
}

impl DigestInput {
    fn parse(self, path: &str, errors: &mut ValidationErrors) -> Option<DigestStep> {
        let window = errors.required(
            &format!("{path}.window"),
            self.window.as_deref(),
            parse_window(MAX_DIGEST_WINDOW_SECONDS),
        );
        let key = parse_key(&self.key, &format!("{path}.key"), errors);
        let max_items = match self.max_items {
            None => Some(MAX_DIGEST_ITEMS),
            Some(max_items @ 1..=MAX_DIGEST_ITEMS) => Some(max_items),
            Some(_) => {
                errors.add(
                    format!("{path}.max_items"),
                    format!("must be between 1 and {MAX_DIGEST_ITEMS}"),
                );
                None
            }
        };
        let send_at_once_when = match self.send_at_once_when {
            Some(count) if !(2..=MAX_SEND_AT_ONCE_WHEN).contains(&count) => {
                errors.add(
                    format!("{path}.send_at_once_when"),
                    format!("must be between 2 and {MAX_SEND_AT_ONCE_WHEN}"),
                );
                None
            }
            count => count,
        };
        Some(DigestStep {
            window: window?,
            key: key?,
            max_items: max_items?,
            send_at_once_when,
        })
    }
}

impl ThrottleInput {
    fn parse(self, path: &str, errors: &mut ValidationErrors) -> Option<ThrottleStep> {
        let limit = errors.required(&format!("{path}.limit"), self.limit, |limit| {
            if (1..=MAX_THROTTLE_LIMIT).contains(&limit) {
                Ok(limit)
            } else {
                Err(ValueError::Invalid(format!(
                    "must be between 1 and {MAX_THROTTLE_LIMIT}"
                )))
            }
        });
        let window = errors.required(
            &format!("{path}.window"),
            self.window.as_deref(),
            StepDuration::parse,
        );
        let key = parse_key(&self.key, &format!("{path}.key"), errors);
        Some(ThrottleStep {
            limit: limit?,
            window: window?,
            key: key?,
        })
    }
}

fn parse_window(max_seconds: u32) -> impl FnOnce(&str) -> Result<StepDuration, ValueError> {
    move |raw| {
        let window = StepDuration::parse(raw)?;
        if window.seconds() > max_seconds {
            return Err(ValueError::Invalid(format!(
                "must be at most {}",
                StepDuration::from_seconds(u64::from(max_seconds))?
            )));
        }
        Ok(window)
    }
}

/// A digest's or a throttle's key: 1 to [`MAX_KEY_PATHS`] `payload.` or
/// `recipient.` paths, none twice.
fn parse_key(raw: &[String], path: &str, errors: &mut ValidationErrors) -> Option<Vec<FieldRef>> {
    if raw.is_empty() {
        errors.add(path, "at least one payload. or recipient. path is required");
        return None;
    }
    if raw.len() > MAX_KEY_PATHS {
        errors.add(path, format!("at most {MAX_KEY_PATHS} paths"));
    }
    let mut key = Vec::with_capacity(raw.len());
    let mut complete = true;
    for (position, raw) in raw.iter().enumerate() {
        let path = format!("{path}[{position}]");
        match errors.check(&path, FieldRef::parse(raw)) {
            Some(field @ (FieldRef::Payload(_) | FieldRef::Recipient(_))) => {
                if key.contains(&field) {
                    errors.add(path, "is listed more than once");
                } else {
                    key.push(field);
                }
            }
            Some(FieldRef::Step(..)) => {
                errors.add(path, "must be a payload. or recipient. path");
                complete = false;
            }
            None => complete = false,
        }
    }
    complete.then_some(key)
}

impl MatcherInput {
    fn parse(
        self,
        path: &str,
        index: &StepIndex,
        errors: &mut ValidationErrors,
    ) -> Option<EventMatcherSpec> {
        parse_matcher(self.event, self.fields, path, index, errors)
    }
}

fn parse_matcher(
    event: Option<String>,
    fields: BTreeMap<String, MatchSourceInput>,
    path: &str,
    index: &StepIndex,
    errors: &mut ValidationErrors,
) -> Option<EventMatcherSpec> {
    let event = errors.required(
        &format!("{path}.event"),
        event.as_deref(),
        ExternalEventType::parse,
    );
    if fields.len() > MAX_MATCH_FIELDS {
        errors.add(
            format!("{path}.where"),
            format!("at most {MAX_MATCH_FIELDS} fields"),
        );
    }
    let mut parsed = BTreeMap::new();
    let mut complete = true;
    for (field, source) in fields {
        let field_path = format!("{path}.where.{field}");
        let source = match source {
            MatchSourceInput::Literal { value } if holds_nul(&value) => {
                errors.add(&field_path, "must not contain NUL characters");
                None
            }
            MatchSourceInput::Literal { value } => Some(MatchSource::Literal { value }),
            MatchSourceInput::Field(raw) => parse_match_field(&raw, &field_path, index, errors),
        };
        match (
            errors.check(&field_path, PayloadPath::parse(&field)),
            source,
        ) {
            (Some(field), Some(source)) => {
                parsed.insert(field, source);
            }
            _ => complete = false,
        }
    }
    Some(EventMatcherSpec {
        event: event?,
        fields: complete.then_some(parsed)?,
    })
}

/// A run value an event field must equal: the payload, the recipient, or
/// the notification an earlier `send` step made.
fn parse_match_field(
    raw: &str,
    path: &str,
    index: &StepIndex,
    errors: &mut ValidationErrors,
) -> Option<MatchSource> {
    match errors.check(path, FieldRef::parse(raw))? {
        FieldRef::Step(name, StepField::NotificationId)
            if index.kinds.get(&name) != Some(&"send") =>
        {
            errors.add(path, format!("{name} is not a send step"));
            None
        }
        FieldRef::Step(_, StepField::Outcome) => {
            errors.add(
                path,
                "must be a payload., recipient. or steps.<send step>.notification_id path",
            );
            None
        }
        field => Some(MatchSource::Field(field)),
    }
}

impl WaitForInput {
    fn parse(
        self,
        position: usize,
        path: &str,
        index: &StepIndex,
        errors: &mut ValidationErrors,
    ) -> Option<WaitForStep> {
        let event = parse_matcher(self.event, self.fields, path, index, errors);
        let timeout = errors.required(
            &format!("{path}.timeout"),
            self.timeout.as_deref(),
            StepDuration::parse,
        );
        let on_match = index.target(
            position,
            self.on_match.as_deref(),
            &format!("{path}.on_match"),
            errors,
        );
        let on_timeout = index.target(
            position,
            self.on_timeout.as_deref(),
            &format!("{path}.on_timeout"),
            errors,
        );
        Some(WaitForStep {
            event: event?,
            timeout: timeout?,
            on_match: on_match?,
            on_timeout: on_timeout?,
        })
    }
}

impl BranchInput {
    fn parse(
        self,
        position: usize,
        path: &str,
        index: &StepIndex,
        errors: &mut ValidationErrors,
    ) -> Option<BranchStep> {
        let cases_path = format!("{path}.cases");
        if self.cases.is_empty() {
            errors.add(&cases_path, "at least one case is required");
        }
        if self.cases.len() > MAX_CASES {
            errors.add(&cases_path, format!("at most {MAX_CASES} cases"));
        }
        let conditions: usize = self.cases.iter().map(|case| case.when.len()).sum();
        if conditions > MAX_CONDITIONS {
            errors.add(
                &cases_path,
                format!("at most {MAX_CONDITIONS} conditions in all"),
            );
        }
        let cases: Vec<Option<BranchCase>> = self
            .cases
            .into_iter()
            .enumerate()
            .map(|(case_position, case)| {
                let path = format!("{cases_path}[{case_position}]");
                case.parse(position, &path, index, errors)
            })
            .collect();
        let otherwise = index.target(
            position,
            self.otherwise.as_deref(),
            &format!("{path}.otherwise"),
            errors,
        );
        Some(BranchStep {
            cases: cases.into_iter().collect::<Option<_>>()?,
            otherwise: otherwise?,
        })
    }
}

impl CaseInput {
    fn parse(
        self,
        position: usize,
        path: &str,
        index: &StepIndex,
        errors: &mut ValidationErrors,
    ) -> Option<BranchCase> {
        if self.when.is_empty() {
            errors.add(format!("{path}.when"), "at least one condition is required");
        }
        let when: Vec<Option<Condition>> = self
            .when
            .into_iter()
            .enumerate()
            .map(|(condition_position, condition)| {
                condition.parse(&format!("{path}.when[{condition_position}]"), index, errors)
            })
            .collect();
        let goto = match self.goto {
            Some(goto) => index.target(position, Some(&goto), &format!("{path}.goto"), errors),
            None => {
                errors.add(format!("{path}.goto"), "is required");
                None
            }
        };
        Some(BranchCase {
            when: when.into_iter().collect::<Option<_>>()?,
            goto: goto?,
        })
    }
}

impl ConditionInput {
    fn parse(
        self,
        path: &str,
        index: &StepIndex,
        errors: &mut ValidationErrors,
    ) -> Option<Condition> {
        let field_path = format!("{path}.field");
        let field = match errors.required(&field_path, self.field.as_deref(), FieldRef::parse) {
            Some(FieldRef::Step(_, StepField::NotificationId)) => {
                errors.add(
                    &field_path,
                    "a condition reads a step's outcome, not its notification_id",
                );
                None
            }
            Some(FieldRef::Step(name, StepField::Outcome)) if !index.kinds.contains_key(&name) => {
                errors.add(&field_path, format!("no step is named {name}"));
                None
            }
            field => field,
        };
        let tests: Vec<Test> = [
            self.equals.map(Test::Equals),
            self.not_equals.map(Test::NotEquals),
            self.one_of.map(Test::OneOf),
            self.exists.map(Test::Exists),
            self.greater_than.map(Test::GreaterThan),
            self.less_than.map(Test::LessThan),
        ]
        .into_iter()
        .flatten()
        .collect();
        let [test] = <[Test; 1]>::try_from(tests).ok().or_else(|| {
            errors.add(
                path,
                "give exactly one of equals, not_equals, one_of, exists, greater_than, less_than",
            );
            None
        })?;
        if let Some(FieldRef::Step(name, StepField::Outcome)) = &field {
            check_outcome_test(&test, index.kinds.get(name).copied(), path, errors);
        }
        Some(Condition {
            field: field?,
            test,
        })
    }
}

/// A test of a step's outcome compares with outcomes that step can have.
fn check_outcome_test(
    test: &Test,
    kind: Option<&'static str>,
    path: &str,
    errors: &mut ValidationErrors,
) {
    let outcomes = kind.map_or(&[][..], outcomes_of);
    let compared: Vec<&Value> = match test {
        Test::Equals(value) | Test::NotEquals(value) => vec![value],
        Test::OneOf(values) => values.iter().collect(),
        Test::Exists(_) => Vec::new(),
        Test::GreaterThan(_) | Test::LessThan(_) => {
            errors.add(
                path,
                "an outcome is compared by equals, not_equals, one_of or exists",
            );
            return;
        }
    };
    for value in compared {
        if !value
            .as_str()
            .is_some_and(|outcome| outcomes.contains(&outcome))
        {
            errors.add(
                path,
                format!(
                    "{value} is not an outcome of a {} step; expected one of {}",
                    kind.unwrap_or("?"),
                    outcomes.join(", ")
                ),
            );
        }
    }
}

/// The graph's rules: every step reachable; no loop that can spin within
/// one decision; one digest, never on a loop; throttles before any rest
/// (runs are counted as they start).
fn check_graph(definition: &WorkflowDefinition, errors: &mut ValidationErrors) {
    let steps = definition.steps();
    let reachable = reach(definition, vec![0], |_| true);
    for position in 0..steps.len() {
        if !reachable.contains(&position) {
            errors.add(
                format!("steps[{position}]"),
                "is never reached from the first step",
            );
        }
    }
    let always_rests = |position: usize| match &steps[position].kind {
        // A time from the payload may be missing or past, and then no delay is waited.
        StepKind::Delay(DelayStep::Until(_)) => false,
        kind => kind.rests(),
    };
    for position in 0..steps.len() {
        if always_rests(position) {
            continue;
        }
        let onward = successor_indexes(definition, position)
            .into_iter()
            .filter(|next| !always_rests(*next))
            .collect();
        if reach(definition, onward, |next| !always_rests(next)).contains(&position) {
            errors.add(
                format!("steps[{position}]"),
                "can loop back to itself without a delay (of a duration), digest or wait_for",
            );
        }
    }
    let mut digests = 0;
    // Each throttle that some rest leads to, with the first such rest.
    let mut throttled_after: BTreeMap<usize, &StepName> = BTreeMap::new();
    for (position, step) in steps.iter().enumerate() {
        let onward = || {
            reach(definition, successor_indexes(definition, position), |_| {
                true
            })
        };
        if let StepKind::Digest(_) = step.kind {
            digests += 1;
            if digests > 1 {
                errors.add(
                    format!("steps[{position}]"),
                    "a workflow has at most one digest step",
                );
            }
            if onward().contains(&position) {
                errors.add(format!("steps[{position}]"), "a digest cannot be on a loop");
            }
        }
        if step.kind.rests() {
            for later in onward() {
                if matches!(steps[later].kind, StepKind::Throttle(_)) {
                    throttled_after.entry(later).or_insert(&step.name);
                }
            }
        }
    }
    for (position, rest) in throttled_after {
        errors.add(
            format!("steps[{position}]"),
            format!("a throttle counts runs as they start, so it cannot come after {rest}"),
        );
    }
}

/// A template that declares `digest` gets the digest's object, so it must
/// accept one; when it requires it, a digest step must come before the send
/// on every path to it.
fn check_digest_variable(
    definition: &WorkflowDefinition,
    catalog: &impl TemplateCatalog,
    errors: &mut ValidationErrors,
) {
    let digest = definition.digest().map(|(position, _)| position);
    for (position, step) in definition.steps().iter().enumerate() {
        let StepKind::Send(send) = &step.kind else {
            continue;
        };
        let Some(spec) = catalog
            .variables(&send.template, send.version)
            .and_then(|variables| variables.get(DIGEST_VARIABLE))
        else {
            continue;
        };
        let path = format!("steps[{position}].send.template");
        if !matches!(spec.kind, VariableType::Object | VariableType::Any) {
            errors.add(
                &path,
                format!(
                    "{} declares {DIGEST_VARIABLE} as {}, but a digest gives an object",
                    send.template, spec.kind
                ),
            );
        }
        let preceded = digest.is_some_and(|digest| {
            digest == 0 || !reach(definition, vec![0], |next| next != digest).contains(&position)
        });
        if spec.required && !preceded {
            errors.add(
                path,
                format!(
                    "{} requires {DIGEST_VARIABLE}, which only a digest step before this one on every path gives",
                    send.template
                ),
            );
        }
    }
}

fn successor_indexes(definition: &WorkflowDefinition, position: usize) -> Vec<usize> {
    definition
        .successors(position)
        .into_iter()
        .filter_map(|target| match target {
            Target::Step(name) => definition.index_of(&name),
            Target::End => None,
        })
        .collect()
}

/// The steps reachable from `starts` (included) through steps that are `passable`.
fn reach(
    definition: &WorkflowDefinition,
    starts: Vec<usize>,
    passable: impl Fn(usize) -> bool,
) -> BTreeSet<usize> {
    let mut seen = BTreeSet::new();
    let mut pending: Vec<usize> = starts
        .into_iter()
        .filter(|start| passable(*start))
        .collect();
    while let Some(position) = pending.pop() {
        if seen.insert(position) {
            pending.extend(
                successor_indexes(definition, position)
                    .into_iter()
                    .filter(|next| passable(*next) && !seen.contains(next)),
            );
        }
    }
    seen
}
