//! Integration tests: templates.

use herald::commands::CommandError;
use herald::commands::templates::{self, TemplateCache};
use herald::domain::TemplateRef;
use herald::domain::values::{JsonObject, Locale, TemplateKey, TemplateVersion, TenantId};
use serde_json::{Map, Value, json};

use crate::support::{TestApp, data, error_codes};

const PUBLISH: &str = r#"mutation($input: PublishTemplateInput!) {
  publishTemplate(input: $input) { key number locales partials variables { name type required } }
}"#;
const PARTIAL: &str = r#"mutation($name: String!, $body: String!, $kind: TemplatePartialKind!) {
  upsertTemplatePartial(name: $name, body: $body, kind: $kind) { kind name body }
}"#;
const PREVIEW: &str = r#"query($key: String!, $version: Int, $locale: String, $variables: JSON) {
  previewTemplate(key: $key, version: $version, locale: $locale, variables: $variables) {
    key version locale email { subject html text } sms { text } push { title body } webhook
  }
}"#;

struct Templates {
    app: TestApp,
    tenant: TenantId,
    key: String,
}

impl Templates {
    async fn start() -> Templates {
        let app = TestApp::start().await;
        let (tenant, key) = app.tenant().await;
        Templates {
            app,
            tenant: TenantId::parse(&tenant).unwrap(),
            key,
        }
    }

    async fn raw(&self, query: &str, variables: Value) -> Value {
        self.app.graphql(Some(&self.key), query, variables).await
    }

    async fn graphql(&self, query: &str, variables: Value) -> Value {
        data(self.raw(query, variables).await)
    }

    async fn publish(&self, input: Value) -> Value {
        self.graphql(PUBLISH, json!({ "input": input })).await["publishTemplate"].clone()
    }

    async fn preview(&self, variables: Value) -> Value {
        self.graphql(PREVIEW, variables).await["previewTemplate"].clone()
    }
}

/// A receipt in English (the default) and French, by email, SMS and webhook.
fn receipt(greeting_en: &str) -> Value {
    json!({
        "key": "billing.receipt",
        "defaultLocale": "en",
        "variables": [
            { "name": "name", "type": "STRING" },
            { "name": "total", "type": "NUMBER" },
            { "name": "note", "type": "STRING", "required": false }
        ],
        "locales": [
            {
                "locale": "en",
                "email": {
                    "subject": "{{ greeting }} {{ name }}",
                    "html": "<p>{{ greeting }} {{ name }}, you paid {{ total }}</p>",
                    "text": "{{ greeting }} {{ name }}, you paid {{ total }}"
                },
                "sms": { "text": "Paid {{ total }}{% if note %} ({{ note }}){% endif %}" },
                "webhook": { "name": "{{ name }}", "total": "{{ total }}", "label": "Paid {{ total }}" }
            },
            {
                "locale": "fr",
                "email": {
                    "subject": "Bonjour {{ name }}",
                    "html": "<p>Bonjour {{ name }}, vous avez payé {{ total }}</p>"
                },
                "push": { "title": "Reçu", "body": "{{ total }} payés" }
            }
        ]
    })
    .to_string()
    .replace("{{ greeting }}", greeting_en)
    .parse()
    .unwrap()
}

fn template_ref(key: &str, version: Option<u32>, variables: Value) -> TemplateRef {
    TemplateRef {
        key: TemplateKey::parse(key).unwrap(),
        version: version.map(|v| TemplateVersion::parse(v).unwrap()),
        locale: None,
        variables: JsonObject::parse(variables, 64 * 1024).unwrap(),
    }
}

fn validation_paths(error: CommandError) -> Vec<(String, String)> {
    match error {
        CommandError::Validation(errors) => errors
            .errors()
            .iter()
            .map(|e| (e.path.clone(), e.message.clone()))
            .collect(),
        other => panic!("expected a validation error, got {other:?}"),
    }
}

#[tokio::test]
async fn published_versions_are_numbered_and_listed() {
    let t = Templates::start().await;
    let first = t.publish(receipt("Hello")).await;
    assert_eq!(first["number"], 1);
    assert_eq!(first["locales"], json!(["en", "fr"]));
    assert_eq!(
        first["variables"],
        json!([
            { "name": "name", "type": "STRING", "required": true },
            { "name": "note", "type": "STRING", "required": false },
            { "name": "total", "type": "NUMBER", "required": true }
        ])
    );
    // The same content again is the same version; new content is the next.
    assert_eq!(t.publish(receipt("Hello")).await["number"], 1);
    assert_eq!(t.publish(receipt("Hi")).await["number"], 2);

    let listed = t
        .graphql(
            "{ templates(first: 10) { edges { node { key latestVersion defaultLocale } } pageInfo { hasNextPage } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        listed["templates"]["edges"],
        json!([{ "node": { "key": "billing.receipt", "latestVersion": 2, "defaultLocale": "en" } }])
    );
    let one = t
        .graphql(
            r#"{ template(key: "billing.receipt") { key versions { number publishedAt locales
                 parts { locale email { subject html text } sms { text } push { title body } webhook } } } }"#,
            json!({}),
        )
        .await;
    let versions = one["template"]["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0]["number"], 2);
    assert_eq!(versions[1]["number"], 1);
    assert_eq!(
        versions[1]["parts"][0]["email"]["subject"],
        "Hello {{ name }}"
    );
    assert_eq!(versions[0]["parts"][0]["email"]["subject"], "Hi {{ name }}");
    assert_eq!(versions[0]["parts"][1]["push"]["title"], "Reçu");
    assert!(versions[0]["parts"][1]["sms"].is_null());
    let missing = t
        .graphql(r#"{ template(key: "nope") { key } }"#, json!({}))
        .await;
    assert!(missing["template"].is_null());
}

#[tokio::test]
async fn preview_renders_the_asked_locale_or_falls_back() {
    let t = Templates::start().await;
    t.publish(receipt("Hello")).await;
    let variables = json!({ "name": "<Ana>", "total": 12.5 });
    let fr = t
        .preview(json!({ "key": "billing.receipt", "locale": "fr-CA", "variables": variables }))
        .await;
    assert_eq!(fr["locale"], "fr");
    assert_eq!(fr["version"], 1);
    assert_eq!(fr["email"]["subject"], "Bonjour <Ana>");
    assert_eq!(
        fr["email"]["html"],
        "<p>Bonjour &lt;Ana&gt;, vous avez payé 12.5</p>"
    );
    assert!(fr["email"]["text"].is_null());
    assert_eq!(fr["push"], json!({ "title": "Reçu", "body": "12.5 payés" }));
    assert!(fr["sms"].is_null());

    let fallback = t
        .preview(json!({ "key": "billing.receipt", "locale": "de", "variables": variables }))
        .await;
    assert_eq!(fallback["locale"], "en");
    assert_eq!(fallback["email"]["text"], "Hello <Ana>, you paid 12.5");
    assert_eq!(fallback["sms"]["text"], "Paid 12.5");
    assert_eq!(
        fallback["webhook"],
        json!({ "name": "<Ana>", "total": 12.5, "label": "Paid 12.5" })
    );
}

#[tokio::test]
async fn a_template_that_does_not_compile_is_a_validation_error() {
    let t = Templates::start().await;
    let mut input = receipt("Hello");
    input["locales"][1]["email"]["html"] = json!("<p>\n{% if name %}unclosed</p>");
    input["locales"][0]["sms"]["text"] = json!("{{ undeclared }}");
    let response = t.raw(PUBLISH, json!({ "input": input })).await;
    assert_eq!(error_codes(&response), ["VALIDATION"], "{response}");
    let fields = response["errors"][0]["extensions"]["fields"]
        .as_array()
        .unwrap();
    let at = |path: &str| -> Vec<String> {
        fields
            .iter()
            .filter(|f| f["path"] == path)
            .map(|f| f["message"].as_str().unwrap().to_string())
            .collect()
    };
    let html = at("template.locales.fr.email.html");
    assert_eq!(html.len(), 1, "{response}");
    assert!(html[0].starts_with("line "), "{}", html[0]);
    assert_eq!(
        at("template.locales.en.sms.text"),
        ["uses the undeclared variable `undeclared`; declare it in variables"]
    );
    // Nothing was published.
    let listed = t
        .graphql("{ templates { edges { node { key } } } }", json!({}))
        .await;
    assert_eq!(listed["templates"]["edges"], json!([]));
}

#[tokio::test]
async fn missing_or_mistyped_variables_are_named() {
    let t = Templates::start().await;
    t.publish(receipt("Hello")).await;
    let pool = t.app.store.pool();

    let error = templates::pin(
        pool,
        &t.tenant,
        &template_ref("billing.receipt", None, json!({ "total": "12" })),
    )
    .await
    .unwrap_err();
    assert_eq!(
        validation_paths(error),
        [
            (
                "template.variables.name".to_string(),
                "is required".to_string()
            ),
            (
                "template.variables.total".to_string(),
                "must be a number".to_string()
            )
        ]
    );
    let error = templates::pin(pool, &t.tenant, &template_ref("nope", None, json!({})))
        .await
        .unwrap_err();
    assert_eq!(validation_paths(error)[0].0, "template.key");
    let error = templates::pin(
        pool,
        &t.tenant,
        &template_ref("billing.receipt", Some(9), json!({})),
    )
    .await
    .unwrap_err();
    assert_eq!(validation_paths(error)[0].0, "template.version");

    // The preview checks them the same way, as a VALIDATION error.
    let response = t
        .raw(
            PREVIEW,
            json!({ "key": "billing.receipt", "variables": { "name": 3 } }),
        )
        .await;
    assert_eq!(error_codes(&response), ["VALIDATION"], "{response}");
    let paths: Vec<&str> = response["errors"][0]["extensions"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        ["template.variables.name", "template.variables.total"]
    );
}

#[tokio::test]
async fn a_pinned_version_renders_the_same_after_a_new_publish() {
    let t = Templates::start().await;
    t.publish(receipt("Hello")).await;
    let pool = t.app.store.pool();
    let request = template_ref(
        "billing.receipt",
        None,
        json!({ "name": "Ana", "total": 3 }),
    );
    let pinned = templates::pin(pool, &t.tenant, &request).await.unwrap();
    assert_eq!(pinned.version.map(TemplateVersion::get), Some(1));

    // Published after the request was accepted, before it is dispatched.
    t.publish(receipt("Hi")).await;
    let cache = TemplateCache::new(8);
    let english = [Locale::parse("en-GB").unwrap()];
    let mut herald = Map::new();
    herald.insert("notification_id".into(), json!("n-1"));
    let rendered = cache
        .render(pool, &t.tenant, &pinned, &english, &herald)
        .await
        .unwrap();
    assert_eq!(rendered.email.unwrap().subject, "Hello Ana");
    // From the cache, the same again.
    let again = cache
        .render(pool, &t.tenant, &pinned, &english, &herald)
        .await
        .unwrap();
    assert_eq!(again.email.unwrap().subject, "Hello Ana");

    let latest = templates::pin(pool, &t.tenant, &request).await.unwrap();
    assert_eq!(latest.version.map(TemplateVersion::get), Some(2));
    let rendered = cache
        .render(pool, &t.tenant, &latest, &english, &herald)
        .await
        .unwrap();
    assert_eq!(rendered.email.unwrap().subject, "Hi Ana");

    // Another tenant's pinned version is not found.
    let (other, _) = t.app.tenant().await;
    let failure = cache
        .render(
            pool,
            &TenantId::parse(&other).unwrap(),
            &pinned,
            &english,
            &herald,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(failure, templates::RenderFailure::NotFound { .. }),
        "{failure:?}"
    );
}

#[tokio::test]
async fn partials_and_layouts_are_frozen_into_each_version() {
    let t = Templates::start().await;
    let footer = |body: &str| json!({ "name": "footer", "body": body, "kind": "PARTIAL" });
    t.graphql(PARTIAL, footer("<small>Thanks, {{ name }}</small>"))
        .await;
    let layout = t
        .graphql(
            PARTIAL,
            json!({
                "name": "base",
                "kind": "LAYOUT",
                "body": "<html>{% block body %}{% endblock body %}{% include \"partial:footer\" %}</html>"
            }),
        )
        .await;
    assert_eq!(layout["upsertTemplatePartial"]["kind"], "LAYOUT");
    let input = json!({
        "key": "welcome",
        "defaultLocale": "en",
        "variables": [{ "name": "name", "type": "STRING" }],
        "locales": [{
            "locale": "en",
            "email": {
                "subject": "Welcome",
                "html": "{% extends \"layout:base\" %}{% block body %}<h1>{{ name }}</h1>{% endblock body %}"
            }
        }]
    });
    let published = t.publish(input.clone()).await;
    assert_eq!(
        published["partials"],
        json!(["layout:base", "partial:footer"])
    );

    t.graphql(PARTIAL, footer("<small>Cheers</small>")).await;
    let preview = json!({ "key": "welcome", "variables": { "name": "<Bo>" } });
    let v1 = t.preview(preview.clone()).await;
    assert_eq!(
        v1["email"]["html"],
        "<html><h1>&lt;Bo&gt;</h1><small>Thanks, &lt;Bo&gt;</small></html>"
    );
    // Publishing again takes the edited partial, as a new version.
    assert_eq!(t.publish(input).await["number"], 2);
    let v2 = t.preview(preview).await;
    assert_eq!(
        v2["email"]["html"],
        "<html><h1>&lt;Bo&gt;</h1><small>Cheers</small></html>"
    );

    let listed = t
        .graphql("{ templatePartials { kind name body } }", json!({}))
        .await;
    assert_eq!(listed["templatePartials"].as_array().unwrap().len(), 2);
    // A partial that includes one that does not exist is refused.
    let refused = t
        .raw(
            PARTIAL,
            json!({ "name": "header", "kind": "PARTIAL", "body": "{% include \"partial:nope\" %}" }),
        )
        .await;
    assert_eq!(error_codes(&refused), ["VALIDATION"], "{refused}");
}

#[tokio::test]
async fn publishing_needs_admin_and_reading_needs_read() {
    let t = Templates::start().await;
    let issued = t
        .graphql(
            r#"mutation { issueApiKey(name: "reader", scopes: [READ]) { apiKey } }"#,
            json!({}),
        )
        .await;
    let reader = issued["issueApiKey"]["apiKey"].as_str().unwrap();
    let refused = t
        .app
        .graphql(Some(reader), PUBLISH, json!({ "input": receipt("Hello") }))
        .await;
    assert_eq!(error_codes(&refused), ["FORBIDDEN"], "{refused}");
    let listed = t
        .app
        .graphql(
            Some(reader),
            "{ templates { edges { cursor } } }",
            json!({}),
        )
        .await;
    assert!(listed["errors"].is_null(), "{listed}");
}
