use serde_json::json;

use super::*;
use crate::domain::test_fixtures::{minute, request, t0};

fn input(value: Value) -> SendNotification {
    serde_json::from_value(value).unwrap()
}

fn paths(errors: &ValidationErrors) -> Vec<&str> {
    errors
        .errors()
        .iter()
        .map(|error| error.path.as_str())
        .collect()
}

#[test]
fn parses_the_seed_example() {
    let request = input(json!({
        "idempotency_key": "nl-2ce1",
        "recipient": {"email": "user@x.com", "locale": "en-gb", "timezone": "Europe/London"},
        "channels": ["email"],
        "template": {"key": "magic_link_login", "version": 2,
                     "variables": {"link": "https://example.com/l/1"}},
        "priority": "high",
        "ttl_seconds": 900
    }))
    .parse(t0())
    .unwrap();
    assert_eq!(request.priority, Priority::High);
    assert_eq!(request.channels, [Channel::Email]);
    assert_eq!(request.recipient.locale.unwrap().as_str(), "en-GB");
    assert_eq!(request.expiry, Some(Expiry::TtlSeconds(900)));
    let Content::Template(template) = request.content else {
        panic!("expected a template");
    };
    assert_eq!(template.version.map(TemplateVersion::get), Some(2));
}

#[test]
fn parses_inline_content_with_defaults() {
    let request = input(json!({
        "recipient": {"id": "user-1"},
        "channels": ["in_app"],
        "content": {"title": "Welcome", "data": {"screen": "home"}},
        "source_event": {"event_id": "evt-1", "source": "signup",
                         "occurred_at": "2025-10-29T19:59:00Z", "segment": "trial"}
    }))
    .parse(t0())
    .unwrap();
    assert_eq!(request.priority, Priority::Normal);
    assert!(request.tags.is_empty());
    assert_eq!(
        request.source_event.unwrap().segment.unwrap().as_str(),
        "trial"
    );
}

#[test]
fn reports_every_bad_field_at_once_with_its_path() {
    let errors = input(json!({
        "recipient": {"email": "not-an-email", "phone": "12345", "timezone": "Mars/Base"},
        "channels": ["email", "fax", "email", "sms", "push"],
        "content": {"title": "Hi\nBcc: x@y.z", "html": "h".repeat(HtmlBody::MAX_BYTES + 1),
                    "cta_url": "ftp://example.com"},
        "priority": "urgent",
        "tags": ["ok", ""],
        "trace_id": "t".repeat(129)
    }))
    .parse(t0())
    .unwrap_err();
    assert_eq!(
        paths(&errors),
        [
            "channels[1]",
            "channels[2]",
            "recipient.push_target",
            "recipient.email",
            "recipient.phone",
            "recipient.timezone",
            "priority",
            "content.title",
            "content.html",
            "content.cta_url",
            "tags[1]",
            "trace_id",
        ]
    );
    assert_eq!(
        errors.at("recipient.push_target"),
        ["is required for the push channel"]
    );
    assert_eq!(errors.at("content.html"), ["must be at most 262144 bytes"]);
    assert_eq!(errors.at("channels[2]"), ["email is listed more than once"]);
}

#[test]
fn each_channel_needs_its_address() {
    let errors = input(json!({
        "channels": ["email", "sms", "push", "webhook", "ntfy", "in_app"],
        "content": {"text": "hello"}
    }))
    .parse(t0())
    .unwrap_err();
    assert_eq!(
        paths(&errors),
        [
            "recipient.email",
            "recipient.phone",
            "recipient.push_target",
            "recipient.webhook_url",
            "recipient.ntfy_topic",
            "recipient.id",
        ]
    );
}

#[test]
fn a_recipient_named_by_id_may_leave_its_addresses_to_the_stored_profile() {
    let request = input(json!({
        "recipient": {"id": "user-1"},
        "channels": ["email", "sms"],
        "content": {"text": "hello"}
    }))
    .parse(t0())
    .unwrap();
    assert_eq!(request.recipient.email, None);
    assert_eq!(request.channels.len(), 2);
}

#[test]
fn channels_are_required_and_bounded() {
    let none = input(json!({"content": {"text": "x"}}))
        .parse(t0())
        .unwrap_err();
    assert_eq!(none.at("channels"), ["at least one channel is required"]);

    let seven = vec!["in_app"; 7];
    let many =
        input(json!({"recipient": {"id": "u"}, "channels": seven, "content": {"text": "x"}}))
            .parse(t0())
            .unwrap_err();
    assert_eq!(many.at("channels"), ["at most 6 channels"]);
}

#[test]
fn exactly_one_of_content_and_template() {
    let neither = input(json!({"recipient": {"id": "u"}, "channels": ["in_app"]}))
        .parse(t0())
        .unwrap_err();
    assert_eq!(paths(&neither), ["content"]);

    let both = input(json!({
        "recipient": {"id": "u"}, "channels": ["in_app"],
        "content": {"text": "x"}, "template": {"key": "welcome"}
    }))
    .parse(t0())
    .unwrap_err();
    assert_eq!(paths(&both), ["template"]);

    let empty = input(json!({"recipient": {"id": "u"}, "channels": ["in_app"], "content": {}}))
        .parse(t0())
        .unwrap_err();
    assert_eq!(
        empty.at("content"),
        ["needs at least one of title, text, html or data"]
    );
}

#[test]
fn template_fields_are_checked() {
    let errors = input(json!({
        "recipient": {"id": "u"}, "channels": ["in_app"],
        "template": {"version": 0, "locale": "xx-YY",
                     "variables": {"blob": "v".repeat(MAX_VARIABLES_BYTES)}}
    }))
    .parse(t0())
    .unwrap_err();
    assert_eq!(
        paths(&errors),
        [
            "template.key",
            "template.version",
            "template.locale",
            "template.variables"
        ]
    );
}

#[test]
fn json_fields_are_bounded_objects() {
    let errors = input(json!({
        "recipient": {"id": "u"}, "channels": ["in_app"],
        "content": {"data": {"blob": "d".repeat(MAX_DATA_BYTES)}},
        "metadata": ["not", "an", "object"]
    }))
    .parse(t0())
    .unwrap_err();
    assert_eq!(paths(&errors), ["content.data", "metadata"]);
    assert_eq!(errors.at("metadata"), ["must be a JSON object"]);
}

#[test]
fn schedule_may_lag_by_a_minute_but_no_more() {
    let at = |schedule_at: DateTime<Utc>| {
        input(json!({"recipient": {"id": "u"}, "channels": ["in_app"],
                     "content": {"text": "x"}, "schedule_at": schedule_at}))
        .parse(t0())
    };
    assert!(at(minute(-1)).is_ok());
    assert_eq!(
        at(minute(-2)).unwrap_err().at("schedule_at"),
        ["is more than a minute in the past"]
    );
}

#[test]
fn expiry_is_one_of_two_forms_and_after_the_schedule() {
    let parse = |extra: Value| {
        let mut value = json!({"recipient": {"id": "u"}, "channels": ["in_app"],
                               "content": {"text": "x"}});
        value
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        input(value).parse(t0())
    };
    assert_eq!(
        parse(json!({"expires_at": minute(5), "ttl_seconds": 60}))
            .unwrap_err()
            .at("ttl_seconds"),
        ["give either expires_at or ttl_seconds, not both"]
    );
    assert_eq!(
        parse(json!({"expires_at": minute(0)}))
            .unwrap_err()
            .at("expires_at"),
        ["must be in the future"]
    );
    assert_eq!(
        parse(json!({"expires_at": minute(5), "schedule_at": minute(10)}))
            .unwrap_err()
            .at("expires_at"),
        ["must be after schedule_at"]
    );
    assert_eq!(
        parse(json!({"ttl_seconds": 60, "schedule_at": minute(10)}))
            .unwrap_err()
            .at("ttl_seconds"),
        ["expires before schedule_at"]
    );
    assert_eq!(
        parse(json!({"ttl_seconds": 2_592_001}))
            .unwrap_err()
            .at("ttl_seconds"),
        ["must be between 1 and 2592000 (30 days)"]
    );
    assert!(parse(json!({"ttl_seconds": 0})).is_err());
    assert_eq!(
        parse(json!({"ttl_seconds": 2_592_000})).unwrap().expiry,
        Some(Expiry::TtlSeconds(2_592_000))
    );
}

#[test]
fn tags_are_bounded_and_distinct() {
    let parse = |tags: Value| {
        input(json!({"recipient": {"id": "u"}, "channels": ["in_app"],
                     "content": {"text": "x"}, "tags": tags}))
        .parse(t0())
    };
    let many: Vec<String> = (0..21).map(|i| format!("t{i}")).collect();
    assert_eq!(
        parse(json!(many)).unwrap_err().at("tags"),
        ["at most 20 tags"]
    );
    assert_eq!(
        parse(json!(["a", "a"])).unwrap_err().at("tags[1]"),
        ["is listed more than once"]
    );
}

#[test]
fn source_event_requires_its_identity() {
    let errors = input(json!({
        "recipient": {"id": "u"}, "channels": ["in_app"], "content": {"text": "x"},
        "source_event": {"segment": "Not A Slug"}
    }))
    .parse(t0())
    .unwrap_err();
    assert_eq!(
        paths(&errors),
        [
            "source_event.event_id",
            "source_event.source",
            "source_event.occurred_at",
            "source_event.segment"
        ]
    );
}

#[test]
fn typed_values_are_taken_as_given_and_text_is_parsed() {
    let mut send = input(json!({"recipient": {"id": "u"}, "content": {"text": "x"}}));
    send.channels = vec![
        Given::Typed(Channel::InApp),
        Given::Text("fax".into()),
        Given::Typed(Channel::InApp),
    ];
    send.priority = Some(Given::Typed(Priority::Low));
    let errors = send.clone().parse(t0()).unwrap_err();
    assert_eq!(paths(&errors), ["channels[1]", "channels[2]"]);
    send.channels.truncate(1);
    let request = send.parse(t0()).unwrap();
    assert_eq!(request.channels, [Channel::InApp]);
    assert_eq!(request.priority, Priority::Low);
}

#[test]
fn fingerprint_is_stable_and_tells_requests_apart() {
    let a = request();
    assert_eq!(a.fingerprint(), request().fingerprint());
    assert_eq!(a.fingerprint().len(), 64);

    let mut retried = request();
    retried.trace_id = Some(TraceId::parse("another-trace").unwrap());
    assert_eq!(a.fingerprint(), retried.fingerprint());

    let mut changed = request();
    changed.priority = Priority::Low;
    assert_ne!(a.fingerprint(), changed.fingerprint());
}

#[test]
fn fingerprint_ignores_key_order_in_caller_json() {
    let with = |variables: &str| {
        input(json!({
            "recipient": {"id": "u"}, "channels": ["in_app"],
            "template": {"key": "welcome",
                         "variables": serde_json::from_str::<Value>(variables).unwrap()}
        }))
        .parse(t0())
        .unwrap()
        .fingerprint()
    };
    assert_eq!(
        with(r#"{"a": 1, "b": {"c": 2, "d": 3}}"#),
        with(r#"{"b": {"d": 3, "c": 2}, "a": 1}"#)
    );
}

#[test]
fn the_parsed_request_round_trips_through_serde() {
    let request = request();
    let json = serde_json::to_value(&request).unwrap();
    assert_eq!(
        serde_json::from_value::<NotificationRequest>(json).unwrap(),
        request
    );
}

fn with_attachments(
    channels: Value,
    attachments: Value,
) -> Result<NotificationRequest, ValidationErrors> {
    input(json!({
        "recipient": {"email": "user@x.com", "phone": "+447700900123"},
        "channels": channels,
        "content": {"title": "Your invoice", "text": "Attached."},
        "attachments": attachments
    }))
    .parse(t0())
}

#[test]
fn attachments_by_url_or_inline_base64() {
    let request = with_attachments(
        json!(["email", "sms"]),
        json!([
            {"filename": "invoice.pdf", "url": "https://files.example.com/r-123.pdf?sig=abc"},
            {"filename": "notes.txt", "content_type": "Text/Plain", "content_base64": "aGVsbG8="}
        ]),
    )
    .unwrap();
    let [invoice, notes] = request.attachments.as_slice() else {
        panic!("expected two attachments");
    };
    assert_eq!(invoice.filename.as_str(), "invoice.pdf");
    assert_eq!(invoice.content_type, None);
    assert!(matches!(&invoice.source, AttachmentSource::Url(url)
        if url.as_str() == "https://files.example.com/r-123.pdf?sig=abc"));
    assert_eq!(
        notes.content_type.as_ref().map(MediaType::as_str),
        Some("text/plain")
    );
    assert!(matches!(&notes.source, AttachmentSource::Inline(data) if data.as_bytes() == b"hello"));
}

#[test]
fn each_bad_attachment_field_is_named() {
    let errors = with_attachments(
        json!(["email"]),
        json!([
            {"filename": "../../etc/passwd", "content_base64": "aGVsbG8="},
            {"filename": "a.pdf", "content_type": "pdf", "url": "file:///etc/passwd"},
            {"filename": "b.pdf", "content_base64": "not base64!"},
            {"filename": "c.pdf"},
            {"filename": "d.pdf", "url": "https://example.com/d", "content_base64": "aGVsbG8="},
            {"content_base64": "aGVsbG8="}
        ]),
    )
    .unwrap_err();
    assert_eq!(
        paths(&errors),
        [
            "attachments[0].filename",
            "attachments[1].content_type",
            "attachments[1].url",
            "attachments[2].content_base64",
            "attachments[3].url",
            "attachments[4].url",
            "attachments[5].filename",
        ]
    );
    assert_eq!(
        errors.at("attachments[2].content_base64")[0],
        "is not valid base64 (standard alphabet, padded)"
    );
}

#[test]
fn attachments_are_bounded_in_number_and_inline_size() {
    let one = json!({"filename": "a.txt", "content_base64": "aGVsbG8="});
    let errors =
        with_attachments(json!(["email"]), json!(vec![one; MAX_ATTACHMENTS + 1])).unwrap_err();
    assert_eq!(
        errors.at("attachments"),
        [format!("at most {MAX_ATTACHMENTS} attachments")]
    );

    let too_big = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        vec![0u8; crate::domain::attachment::MAX_INLINE_ATTACHMENT_BYTES + 1],
    );
    let errors = with_attachments(
        json!(["email"]),
        json!([{"filename": "big.pdf", "content_base64": too_big}]),
    )
    .unwrap_err();
    assert_eq!(paths(&errors), ["attachments[0].content_base64"]);

    let largest = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        vec![0u8; crate::domain::attachment::MAX_INLINE_ATTACHMENT_BYTES],
    );
    let three = vec![json!({"filename": "big.pdf", "content_base64": largest}); 3];
    let errors = with_attachments(json!(["email"]), json!(three)).unwrap_err();
    assert_eq!(paths(&errors), ["attachments"]);
    assert!(errors.at("attachments")[0].contains("send larger files by url"));
}

#[test]
fn attachments_need_the_email_channel() {
    let errors = with_attachments(
        json!(["sms"]),
        json!([{"filename": "a.pdf", "url": "https://example.com/a.pdf"}]),
    )
    .unwrap_err();
    assert_eq!(
        errors.at("attachments"),
        ["need the email channel in channels"]
    );
}

#[test]
fn requests_without_attachments_keep_their_fingerprint() {
    let json = serde_json::to_value(request()).unwrap();
    assert!(json.get("attachments").is_none());
    let with = with_attachments(
        json!(["email"]),
        json!([{"filename": "a.txt", "content_base64": "aGVs\nbG8="}]),
    )
    .unwrap();
    let same = with_attachments(
        json!(["email"]),
        json!([{"filename": "a.txt", "content_base64": "aGVsbG8="}]),
    )
    .unwrap();
    assert_eq!(with.fingerprint(), same.fingerprint());
    assert_eq!(
        serde_json::from_value::<NotificationRequest>(serde_json::to_value(&with).unwrap())
            .unwrap(),
        with
    );
}
