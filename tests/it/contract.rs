//! The GraphQL contract as clients Herald did not write see it: the standard
//! introspection queries of graphql-js and graphql-core build a client
//! schema, the limits still refuse abuse, and GraphQL Code Generator with
//! `tsc` builds typed TypeScript from `schema.graphql` and the operations
//! `docs/api.md` shows.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::peers::{npm_peer, python};
use crate::support::{TestApp, error_codes};

/// Runs `program args...` in `dir`; its stdout parsed as one JSON line, or
/// a panic with everything it said.
async fn json_line(program: impl AsRef<Path>, args: &[&str], dir: &Path) -> Value {
    let program = program.as_ref();
    let output = tokio::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .await
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", program.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{} {args:?} failed:\n{stdout}\n{}",
        program.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|_| panic!("not one JSON line: {stdout}"))
}

/// What a built client schema holds, as both introspection peers print it.
fn assert_built(built: &Value, peer: &str) {
    assert!(built["errors"].is_null(), "{peer}: {built}");
    assert_eq!(built["query"], "QueryRoot", "{peer}: {built}");
    assert_eq!(built["position"], "Position", "{peer}: {built}");
    assert!(built["types"].as_u64().unwrap() > 100, "{peer}: {built}");
}

#[tokio::test]
async fn graphql_js_introspection_builds_a_client_schema_for_a_key_only() {
    let app = TestApp::start().await;
    let (_, key) = app.tenant().await;
    let peer = npm_peer("graphql-ws");
    let url = format!("{}/graphql", app.base);

    let built = json_line("node", &["introspect.mjs", &url, &key], &peer).await;
    assert_built(&built, "graphql-js");

    let anonymous = json_line("node", &["introspect.mjs", &url], &peer).await;
    assert_eq!(error_codes(&anonymous), ["UNAUTHENTICATED"], "{anonymous}");
    // `__typename` is not introspection of the schema: no key needed.
    let typename = app.graphql(None, "{ __typename }", json!({})).await;
    assert_eq!(typename["data"]["__typename"], "QueryRoot", "{typename}");
}

#[tokio::test]
async fn graphql_core_introspection_builds_a_client_schema() {
    let app = TestApp::start().await;
    let (_, key) = app.tenant().await;
    let peers = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers");
    let url = format!("{}/graphql", app.base);
    // graphql-core is one of the Python peers (tests/peers/requirements.txt).
    let built = json_line(python(), &["introspect.py", &url, &key], &peers).await;
    assert_built(&built, "graphql-core");
}

#[tokio::test]
async fn alias_floods_and_over_deep_queries_are_refused_typed() {
    let app = TestApp::start().await;
    let (_, key) = app.tenant().await;

    // `__typename` costs nothing to async-graphql's own complexity count.
    let aliases: String = (0..20_000).map(|i| format!("a{i}: __typename ")).collect();
    let started = Instant::now();
    let flood = app
        .graphql(Some(&key), &format!("{{ {aliases} }}"), json!({}))
        .await;
    let took = started.elapsed();
    assert_eq!(error_codes(&flood), ["VALIDATION"], "{flood}");
    assert!(flood["data"].is_null(), "{flood}");
    assert!(
        flood["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("too complex"),
        "{flood}"
    );
    eprintln!("20,000 aliases refused in {took:?}");
    assert!(took < Duration::from_secs(5), "refused in {took:?}");

    // Fragments spread into one another count where they are spread.
    let fragments: String = (0..12)
        .map(|i| {
            format!(
                "fragment F{i} on QueryRoot {{ ...F{n} ...F{n} }} ",
                n = i + 1
            )
        })
        .collect();
    let bomb =
        format!("{{ ...F0 }} {fragments} fragment F12 on QueryRoot {{ viewer {{ tenantId }} }}");
    let bomb = app.graphql(Some(&key), &bomb, json!({})).await;
    assert_eq!(error_codes(&bomb), ["VALIDATION"], "{bomb}");

    // 13 levels of fields, refused before they are even looked up.
    let too_deep = format!(
        "{{ {}viewer {{ tenantId }}{} }}",
        "a { ".repeat(11),
        " }".repeat(11)
    );
    let refused = app.graphql(Some(&key), &too_deep, json!({})).await;
    assert_eq!(error_codes(&refused), ["VALIDATION"], "{refused}");
    assert!(
        refused["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("nested too deep"),
        "{refused}"
    );
    // Introspection that multiplies types over types is refused even with a key.
    let expanding = "{ __type(name: \"QueryRoot\") { fields { type { fields { type { fields { name } } } } } } }";
    let expanding = app.graphql(Some(&key), expanding, json!({})).await;
    assert_eq!(error_codes(&expanding), ["VALIDATION"], "{expanding}");
}

/// The documented operations: every ```graphql block of the "GraphQL
/// contract" section of `docs/api.md`.
fn documented_operations() -> String {
    let page = include_str!("../../docs/api.md");
    let section = page
        .split("\n## GraphQL contract\n")
        .nth(1)
        .expect("docs/api.md has a GraphQL contract section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let blocks: Vec<&str> = section
        .split("```graphql\n")
        .skip(1)
        .map(|block| block.split("```").next().unwrap())
        .collect();
    assert!(blocks.len() >= 4, "the documented operations: {blocks:?}");
    blocks.concat()
}

#[tokio::test]
async fn typescript_clients_build_from_the_schema_and_the_documented_operations() {
    let peer = npm_peer("graphql-codegen");
    let dir = std::env::temp_dir().join(format!("herald-codegen-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("operations.graphql"), documented_operations()).unwrap();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    // The whole schema's types, and the operations' types importing them.
    // Every scalar must be mapped (`strictScalars`): Position to string.
    let scalars = json!({ "Position": "string", "DateTime": "string", "JSON": "unknown", "Upload": "unknown" });
    let config = json!({
        "schema": concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql"),
        "documents": path("operations.graphql"),
        "generates": {
            path("schema-types.ts"): {
                "plugins": ["typescript"],
                "config": { "strictScalars": true, "scalars": scalars },
            },
            path("operations.ts"): {
                "plugins": ["typescript-operations"],
                "config": {
                    "strictScalars": true,
                    "scalars": scalars,
                    "importSchemaTypesFrom": path("schema-types.ts"),
                },
            },
        },
    });
    std::fs::write(dir.join("codegen.json"), config.to_string()).unwrap();
    // Uses of the generated types that only compile if positions are strings.
    std::fs::write(
        dir.join("client.ts"),
        r#"import type { EventsAfterSubscription, EventsAfterSubscriptionVariables,
  NotificationWithTimelineQuery, ReplayQuery } from "./operations";
export const resumeFrom = (seen: EventsAfterSubscription): EventsAfterSubscriptionVariables =>
  ({ after: seen.events.position });
export const positions = (read: NotificationWithTimelineQuery, replay: ReplayQuery): string[] =>
  [...read.notification.timeline.map((e) => e.position), ...replay.replay.events.map((e) => e.position)];
"#,
    )
    .unwrap();

    let run = |program: &'static str, args: Vec<String>| {
        let peer = peer.clone();
        async move {
            let output = tokio::process::Command::new(peer.join("node_modules/.bin").join(program))
                .args(&args)
                .current_dir(&peer)
                .output()
                .await
                .unwrap_or_else(|error| panic!("cannot run {program}: {error}"));
            assert!(
                output.status.success(),
                "{program} {args:?} failed:\n{}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    };
    run(
        "graphql-codegen",
        vec!["--config".into(), path("codegen.json")],
    )
    .await;
    let generated = std::fs::read_to_string(dir.join("schema-types.ts")).unwrap();
    assert!(
        generated.contains("Position: { input: string; output: string; }"),
        "{generated}"
    );
    run(
        "tsc",
        vec![
            "--noEmit".into(),
            "--strict".into(),
            "--target".into(),
            "es2020".into(),
            "--module".into(),
            "esnext".into(),
            "--moduleResolution".into(),
            "bundler".into(),
            path("schema-types.ts"),
            path("operations.ts"),
            path("client.ts"),
        ],
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}
