//! The event store's invariants (docs/architecture.md), on real PostgreSQL.

use futures::StreamExt;
use herald::eventstore::{
    Checkpoint, EventStore, ExpectedVersion, NewEvent, ReadFilter, RecordedEvent, StoreError,
    StreamAppend,
};
use serde_json::json;
use uuid::Uuid;

use crate::support::fresh_database;

pub fn event(event_type: &str, tenant: &str, payload: serde_json::Value) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: event_type.into(),
        schema_version: 1,
        tenant_id: tenant.into(),
        payload,
        metadata: json!({ "actor": "test" }),
    }
}

fn append_to(stream: &str, expected: ExpectedVersion, events: Vec<NewEvent>) -> StreamAppend {
    StreamAppend {
        stream_id: stream.into(),
        expected,
        events,
    }
}

fn numbered(n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| event("Numbered", "t1", json!({ "n": i })))
        .collect()
}

/// Reads until every committed event is readable and read. On a shared server a
/// transaction in another database can hold the horizon back for a moment.
async fn read_settled(
    store: &EventStore,
    mut after: Checkpoint,
    filter: &ReadFilter,
) -> (Vec<RecordedEvent>, Checkpoint) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut events = Vec::new();
    loop {
        let batch = store.read_all(after, 7, filter).await.unwrap();
        events.extend(batch.events);
        after = batch.next;
        if batch.caught_up && !batch.held_back {
            return (events, after);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the horizon never passed the committed events"
        );
        if batch.caught_up {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

async fn count_events(store: &EventStore) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn appends_return_positions_and_versions_follow_the_stream() {
    let db = fresh_database().await;
    let store = EventStore::new(db.pool.clone());
    let first = store
        .append(&[append_to("s-1", ExpectedVersion::NoStream, numbered(3))])
        .await
        .unwrap();
    let second = store
        .append(&[append_to("s-1", ExpectedVersion::Exact(3), numbered(2))])
        .await
        .unwrap();
    assert_eq!(first.len(), 3);
    assert!(first.windows(2).all(|w| w[0] < w[1]));
    assert!(second[0] > first[2]);
    let stream = store.read_stream("s-1", 1).await.unwrap();
    let versions: Vec<i64> = stream.iter().map(|e| e.stream_version).collect();
    assert_eq!(versions, vec![1, 2, 3, 4, 5]);
    let tail = store.read_stream("s-1", 4).await.unwrap();
    assert_eq!(
        tail.iter().map(|e| e.stream_version).collect::<Vec<_>>(),
        vec![4, 5]
    );
    assert_eq!(tail[1].payload, json!({ "n": 1 }));
}

#[tokio::test]
async fn exactly_one_of_many_racing_writers_wins() {
    let db = fresh_database().await;
    let store = EventStore::new(db.pool.clone());
    store
        .append(&[append_to("race", ExpectedVersion::NoStream, numbered(3))])
        .await
        .unwrap();

    let racers: Vec<_> = (0..24)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .append(&[append_to("race", ExpectedVersion::Exact(3), numbered(2))])
                    .await
            })
        })
        .collect();
    let mut wins = 0;
    for racer in racers {
        match racer.await.unwrap() {
            Ok(_) => wins += 1,
            Err(StoreError::Conflict {
                stream,
                expected,
                actual,
            }) => {
                assert_eq!(stream, "race");
                assert_eq!(expected, ExpectedVersion::Exact(3));
                assert_eq!(actual, 5);
            }
            Err(other) => panic!("expected a conflict, got {other}"),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(store.read_stream("race", 1).await.unwrap().len(), 5);
}

#[tokio::test]
async fn stale_or_future_expected_versions_write_nothing() {
    let db = fresh_database().await;
    let store = EventStore::new(db.pool.clone());
    store
        .append(&[append_to("s", ExpectedVersion::NoStream, numbered(2))])
        .await
        .unwrap();

    for expected in [
        ExpectedVersion::NoStream,
        ExpectedVersion::Exact(1),
        ExpectedVersion::Exact(9),
    ] {
        let error = store
            .append(&[append_to("s", expected, numbered(1))])
            .await
            .unwrap_err();
        assert!(
            matches!(error, StoreError::Conflict { actual: 2, .. }),
            "{expected}: {error}"
        );
    }
    assert_eq!(count_events(&store).await, 2);
}

#[tokio::test]
async fn any_version_appends_never_collide() {
    let db = fresh_database().await;
    let store = EventStore::new(db.pool.clone());
    let writers: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                for _ in 0..25 {
                    store
                        .append(&[append_to("shared", ExpectedVersion::Any, numbered(2))])
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let versions: Vec<i64> = store
        .read_stream("shared", 1)
        .await
        .unwrap()
        .iter()
        .map(|e| e.stream_version)
        .collect();
    assert_eq!(versions, (1..=400).collect::<Vec<i64>>());
}

#[tokio::test]
async fn a_batch_over_many_streams_is_all_or_nothing() {
    let db = fresh_database().await;
    let store = EventStore::new(db.pool.clone());
    store
        .append(&[append_to("b", ExpectedVersion::NoStream, numbered(2))])
        .await
        .unwrap();

    let error = store
        .append(&[
            append_to("a", ExpectedVersion::NoStream, numbered(3)),
            append_to("b", ExpectedVersion::Exact(5), numbered(1)),
            append_to("c", ExpectedVersion::Any, numbered(1)),
        ])
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::Conflict { stream, actual: 2, .. } if stream == "b"),
        "{error}"
    );
    assert_eq!(count_events(&store).await, 2);
    assert!(store.read_stream("a", 1).await.unwrap().is_empty());

    let positions = store
        .append(&[
            append_to("a", ExpectedVersion::NoStream, numbered(3)),
            append_to("b", ExpectedVersion::Exact(2), numbered(1)),
        ])
        .await
        .unwrap();
    assert_eq!(positions.len(), 4);
    assert_eq!(store.read_stream("b", 1).await.unwrap().len(), 3);

    // A failing statement inside a transaction takes the other streams' events with it.
    let mut tx = store.begin().await.unwrap();
    tx.append(&[append_to("d", ExpectedVersion::NoStream, numbered(2))])
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert!(store.read_stream("d", 1).await.unwrap().is_empty());
}

#[tokio::test]
async fn appending_the_same_event_ids_again_returns_the_original_positions() {
    let db = fresh_database().await;
    let store = EventStore::new(db.pool.clone());
    let batch = [
        append_to("x", ExpectedVersion::NoStream, numbered(2)),
        append_to("y", ExpectedVersion::Any, numbered(1)),
    ];
    let original = store.append(&batch).await.unwrap();
    assert_eq!(store.append(&batch).await.unwrap(), original);
    let mut tx = store.begin().await.unwrap();
    assert_eq!(tx.append(&batch).await.unwrap(), original);
    tx.commit().await.unwrap();
    assert_eq!(count_events(&store).await, 3);

    let mut changed = batch[0].clone();
    changed.expected = ExpectedVersion::Any;
    changed.events[1].payload = json!({ "n": "something else" });
    let error = store.append(&[changed.clone()]).await.unwrap_err();
    assert!(
        matches!(error, StoreError::EventIdReused { event_id } if event_id == changed.events[1].event_id),
        "{error}"
    );
    assert_eq!(count_events(&store).await, 3);
}

#[tokio::test]
async fn malformed_batches_are_refused_before_touching_the_log() {
    let db = fresh_database().await;
    let store = EventStore::new(db.pool.clone());
    let twice = numbered(1).remove(0);
    for batch in [
        vec![append_to("", ExpectedVersion::Any, numbered(1))],
        vec![
            append_to("s", ExpectedVersion::Any, numbered(1)),
            append_to("s", ExpectedVersion::Any, numbered(1)),
        ],
        vec![append_to(
            "s",
            ExpectedVersion::Any,
            vec![twice.clone(), twice],
        )],
        vec![append_to("s", ExpectedVersion::Exact(-1), numbered(1))],
    ] {
        assert!(matches!(
            store.append(&batch).await,
            Err(StoreError::InvalidBatch(_))
        ));
    }
    assert!(store.append(&[]).await.unwrap().is_empty());
    assert_eq!(count_events(&store).await, 0);
}

#[tokio::test]
async fn the_log_refuses_updates_and_deletes() {
    let db = fresh_database().await;
    let store = EventStore::new(db.pool.clone());
    store
        .append(&[append_to("s", ExpectedVersion::Any, numbered(1))])
        .await
        .unwrap();
    for sql in [
        "UPDATE events SET payload = '{}'",
        "DELETE FROM events",
        "TRUNCATE events",
    ] {
        let error = sqlx::query(sql).execute(store.pool()).await.unwrap_err();
        assert!(error.to_string().contains("append-only"), "{sql}: {error}");
    }
}

#[tokio::test]
async fn readers_wait_for_an_older_transaction_instead_of_skipping_it() {
    let db = fresh_database().await;
    let store = EventStore::new(db.pool.clone());

    // The older transaction takes its xid (and a lower position) first, then commits last.
    let mut older = store.begin().await.unwrap();
    older
        .append(&[append_to("late", ExpectedVersion::Any, numbered(1))])
        .await
        .unwrap();
    store
        .append(&[append_to("early", ExpectedVersion::Any, numbered(1))])
        .await
        .unwrap();

    let batch = store
        .read_all(Checkpoint::ORIGIN, 100, &ReadFilter::default())
        .await
        .unwrap();
    assert!(
        batch.events.is_empty(),
        "nothing is readable while the older transaction runs"
    );
    assert!(batch.held_back);
    let oldest = store
        .oldest_transaction()
        .await
        .unwrap()
        .expect("the open transaction is visible");
    assert!(oldest.pid > 0);

    older.commit().await.unwrap();
    let (events, _) = read_settled(&store, batch.next, &ReadFilter::default()).await;
    let streams: Vec<&str> = events.iter().map(|e| e.stream_id.as_str()).collect();
    assert_eq!(
        streams,
        vec!["late", "early"],
        "read order is commit-safe, not position order"
    );
}

#[tokio::test]
async fn rolled_back_events_are_never_read() {
    let db = fresh_database().await;
    let store = EventStore::new(db.pool.clone());
    let mut tx = store.begin().await.unwrap();
    tx.append(&[append_to("gone", ExpectedVersion::Any, numbered(3))])
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    store
        .append(&[append_to("kept", ExpectedVersion::Any, numbered(1))])
        .await
        .unwrap();
    let (events, _) = read_settled(&store, Checkpoint::ORIGIN, &ReadFilter::default()).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].stream_id, "kept");
}

#[tokio::test]
async fn read_all_pages_and_filters_by_tenant_and_type() {
    let db = fresh_database().await;
    let store = EventStore::new(db.pool.clone());
    for i in 0..30 {
        let tenant = if i % 3 == 0 { "t-a" } else { "t-b" };
        let kind = if i % 2 == 0 { "Even" } else { "Odd" };
        store
            .append(&[append_to(
                &format!("s-{i}"),
                ExpectedVersion::NoStream,
                vec![event(kind, tenant, json!({ "i": i }))],
            )])
            .await
            .unwrap();
    }
    // Pages of 7 until settled.
    let (events, _) = read_settled(&store, Checkpoint::ORIGIN, &ReadFilter::default()).await;
    let seen: Vec<i64> = events
        .iter()
        .map(|e| e.payload["i"].as_i64().unwrap())
        .collect();
    assert_eq!(seen, (0..30).collect::<Vec<_>>());

    let filter = ReadFilter {
        tenant_id: Some("t-a".into()),
        event_types: Some(vec!["Even".into()]),
        ..ReadFilter::default()
    };
    let (events, next) = read_settled(&store, Checkpoint::ORIGIN, &filter).await;
    let picked: Vec<i64> = events
        .iter()
        .map(|e| e.payload["i"].as_i64().unwrap())
        .collect();
    assert_eq!(picked, vec![0, 6, 12, 18, 24]);
    // A filtered reader that caught up resumes past everything it skipped.
    assert!(next > events.last().unwrap().checkpoint());
    let again = store.read_all(next, 100, &filter).await.unwrap();
    assert!(again.events.is_empty());
}

#[tokio::test]
async fn a_subscriber_resumes_after_a_checkpoint_and_follows_new_events() {
    let db = fresh_database().await;
    let store = EventStore::new(db.pool.clone());
    store
        .append(&[append_to("s", ExpectedVersion::NoStream, numbered(5))])
        .await
        .unwrap();
    let (all, _) = read_settled(&store, Checkpoint::ORIGIN, &ReadFilter::default()).await;
    let resume_at = all[2].checkpoint();

    let mut subscription = store.subscribe("test", resume_at, ReadFilter::default());
    let mut versions = Vec::new();
    for _ in 0..2 {
        versions.push(subscription.next().await.unwrap().unwrap().stream_version);
    }
    store
        .append(&[append_to("s", ExpectedVersion::Exact(5), numbered(2))])
        .await
        .unwrap();
    for _ in 0..2 {
        let next =
            tokio::time::timeout(std::time::Duration::from_secs(5), subscription.next()).await;
        versions.push(
            next.expect("a new event arrives")
                .unwrap()
                .unwrap()
                .stream_version,
        );
    }
    assert_eq!(versions, vec![4, 5, 6, 7]);
}

#[tokio::test]
async fn another_process_is_woken_by_notify() {
    let db = fresh_database().await;
    // Two stores on separate pools stand in for two processes: only NOTIFY links them.
    let writer = EventStore::new(db.pool.clone());
    let reader_pool = sqlx::postgres::PgPoolOptions::new()
        .connect_with(db.options.clone())
        .await
        .unwrap();
    let reader = EventStore::with_options(
        reader_pool,
        herald::eventstore::EventStoreOptions {
            poll_interval: std::time::Duration::from_secs(30),
            ..Default::default()
        },
    );
    let mut subscription = reader.subscribe("remote", Checkpoint::ORIGIN, ReadFilter::default());
    // Let the subscriber reach its wait and the listener connect.
    let early =
        tokio::time::timeout(std::time::Duration::from_millis(500), subscription.next()).await;
    assert!(early.is_err(), "nothing to read yet");
    writer
        .append(&[append_to("s", ExpectedVersion::Any, numbered(1))])
        .await
        .unwrap();
    let received =
        tokio::time::timeout(std::time::Duration::from_secs(5), subscription.next()).await;
    assert!(received.is_ok(), "woken well before the 30 s poll");
}
