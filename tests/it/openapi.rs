//! The REST twin and its OpenAPI document: checked by
//! an independent validator (openapi-spec-validator) and fuzzed by
//! Schemathesis, both from PyPI (`tests/peers/requirements.txt`).

use std::time::Duration;

use serde_json::{Value, json};

use crate::peers::{PYTHON_PEERS, python};
use crate::support::{TestApp, eventually};

const PUBLISH: &str =
    "mutation($input: PublishTemplateInput!) { publishTemplate(input: $input) { number } }";

/// `otp_login` v1 and v2, in English, by email and SMS; v2 is what the flat messages name.
async fn publish_otp(app: &TestApp, key: &str) {
    for greeting in ["Your code", "Your login code"] {
        let published = app
            .graphql(
                Some(key),
                PUBLISH,
                json!({ "input": {
                    "key": "otp_login",
                    "defaultLocale": "en-GB",
                    "variables": [{ "name": "code", "type": "STRING" }],
                    "locales": [{
                        "locale": "en-GB",
                        "email": { "subject": greeting, "text": format!("{greeting}: {{{{ code }}}}") },
                        "sms": { "text": format!("{greeting}: {{{{ code }}}}") }
                    }]
                } }),
            )
            .await;
        assert!(published["errors"].is_null(), "{published}");
    }
}

/// `method path` with the key and a JSON body (or none); status and JSON answer.
async fn call(
    app: &TestApp,
    key: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = app
        .http
        .request(method, format!("{}{path}", app.base))
        .bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body read");
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("{path} answered {status} with a non-JSON body: {text}"));
    (status, body)
}

async fn post(app: &TestApp, key: &str, path: &str, body: Value) -> (u16, Value) {
    call(app, key, reqwest::Method::POST, path, Some(body)).await
}

async fn get(app: &TestApp, key: &str, path: &str) -> (u16, Value) {
    call(app, key, reqwest::Method::GET, path, None).await
}

/// The document, as served without a key.
async fn document(app: &TestApp) -> Value {
    let response = app
        .http
        .get(format!("{}/api/openapi.json", app.base))
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), 200);
    response.json().await.expect("the document is JSON")
}

/// Runs a Python peer in `dir` (where Schemathesis keeps its example database).
async fn run_python(args: &[&str], dir: &std::path::Path, limit: Duration) -> (bool, String) {
    let child = tokio::process::Command::new(python())
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(limit, child)
        .await
        .unwrap_or_else(|_| panic!("{args:?} ran longer than {limit:?}"))
        .unwrap_or_else(|error| panic!("cannot run {args:?} ({error}); {PYTHON_PEERS}"));
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[tokio::test]
async fn the_openapi_document_is_valid_openapi_3_1_and_lists_the_rest_routes() {
    let app = TestApp::start().await;
    let document = document(&app).await;
    assert_eq!(document["openapi"], "3.1.0");
    let mut operations: Vec<String> = document["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("a path item")
                .keys()
                .map(move |method| format!("{} {path}", method.to_uppercase()))
        })
        .collect();
    operations.sort();
    assert_eq!(
        operations,
        [
            "GET /admin/healthz",
            "GET /admin/providers",
            "GET /admin/queues",
            "GET /api/notifications",
            "GET /api/notifications/{id}",
            "POST /admin/dlq/replay",
            "POST /api/batch",
            "POST /api/notifications",
            "POST /api/preview",
            "POST /api/shortlinks",
            "POST /api/workflows/{key}/trigger",
        ]
    );
    // Both send shapes, told apart by their fields.
    let send = &document["paths"]["/api/notifications"]["post"]["requestBody"]["content"]["application/json"]
        ["schema"];
    assert_eq!(send["$ref"], "#/components/schemas/SendBody", "{send}");
    assert_eq!(
        document["components"]["schemas"]["SendBody"]["oneOf"],
        json!([
            { "$ref": "#/components/schemas/Message" },
            { "$ref": "#/components/schemas/SendNotification" }
        ])
    );
    // Every route lists the refusals any route may answer, and those that
    // read a body list the body's.
    let statuses = |path: &str, method: &str| -> Vec<String> {
        let responses = document["paths"][path][method]["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {path} has responses"));
        responses.keys().cloned().collect()
    };
    for status in ["401", "403", "429", "503"] {
        assert!(statuses("/admin/queues", "get").contains(&status.to_string()));
        assert!(statuses("/api/batch", "post").contains(&status.to_string()));
    }
    for status in ["413", "415"] {
        assert!(statuses("/api/batch", "post").contains(&status.to_string()));
        assert!(!statuses("/admin/queues", "get").contains(&status.to_string()));
    }
    let unauthenticated = &document["paths"]["/admin/queues"]["get"]["responses"]["401"];
    assert_eq!(
        unauthenticated["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ErrorBody",
        "{unauthenticated}"
    );

    let dir = tempfile_dir();
    let path = dir.join("openapi.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&document).unwrap()).unwrap();
    let (valid, output) = run_python(
        &[
            "-m",
            "openapi_spec_validator",
            "--schema",
            "3.1",
            path.to_str().unwrap(),
        ],
        &dir,
        Duration::from_secs(60),
    )
    .await;
    assert!(
        valid,
        "openapi-spec-validator refused the document: {output}"
    );
    assert!(output.contains("OK"), "{output}");
}

/// A directory of this test run's own under the target dir.
fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("openapi-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn schemathesis_finds_no_server_error_in_the_rest_twin() {
    let app = TestApp::start().await;
    let (_, key) = app.tenant().await;
    publish_otp(&app, &key).await;
    let schema = format!("{}/api/openapi.json", app.base);
    let header = format!("Authorization: Bearer {key}");
    let dir = tempfile_dir();
    // One notification for `GET /api/notifications/{id}` to read, which
    // random ids would only ever find missing.
    let (status, sent) = post(
        &app,
        &key,
        "/api/notifications",
        json!({ "channel": "sms", "template_id": "otp_login", "to": { "phone": "+447700900123" }, "variables": { "code": "1" } }),
    )
    .await;
    assert_eq!(status, 202, "{sent}");
    let config = dir.join("schemathesis.toml");
    std::fs::write(
        &config,
        format!(
            "[parameters]\n\"path.id\" = \"{}\"\n",
            sent["message_id"].as_str().unwrap()
        ),
    )
    .unwrap();
    // Every phase but stateful, at most 50 cases per operation; the
    // timeout only stops a run that hangs.
    let (passed, output) = run_python(
        &[
            "-m",
            "schemathesis.cli",
            "--config-file",
            config.to_str().unwrap(),
            "run",
            &schema,
            "--checks",
            "not_a_server_error",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "50",
            // One worker: hypothesis's lambda descriptions are not
            // thread-safe on CPython 3.11 (SystemError in ast.parse).
            "--workers",
            "1",
            "--request-timeout",
            "10",
            "--suppress-health-check",
            "all",
            "-H",
            &header,
        ],
        &dir,
        Duration::from_secs(600),
    )
    .await;
    println!("{output}");
    assert!(passed, "Schemathesis found server errors:\n{output}");
    assert!(!output.contains("Server error"), "{output}");
}

#[tokio::test]
async fn a_flat_message_is_sent_with_its_category_and_tags() {
    let app = TestApp::start().await;
    let (tenant, key) = app.tenant().await;
    publish_otp(&app, &key).await;
    let message = json!({
        "tenant_id": tenant,
        "channel": "email",
        "template_id": "otp_login:v2",
        "locale": "en-GB",
        "to": { "email": "user@example.com", "phone": "+447700900123", "device_token": null },
        "variables": { "code": "384921" },
        "metadata": { "category": "auth", "tags": ["otp", "login"] },
        "priority": "high",
        "ttl_seconds": 900,
        "trace_id": "9e2b4f0a9e2b4f0a9e2b4f0a9e2b4f0a"
    });
    let sent = app
        .http
        .post(format!("{}/api/notifications", app.base))
        .bearer_auth(&key)
        .header("Idempotency-Key", "nl-2ce1")
        .json(&message)
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 202);
    let sent: Value = sent.json().await.unwrap();
    assert_eq!(sent.as_object().unwrap().len(), 2, "{sent}");
    assert_eq!(sent["status"], "REQUESTED");
    let id = sent["message_id"].as_str().expect("message_id").to_string();

    let (status, read) = get(&app, &key, &format!("/api/notifications/{id}")).await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["category"], "auth");
    assert_eq!(read["tags"], json!(["otp", "login"]));
    assert_eq!(read["channels"], json!(["email"]));
    assert_eq!(read["priority"], "HIGH");
    let request = &read["events"][0]["data"]["request"];
    assert_eq!(
        request["content"]["template"]["key"], "otp_login",
        "{request}"
    );
    assert_eq!(request["content"]["template"]["version"], 2, "{request}");
    assert_eq!(request["idempotency_key"], "nl-2ce1", "{request}");

    // The same key again: the same message, 200.
    let again = app
        .http
        .post(format!("{}/api/notifications", app.base))
        .bearer_auth(&key)
        .header("Idempotency-Key", "nl-2ce1")
        .json(&message)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["message_id"], id.as_str());

    // A later schedule_at is answered SCHEDULED.
    let later = (chrono::Utc::now() + chrono::TimeDelta::hours(1)).to_rfc3339();
    let (status, scheduled) = post(
        &app,
        &key,
        "/api/notifications",
        json!({ "channel": "sms", "template_id": "otp_login", "to": { "phone": "+447700900123" },
                "variables": { "code": "1" }, "schedule_at": later }),
    )
    .await;
    assert_eq!(status, 202, "{scheduled}");
    assert_eq!(scheduled["status"], "SCHEDULED", "{scheduled}");

    // Errors name the message's own fields.
    let (status, refused) = post(
        &app,
        &key,
        "/api/notifications",
        json!({ "channel": "sms", "template_id": "otp_login", "to": { "email": "user@example.com" }, "variables": { "code": "1" } }),
    )
    .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["code"], "VALIDATION");
    assert_eq!(
        refused["error"]["fields"][0]["path"], "to.phone",
        "{refused}"
    );
    for (message, path) in [
        (
            json!({ "channel": "whatsapp", "template_id": "otp_login", "to": {} }),
            "channel",
        ),
        (
            json!({ "channel": "email", "template_id": "otp_login:3", "to": { "email": "a@example.com" } }),
            "template_id",
        ),
        (
            json!({ "channel": "email", "template_id": "otp_login", "to": { "email": "a@example.com" }, "tenant_id": "someone-else" }),
            "tenant_id",
        ),
        (
            json!({ "channel": "email", "template_id": "otp_login", "to": { "email": "a@example.com", "fax": "1" } }),
            "to.fax",
        ),
        (
            json!({ "channel": "email", "template_id": "otp_login", "to": { "email": "a@example.com" }, "metadata": { "tags": ["a\rb"] } }),
            "metadata.tags[0]",
        ),
    ] {
        let (status, refused) = post(&app, &key, "/api/notifications", message).await;
        assert_eq!(status, 400, "{refused}");
        assert_eq!(refused["error"]["code"], "VALIDATION", "{refused}");
        let fields = refused["error"]["fields"].as_array().unwrap();
        assert!(
            fields.iter().any(|f| f["path"] == path),
            "{path}: {refused}"
        );
    }
    let (status, refused) = app
        .http
        .post(format!("{}/api/notifications", app.base))
        .bearer_auth(&key)
        .header("Content-Type", "application/json")
        .body("{\"channel\": ")
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .unwrap();
    assert_eq!(status, 400);
    let refused: Value = refused.json().await.unwrap();
    assert_eq!(refused["error"]["code"], "BAD_REQUEST", "{refused}");
}

#[tokio::test]
async fn notifications_are_listed_by_filter_a_page_at_a_time() {
    let app = TestApp::start().await;
    let (_, key) = app.tenant().await;
    for (index, tag) in ["a", "a", "b"].iter().enumerate() {
        let (status, sent) = post(
            &app,
            &key,
            "/api/notifications",
            json!({
                "recipient": { "email": format!("user{index}@example.com") },
                "channels": ["email"],
                "content": { "title": "Hi", "text": "Hello" },
                "tags": [tag]
            }),
        )
        .await;
        assert_eq!(status, 202, "{sent}");
    }
    // The status view is a projection; wait until it shows all three.
    let everything = eventually(Duration::from_secs(10), async || {
        let (status, page) = get(&app, &key, "/api/notifications?limit=100").await;
        assert_eq!(status, 200, "{page}");
        if page["items"].as_array().unwrap().len() == 3 {
            Ok(page)
        } else {
            Err(format!("{page}"))
        }
    })
    .await;
    assert_eq!(everything["has_more"], false);
    assert!(everything["next_cursor"].is_null());

    let (_, first) = get(&app, &key, "/api/notifications?limit=2").await;
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    assert_eq!(first["has_more"], true);
    let cursor = first["next_cursor"].as_str().expect("a cursor");
    let (_, second) = get(
        &app,
        &key,
        &format!("/api/notifications?limit=2&after={cursor}"),
    )
    .await;
    assert_eq!(second["items"].as_array().unwrap().len(), 1);
    assert_eq!(second["has_more"], false);
    let mut ids: Vec<&Value> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["items"].as_array().unwrap())
        .map(|item| &item["notification_id"])
        .collect();
    ids.dedup();
    assert_eq!(ids.len(), 3);

    let (_, tagged) = get(
        &app,
        &key,
        "/api/notifications?tag=a&channel=email&status=REQUESTED,SENT",
    )
    .await;
    assert_eq!(tagged["items"].as_array().unwrap().len(), 2, "{tagged}");
    // Another tenant sees none of them, not even by id.
    let (_, other) = app.tenant().await;
    let (_, theirs) = get(&app, &other, "/api/notifications").await;
    assert_eq!(theirs["items"], json!([]), "{theirs}");
    let id = everything["items"][0]["notification_id"].as_str().unwrap();
    let (status, _) = get(&app, &other, &format!("/api/notifications/{id}")).await;
    assert_eq!(status, 404);
    let (status, _) = post(&app, &other, "/admin/dlq/replay", json!({ "id": id })).await;
    assert_eq!(status, 404);
    let (_, none) = get(&app, &key, "/api/notifications?status=SENT").await;
    assert_eq!(none["items"], json!([]));

    for (query, field) in [
        ("status=NOPE", "status"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("after=xyz", "after"),
        ("tag=%00", "tag"),
    ] {
        let (status, refused) = get(&app, &key, &format!("/api/notifications?{query}")).await;
        assert_eq!(status, 400, "{query}: {refused}");
        assert_eq!(refused["error"]["code"], "VALIDATION", "{query}: {refused}");
        assert_eq!(
            refused["error"]["fields"][0]["path"], field,
            "{query}: {refused}"
        );
    }
    let (status, refused) = get(&app, &key, "/api/notifications?limit=-1").await;
    assert_eq!(status, 400);
    assert_eq!(refused["error"]["code"], "BAD_REQUEST", "{refused}");

    // The GraphQL query parses its filter the same way (a NUL used to
    // reach PostgreSQL, whose error text came back as the message).
    for (field, filter) in [
        ("filter.tag", json!({ "tag": "a\u{0}b" })),
        ("filter.recipientId", json!({ "recipientId": "a\u{0}b" })),
    ] {
        let answer = app
            .graphql(
                Some(&key),
                "query($filter: NotificationFilter) { notifications(filter: $filter) { edges { cursor } } }",
                json!({ "filter": filter }),
            )
            .await;
        assert_eq!(
            crate::support::error_codes(&answer),
            ["VALIDATION"],
            "{answer}"
        );
        assert_eq!(
            answer["errors"][0]["extensions"]["fields"][0]["path"], field,
            "{answer}"
        );
        assert!(!answer.to_string().contains("database"), "{answer}");
    }
}

#[tokio::test]
async fn a_batch_answers_each_item_and_is_bounded() {
    let app = TestApp::start().await;
    let (_, key) = app.tenant().await;
    publish_otp(&app, &key).await;
    let (status, answer) = post(
        &app,
        &key,
        "/api/batch",
        json!({ "messages": [
            { "channel": "sms", "template_id": "otp_login:v1", "to": { "phone": "+447700900123" }, "variables": { "code": "1" } },
            { "channel": "sms", "template_id": "otp_login:v1", "to": { "email": "no-phone@example.com" }, "variables": { "code": "1" } },
            { "recipient": { "email": "ada@example.com" }, "channels": ["email"], "content": { "text": "hi" } },
            42
        ] }),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], 2, "{answer}");
    assert_eq!(answer["refused"], 2, "{answer}");
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    assert_eq!(results[0]["status"], "REQUESTED");
    assert!(results[0]["message_id"].is_string());
    assert_eq!(results[1]["error"]["code"], "VALIDATION");
    assert_eq!(
        results[1]["error"]["fields"][0]["path"], "messages[1].to.phone",
        "{answer}"
    );
    assert!(results[2]["message_id"].is_string());
    assert_eq!(
        results[3]["error"]["fields"][0]["path"], "messages[3]",
        "{answer}"
    );

    let one = json!({ "recipient": { "email": "ada@example.com" }, "channels": ["email"], "content": { "text": "hi" } });
    let (status, refused) = post(
        &app,
        &key,
        "/api/batch",
        json!({ "messages": vec![one; 1001] }),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        refused["error"]["fields"][0]["path"], "messages",
        "{refused}"
    );
    let (status, _) = post(&app, &key, "/api/batch", json!({ "messages": [] })).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn previews_render_and_short_links_redirect() {
    let app = TestApp::start().await;
    let (_, key) = app.tenant().await;
    publish_otp(&app, &key).await;
    let (status, preview) = post(
        &app,
        &key,
        "/api/preview",
        json!({ "template_id": "otp_login:v1", "locale": "en-GB", "variables": { "code": "42" } }),
    )
    .await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(preview["template_id"], "otp_login:v1");
    assert_eq!(preview["locale"], "en-GB");
    assert_eq!(preview["sms"], "Your code: 42");
    assert_eq!(preview["email"]["subject"], "Your code");
    let (_, latest) = post(
        &app,
        &key,
        "/api/preview",
        json!({ "template_id": "otp_login", "variables": { "code": "7" } }),
    )
    .await;
    assert_eq!(latest["template_id"], "otp_login:v2", "{latest}");
    let (status, missing) = post(
        &app,
        &key,
        "/api/preview",
        json!({ "template_id": "otp_login" }),
    )
    .await;
    assert_eq!(status, 400, "{missing}");
    assert_eq!(missing["error"]["code"], "VALIDATION");
    for template_id in ["nothing:v1", "otp_login:v9"] {
        let (status, refused) = post(
            &app,
            &key,
            "/api/preview",
            json!({ "template_id": template_id }),
        )
        .await;
        assert_eq!(status, 400, "{refused}");
        assert_eq!(
            refused["error"]["fields"][0]["path"], "template_id",
            "{refused}"
        );
    }

    let (status, link) = post(
        &app,
        &key,
        "/api/shortlinks",
        json!({ "url": "https://example.com/welcome" }),
    )
    .await;
    assert_eq!(status, 201, "{link}");
    let short_url = link["short_url"].as_str().expect("short_url");
    assert!(
        short_url.ends_with(link["code"].as_str().unwrap()),
        "{link}"
    );
    let path = &short_url[short_url.find("/s/").expect("a /s/ link")..];
    let followed = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}{path}", app.base))
        .send()
        .await
        .unwrap();
    assert!(followed.status().is_redirection(), "{}", followed.status());
    assert_eq!(
        followed.headers()["location"],
        "https://example.com/welcome"
    );
    let (status, refused) = post(
        &app,
        &key,
        "/api/shortlinks",
        json!({ "url": "ftp://example.com" }),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(refused["error"]["fields"][0]["path"], "url", "{refused}");
}

#[tokio::test]
async fn admin_routes_need_the_ops_scope_and_answer_with_it() {
    let app = TestApp::start().await;
    let (_, admin) = app.tenant().await;
    let issued = app
        .graphql(
            Some(&admin),
            "mutation { issueApiKey(name: \"sender\", scopes: [SEND, READ]) { apiKey } }",
            json!({}),
        )
        .await;
    let sender = issued["data"]["issueApiKey"]["apiKey"].as_str().unwrap();
    for (method, path) in [
        (reqwest::Method::GET, "/admin/healthz"),
        (reqwest::Method::GET, "/admin/providers"),
        (reqwest::Method::GET, "/admin/queues"),
        (reqwest::Method::POST, "/admin/dlq/replay"),
    ] {
        let (status, refused) = call(&app, sender, method.clone(), path, Some(json!({}))).await;
        assert_eq!(status, 403, "{path}: {refused}");
        assert_eq!(refused["error"]["code"], "FORBIDDEN");
        let anonymous = app
            .http
            .request(method, format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(anonymous.status(), 401, "{path}");
    }

    let (status, health) = get(&app, &admin, "/admin/healthz").await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["database"], "ready");
    assert!(
        health["projections"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "notification_status"),
        "{health}"
    );
    let (status, providers) = get(&app, &admin, "/admin/providers").await;
    assert_eq!(status, 200);
    assert!(providers.is_array());

    let (status, _) = post(
        &app,
        &admin,
        "/api/notifications",
        json!({ "recipient": { "email": "ada@example.com" }, "channels": ["email"], "priority": "LOW", "content": { "text": "hi" } }),
    )
    .await;
    assert_eq!(status, 202);
    let (status, queues) = get(&app, &admin, "/admin/queues").await;
    assert_eq!(status, 200);
    let lines = queues.as_array().unwrap();
    assert_eq!(lines.len(), 1, "{queues}");
    assert_eq!(lines[0]["priority"], "LOW", "{queues}");
    assert_eq!(lines[0]["depth"], 1, "{queues}");
    assert_eq!(lines[0]["leased"], 0, "{queues}");

    let (status, replayed) = post(&app, &admin, "/admin/dlq/replay", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(replayed, json!({ "replayed": 0 }));
    let (status, missing) = post(
        &app,
        &admin,
        "/admin/dlq/replay",
        json!({ "id": uuid::Uuid::now_v7() }),
    )
    .await;
    assert_eq!(status, 404, "{missing}");
}
