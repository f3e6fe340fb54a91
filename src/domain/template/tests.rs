use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::*;
use crate::domain::DomainError;
use crate::domain::aggregate::Aggregate;
use crate::domain::given_when_then::given;
use crate::domain::test_fixtures::tenant;
use crate::domain::values::{Channel, Locale, TemplateKey, TemplateVersion};

fn locale(tag: &str) -> Locale {
    Locale::parse(tag).unwrap()
}

fn vars(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => panic!("variables must be an object"),
    }
}

fn email(subject: &str, html: &str, text: &str) -> LocaleParts {
    LocaleParts {
        email: Some(EmailParts {
            subject: subject.into(),
            html: Some(html.into()),
            text: Some(text.into()),
        }),
        ..LocaleParts::default()
    }
}

fn name_var(required: bool) -> VariableInput {
    VariableInput {
        name: "name".into(),
        kind: VariableType::String,
        required,
    }
}

/// A welcome email in English (the default), French and Canadian French.
fn welcome() -> PublishTemplate {
    PublishTemplate {
        key: "welcome".into(),
        default_locale: "en".into(),
        variables: vec![
            name_var(true),
            VariableInput {
                name: "count".into(),
                kind: VariableType::Number,
                required: false,
            },
        ],
        locales: vec![
            LocaleInput {
                locale: "en".into(),
                parts: email("Hello {{ name }}", "<p>Hi {{ name }}</p>", "Hi {{ name }}"),
            },
            LocaleInput {
                locale: "fr".into(),
                parts: email(
                    "Bonjour {{ name }}",
                    "<p>Salut {{ name }}</p>",
                    "Salut {{ name }}",
                ),
            },
            LocaleInput {
                locale: "fr-CA".into(),
                parts: email(
                    "Allô {{ name }}",
                    "<p>Allô {{ name }}</p>",
                    "Allô {{ name }}",
                ),
            },
        ],
    }
}

fn parse(input: PublishTemplate) -> TemplateDefinition {
    input.parse(&BTreeMap::new()).unwrap().1
}

fn compiled(input: PublishTemplate) -> CompiledTemplate {
    CompiledTemplate::compile(parse(input)).unwrap()
}

fn render(template: &CompiledTemplate, variables: Value, locales: &[&str]) -> RenderedTemplate {
    let locales: Vec<Locale> = locales.iter().map(|l| locale(l)).collect();
    template
        .render(&vars(variables), &locales, &Map::new())
        .unwrap()
}

fn published(version: u32, definition: TemplateDefinition) -> TemplateEvent {
    TemplateEvent::Published {
        tenant_id: tenant(),
        key: TemplateKey::parse("welcome").unwrap(),
        version: TemplateVersion::parse(version).unwrap(),
        definition,
    }
}

fn publish(definition: TemplateDefinition) -> TemplateCommand {
    TemplateCommand::Publish {
        tenant_id: tenant(),
        key: TemplateKey::parse("welcome").unwrap(),
        definition,
    }
}

fn changed() -> TemplateDefinition {
    let mut input = welcome();
    input.locales[0].parts = email("Welcome {{ name }}", "<p>Welcome</p>", "Welcome");
    parse(input)
}

#[test]
fn the_first_publish_is_version_one() {
    given::<PublishedTemplate>([])
        .when(publish(parse(welcome())))
        .then([published(1, parse(welcome()))]);
}

#[test]
fn each_new_publish_numbers_the_next_version() {
    given::<PublishedTemplate>([published(1, parse(welcome()))])
        .when(publish(changed()))
        .then([published(2, changed())]);
    let template =
        PublishedTemplate::fold(&[published(1, parse(welcome())), published(2, changed())]);
    assert_eq!(template.latest_version().map(TemplateVersion::get), Some(2));
}

#[test]
fn publishing_the_latest_content_again_records_nothing() {
    given::<PublishedTemplate>([published(1, parse(welcome()))])
        .when(publish(parse(welcome())))
        .then_nothing();
    // Going back to an older version's content is a new version.
    given::<PublishedTemplate>([published(1, parse(welcome())), published(2, changed())])
        .when(publish(parse(welcome())))
        .then([published(3, parse(welcome()))]);
}

#[test]
fn a_part_that_does_not_compile_is_named_with_its_line() {
    let mut input = welcome();
    input.locales[1].parts = email("Bonjour", "<p>\n{{ name </p>", "Salut");
    let errors = input.parse(&BTreeMap::new()).unwrap_err();
    let messages = errors.at("template.locales.fr.email.html");
    assert_eq!(messages.len(), 1, "{errors}");
    assert!(messages[0].starts_with("line 2: "), "{}", messages[0]);
}

#[test]
fn publish_refuses_undeclared_variables_a_missing_default_and_bad_names() {
    let mut input = welcome();
    input.default_locale = "de".into();
    input.locales[0].parts = email(
        "Hello {{ nmae }}",
        "<p>{{ herald.unsubscribe_url }}</p>",
        "x",
    );
    input.variables.push(VariableInput {
        name: "herald".into(),
        kind: VariableType::Any,
        required: false,
    });
    input.variables.push(name_var(false));
    let errors = input.parse(&BTreeMap::new()).unwrap_err();
    assert_eq!(
        errors.at("template.default_locale"),
        ["de has no parts among template.locales"]
    );
    assert_eq!(
        errors.at("template.variables[2].name"),
        ["herald is reserved"]
    );
    assert_eq!(
        errors.at("template.variables[3].name"),
        ["declares name a second time"]
    );

    let mut input = welcome();
    input.locales[0].parts = email(
        "Hello {{ nmae }}",
        "<p>{{ herald.unsubscribe_url }}</p>",
        "x",
    );
    let errors = input.parse(&BTreeMap::new()).unwrap_err();
    assert_eq!(
        errors.at("template.locales.en.email.subject"),
        ["uses the undeclared variable `nmae`; declare it in variables"]
    );
    assert!(errors.at("template.locales.en.email.html").is_empty());
}

#[test]
fn publish_refuses_empty_and_duplicate_locales() {
    let mut input = welcome();
    input.locales.push(LocaleInput {
        locale: "FR".into(),
        parts: email("a", "b", "c"),
    });
    input.locales.push(LocaleInput {
        locale: "de".into(),
        parts: LocaleParts::default(),
    });
    let errors = input.parse(&BTreeMap::new()).unwrap_err();
    assert_eq!(
        errors.at("template.locales[3].locale"),
        ["fr is given twice"]
    );
    assert_eq!(
        errors.at("template.locales[4]"),
        ["must have a part for at least one channel"]
    );
    let mut none = welcome();
    none.locales.clear();
    let errors = none.parse(&BTreeMap::new()).unwrap_err();
    assert_eq!(
        errors.at("template.locales"),
        ["must have at least one locale"]
    );
}

#[test]
fn html_is_escaped_and_text_is_not() {
    let template = compiled(welcome());
    let rendered = render(&template, json!({"name": "<b>Tom & 'Jerry\"</b>"}), &["en"]);
    let email = rendered.email.unwrap();
    assert_eq!(
        email.html.as_deref(),
        Some("<p>Hi &lt;b&gt;Tom &amp; &#39;Jerry&quot;&lt;/b&gt;</p>")
    );
    assert_eq!(email.text.as_deref(), Some("Hi <b>Tom & 'Jerry\"</b>"));
    assert_eq!(email.subject, "Hello <b>Tom & 'Jerry\"</b>");
}

#[test]
fn locales_fall_back_from_region_to_language_to_default() {
    let template = compiled(welcome());
    let subject = |locales: &[&str]| {
        let rendered = render(&template, json!({"name": "Ana"}), locales);
        (rendered.locale.to_string(), rendered.email.unwrap().subject)
    };
    assert_eq!(subject(&["fr-CA"]), ("fr-CA".into(), "Allô Ana".into()));
    assert_eq!(subject(&["fr-BE"]), ("fr".into(), "Bonjour Ana".into()));
    assert_eq!(
        subject(&["de-DE", "fr-CA"]),
        ("fr-CA".into(), "Allô Ana".into())
    );
    assert_eq!(subject(&["de-DE"]), ("en".into(), "Hello Ana".into()));
    assert_eq!(subject(&[]), ("en".into(), "Hello Ana".into()));
}

#[test]
fn missing_and_mistyped_variables_are_named() {
    let template = compiled(welcome());
    let error = template
        .render(&vars(json!({"count": "three"})), &[], &Map::new())
        .unwrap_err();
    let RenderError::Variables(errors) = error else {
        panic!("expected variable errors, got {error:?}");
    };
    assert_eq!(errors.at("template.variables.name"), ["is required"]);
    assert_eq!(errors.at("template.variables.count"), ["must be a number"]);
    let errors = template
        .definition()
        .check_variables(&vars(json!({"name": null, "herald": {}})))
        .unwrap_err();
    assert_eq!(errors.at("template.variables.name"), ["is required"]);
    assert_eq!(
        errors.at("template.variables.herald"),
        ["is reserved for the values Herald supplies"]
    );
}

#[test]
fn optional_variables_left_out_render_empty_or_their_default() {
    let mut input = welcome();
    input.locales = vec![LocaleInput {
        locale: "en".into(),
        parts: LocaleParts {
            sms: Some(
                "[{{ count }}][{{ count | default(value=1) }}][{% if count %}n{% endif %}]".into(),
            ),
            ..LocaleParts::default()
        },
    }];
    let template = compiled(input);
    let rendered = render(&template, json!({"name": "Ana"}), &[]);
    assert_eq!(rendered.sms.as_deref(), Some("[][1][]"));
    let rendered = render(&template, json!({"name": "Ana", "count": 3}), &[]);
    assert_eq!(rendered.sms.as_deref(), Some("[3][3][n]"));
}

#[test]
fn herald_values_are_always_available_and_never_checked() {
    let mut input = welcome();
    input.locales = vec![LocaleInput {
        locale: "en".into(),
        parts: LocaleParts {
            in_app: Some(TitledParts {
                title: Some("Hi\r\n{{ name }}".into()),
                body: "{{ herald.notification_id }}|{{ herald.unsubscribe_url }}".into(),
            }),
            ..LocaleParts::default()
        },
    }];
    let template = compiled(input);
    let herald = vars(json!({"notification_id": "n-1"}));
    let rendered = template
        .render(&vars(json!({"name": "Ana"})), &[], &herald)
        .unwrap();
    let in_app = rendered.in_app.clone().unwrap();
    assert_eq!(in_app.body, "n-1|");
    assert_eq!(
        in_app.title.as_deref(),
        Some("Hi Ana"),
        "titles are one line"
    );
    assert_eq!(
        rendered.content_for(Channel::InApp),
        Some(RenderedContent {
            title: Some("Hi Ana".into()),
            text: Some("n-1|".into()),
            ..RenderedContent::default()
        })
    );
    assert_eq!(rendered.content_for(Channel::Email), None);
}

#[test]
fn partials_and_layouts_are_captured_at_publish() {
    let mut library = BTreeMap::new();
    library.insert(
        "partial:footer".to_string(),
        "<i>{{ name }}</i>".to_string(),
    );
    library.insert(
        "layout:base".to_string(),
        "<html>{% block body %}{% endblock body %}{% include \"partial:footer\" %}</html>"
            .to_string(),
    );
    library.insert("partial:unused".to_string(), "nobody".to_string());
    let mut input = welcome();
    input.locales = vec![LocaleInput {
        locale: "en".into(),
        parts: email(
            "Hi",
            "{% extends \"layout:base\" %}{% block body %}<b>{{ name }}</b>{% endblock body %}",
            "Hi {{ name }} -- {% include \"partial:footer\" %}",
        ),
    }];
    let (_, definition) = input.parse(&library).unwrap();
    assert_eq!(
        definition.snippets.keys().collect::<Vec<_>>(),
        ["layout:base", "partial:footer"]
    );
    // The library changes later; the version keeps what it was published with.
    library.insert("partial:footer".to_string(), "changed".to_string());
    let template = CompiledTemplate::compile(definition).unwrap();
    let email = render(&template, json!({"name": "<Ana>"}), &[])
        .email
        .unwrap();
    assert_eq!(
        email.html.as_deref(),
        Some("<html><b>&lt;Ana&gt;</b><i>&lt;Ana&gt;</i></html>"),
        "the layout and the partial are escaped as the HTML part"
    );
    assert_eq!(email.text.as_deref(), Some("Hi <Ana> -- <i><Ana></i>"));
}

#[test]
fn an_unknown_partial_is_refused_at_publish() {
    let mut input = welcome();
    input.locales = vec![LocaleInput {
        locale: "en".into(),
        parts: email("Hi", "{% include \"partial:nope\" %}", "x"),
    }];
    let errors = input.parse(&BTreeMap::new()).unwrap_err();
    let messages = errors.at("template.locales.en.email.html");
    assert_eq!(messages.len(), 1, "{errors}");
    assert!(messages[0].contains("partial:nope"), "{}", messages[0]);
}

#[test]
fn webhook_json_keeps_variable_types_and_renders_strings() {
    let mut input = welcome();
    input.variables.push(VariableInput {
        name: "order".into(),
        kind: VariableType::Object,
        required: true,
    });
    input.locales = vec![LocaleInput {
        locale: "en".into(),
        parts: LocaleParts {
            webhook: Some(vars(json!({
                "text": "Order for {{ name }}",
                "order": "{{ order }}",
                "total": "{{ order.total }}",
                "fixed": [1, true, null, "<{{ name }}>"]
            }))),
            ..LocaleParts::default()
        },
    }];
    let template = compiled(input);
    let rendered = render(
        &template,
        json!({"name": "<Ana>", "order": {"total": 12.5, "items": 2}}),
        &[],
    );
    assert_eq!(
        Value::Object(rendered.webhook.clone().unwrap()),
        json!({
            "text": "Order for <Ana>",
            "order": {"total": 12.5, "items": 2},
            "total": 12.5,
            "fixed": [1, true, null, "<<Ana>>"]
        })
    );
    let content = rendered.content_for(Channel::Webhook).unwrap();
    assert_eq!(content.data, rendered.webhook);
}

#[test]
fn a_part_that_fails_at_render_names_the_part() {
    let mut input = welcome();
    input.variables.push(VariableInput {
        name: "order".into(),
        kind: VariableType::Object,
        required: true,
    });
    input.locales = vec![LocaleInput {
        locale: "en".into(),
        parts: LocaleParts {
            sms: Some("{{ order.missing.deeper }}".into()),
            ..LocaleParts::default()
        },
    }];
    let template = compiled(input);
    let error = template
        .render(&vars(json!({"name": "a", "order": {}})), &[], &Map::new())
        .unwrap_err();
    let RenderError::Part { part, message, .. } = error else {
        panic!("expected a part error, got {error:?}");
    };
    assert_eq!(part, "sms.text");
    assert!(message.starts_with("line 1: "), "{message}");
}

#[test]
fn partials_upsert_once_per_change_and_must_compile() {
    let upsert = |name: &str, body: &str| PartialCommand::Upsert {
        tenant_id: tenant(),
        kind: PartialKind::Partial,
        name: PartialName::parse(name).unwrap(),
        body: body.into(),
    };
    let upserted = |name: &str, body: &str| PartialEvent::Upserted {
        tenant_id: tenant(),
        kind: PartialKind::Partial,
        name: PartialName::parse(name).unwrap(),
        body: body.into(),
    };
    given::<PartialLibrary>([])
        .when(upsert("footer", "bye"))
        .then([upserted("footer", "bye")]);
    given::<PartialLibrary>([upserted("footer", "bye")])
        .when(upsert("footer", "bye"))
        .then_nothing();
    given::<PartialLibrary>([upserted("footer", "bye")])
        .when(upsert("footer", "ciao"))
        .then([upserted("footer", "ciao")]);

    let library = PartialLibrary::fold(&[upserted("footer", "bye")]);
    let input = |name: &str, body: &str| UpsertPartial {
        kind: PartialKind::Layout,
        name: name.into(),
        body: body.into(),
    };
    assert!(
        library
            .parse(input("base", "{% include \"partial:footer\" %}"))
            .is_ok()
    );
    let errors = library
        .parse(input("base", "{% include \"partial:header\" %}"))
        .unwrap_err();
    assert_eq!(errors.at("body").len(), 1);
    let errors = library.parse(input("Base!", " ")).unwrap_err();
    assert_eq!(errors.at("name").len(), 1);
    assert_eq!(errors.at("body"), ["must not be empty"]);
    let errors = library.parse(input("base", "b\0ye")).unwrap_err();
    assert_eq!(errors.at("body"), ["must not contain NUL characters"]);
}

#[test]
fn every_event_round_trips_through_upcast() {
    let event = published(1, parse(welcome()));
    let payload = serde_json::to_value(&event).unwrap();
    assert_eq!(
        TemplateEvent::upcast(event.event_type(), TemplateEvent::SCHEMA_VERSION, payload),
        Ok(event)
    );
    let event = PartialEvent::Upserted {
        tenant_id: tenant(),
        kind: PartialKind::Layout,
        name: PartialName::parse("base").unwrap(),
        body: "x".into(),
    };
    let payload = serde_json::to_value(&event).unwrap();
    assert_eq!(
        PartialEvent::upcast(event.event_type(), PartialEvent::SCHEMA_VERSION, payload),
        Ok(event)
    );
    assert!(matches!(
        TemplateEvent::upcast("TemplateDeleted", 1, json!({})),
        Err(DomainError::UnknownEventType { .. })
    ));
}
