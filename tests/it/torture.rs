//! Concurrent writers, rollbacks and long transactions against tailing
//! subscribers: every committed event arrives exactly once, none of the
//! rolled-back ones, each stream in version order.
//!
//! The heavier variant is ignored by default: `cargo test --test it --
//! --ignored` runs it.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use herald::eventstore::{
    Checkpoint, EventStore, ExpectedVersion, ReadFilter, RecordedEvent, StreamAppend,
};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::json;
use tokio::sync::watch;
use uuid::Uuid;

use crate::eventstore::event;
use crate::support::fresh_database;

const WRITERS: usize = 8;
const SUBSCRIBERS: usize = 3;
const SHARED_STREAMS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_subscriber_sees_every_committed_event_once_in_order() {
    torture(2_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "heavy: minutes of load; `cargo test --test it -- --ignored` runs it (.ci/run does, in a step of its own)"]
async fn heavy_torture() {
    torture(25_000).await;
}

async fn torture(events_per_writer: usize) {
    let db = fresh_database().await;
    let store = EventStore::new(db.pool.clone());

    let (done_tx, done_rx) = watch::channel(None::<usize>);
    let subscribers: Vec<_> = (0..SUBSCRIBERS)
        .map(|i| tokio::spawn(tail(store.clone(), format!("torture-{i}"), done_rx.clone())))
        .collect();

    let writers: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(write(store.clone(), w, events_per_writer)))
        .collect();
    let mut committed = HashSet::new();
    let mut rolled_back = HashSet::new();
    for writer in writers {
        let outcome = writer.await.unwrap();
        committed.extend(outcome.committed);
        rolled_back.extend(outcome.rolled_back);
    }
    done_tx.send(Some(committed.len())).unwrap();

    let stored: HashSet<Uuid> = sqlx::query_scalar("SELECT event_id FROM events")
        .fetch_all(store.pool())
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(
        stored, committed,
        "the log holds exactly the committed events"
    );
    assert!(!rolled_back.is_empty(), "the run exercised rollbacks");

    for subscriber in subscribers {
        let received = subscriber.await.unwrap();
        let ids: Vec<Uuid> = received.iter().map(|e| e.event_id).collect();
        let unique: HashSet<Uuid> = ids.iter().copied().collect();
        assert_eq!(unique.len(), ids.len(), "no event is delivered twice");
        assert!(
            unique.is_disjoint(&rolled_back),
            "no rolled-back event is delivered"
        );
        assert_eq!(unique, committed, "every committed event is delivered");
        let mut versions: HashMap<&str, i64> = HashMap::new();
        for event in &received {
            let last = versions.entry(event.stream_id.as_str()).or_insert(0);
            assert_eq!(
                event.stream_version,
                *last + 1,
                "stream {} out of order",
                event.stream_id
            );
            *last = event.stream_version;
        }
        let checkpoints: Vec<Checkpoint> = received.iter().map(|e| e.checkpoint()).collect();
        assert!(
            checkpoints.windows(2).all(|w| w[0] < w[1]),
            "read order only moves forward"
        );
    }
}

struct Outcome {
    committed: Vec<Uuid>,
    rolled_back: Vec<Uuid>,
}

async fn write(store: EventStore, writer: usize, target: usize) -> Outcome {
    let mut rng = StdRng::seed_from_u64(0x5eed + writer as u64);
    let mut outcome = Outcome {
        committed: Vec::new(),
        rolled_back: Vec::new(),
    };
    // This writer alone appends to its own streams, so it knows their versions.
    let mut own_versions = [0i64; 5];
    while outcome.committed.len() < target {
        let size = rng.random_range(1..=20);
        let own = rng.random_range(0..own_versions.len());
        let own_stream = format!("w{writer}-{own}");
        let shared_stream = format!("shared-{}", rng.random_range(0..SHARED_STREAMS));
        let events: Vec<_> = (0..size)
            .map(|i| event("Tortured", "t1", json!({ "writer": writer, "i": i })))
            .collect();
        let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
        let roll: u32 = rng.random_range(0..100);
        if roll < 55 {
            // Autocommit to an own stream with the exact version.
            store
                .append(&[StreamAppend {
                    stream_id: own_stream,
                    expected: ExpectedVersion::Exact(own_versions[own]),
                    events,
                }])
                .await
                .unwrap();
            own_versions[own] += size as i64;
            outcome.committed.extend(ids);
        } else if roll < 75 {
            // Contended: split across an own stream and a shared one, in one batch.
            let split = size / 2;
            let mut events = events;
            let shared_events = events.split_off(split);
            let mut batch = vec![StreamAppend {
                stream_id: shared_stream,
                expected: ExpectedVersion::Any,
                events: shared_events,
            }];
            if split > 0 {
                batch.push(StreamAppend {
                    stream_id: own_stream,
                    expected: ExpectedVersion::Exact(own_versions[own]),
                    events,
                });
            }
            store.append(&batch).await.unwrap();
            own_versions[own] += split as i64;
            outcome.committed.extend(ids);
        } else {
            // In a transaction held open for a while, then committed or rolled back.
            let hold = Duration::from_millis(rng.random_range(0..40));
            let commit = roll < 90;
            let mut tx = store.begin().await.unwrap();
            tx.append(&[StreamAppend {
                stream_id: own_stream,
                expected: ExpectedVersion::Exact(own_versions[own]),
                events,
            }])
            .await
            .unwrap();
            tokio::time::sleep(hold).await;
            if commit {
                tx.commit().await.unwrap();
                own_versions[own] += size as i64;
                outcome.committed.extend(ids);
            } else {
                tx.rollback().await.unwrap();
                outcome.rolled_back.extend(ids);
            }
        }
    }
    outcome
}

/// Collects events until the writers are done and the expected count has
/// arrived, then keeps listening briefly to catch anything delivered twice.
async fn tail(
    store: EventStore,
    name: String,
    mut done: watch::Receiver<Option<usize>>,
) -> Vec<RecordedEvent> {
    let mut subscription = store.subscribe(name, Checkpoint::ORIGIN, ReadFilter::default());
    let mut received = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    loop {
        let expected = *done.borrow();
        if expected.is_some_and(|n| received.len() >= n) {
            break;
        }
        tokio::select! {
            next = subscription.next() => received.push(next.expect("subscriptions do not end").expect("read succeeds")),
            _ = done.changed(), if expected.is_none() => {}
            _ = tokio::time::sleep_until(deadline) => panic!("subscriber stalled at {} events", received.len()),
        }
    }
    let grace = tokio::time::sleep(Duration::from_millis(700));
    tokio::pin!(grace);
    loop {
        tokio::select! {
            next = subscription.next() => received.push(next.expect("subscriptions do not end").expect("read succeeds")),
            _ = &mut grace => break,
        }
    }
    received
}
