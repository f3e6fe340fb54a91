//! GraphiQL offline: the page and its assets come from Herald alone, and a
//! real browser with every other host blocked can use it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::header;
use serde_json::Value;

use crate::peers::npm_peer;
use crate::support::TestApp;

const CHROMIUM: &str = "/usr/bin/chromium";
const BROWSER_RUN_LIMIT: Duration = Duration::from_secs(180);

/// The asset URLs the page names, in order.
fn asset_urls(page: &str) -> Vec<String> {
    regex::Regex::new(r#"(?:src|href)="(/[^"]*)""#)
        .unwrap()
        .captures_iter(page)
        .map(|captures| captures[1].to_string())
        .collect()
}

#[tokio::test]
async fn graphiql_is_served_from_the_binary_with_versioned_assets_and_a_self_only_policy() {
    let app = TestApp::start().await;
    let page = app
        .http
        .get(format!("{}/graphql", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let policy = page.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_string();
    for directive in [
        "default-src 'self'",
        "script-src 'self';",
        "connect-src 'self'",
    ] {
        assert!(policy.contains(directive), "{directive} in {policy}");
    }
    assert!(
        !policy.contains("http") && !policy.contains("unsafe"),
        "{policy}"
    );
    let body = page.text().await.unwrap();
    assert!(
        !body.contains("://"),
        "the page names no other host: {body}"
    );

    let urls = asset_urls(&body);
    let expected = [
        (
            r"^/graphiql/graphiql@4\.\d+\.\d+/graphiql\.min\.css$",
            "text/css",
        ),
        (r"^/graphiql/herald-[0-9a-f]{16}/style\.css$", "text/css"),
        (
            r"^/graphiql/react@18\.\d+\.\d+/react\.production\.min\.js$",
            "text/javascript",
        ),
        (
            r"^/graphiql/react-dom@18\.\d+\.\d+/react-dom\.production\.min\.js$",
            "text/javascript",
        ),
        (
            r"^/graphiql/graphiql@4\.\d+\.\d+/graphiql\.min\.js$",
            "text/javascript",
        ),
        (
            r"^/graphiql/herald-[0-9a-f]{16}/start\.js$",
            "text/javascript",
        ),
    ];
    assert_eq!(urls.len(), expected.len(), "{urls:?}");
    for (url, (pattern, content_type)) in urls.iter().zip(expected) {
        assert!(
            regex::Regex::new(pattern).unwrap().is_match(url),
            "{url} ~ {pattern}"
        );
        let asset = app
            .http
            .get(format!("{}{url}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(asset.status(), 200, "{url}");
        let headers = asset.headers();
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with(content_type),
            "{url}: {headers:?}"
        );
        assert_eq!(
            headers[header::CACHE_CONTROL],
            "public, max-age=31536000, immutable",
            "{url}"
        );
        assert!(!asset.bytes().await.unwrap().is_empty(), "{url}");
    }

    let other_version = app
        .http
        .get(format!(
            "{}/graphiql/graphiql@0.0.0/graphiql.min.js",
            app.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(other_version.status(), 404);
}

/// Where the browser test leaves its screenshot (see docs/api.md, GraphiQL).
fn artifact(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).expect("target/test-artifacts");
    dir.join(name)
}

#[tokio::test]
async fn graphiql_renders_its_docs_and_runs_a_keyed_query_in_chromium_with_other_hosts_blocked() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "Debian's Chromium is needed at {CHROMIUM}: `apt-get install -y chromium` (.ci/run does)"
    );
    let app = TestApp::start().await;
    let (tenant_id, key) = app.tenant().await;
    let screenshot = artifact("graphiql-docs.png");
    let _ = std::fs::remove_file(&screenshot);

    let run = tokio::process::Command::new("node")
        .arg(npm_peer("browser").join("graphiql.mjs"))
        .args([&app.base, &key, &screenshot.display().to_string()])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(BROWSER_RUN_LIMIT, run)
        .await
        .expect("the browser run finishes")
        .expect("node runs the browser peer: install Node.js (.ci/run does)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("the browser peer printed no report: {stderr}"));
    // The docs pane is built from GraphiQL's own introspection query, sent
    // with the key; the schema's limits must let it by.
    let responses = &report["graphqlResponses"];
    assert!(
        responses
            .as_array()
            .into_iter()
            .flatten()
            .any(|answer| answer
                .as_str()
                .unwrap()
                .starts_with("200 {\"data\":{\"__schema\"")),
        "GraphiQL's introspection was refused: {responses:#}"
    );
    assert!(
        output.status.success(),
        "browser peer failed: {}\n{report:#}",
        report["failure"]
    );

    // Offline: the page needed no other host, and tried none.
    assert_eq!(report["blocked"], serde_json::json!([]), "{report:#}");
    let requested = report["requested"].as_array().unwrap();
    assert!(
        requested
            .iter()
            .all(|url| url.as_str().unwrap().starts_with(&app.base)),
        "{requested:?}"
    );
    assert_eq!(report["cspViolations"], serde_json::json!([]), "{report:#}");
    assert_eq!(report["pageErrors"], serde_json::json!([]), "{report:#}");

    // The docs pane lists the schema's query type, read by introspection.
    assert_eq!(report["docsTitle"], "QueryRoot");
    let fields: Vec<&str> = report["queryFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|field| field.as_str().unwrap())
        .collect();
    for field in ["viewer", "notification", "notifications"] {
        assert!(fields.contains(&field), "{field} in {fields:?}");
    }

    // The query ran with the key from the headers pane.
    let result = report["result"].as_str().unwrap();
    assert!(
        result.contains("\"data\"") && result.contains(&tenant_id),
        "the result pane shows the key's tenant: {result}"
    );
    assert!(!result.contains("UNAUTHENTICATED"), "{result}");

    // Accessibility: serious or critical findings in Herald's own markup
    // fail; GraphiQL's own are printed for the record.
    let mut heralds = Vec::new();
    for violation in report["axe"].as_array().unwrap() {
        let serious = matches!(violation["impact"].as_str(), Some("serious" | "critical"));
        println!(
            "axe {} ({}): {}; Herald's markup: {}; GraphiQL's: {} element(s), e.g. {}",
            violation["id"],
            violation["impact"],
            violation["help"],
            violation["herald"],
            violation["graphiql"].as_array().unwrap().len(),
            violation["graphiql"][0],
        );
        if serious {
            heralds.extend(violation["herald"].as_array().unwrap().iter().cloned());
        }
    }
    assert!(heralds.is_empty(), "axe in Herald's markup: {heralds:?}");

    let png = std::fs::read(&screenshot).expect("the screenshot was saved");
    assert!(png.starts_with(b"\x89PNG"), "{}", screenshot.display());
}
