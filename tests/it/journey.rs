//! Issue 7 end to end, as a newcomer would meet it: a real `herald serve`
//! (API, projections and workers) sending through a real SMTP server
//! (aiosmtpd): a template in two locales, a recipient whose profile says
//! `fr`, the email as received, its unsubscribe link; version pinning,
//! preview against what is sent, attachments, suppression, preferences and
//! quiet hours applied before dispatch.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::peers::{Peer, aiosmtpd};
use crate::served::{Served, serve, smtp_config};
use crate::support::eventually;

/// A `herald serve` process over a fresh database, mailing through aiosmtpd.
pub(crate) struct Service {
    pub(crate) served: Served,
    _smtp: Peer,
    dir: PathBuf,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Service {
    pub(crate) async fn start() -> Service {
        Service::start_with("").await
    }

    /// With `config` after the SMTP provider's.
    pub(crate) async fn start_with(config: &str) -> Service {
        let dir = std::env::temp_dir().join(format!("herald-journey-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let maildir = dir.join("mail");
        let smtp = aiosmtpd(
            &["aiosmtpd.handlers.Mailbox", maildir.to_str().unwrap()],
            &[],
        )
        .await;
        let served = serve(
            &dir,
            "Journey",
            &format!("{}{config}", smtp_config(smtp.port)),
        )
        .await;
        Service {
            served,
            _smtp: smtp,
            dir,
        }
    }

    /// Every message the SMTP server kept, decoded.
    fn mailbox(&self) -> Vec<Value> {
        let output = std::process::Command::new(crate::peers::python())
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/peers/read_maildir.py"
            ))
            .arg(self.dir.join("mail"))
            .output()
            .expect("the Python peers run");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("JSON list of messages")
    }

    /// The one message addressed to `to`, once it has arrived.
    pub(crate) async fn email_to(&self, to: &str) -> Value {
        eventually(Duration::from_secs(30), async || {
            let found: Vec<Value> = self
                .mailbox()
                .into_iter()
                .filter(|m| m["headers"]["to"].as_str() == Some(to))
                .collect();
            assert!(found.len() < 2, "more than one email to {to}");
            match found.as_slice() {
                [message] => Ok(message.clone()),
                _ => Err(format!("no email reached {to}")),
            }
        })
        .await
    }

    pub(crate) async fn send(&self, input: Value) -> String {
        let data = self
            .served.graphql(
                "mutation($input: SendNotificationInput!) { sendNotification(input: $input) { notification { id } } }",
                json!({ "input": input }),
            )
            .await;
        data["sendNotification"]["notification"]["id"]
            .as_str()
            .expect("an id")
            .to_string()
    }

    /// The notification once its status is `status`, with its timeline.
    pub(crate) async fn wait_for_status(&self, id: &str, status: &str) -> Value {
        eventually(Duration::from_secs(30), async || {
            let data = self
                .served
                .graphql(
                    "query($id: ID!) { notification(id: $id) { status timeline { type data } } }",
                    json!({ "id": id }),
                )
                .await;
            if data["notification"]["status"] == status {
                Ok(data["notification"].clone())
            } else {
                Err(format!("{id} is not {status}: {:#}", data["notification"]))
            }
        })
        .await
    }

    async fn publish_welcome(&self, greeting_fr: &str) -> i64 {
        let data = self
            .served.graphql(
                "mutation($input: PublishTemplateInput!) { publishTemplate(input: $input) { number } }",
                json!({ "input": {
                    "key": "welcome",
                    "defaultLocale": "en",
                    "variables": [{ "name": "name", "type": "STRING" }],
                    "locales": [
                        { "locale": "en", "email": {
                            "subject": "Welcome, {{ name }}",
                            "html": "<p>Hello <b>{{ name }}</b></p>",
                            "text": "Hello {{ name }}" } },
                        { "locale": "fr", "email": {
                            "subject": "Bienvenue, {{ name }}",
                            "html": format!("<p>{greeting_fr} <b>{{{{ name }}}}</b></p>"),
                            "text": format!("{greeting_fr} {{{{ name }}}}") } }
                    ]
                } }),
            )
            .await;
        data["publishTemplate"]["number"]
            .as_i64()
            .expect("a version number")
    }
}

pub(crate) fn unsubscribe_link(email: &Value) -> String {
    let header = email["headers"]["list-unsubscribe"]
        .as_str()
        .expect("a List-Unsubscribe header");
    // A long header is folded, so its value may begin with whitespace.
    header
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_string()
}

#[tokio::test]
async fn a_template_in_two_locales_reaches_a_french_recipient_whose_unsubscribe_link_works() {
    let service = Service::start().await;
    assert_eq!(service.publish_welcome("Bonjour").await, 1);
    service
        .served.graphql(
            "mutation { upsertRecipient(input: { id: \"amelie\", email: \"amelie@example.com\", locale: \"fr\", timezone: \"Europe/Paris\" }) { id } }",
            json!({}),
        )
        .await;
    let preview = service
        .served.graphql(
            "{ previewTemplate(key: \"welcome\", locale: \"fr-CA\", variables: {name: \"Amélie\"}) { locale email { subject html text } } }",
            json!({}),
        )
        .await["previewTemplate"]
        .clone();
    assert_eq!(preview["locale"], "fr", "fr-CA falls back to fr");

    let id = service
        .send(json!({
            "recipient": { "id": "amelie" },
            "channels": ["EMAIL"],
            "priority": "HIGH",
            "category": "onboarding",
            "template": { "key": "welcome", "variables": { "name": "Amélie" } }
        }))
        .await;
    service.wait_for_status(&id, "SENT").await;
    let email = service.email_to("amelie@example.com").await;

    // What preview showed is what was sent; the unsubscribe footer follows it.
    assert_eq!(email["headers"]["subject"], preview["email"]["subject"]);
    assert_eq!(email["headers"]["subject"], "Bienvenue, Amélie");
    let html = email["html"].as_str().expect("an HTML part");
    let text = email["text"].as_str().expect("a text part");
    assert!(
        html.starts_with(preview["email"]["html"].as_str().unwrap()),
        "{html}"
    );
    assert!(
        text.starts_with(preview["email"]["text"].as_str().unwrap()),
        "{text}"
    );
    let link = unsubscribe_link(&email);
    assert!(
        text.contains(&link),
        "the footer carries the link {link}: {text}"
    );
    assert_eq!(
        email["headers"]["list-unsubscribe-post"],
        "List-Unsubscribe=One-Click"
    );

    // Opening the link changes nothing; a tampered one is refused in plain words.
    let page = service.served.http.get(&link).send().await.unwrap();
    assert!(page.status().is_success());
    let mut tampered = link.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let refused = service
        .served
        .http
        .post(&tampered)
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert!(refused.status().is_client_error(), "{}", refused.status());
    let words = refused.text().await.unwrap();
    assert!(!words.contains("<script"), "{words}");

    // RFC 8058 one-click: the mail client POSTs to the header's URL.
    let clicked = service
        .served
        .http
        .post(&link)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert!(clicked.status().is_success(), "{}", clicked.status());
    let recipient = service
        .served
        .graphql(
            "{ recipient(id: \"amelie\") { preferences { category channel optedIn source } } }",
            json!({}),
        )
        .await;
    let preferences = recipient["recipient"]["preferences"].as_array().unwrap();
    assert!(
        preferences.iter().any(|p| p["category"] == "onboarding"
            && p["channel"] == "EMAIL"
            && p["optedIn"] == false),
        "{preferences:?}"
    );

    // The next onboarding email is suppressed, with the reason, and never sent.
    let again = service
        .send(json!({
            "recipient": { "id": "amelie" },
            "channels": ["EMAIL"],
            "priority": "HIGH",
            "category": "onboarding",
            "template": { "key": "welcome", "variables": { "name": "Amélie" } }
        }))
        .await;
    let suppressed = service.wait_for_status(&again, "SUPPRESSED").await;
    let reason = suppressed["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "NotificationSuppressed")
        .expect("a NotificationSuppressed event")["data"]["reason"]
        .to_string();
    assert!(
        reason.contains("opted out of onboarding on email"),
        "{reason}"
    );
    assert_eq!(service.mailbox().len(), 1);
}

#[tokio::test]
async fn a_queued_message_keeps_the_version_it_was_requested_with() {
    let service = Service::start().await;
    service.publish_welcome("Bonjour").await;
    let id = service
        .send(json!({
            "recipient": { "email": "zoe@example.com", "locale": "fr" },
            "channels": ["EMAIL"],
            "priority": "HIGH",
            "scheduleAt": (chrono::Utc::now() + chrono::TimeDelta::seconds(3)).to_rfc3339(),
            "template": { "key": "welcome", "variables": { "name": "Zoé" } },
            "attachments": [{ "filename": "agenda.csv", "contentBase64": "ZGF5LHRvcGljCjEsd2VsY29tZQo=" }]
        }))
        .await;
    assert_eq!(service.publish_welcome("Salut").await, 2);
    service.wait_for_status(&id, "SENT").await;
    let email = service.email_to("zoe@example.com").await;
    let text = email["text"].as_str().unwrap();
    assert!(
        text.starts_with("Bonjour Zoé"),
        "version 1 was pinned: {text}"
    );

    // A send after the publish gets version 2.
    service
        .send(json!({
            "recipient": { "email": "yann@example.com", "locale": "fr" },
            "channels": ["EMAIL"],
            "priority": "HIGH",
            "template": { "key": "welcome", "variables": { "name": "Yann" } }
        }))
        .await;
    let later = service.email_to("yann@example.com").await;
    assert!(later["text"].as_str().unwrap().starts_with("Salut Yann"));
}

#[tokio::test]
async fn suppressed_addresses_opt_outs_and_quiet_hours_are_applied_before_dispatch() {
    let service = Service::start().await;
    service
        .served.graphql(
            "mutation { addSuppression(address: \"bounced@example.com\", note: \"hard bounce last week\") { address } }",
            json!({}),
        )
        .await;
    let to_suppressed = service
        .send(json!({
            "recipient": { "email": "bounced@example.com" },
            "channels": ["EMAIL"],
            "content": { "title": "Hi", "text": "hello" }
        }))
        .await;
    let suppressed = service.wait_for_status(&to_suppressed, "SUPPRESSED").await;
    assert!(
        suppressed["timeline"]
            .to_string()
            .contains("suppression list"),
        "{suppressed:#}"
    );

    // A recipient whose quiet hours cover every hour of the day: NORMAL
    // waits for them to end, HIGH goes through.
    let now_in_tokyo = chrono::Utc::now().with_timezone(&chrono_tz::Asia::Tokyo);
    let start = (now_in_tokyo - chrono::TimeDelta::hours(1))
        .format("%H:%M")
        .to_string();
    let end = (now_in_tokyo + chrono::TimeDelta::hours(2))
        .format("%H:%M")
        .to_string();
    service
        .served.graphql(
            "mutation($start: String!, $end: String!) { upsertRecipient(input: { id: \"kenji\", email: \"kenji@example.com\", timezone: \"Asia/Tokyo\", quietHours: { start: $start, end: $end } }) { id } }",
            json!({ "start": start, "end": end }),
        )
        .await;
    let normal = service
        .send(json!({
            "recipient": { "id": "kenji" },
            "channels": ["EMAIL"],
            "content": { "title": "Digest", "text": "your weekly digest" }
        }))
        .await;
    let waiting = service.wait_for_status(&normal, "SCHEDULED").await;
    let scheduled = waiting["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "NotificationScheduled")
        .expect("a NotificationScheduled event")["data"]
        .clone();
    assert_eq!(scheduled["reason"], "the recipient's quiet hours");
    let release: chrono::DateTime<chrono::Utc> =
        scheduled["schedule_at"].as_str().unwrap().parse().unwrap();
    let release_local = release.with_timezone(&chrono_tz::Asia::Tokyo);
    assert_eq!(release_local.format("%H:%M").to_string(), end);

    let urgent = service
        .send(json!({
            "recipient": { "id": "kenji" },
            "channels": ["EMAIL"],
            "priority": "HIGH",
            "content": { "title": "Security alert", "text": "new sign-in" }
        }))
        .await;
    service.wait_for_status(&urgent, "SENT").await;
    let email = service.email_to("kenji@example.com").await;
    assert_eq!(email["headers"]["subject"], "Security alert");
}
