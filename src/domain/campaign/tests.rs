use std::collections::BTreeMap;

use chrono::TimeDelta;
use serde_json::json;
use uuid::Uuid;

use super::*;
use crate::domain::given_when_then::given;
use crate::domain::test_fixtures::{t0, tenant};

fn spec() -> CampaignSpec {
    CreateCampaign {
        name: "Spring sale".into(),
        template_key: "spring_sale".into(),
        channel: "email".into(),
        progress_steps: vec![50, 25, 75, 50],
        ..CreateCampaign::default()
    }
    .parse()
    .expect("valid")
}

fn created() -> CampaignEvent {
    CampaignEvent::Created {
        tenant_id: tenant(),
        id: Uuid::nil(),
        spec: Box::new(spec()),
    }
}

const IMPORT: Uuid = Uuid::from_u128(7);

/// Created, one import of two batches finished: scheduled.
fn scheduled() -> Vec<CampaignEvent> {
    vec![
        created(),
        CampaignEvent::ImportStarted {
            import_id: IMPORT,
            source: "csv".into(),
        },
        CampaignEvent::BatchCreated {
            import_id: IMPORT,
            batch: 0,
            messages: 1000,
        },
        CampaignEvent::BatchCreated {
            import_id: IMPORT,
            batch: 1,
            messages: 500,
        },
        CampaignEvent::ImportFinished {
            import_id: IMPORT,
            accepted: 1500,
            rejected: 2,
            error: None,
        },
    ]
}

fn sending() -> Vec<CampaignEvent> {
    let mut events = scheduled();
    events.push(CampaignEvent::Started { at: t0() });
    events
}

/// The command is refused at `t0`.
fn refused(events: impl IntoIterator<Item = CampaignEvent>, command: CampaignCommand) -> bool {
    let events: Vec<CampaignEvent> = events.into_iter().collect();
    Campaign::fold(&events).decide(command, t0()).is_err()
}

fn summary(total: u64, pending: u64) -> CampaignSummary {
    CampaignSummary {
        total_messages: total,
        pending,
        sent: total - pending,
        ..CampaignSummary::default()
    }
}

#[test]
fn parse_defaults_and_sorts_progress_steps() {
    let spec = spec();
    assert_eq!(spec.progress_steps, vec![25, 50, 75]);
    assert_eq!(spec.address_column, "email");
    assert_eq!(spec.category.as_str(), "marketing");
    assert_eq!(spec.batch_size, DEFAULT_BATCH_SIZE);
}

#[test]
fn parse_names_every_refused_field() {
    let errors = CreateCampaign {
        name: " ".into(),
        template_key: "Bad Key".into(),
        channel: "push".into(),
        callback_url: Some("ftp://x".into()),
        address_column: Some("e\0mail".into()),
        progress_steps: vec![0, 100],
        batch_size: Some(0),
        ..CreateCampaign::default()
    }
    .parse()
    .expect_err("refused");
    for path in [
        "name",
        "template.key",
        "channel",
        "callbackUrl",
        "addressColumn",
        "progressSteps[0]",
        "progressSteps[1]",
        "batchSize",
    ] {
        assert!(!errors.at(path).is_empty(), "{path}: {errors}");
    }
}

#[test]
fn an_import_makes_the_campaign_processing_then_scheduled() {
    let mut campaign = Campaign::fold(&scheduled()[..2]);
    assert_eq!(campaign.status(), Some(CampaignStatus::Processing));
    for event in &scheduled()[2..] {
        campaign.apply(event);
    }
    assert_eq!(campaign.status(), Some(CampaignStatus::Scheduled));
    assert_eq!(
        (campaign.batches(), campaign.messages(), campaign.rejected()),
        (2, 1500, 2)
    );
}

#[test]
fn batches_are_numbered_in_order() {
    given::<Campaign>(scheduled()[..3].to_vec())
        .when(CampaignCommand::AddBatch {
            import_id: IMPORT,
            messages: 10,
        })
        .then([CampaignEvent::BatchCreated {
            import_id: IMPORT,
            batch: 1,
            messages: 10,
        }]);
}

#[test]
fn a_batch_of_an_import_not_open_is_refused() {
    assert!(refused(
        scheduled(),
        CampaignCommand::AddBatch {
            import_id: Uuid::from_u128(8),
            messages: 10,
        }
    ));
}

#[test]
fn starts_only_when_due() {
    let mut events = vec![created()];
    if let CampaignEvent::Created { spec, .. } = &mut events[0] {
        spec.schedule_at = Some(t0() + TimeDelta::hours(1));
    }
    events.extend(scheduled().into_iter().skip(1));
    assert!(refused(events.clone(), CampaignCommand::Start));
    given::<Campaign>(events)
        .at(t0() + TimeDelta::hours(1))
        .when(CampaignCommand::Start)
        .then([CampaignEvent::Started {
            at: t0() + TimeDelta::hours(1),
        }]);
}

#[test]
fn a_campaign_without_recipients_does_not_start() {
    assert!(refused([created()], CampaignCommand::Start));
}

#[test]
fn releasing_the_last_batch_marks_all_released() {
    given::<Campaign>(sending())
        .when(CampaignCommand::ReleaseBatch { batch: 0 })
        .then([CampaignEvent::BatchReleased { batch: 0 }]);
    let mut events = sending();
    events.push(CampaignEvent::BatchReleased { batch: 0 });
    given::<Campaign>(events.clone())
        .when(CampaignCommand::ReleaseBatch { batch: 1 })
        .then([
            CampaignEvent::BatchReleased { batch: 1 },
            CampaignEvent::AllReleased,
        ]);
    assert!(
        refused(events, CampaignCommand::ReleaseBatch { batch: 0 }),
        "a batch is released once"
    );
}

#[test]
fn a_paused_campaign_releases_nothing_and_resumes_where_it_was() {
    let mut events = sending();
    events.push(CampaignEvent::Paused);
    assert!(refused(
        events.clone(),
        CampaignCommand::ReleaseBatch { batch: 0 }
    ));
    given::<Campaign>(events.clone())
        .when(CampaignCommand::Pause)
        .then_nothing();
    let mut campaign = Campaign::fold(&events);
    campaign.apply(&CampaignEvent::Resumed);
    assert_eq!(campaign.status(), Some(CampaignStatus::Sending));
}

#[test]
fn a_campaign_with_every_batch_released_still_pauses_and_resumes_to_sent() {
    let mut events = sending();
    events.extend([
        CampaignEvent::BatchReleased { batch: 0 },
        CampaignEvent::BatchReleased { batch: 1 },
        CampaignEvent::AllReleased,
    ]);
    given::<Campaign>(events.clone())
        .when(CampaignCommand::Pause)
        .then([CampaignEvent::Paused]);
    events.push(CampaignEvent::Paused);
    assert!(
        refused(
            events.clone(),
            CampaignCommand::Complete {
                summary: summary(1500, 0)
            }
        ),
        "a paused campaign does not complete"
    );
    let mut campaign = Campaign::fold(&events);
    campaign.apply(&CampaignEvent::Resumed);
    assert_eq!(campaign.status(), Some(CampaignStatus::Sent));
}

#[test]
fn cancel_is_refused_once_completed_and_repeats_quietly() {
    let mut events = sending();
    events.push(CampaignEvent::Cancelled { reason: None });
    given::<Campaign>(events)
        .when(CampaignCommand::Cancel { reason: None })
        .then_nothing();
    let mut done = sending();
    done.extend([
        CampaignEvent::BatchReleased { batch: 0 },
        CampaignEvent::BatchReleased { batch: 1 },
        CampaignEvent::AllReleased,
        CampaignEvent::Completed {
            summary: summary(1500, 0),
        },
    ]);
    assert!(refused(done, CampaignCommand::Cancel { reason: None }));
}

#[test]
fn a_cancel_reason_is_stored_without_nul() {
    given::<Campaign>(sending())
        .when(CampaignCommand::Cancel {
            reason: Some("a\0b".into()),
        })
        .then([CampaignEvent::Cancelled {
            reason: Some("ab".into()),
        }]);
}

#[test]
fn progress_reports_every_step_crossed_once_in_order() {
    // 25 and 50 crossed at once (say, while paused): both, lowest first.
    given::<Campaign>(sending())
        .when(CampaignCommand::ReachProgress {
            summary: summary(100, 40),
        })
        .then([
            CampaignEvent::ProgressReached {
                step: 25,
                summary: summary(100, 40),
            },
            CampaignEvent::ProgressReached {
                step: 50,
                summary: summary(100, 40),
            },
        ]);
    let mut events = sending();
    events.push(CampaignEvent::ProgressReached {
        step: 50,
        summary: summary(100, 40),
    });
    given::<Campaign>(events)
        .when(CampaignCommand::ReachProgress {
            summary: summary(100, 30),
        })
        .then_nothing();
}

#[test]
fn completes_only_when_nothing_is_pending() {
    let mut events = sending();
    events.extend([
        CampaignEvent::BatchReleased { batch: 0 },
        CampaignEvent::BatchReleased { batch: 1 },
        CampaignEvent::AllReleased,
    ]);
    assert!(refused(
        events.clone(),
        CampaignCommand::Complete {
            summary: summary(10, 1)
        }
    ));
    given::<Campaign>(events)
        .when(CampaignCommand::Complete {
            summary: summary(10, 0),
        })
        .then([CampaignEvent::Completed {
            summary: summary(10, 0),
        }]);
}

#[test]
fn events_round_trip_through_the_upcaster() {
    for event in sending() {
        let payload = serde_json::to_value(&event).expect("serialises");
        let back =
            CampaignEvent::upcast(event.event_type(), CampaignEvent::SCHEMA_VERSION, payload)
                .expect("reads back");
        assert_eq!(back, event);
    }
}

fn parser() -> RowParser {
    let schema = BTreeMap::from([
        (
            "name".to_string(),
            VariableSpec {
                kind: VariableType::String,
                required: true,
            },
        ),
        (
            "points".to_string(),
            VariableSpec {
                kind: VariableType::Number,
                required: false,
            },
        ),
    ]);
    RowParser::new(
        vec![
            "email".into(),
            "name".into(),
            "points".into(),
            "city".into(),
        ],
        "email",
        Channel::Email,
        schema,
    )
    .expect("valid header")
}

#[test]
fn a_row_becomes_typed_variables() {
    let recipient = parser()
        .parse(["ada@example.com", "Ada", "12", "London"].into_iter())
        .expect("valid row");
    assert_eq!(recipient.address, "ada@example.com");
    assert_eq!(
        Value::Object(recipient.variables),
        json!({"name": "Ada", "points": 12, "city": "London"})
    );
}

#[test]
fn bad_rows_say_why() {
    let parser = parser();
    let invalid = parser
        .parse(["not-an-email", "Ada", "1", ""].into_iter())
        .expect_err("bad address");
    assert!(invalid.contains("invalid address"), "{invalid}");
    let short = parser
        .parse(["ada@example.com", "Ada"].into_iter())
        .expect_err("short row");
    assert!(short.contains("missing column"), "{short}");
    let mismatch = parser
        .parse(["ada@example.com", "Ada", "lots", ""].into_iter())
        .expect_err("not a number");
    assert!(mismatch.contains("points: type mismatch"), "{mismatch}");
    let required = parser
        .parse(["ada@example.com", "", "1", ""].into_iter())
        .expect_err("name required");
    assert!(required.contains("name: is required"), "{required}");
    let nul = parser
        .parse(["ada@example.com", "Ada", "1", "Lon\0don"].into_iter())
        .expect_err("NUL in a cell");
    assert!(nul.contains("city: must not contain NUL"), "{nul:?}");
    assert!(!nul.contains('\0'), "the reason is stored as text: {nul:?}");
}

#[test]
fn listed_variables_with_nul_are_refused_without_quoting_it() {
    let schema = BTreeMap::new();
    for variables in [
        json!({"name": "A\0da"}),
        json!({"na\0me": 1}),
        json!({"l": [{"k": "\0"}]}),
    ] {
        let recipient = CampaignRecipient {
            address: "ada@example.com".into(),
            variables: variables.as_object().unwrap().clone(),
        };
        let reason = check_listed(&recipient, Channel::Email, &schema).expect_err("NUL refused");
        assert!(reason.contains("must not contain NUL"), "{reason:?}");
        assert!(!reason.contains('\0'), "{reason:?}");
    }
}

#[test]
fn a_header_without_the_address_column_is_refused() {
    let error = RowParser::new(
        vec!["mail".into()],
        "email",
        Channel::Email,
        BTreeMap::new(),
    )
    .expect_err("no address column");
    assert!(error.contains("email"), "{error}");
    assert!(
        RowParser::new(
            vec!["email".into(), "email".into()],
            "email",
            Channel::Email,
            BTreeMap::new()
        )
        .is_err()
    );
}

#[test]
fn percent_done_counts_outcomes() {
    assert_eq!(summary(200, 50).percent_done(), 75);
    assert_eq!(summary(0, 0).percent_done(), 100);
}
