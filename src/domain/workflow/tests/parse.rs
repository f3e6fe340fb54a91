//! Publish-time rules: one test per refusal, each naming its path.

use serde_json::json;

use super::*;

/// The issue's three examples in one: stop if the order is cancelled, gather
/// comments for 30 minutes, tell the recipient in-app, and email only if
/// the in-app message is still unread an hour later.
pub(super) fn comments() -> Value {
    json!({
        "key": "comment_digest",
        "steps": [
            {"name": "stop_if_cancelled", "cancel_on": {
                "event": "OrderCancelled", "where": {"order_id": "payload.order_id"}}},
            {"name": "once_an_hour", "throttle": {
                "limit": 3, "window": "1h", "key": ["recipient.id"]}},
            {"name": "gather", "digest": {
                "window": "30m", "key": ["recipient.id", "payload.thread_id"],
                "max_items": 20, "send_at_once_when": 10}},
            {"name": "inapp", "send": {
                "channels": ["in_app"], "template": "comment_digest", "priority": "high"}},
            {"name": "wait_read", "wait_for": {
                "event": "NotificationOpened",
                "where": {"notification_id": "steps.inapp.notification_id"},
                "timeout": "1h", "on_match": "end"}},
            {"name": "vip", "branch": {"cases": [
                {"when": [{"field": "payload.tier", "equals": "vip"}], "goto": "email_now"}]}},
            {"name": "later", "delay": {"duration": "2h"}},
            {"name": "email_now", "send": {
                "channels": ["email", "sms"], "template": "comment", "version": 2}}
        ]
    })
}

fn paths(errors: &ValidationErrors) -> Vec<&str> {
    errors
        .errors()
        .iter()
        .map(|error| error.path.as_str())
        .collect()
}

#[test]
fn parses_every_step_kind() {
    let definition = workflow(comments());
    assert_eq!(definition.key().as_str(), "comment_digest");
    let kinds: Vec<&str> = definition
        .steps()
        .iter()
        .map(|step| step.kind.as_str())
        .collect();
    assert_eq!(
        kinds,
        [
            "cancel_on",
            "throttle",
            "digest",
            "send",
            "wait_for",
            "branch",
            "delay",
            "send"
        ]
    );
    let StepKind::WaitFor(wait) = &definition.steps()[4].kind else {
        panic!("a wait_for");
    };
    assert_eq!(wait.on_match, Target::End);
    assert_eq!(wait.on_timeout, Target::Step(step("vip")));
    let StepKind::Send(send) = &definition.steps()[7].kind else {
        panic!("a send");
    };
    assert_eq!(send.priority, crate::domain::values::Priority::Normal);
    assert_eq!(send.version.map(TemplateVersion::get), Some(2));
}

#[test]
fn a_stored_definition_reads_back_the_same() {
    let definition = workflow(comments());
    let stored = serde_json::to_value(&definition).unwrap();
    assert_eq!(stored["steps"][2]["digest"]["window"], json!("30m"));
    assert_eq!(stored["steps"][4]["wait_for"]["on_match"], json!("end"));
    let read: WorkflowDefinition = serde_json::from_value(stored.clone()).unwrap();
    assert_eq!(read, definition);

    // Reading back still refuses a goto to nowhere and a repeated name.
    let mut broken = stored.clone();
    broken["steps"][4]["wait_for"]["on_timeout"] = json!("nowhere");
    assert!(serde_json::from_value::<WorkflowDefinition>(broken).is_err());
    let mut repeated = stored;
    repeated["steps"][1]["name"] = json!("stop_if_cancelled");
    assert!(serde_json::from_value::<WorkflowDefinition>(repeated).is_err());
}

#[test]
fn reads_the_same_definition_from_toml() {
    let file = r#"
        key = "comment_digest"

        [[steps]]
        name = "stop_if_cancelled"
        cancel_on = { event = "OrderCancelled", where = { order_id = "payload.order_id" } }

        [[steps]]
        name = "once_an_hour"
        throttle = { limit = 3, window = "1h", key = ["recipient.id"] }

        [[steps]]
        name = "gather"
        [steps.digest]
        window = "30m"
        key = ["recipient.id", "payload.thread_id"]
        max_items = 20
        send_at_once_when = 10

        [[steps]]
        name = "inapp"
        send = { channels = ["in_app"], template = "comment_digest", priority = "high" }

        [[steps]]
        name = "wait_read"
        [steps.wait_for]
        event = "NotificationOpened"
        where = { notification_id = "steps.inapp.notification_id" }
        timeout = "1h"
        on_match = "end"

        [[steps]]
        name = "vip"
        [[steps.branch.cases]]
        when = [{ field = "payload.tier", equals = "vip" }]
        goto = "email_now"

        [[steps]]
        name = "later"
        delay = { duration = "2h" }

        [[steps]]
        name = "email_now"
        send = { channels = ["email", "sms"], template = "comment", version = 2 }
    "#;
    let from_toml: PublishWorkflow = toml::from_str(file).unwrap();
    assert_eq!(from_toml.parse(&catalog()).unwrap(), workflow(comments()));
}

#[test]
fn a_misspelt_field_is_refused_rather_than_ignored() {
    let mut misspelt = comments();
    misspelt["steps"][3]["send"]["tempalte"] = json!("comment");
    assert!(serde_json::from_value::<PublishWorkflow>(misspelt).is_err());
}

#[test]
fn reports_every_refused_field_at_once_by_path() {
    let errors = refusals(json!({
        "key": "Comment Digest",
        "steps": [
            {"name": "first", "send": {"channels": ["email", "pigeon", "email"],
                                       "template": "missing", "priority": "urgent"}},
            {"name": "first", "delay": {}},
            {"send": {"channels": [], "template": "comment", "version": 9}},
            {"name": "both", "delay": {"duration": "1h"}, "send": {"channels": ["email"]}},
            {"name": "end", "delay": {"duration": "40d"}}
        ]
    }));
    assert_eq!(
        paths(&errors),
        [
            "key",
            "steps[1].name",
            "steps[2].name",
            "steps[4].name",
            "steps[0].send.channels[1]",
            "steps[0].send.channels[2]",
            "steps[0].send.priority",
            "steps[0].send.template",
            "steps[1].delay",
            "steps[2].send.channels",
            "steps[2].send.version",
            "steps[3]",
            "steps[4].delay.duration",
        ],
        "{errors}"
    );
    assert_eq!(
        errors.at("steps[1].name"),
        ["first is also the name of steps[0]"]
    );
    assert_eq!(errors.at("steps[2].name"), ["is required"]);
    assert_eq!(
        errors.at("steps[4].name"),
        ["end is reserved: a goto to end ends the run"]
    );
    assert_eq!(
        errors.at("steps[0].send.template"),
        ["no template missing is published"]
    );
    assert_eq!(
        errors.at("steps[2].send.version"),
        ["comment has no version 9"]
    );
    assert_eq!(
        errors.at("steps[1].delay"),
        ["give either duration or until"]
    );
}

#[test]
fn refuses_no_steps_and_too_many() {
    assert_eq!(
        refusals(json!({"key": "k"})).at("steps"),
        ["at least one step is required"]
    );
    let many: Vec<Value> = (0..=MAX_STEPS)
        .map(|n| json!({"name": format!("s{n}"), "delay": {"duration": "1m"}}))
        .collect();
    assert_eq!(
        refusals(json!({"key": "k", "steps": many})).at("steps"),
        [format!("at most {MAX_STEPS} steps")]
    );
}

#[test]
fn refuses_a_goto_to_no_step() {
    let errors = refusals(json!({"key": "k", "steps": [
        {"name": "wait", "wait_for": {"event": "Read", "timeout": "1h",
                                      "on_match": "nowhere", "on_timeout": "Bad Name"}},
        {"name": "choose", "branch": {"cases": [{"when": [{"field": "payload.a", "exists": true}],
                                                 "goto": "gone"}],
                                      "otherwise": "lost"}}
    ]}));
    assert_eq!(
        errors.at("steps[0].wait_for.on_match"),
        ["no step is named nowhere"]
    );
    assert_eq!(errors.at("steps[0].wait_for.on_timeout").len(), 1);
    assert_eq!(
        errors.at("steps[1].branch.cases[0].goto"),
        ["no step is named gone"]
    );
    assert_eq!(
        errors.at("steps[1].branch.otherwise"),
        ["no step is named lost"]
    );
}

#[test]
fn refuses_a_step_never_reached() {
    let errors = refusals(json!({"key": "k", "steps": [
        {"name": "choose", "branch": {
            "cases": [{"when": [{"field": "payload.a", "exists": true}], "goto": "end"}],
            "otherwise": "end"}},
        {"name": "orphan", "send": {"channels": ["email"], "template": "comment"}}
    ]}));
    assert_eq!(paths(&errors), ["steps[1]"]);
    assert_eq!(
        errors.at("steps[1]"),
        ["is never reached from the first step"]
    );
}

#[test]
fn refuses_a_loop_without_a_rest_and_allows_one_through_a_wait() {
    let errors = refusals(json!({"key": "k", "steps": [
        {"name": "nag", "send": {"channels": ["email"], "template": "comment"}},
        {"name": "again", "branch": {"cases": [
            {"when": [{"field": "payload.a", "exists": true}], "goto": "nag"}]}}
    ]}));
    let spins = ["can loop back to itself without a delay (of a duration), digest or wait_for"];
    assert_eq!(errors.at("steps[0]"), spins);
    assert_eq!(errors.at("steps[1]"), spins);

    // A delay until a payload time may not wait at all.
    let errors = refusals(json!({"key": "k", "steps": [
        {"name": "nag", "send": {"channels": ["email"], "template": "comment"}},
        {"name": "pause", "delay": {"until": "payload.next_at"}},
        {"name": "again", "branch": {"cases": [
            {"when": [{"field": "payload.a", "exists": true}], "goto": "nag"}]}}
    ]}));
    assert_eq!(errors.at("steps[0]"), spins);

    // Remind until read: the loop waits each time round.
    workflow(json!({"key": "k", "steps": [
        {"name": "nag", "send": {"channels": ["email"], "template": "comment"}},
        {"name": "wait_read", "wait_for": {"event": "NotificationOpened", "timeout": "1d",
                                           "on_match": "end", "on_timeout": "nag"}}
    ]}));
}

#[test]
fn refuses_a_second_digest_and_a_digest_on_a_loop() {
    let errors = refusals(json!({"key": "k", "steps": [
        {"name": "gather", "digest": {"window": "1h", "key": ["recipient.id"]}},
        {"name": "more", "digest": {"window": "1h", "key": ["recipient.id"]}},
        {"name": "again", "branch": {"cases": [
            {"when": [{"field": "payload.a", "exists": true}], "goto": "gather"}]}}
    ]}));
    assert_eq!(errors.at("steps[0]"), ["a digest cannot be on a loop"]);
    assert_eq!(
        errors.at("steps[1]"),
        [
            "a workflow has at most one digest step",
            "a digest cannot be on a loop"
        ]
    );
}

#[test]
fn refuses_a_throttle_after_a_rest() {
    let errors = refusals(json!({"key": "k", "steps": [
        {"name": "first", "delay": {"duration": "1m"}},
        {"name": "second", "delay": {"duration": "1m"}},
        {"name": "limit", "throttle": {"limit": 1, "window": "1h", "key": ["recipient.id"]}}
    ]}));
    assert_eq!(
        errors.at("steps[2]"),
        ["a throttle counts runs as they start, so it cannot come after first"]
    );
}

#[test]
fn refuses_bad_digest_settings() {
    let errors = refusals(json!({"key": "k", "steps": [
        {"name": "gather", "digest": {"window": "8d", "key": [],
                                      "max_items": 101, "send_at_once_when": 1}},
        {"name": "gather2", "digest": {"key": ["payload.a", "payload.a", "steps.x.outcome",
                                               "payload.b", "payload.c", "payload.d"],
                                       "max_items": 5, "send_at_once_when": 10_001}}
    ]}));
    assert_eq!(errors.at("steps[0].digest.window"), ["must be at most 7d"]);
    assert_eq!(
        errors.at("steps[0].digest.key"),
        ["at least one payload. or recipient. path is required"]
    );
    assert_eq!(
        errors.at("steps[0].digest.max_items"),
        ["must be between 1 and 100"]
    );
    assert_eq!(errors.at("steps[1].digest.window"), ["is required"]);
    assert_eq!(errors.at("steps[1].digest.key"), ["at most 5 paths"]);
    assert_eq!(
        errors.at("steps[1].digest.key[1]"),
        ["is listed more than once"]
    );
    assert_eq!(
        errors.at("steps[1].digest.key[2]"),
        ["must be a payload. or recipient. path"]
    );
    assert_eq!(
        errors.at("steps[1].digest.send_at_once_when"),
        [format!("must be between 2 and {MAX_SEND_AT_ONCE_WHEN}")]
    );
}

#[test]
fn refuses_bad_waits_and_matchers() {
    let errors = refusals(json!({"key": "k", "steps": [
        {"name": "inapp", "send": {"channels": ["in_app"], "template": "comment"}},
        {"name": "wait", "wait_for": {"event": "has space", "where": {
            "a..b": "payload.x",
            "id": "steps.wait.notification_id",
            "outcome": "steps.inapp.outcome",
            "nul": {"value": "a\u{0}"},
            "who": "sender.id"}}},
        {"name": "stop", "cancel_on": {"where": {"id": "payload.order_id"}}}
    ]}));
    assert_eq!(errors.at("steps[1].wait_for.event").len(), 1);
    assert_eq!(errors.at("steps[1].wait_for.where.a..b").len(), 1);
    assert_eq!(
        errors.at("steps[1].wait_for.where.id"),
        ["wait is not a send step"]
    );
    assert_eq!(
        errors.at("steps[1].wait_for.where.outcome"),
        ["must be a payload., recipient. or steps.<send step>.notification_id path"]
    );
    assert_eq!(
        errors.at("steps[1].wait_for.where.nul"),
        ["must not contain NUL characters"]
    );
    assert_eq!(errors.at("steps[1].wait_for.where.who").len(), 1);
    assert_eq!(errors.at("steps[1].wait_for.timeout"), ["is required"]);
    assert_eq!(errors.at("steps[2].cancel_on.event"), ["is required"]);

    let many: serde_json::Map<String, Value> = (0..=MAX_MATCH_FIELDS)
        .map(|n| (format!("f{n}"), json!("payload.x")))
        .collect();
    let errors = refusals(json!({"key": "k", "steps": [
        {"name": "stop", "cancel_on": {"event": "OrderCancelled", "where": many}}
    ]}));
    assert_eq!(
        errors.at("steps[0].cancel_on.where"),
        [format!("at most {MAX_MATCH_FIELDS} fields")]
    );
}

#[test]
fn refuses_a_delay_until_anything_but_the_payload() {
    let errors = refusals(json!({"key": "k", "steps": [
        {"name": "pause", "delay": {"until": "recipient.timezone"}},
        {"name": "both", "delay": {"duration": "1m", "until": "payload.at"}}
    ]}));
    assert_eq!(
        errors.at("steps[0].delay.until"),
        ["must be a payload. path holding an RFC 3339 time"]
    );
    assert_eq!(
        errors.at("steps[1].delay"),
        ["give either duration or until"]
    );
}

#[test]
fn refuses_bad_branches() {
    let when = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|_| json!({"field": "payload.a", "exists": true}))
            .collect()
    };
    let errors = refusals(json!({"key": "k", "steps": [
        {"name": "wait", "wait_for": {"event": "Read", "timeout": "1h"}},
        {"name": "choose", "branch": {"cases": [
            {"when": [], "goto": "end"},
            {"when": [
                {"field": "payload.a"},
                {"field": "payload.a", "equals": 1, "exists": true},
                {"field": "steps.wait.outcome", "equals": "sent"},
                {"field": "steps.wait.outcome", "greater_than": 1},
                {"field": "steps.nope.outcome", "exists": true},
                {"field": "steps.wait.notification_id", "exists": true},
                {"equals": 1}
            ]},
        ]}},
        {"name": "wide", "branch": {"cases": [
            {"when": when(11), "goto": "end"}, {"when": when(10), "goto": "end"}
        ]}},
        {"name": "empty", "branch": {}}
    ]}));
    let one_test =
        ["give exactly one of equals, not_equals, one_of, exists, greater_than, less_than"];
    let cases = "steps[1].branch.cases";
    assert_eq!(
        errors.at(&format!("{cases}[0].when")),
        ["at least one condition is required"]
    );
    assert_eq!(errors.at(&format!("{cases}[1].goto")), ["is required"]);
    assert_eq!(errors.at(&format!("{cases}[1].when[0]")), one_test);
    assert_eq!(errors.at(&format!("{cases}[1].when[1]")), one_test);
    assert_eq!(
        errors.at(&format!("{cases}[1].when[2]")),
        ["\"sent\" is not an outcome of a wait_for step; expected one of matched, timed_out"]
    );
    assert_eq!(
        errors.at(&format!("{cases}[1].when[3]")),
        ["an outcome is compared by equals, not_equals, one_of or exists"]
    );
    assert_eq!(
        errors.at(&format!("{cases}[1].when[4].field")),
        ["no step is named nope"]
    );
    assert_eq!(
        errors.at(&format!("{cases}[1].when[5].field")),
        ["a condition reads a step's outcome, not its notification_id"]
    );
    assert_eq!(
        errors.at(&format!("{cases}[1].when[6].field")),
        ["is required"]
    );
    assert_eq!(
        errors.at("steps[2].branch.cases"),
        [format!("at most {MAX_CONDITIONS} conditions in all")]
    );
    assert_eq!(
        errors.at("steps[3].branch.cases"),
        ["at least one case is required"]
    );

    let cases: Vec<Value> = (0..=MAX_CASES)
        .map(|_| json!({"when": [{"field": "payload.a", "exists": true}], "goto": "end"}))
        .collect();
    let errors = refusals(json!({"key": "k", "steps": [
        {"name": "choose", "branch": {"cases": cases}}
    ]}));
    assert_eq!(
        errors.at("steps[0].branch.cases"),
        [format!("at most {MAX_CASES} cases")]
    );
}

#[test]
fn refuses_bad_throttles() {
    let errors = refusals(json!({"key": "k", "steps": [
        {"name": "limit", "throttle": {"limit": 0, "window": "2m3"}},
        {"name": "limit2", "throttle": {"window": "1h", "key": ["steps.limit.outcome"]}}
    ]}));
    assert_eq!(
        errors.at("steps[0].throttle.limit"),
        [format!("must be between 1 and {MAX_THROTTLE_LIMIT}")]
    );
    assert_eq!(errors.at("steps[0].throttle.window").len(), 1);
    assert_eq!(
        errors.at("steps[0].throttle.key"),
        ["at least one payload. or recipient. path is required"]
    );
    assert_eq!(errors.at("steps[1].throttle.limit"), ["is required"]);
    assert_eq!(
        errors.at("steps[1].throttle.key[0]"),
        ["must be a payload. or recipient. path"]
    );
}

#[test]
fn a_template_that_needs_the_digest_needs_a_digest_before_it() {
    let send = |template: &str| json!({"channels": ["email"], "template": template});
    let errors = refusals(json!({"key": "k", "steps": [
        {"name": "early", "send": send("comment_digest")},
        {"name": "text", "send": send("digest_as_text")},
        {"name": "choose", "branch": {"cases": [
            {"when": [{"field": "payload.a", "exists": true}], "goto": "late"}]}},
        {"name": "gather", "digest": {"window": "1h", "key": ["recipient.id"]}},
        {"name": "late", "send": send("comment_digest")},
        {"name": "after", "send": send("comment_digest")}
    ]}));
    let needs = "comment_digest requires digest, which only a digest step before this one on every path gives";
    assert_eq!(errors.at("steps[0].send.template"), [needs]);
    assert_eq!(
        errors.at("steps[1].send.template"),
        ["digest_as_text declares digest as string, but a digest gives an object"]
    );
    // Reached around the digest through the branch, and so is what follows.
    assert_eq!(errors.at("steps[4].send.template"), [needs]);
    assert_eq!(errors.at("steps[5].send.template"), [needs]);
    assert_eq!(paths(&errors).len(), 4, "{errors}");
}
