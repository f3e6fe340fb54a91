//! One test per row of the table in `published_workflow.rs`.

use serde_json::json;

use super::parse::comments;
use super::*;
use crate::domain::Aggregate;
use crate::domain::given_when_then::given;

fn publish(definition: WorkflowDefinition) -> WorkflowCommand {
    WorkflowCommand::Publish {
        tenant_id: tenant(),
        definition,
    }
}

fn published(version: u32, definition: WorkflowDefinition) -> WorkflowEvent {
    WorkflowEvent::Published {
        tenant_id: tenant(),
        key: definition.key().clone(),
        version: WorkflowVersion::parse(version).unwrap(),
        definition,
        published_at: t0(),
    }
}

fn changed() -> WorkflowDefinition {
    let mut input = comments();
    input["steps"][2]["digest"]["window"] = json!("1h");
    workflow(input)
}

#[test]
fn the_first_publish_is_version_one() {
    given::<PublishedWorkflow>([])
        .when(publish(workflow(comments())))
        .then([published(1, workflow(comments()))]);
}

#[test]
fn each_new_publish_numbers_the_next_version() {
    given::<PublishedWorkflow>([published(1, workflow(comments()))])
        .when(publish(changed()))
        .then([published(2, changed())]);
    let history = [published(1, workflow(comments())), published(2, changed())];
    let latest = PublishedWorkflow::fold(&history);
    assert_eq!(latest.latest().map(|(version, _)| version.get()), Some(2));
}

#[test]
fn publishing_the_latest_steps_again_records_nothing() {
    given::<PublishedWorkflow>([published(1, workflow(comments()))])
        .when(publish(workflow(comments())))
        .then_nothing();
    // Going back to an older version's steps is a new version.
    given::<PublishedWorkflow>([published(1, workflow(comments())), published(2, changed())])
        .when(publish(workflow(comments())))
        .then([published(3, workflow(comments()))]);
}

#[test]
fn the_published_event_reads_back_from_the_log() {
    let event = published(1, workflow(comments()));
    let payload = serde_json::to_value(&event).unwrap();
    assert_eq!(payload["type"], json!("WorkflowPublished"));
    assert_eq!(payload["key"], json!("comment_digest"));
    assert_eq!(
        WorkflowEvent::upcast(event.event_type(), WorkflowEvent::SCHEMA_VERSION, payload),
        Ok(event)
    );
}
