//! Integration tests: links. The suppression list over GraphQL; signed
//! unsubscribe and preference pages; open and click tracking; short links;
//! the email decoration the dispatcher applies.

use chrono::{TimeDelta, Utc};
use herald::commands::links::{Links, LinksConfig, signing_key};
use herald::commands::{Actor, notifications, recipients, suppressions};
use herald::domain::NotificationCommand;
use herald::domain::signed_link::LinkClaims;
use herald::domain::suppression::{SuppressedAddress, SuppressionReason};
use herald::domain::values::{
    Category, Channel, EmailAddress, HttpUrl, NotificationId, Priority, RecipientId, TenantId,
};
use herald::providers::{Destination, OutboundMessage};
use herald::workers::email_links::EmailLinks;
use serde_json::{Value, json};

use crate::support::{TestApp, error_codes};

const ADD: &str = r#"mutation($address: String!, $channel: Channel, $reason: SuppressionReason, $note: String) {
  addSuppression(address: $address, channel: $channel, reason: $reason, note: $note) {
    address channel reason note createdAt
  }
}"#;

const LIST: &str = r#"query($filter: SuppressionFilter, $first: Int = 20, $after: String) {
  suppressions(filter: $filter, first: $first, after: $after) {
    edges { cursor node { address channel reason note } }
    pageInfo { hasNextPage endCursor }
  }
}"#;

const REMOVE: &str = r#"mutation($address: String!) { removeSuppression(address: $address) }"#;

/// An HTTP client that shows redirects instead of following them.
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// The same key and lifetimes as the app: the key is the one in its database.
async fn links(app: &TestApp) -> Links {
    Links::new(app.store.pool(), &LinksConfig::default())
        .await
        .expect("links")
}

/// `url` (pointing at the configured public URL) on the test server.
fn on_app(app: &TestApp, url: &url::Url) -> String {
    format!("{}{}", app.base, url.path())
}

/// A notification by email that has been sent, so it can be opened and clicked.
async fn sent_notification(app: &TestApp, key: &str, tenant: &TenantId) -> NotificationId {
    let sent = app
        .graphql(
            Some(key),
            "mutation($input: SendNotificationInput!) { sendNotification(input: $input) { notification { id } } }",
            json!({ "input": {
                "recipient": { "id": "user-1", "email": "ada@example.com" },
                "channels": ["EMAIL"],
                "content": { "title": "Hello", "text": "Hi" }
            }}),
        )
        .await;
    let id = sent["data"]["sendNotification"]["notification"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("sent: {sent}"));
    let id = NotificationId::parse(id).expect("id");
    let actor = Actor::new("test");
    notifications::handle(
        &app.store,
        tenant,
        &id,
        || NotificationCommand::AttemptDelivery {
            channel: Channel::Email,
            provider: "console".into(),
        },
        &actor,
    )
    .await
    .expect("attempted");
    notifications::handle(
        &app.store,
        tenant,
        &id,
        || NotificationCommand::RecordSent {
            attempt: 1,
            provider: "console".into(),
            provider_message_id: None,
            content: None,
        },
        &actor,
    )
    .await
    .expect("sent");
    id
}

async fn engagement(app: &TestApp, id: &NotificationId) -> Vec<(String, Value)> {
    app.store
        .read_stream(&notifications::stream_id(id), 1)
        .await
        .expect("stream")
        .into_iter()
        .filter(|e| e.event_type == "NotificationOpened" || e.event_type == "NotificationClicked")
        .map(|e| (e.event_type, e.payload))
        .collect()
}

fn form_body(fields: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish()
}

fn email(raw: &str) -> SuppressedAddress {
    SuppressedAddress::Email(EmailAddress::parse(raw).expect("email"))
}

#[tokio::test]
async fn the_suppression_list_is_listed_added_to_and_removed_from() {
    let app = TestApp::start().await;
    let (tenant, key) = app.tenant().await;
    let tenant = TenantId::parse(&tenant).unwrap();

    let added = app
        .graphql(
            Some(&key),
            ADD,
            json!({ "address": "Ada@Example.com", "note": "asked by phone" }),
        )
        .await;
    let entry = &added["data"]["addSuppression"];
    assert_eq!(entry["address"], "Ada@Example.com", "{added}");
    assert_eq!(entry["channel"], "EMAIL");
    assert_eq!(entry["reason"], "MANUAL");
    assert_eq!(entry["note"], "asked by phone");

    // Idempotent: the same address in another case changes nothing.
    let again = app
        .graphql(
            Some(&key),
            ADD,
            json!({ "address": "ada@example.com", "reason": "COMPLAINT" }),
        )
        .await;
    assert_eq!(
        again["data"]["addSuppression"]["reason"], "MANUAL",
        "{again}"
    );
    assert_eq!(
        again["data"]["addSuppression"]["createdAt"],
        entry["createdAt"]
    );
    let phone = app
        .graphql(Some(&key), ADD, json!({ "address": "+1 (415) 555-2671" }))
        .await;
    assert_eq!(
        phone["data"]["addSuppression"]["address"], "+14155552671",
        "{phone}"
    );
    assert_eq!(phone["data"]["addSuppression"]["channel"], "SMS");

    // The dispatcher's lookup: one query, canonical comparison.
    let found = suppressions::suppressed(
        app.store.pool(),
        &tenant,
        &[email("ADA@example.com"), email("bob@example.com")],
    )
    .await
    .expect("lookup");
    assert_eq!(found.len(), 1);
    assert_eq!(
        found.get(&email("ada@example.com")),
        Some(&SuppressionReason::Manual)
    );

    let page = app.graphql(Some(&key), LIST, json!({ "first": 1 })).await;
    let list = &page["data"]["suppressions"];
    assert_eq!(list["edges"].as_array().map(Vec::len), Some(1), "{page}");
    assert_eq!(list["pageInfo"]["hasNextPage"], true);
    let next = app
        .graphql(
            Some(&key),
            LIST,
            json!({ "first": 10, "after": list["pageInfo"]["endCursor"] }),
        )
        .await;
    let next = &next["data"]["suppressions"];
    assert_eq!(next["edges"].as_array().map(Vec::len), Some(1));
    assert_eq!(next["pageInfo"]["hasNextPage"], false);
    assert_ne!(next["edges"][0]["node"], list["edges"][0]["node"]);
    let filtered = app
        .graphql(
            Some(&key),
            LIST,
            json!({ "filter": { "channel": "EMAIL", "addressContains": "ADA@" } }),
        )
        .await;
    let edges = &filtered["data"]["suppressions"]["edges"];
    assert_eq!(edges.as_array().map(Vec::len), Some(1), "{filtered}");
    assert_eq!(edges[0]["node"]["address"], "Ada@Example.com");

    // Bad input names its field.
    let bad = app
        .graphql(Some(&key), ADD, json!({ "address": "not an address" }))
        .await;
    assert_eq!(error_codes(&bad), ["VALIDATION"]);
    assert_eq!(
        bad["errors"][0]["extensions"]["fields"][0]["path"],
        "address"
    );
    let push = app
        .graphql(
            Some(&key),
            ADD,
            json!({ "address": "ada@example.com", "channel": "PUSH" }),
        )
        .await;
    assert_eq!(error_codes(&push), ["VALIDATION"]);
    for (variables, field) in [
        (json!({ "first": 0 }), "first"),
        (json!({ "after": "nonsense" }), "after"),
        (json!({ "filter": { "channel": "NTFY" } }), "filter.channel"),
    ] {
        let refused = app.graphql(Some(&key), LIST, variables).await;
        assert_eq!(error_codes(&refused), ["VALIDATION"], "{refused}");
        assert_eq!(
            refused["errors"][0]["extensions"]["fields"][0]["path"],
            field
        );
    }

    let removed = app
        .graphql(Some(&key), REMOVE, json!({ "address": "ADA@example.com" }))
        .await;
    assert_eq!(removed["data"]["removeSuppression"], true, "{removed}");
    let gone = app
        .graphql(Some(&key), REMOVE, json!({ "address": "ada@example.com" }))
        .await;
    assert_eq!(error_codes(&gone), ["NOT_FOUND"]);
    let left = suppressions::suppressed(app.store.pool(), &tenant, &[email("ada@example.com")])
        .await
        .expect("lookup");
    assert!(left.is_empty());

    // Another tenant sees none of it.
    let (_, other_key) = app.tenant().await;
    let other = app.graphql(Some(&other_key), LIST, json!({})).await;
    assert_eq!(other["data"]["suppressions"]["edges"], json!([]));
    let anonymous = app.graphql(None, LIST, json!({})).await;
    assert_eq!(error_codes(&anonymous), ["UNAUTHENTICATED"]);
}

#[tokio::test]
async fn unsubscribe_asks_on_get_and_records_the_preference_on_one_click_post() {
    let app = TestApp::start().await;
    let (tenant, _) = app.tenant().await;
    let tenant = TenantId::parse(&tenant).unwrap();
    let recipient = RecipientId::parse("user-1").unwrap();
    let billing = Category::parse("billing").unwrap();
    let url = links(&app).await.unsubscribe_url(
        &tenant,
        Some(NotificationId::new()),
        Some(&recipient),
        &email("ada@example.com"),
        Some(&billing),
    );
    let stream = recipients::stream_id(&tenant, &recipient);

    // Mail scanners fetch links: a GET shows the question and changes nothing.
    for _ in 0..2 {
        let page = app.http.get(on_app(&app, &url)).send().await.expect("GET");
        assert_eq!(page.status(), 200);
        let html = page.text().await.expect("body");
        assert!(
            html.contains("Unsubscribe ada@example.com from billing emails?"),
            "{html}"
        );
        assert!(html.contains("<form method=\"post\">"));
    }
    assert!(
        app.store
            .read_stream(&stream, 1)
            .await
            .expect("read")
            .is_empty()
    );

    // RFC 8058: a POST with List-Unsubscribe=One-Click.
    let posted = app
        .http
        .post(on_app(&app, &url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .expect("POST");
    assert_eq!(posted.status(), 200);
    assert!(
        posted
            .text()
            .await
            .expect("body")
            .contains("You are unsubscribed")
    );
    let events = app.store.read_stream(&stream, 1).await.expect("read");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type, "RecipientPreferenceChanged");
    assert_eq!(events[0].payload["category"], "billing");
    assert_eq!(events[0].payload["channel"], "email");
    assert_eq!(events[0].payload["opted_in"], false);
    assert_eq!(events[0].payload["source"], "unsubscribe");
    let preferences = recipients::get(app.store.pool(), &tenant, &recipient)
        .await
        .expect("read")
        .expect("recipient")
        .preferences;
    assert!(!preferences.allows(Some(&billing), Channel::Email));
    assert!(preferences.allows(Some(&billing), Channel::Sms));
    assert!(preferences.allows(None, Channel::Email));
    // Nothing went on the suppression list: the preference is enough.
    let listed = suppressions::suppressed(app.store.pool(), &tenant, &[email("ada@example.com")])
        .await
        .expect("lookup");
    assert!(listed.is_empty());

    // A second click (the button after the one-click) changes nothing more.
    let again = app
        .http
        .post(on_app(&app, &url))
        .send()
        .await
        .expect("POST");
    assert_eq!(again.status(), 200);
    assert_eq!(
        app.store.read_stream(&stream, 1).await.expect("read").len(),
        1
    );
}

#[tokio::test]
async fn unsubscribing_a_bare_address_suppresses_it() {
    let app = TestApp::start().await;
    let (tenant, key) = app.tenant().await;
    let tenant = TenantId::parse(&tenant).unwrap();
    let url = links(&app).await.unsubscribe_url(
        &tenant,
        None,
        None,
        &email("bob@example.com"),
        Some(&Category::parse("news").unwrap()),
    );
    let page = app.http.get(on_app(&app, &url)).send().await.expect("GET");
    let html = page.text().await.expect("body");
    assert!(
        html.contains("Unsubscribe bob@example.com from all emails from this sender?"),
        "{html}"
    );
    let posted = app
        .http
        .post(on_app(&app, &url))
        .send()
        .await
        .expect("POST");
    assert_eq!(posted.status(), 200);
    let found = suppressions::suppressed(app.store.pool(), &tenant, &[email("bob@example.com")])
        .await
        .expect("lookup");
    assert_eq!(
        found.get(&email("bob@example.com")),
        Some(&SuppressionReason::Unsubscribe)
    );
    let listed = app.graphql(Some(&key), LIST, json!({})).await;
    assert_eq!(
        listed["data"]["suppressions"]["edges"][0]["node"]["reason"], "UNSUBSCRIBE",
        "{listed}"
    );
}

#[tokio::test]
async fn a_tampered_or_expired_unsubscribe_link_is_refused_plainly() {
    let app = TestApp::start().await;
    let (tenant, _) = app.tenant().await;
    let tenant = TenantId::parse(&tenant).unwrap();
    let url =
        links(&app)
            .await
            .unsubscribe_url(&tenant, None, None, &email("carol@example.com"), None);
    let token = url.path().trim_start_matches("/u/").to_string();
    // Swap one character of the payload.
    let mut bytes = token.clone().into_bytes();
    bytes[5] = if bytes[5] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(bytes).unwrap();
    for method in [reqwest::Method::GET, reqwest::Method::POST] {
        let refused = app
            .http
            .request(method, format!("{}/u/{tampered}", app.base))
            .send()
            .await
            .expect("request");
        assert_eq!(refused.status(), 400);
        let html = refused.text().await.expect("body");
        assert!(html.contains("This link is not valid"), "{html}");
    }

    let key = signing_key(app.store.pool(), &LinksConfig::default())
        .await
        .expect("key");
    let expired = LinkClaims::unsubscribe(
        tenant.clone(),
        None,
        None,
        email("carol@example.com"),
        None,
        Utc::now() - TimeDelta::minutes(1),
    )
    .sign(&key);
    for method in [reqwest::Method::GET, reqwest::Method::POST] {
        let refused = app
            .http
            .request(method, format!("{}/u/{expired}", app.base))
            .send()
            .await
            .expect("request");
        assert_eq!(refused.status(), 410);
        assert!(
            refused
                .text()
                .await
                .expect("body")
                .contains("This link has expired")
        );
    }
    let found = suppressions::suppressed(app.store.pool(), &tenant, &[email("carol@example.com")])
        .await
        .expect("lookup");
    assert!(found.is_empty(), "a refused link changed nothing");
}

#[tokio::test]
async fn the_preference_page_records_what_the_recipient_changes() {
    let app = TestApp::start().await;
    let (tenant, key) = app.tenant().await;
    let tenant = TenantId::parse(&tenant).unwrap();
    let recipient = RecipientId::parse("user-7").unwrap();
    let link = app
        .graphql(
            Some(&key),
            r#"query { preferencesLink(recipientId: "user-7", category: "billing") }"#,
            json!({}),
        )
        .await;
    let link =
        url::Url::parse(link["data"]["preferencesLink"].as_str().expect("link")).expect("url");
    assert!(link.path().starts_with("/p/"));
    let page = app.http.get(on_app(&app, &link)).send().await.expect("GET");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("body");
    assert!(html.contains("value=\"billing|sms\""), "{html}");
    assert!(html.contains("value=\"*|email\""));

    // Untick billing by SMS; keep everything else as shown.
    let form: Vec<(&str, &str)> = vec![
        ("cell", "*|email"),
        ("on", "*|email"),
        ("cell", "billing|email"),
        ("on", "billing|email"),
        ("cell", "billing|sms"),
    ];
    let saved = app
        .http
        .post(on_app(&app, &link))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&form))
        .send()
        .await
        .expect("POST");
    assert_eq!(saved.status(), 200);
    let html = saved.text().await.expect("body");
    assert!(html.contains("Your preferences are saved."), "{html}");
    let events = app
        .store
        .read_stream(&recipients::stream_id(&tenant, &recipient), 1)
        .await
        .expect("read");
    assert_eq!(events.len(), 1, "only the changed box is recorded");
    assert_eq!(events[0].payload["source"], "signed_link");
    assert_eq!(events[0].payload["category"], "billing");
    assert_eq!(events[0].payload["channel"], "sms");

    let junk = app
        .http
        .post(on_app(&app, &link))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&[("cell", "billing|fax")]))
        .send()
        .await
        .expect("POST");
    assert_eq!(junk.status(), 400);
}

#[tokio::test]
async fn opens_and_clicks_are_recorded_and_redirect_only_to_the_signed_url() {
    let app = TestApp::start().await;
    let (tenant, key) = app.tenant().await;
    let tenant = TenantId::parse(&tenant).unwrap();
    let id = sent_notification(&app, &key, &tenant).await;
    let links = links(&app).await;
    let http = no_redirects();

    let pixel = links.open_url(&tenant, id);
    for _ in 0..2 {
        let opened = http
            .get(on_app(&app, &pixel))
            .header("user-agent", "Mozilla/5.0 (test)")
            .header("x-forwarded-for", "203.0.113.77, 10.0.0.1")
            .send()
            .await
            .expect("GET");
        assert_eq!(opened.status(), 200);
        assert_eq!(opened.headers()["content-type"], "image/gif");
        assert_eq!(opened.bytes().await.expect("body").len(), 43);
    }
    let target = HttpUrl::parse("https://shop.example/p?a=1&b=2").unwrap();
    let click = links.click_url(&tenant, Some(id), &target);
    // A query parameter never changes where a click goes.
    let clicked = http
        .get(format!(
            "{}?url=https://evil.example/",
            on_app(&app, &click)
        ))
        .header("x-forwarded-for", "2001:db8:85a3:8d3::1")
        .send()
        .await
        .expect("GET");
    assert_eq!(clicked.status(), 302);
    assert_eq!(clicked.headers()["location"], target.as_str());

    let events = engagement(&app, &id).await;
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        [
            "NotificationOpened",
            "NotificationOpened",
            "NotificationClicked"
        ]
    );
    assert_eq!(events[0].1["first"], true);
    assert_eq!(events[1].1["first"], false);
    assert_eq!(events[0].1["client"]["user_agent"], "Mozilla/5.0 (test)");
    assert_eq!(events[0].1["client"]["ip_prefix"], "203.0.113.0/24");
    assert_eq!(events[2].1["first"], true);
    assert_eq!(events[2].1["url"], target.as_str());
    assert_eq!(events[2].1["client"]["ip_prefix"], "2001:db8:85a3::/48");

    // A tampered click token redirects nowhere and records nothing.
    let token = click.path().trim_start_matches("/t/c/");
    let (signed, _) = token.rsplit_once('.').unwrap();
    let forged = format!("{}/t/c/{signed}.AAAA", app.base);
    let refused = http.get(forged).send().await.expect("GET");
    assert_eq!(refused.status(), 400);
    assert!(refused.headers().get("location").is_none());
    assert_eq!(engagement(&app, &id).await.len(), 3);

    // An unknown notification still gets its pixel and its redirect.
    let unknown = NotificationId::new();
    let pixel = http
        .get(on_app(&app, &links.open_url(&tenant, unknown)))
        .send()
        .await
        .expect("GET");
    assert_eq!(pixel.status(), 200);
    let redirect = http
        .get(on_app(
            &app,
            &links.click_url(&tenant, Some(unknown), &target),
        ))
        .send()
        .await
        .expect("GET");
    assert_eq!(redirect.status(), 302);
    assert_eq!(redirect.headers()["location"], target.as_str());
}

#[tokio::test]
async fn tracking_settings_and_short_links() {
    let app = TestApp::start().await;
    let (tenant, key) = app.tenant().await;
    let tenant = TenantId::parse(&tenant).unwrap();
    let id = sent_notification(&app, &key, &tenant).await;

    let settings = app
        .graphql(
            Some(&key),
            "{ trackingSettings { opens clicks } }",
            json!({}),
        )
        .await;
    assert_eq!(
        settings["data"]["trackingSettings"],
        json!({ "opens": false, "clicks": false })
    );
    let set = app
        .graphql(
            Some(&key),
            "mutation { setTrackingSettings(opens: true, clicks: false) { opens clicks } }",
            json!({}),
        )
        .await;
    assert_eq!(
        set["data"]["setTrackingSettings"],
        json!({ "opens": true, "clicks": false }),
        "{set}"
    );
    let settings = app
        .graphql(
            Some(&key),
            "{ trackingSettings { opens clicks } }",
            json!({}),
        )
        .await;
    assert_eq!(settings["data"]["trackingSettings"]["opens"], true);

    const SHORT: &str = r#"mutation($url: String!, $id: ID) {
      createShortLink(url: $url, notificationId: $id) { code shortUrl url notificationId expiresAt }
    }"#;
    let created = app
        .graphql(
            Some(&key),
            SHORT,
            json!({ "url": "https://shop.example/sale", "id": id.to_string() }),
        )
        .await;
    let link = &created["data"]["createShortLink"];
    let short = url::Url::parse(link["shortUrl"].as_str().expect("shortUrl")).expect("url");
    assert_eq!(
        short.path(),
        format!("/s/{}", link["code"].as_str().unwrap())
    );
    assert_eq!(link["notificationId"], id.to_string());
    let followed = no_redirects()
        .get(on_app(&app, &short))
        .send()
        .await
        .expect("GET");
    assert_eq!(followed.status(), 302);
    assert_eq!(followed.headers()["location"], "https://shop.example/sale");
    let events = engagement(&app, &id).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].1["url"], "https://shop.example/sale");

    for (variables, field) in [
        (json!({ "url": "javascript:alert(1)" }), "url"),
        (
            json!({ "url": "https://x.example", "id": NotificationId::new().to_string() }),
            "notificationId",
        ),
        (
            json!({ "url": "https://x.example", "id": "nope" }),
            "notificationId",
        ),
    ] {
        let refused = app.graphql(Some(&key), SHORT, variables).await;
        assert_eq!(error_codes(&refused), ["VALIDATION"], "{refused}");
        assert_eq!(
            refused["errors"][0]["extensions"]["fields"][0]["path"],
            field
        );
    }
    let missing = app
        .http
        .get(format!("{}/s/AAAAAAAAAA", app.base))
        .send()
        .await
        .expect("GET");
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn emails_get_unsubscribe_headers_a_footer_and_tracking_when_on() {
    let app = TestApp::start().await;
    let (tenant, key) = app.tenant().await;
    let tenant = TenantId::parse(&tenant).unwrap();
    let id = sent_notification(&app, &key, &tenant).await;
    let email_links = EmailLinks::new(app.store.pool(), &LinksConfig::default())
        .await
        .expect("email links");
    let address = EmailAddress::parse("ada@example.com").unwrap();
    let message = || {
        OutboundMessage {
        notification_id: id,
        tenant_id: tenant.clone(),
        attempt: 1,
        destination: Destination::Email(address.clone()),
        priority: Priority::Normal,
        category: None,
        tags: vec![],
        title: Some("Hello".into()),
        text: Some("Hi Ada".into()),
        html: Some(
            "<html><body><p>Hi <a href=\"https://shop.example/x?a=1&amp;b=2\">Ada</a></p></body></html>"
                .into(),
        ),
        cta_url: None,
        data: None,
        headers: vec![("List-Unsubscribe".into(), "<https://old.example/>".into())],
        signing_secrets: vec![],
        attachments: vec![],
    }
    };
    let unsubscribe = email_links.unsubscribe_url(&tenant, id, None, &address, None);

    // Tracking off: headers and footers only.
    let mut plain = message();
    email_links
        .decorate(&mut plain, &unsubscribe)
        .await
        .expect("decorated");
    let header = |m: &OutboundMessage, name: &str| -> Vec<String> {
        m.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    };
    assert_eq!(
        header(&plain, "List-Unsubscribe"),
        [format!("<{unsubscribe}>")]
    );
    assert_eq!(
        header(&plain, "List-Unsubscribe-Post"),
        ["List-Unsubscribe=One-Click"]
    );
    let text = plain.text.as_deref().unwrap();
    assert!(text.starts_with("Hi Ada\n\n-- \nUnsubscribe: "), "{text}");
    assert!(text.contains(unsubscribe.as_str()));
    let html = plain.html.as_deref().unwrap();
    assert!(
        html.contains("href=\"https://shop.example/x?a=1&amp;b=2\""),
        "{html}"
    );
    assert!(html.contains(&format!("<a href=\"{unsubscribe}\">Unsubscribe</a>")));
    assert!(!html.contains("/t/o/"));

    // Tracking on (a fresh EmailLinks: settings are cached for a while).
    app.graphql(
        Some(&key),
        "mutation { setTrackingSettings(opens: true, clicks: true) { opens } }",
        json!({}),
    )
    .await;
    let email_links = EmailLinks::new(app.store.pool(), &LinksConfig::default())
        .await
        .expect("email links");
    let mut tracked = message();
    email_links
        .decorate(&mut tracked, &unsubscribe)
        .await
        .expect("decorated");
    let html = tracked.html.as_deref().unwrap();
    assert!(!html.contains("shop.example"), "{html}");
    assert!(html.contains(&format!("<a href=\"{unsubscribe}\">Unsubscribe</a>")));
    assert!(html.find("/t/o/").unwrap() < html.find("</body>").unwrap());
    let href = html
        .split("href=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("first link");
    let followed = no_redirects()
        .get(on_app(&app, &url::Url::parse(href).expect("url")))
        .send()
        .await
        .expect("GET");
    assert_eq!(followed.status(), 302);
    assert_eq!(
        followed.headers()["location"],
        "https://shop.example/x?a=1&b=2"
    );
    // A body that already carries the unsubscribe URL gets no second footer.
    let mut carried = message();
    carried.text = Some(format!("Leave: {unsubscribe}"));
    email_links
        .decorate(&mut carried, &unsubscribe)
        .await
        .expect("decorated");
    assert_eq!(
        carried.text.as_deref(),
        Some(format!("Leave: {unsubscribe}").as_str())
    );
}
