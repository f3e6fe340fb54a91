//! The projection runner (docs/architecture.md), on real PostgreSQL: batches
//! and checkpoints commit together, one process runs a projection while
//! others stand by, and a failed event stops its projection visibly.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use herald::commands::{self, Actor};
use herald::domain::SendNotification;
use herald::domain::values::TenantId;
use herald::eventstore::{EventStore, ExpectedVersion, ReadFilter, RecordedEvent, StreamAppend};
use herald::projections::{
    self, Projection, ProjectionError, RunnerHandle, RunnerOptions, RunnerState, checkpoints,
};
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::eventstore::event;
use crate::support::{eventually, fresh_database};

const COUNTED: &str = "Counted";

/// A test read model that shows any double count or loss: one row per event
/// applied (no unique key, so a second application shows) and a running total.
struct Counting {
    name: &'static str,
    /// Stops forever inside the batch's transaction at this event number, so a
    /// test can kill the runner mid-batch.
    stall_at: Option<i64>,
    reached: Arc<Notify>,
    /// Events with `"poison": true` are refused until this is set.
    fixed: Arc<AtomicBool>,
    /// Refuses (or panics on) events flagged so; a lenient one counts them all.
    strict: bool,
    /// Given, a rebuild may replace these.
    tables: &'static [&'static str],
    version: i32,
}

impl Counting {
    fn new(name: &'static str) -> Counting {
        Counting {
            name,
            stall_at: None,
            reached: Arc::new(Notify::new()),
            fixed: Arc::new(AtomicBool::new(false)),
            strict: true,
            tables: &[],
            version: 1,
        }
    }
}

impl Projection for Counting {
    fn name(&self) -> &str {
        self.name
    }

    fn version(&self) -> i32 {
        self.version
    }

    fn tables(&self) -> &'static [&'static str] {
        self.tables
    }

    fn filter(&self) -> ReadFilter {
        ReadFilter {
            tenant_id: None,
            event_types: Some(vec![COUNTED.into()]),
            ..ReadFilter::default()
        }
    }

    fn handle_batch<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(async move {
            for event in events {
                self.handle(conn, event).await?;
            }
            Ok(())
        })
    }
}

impl Counting {
    async fn handle(
        &self,
        conn: &mut PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        let flag = |key: &str| self.strict && event.payload[key].as_bool() == Some(true);
        if flag("fatal") {
            return Err(ProjectionError::Refused("a fatal event".into()));
        }
        if flag("poison") && !self.fixed.load(Ordering::SeqCst) {
            return Err(ProjectionError::Refused("poison, until fixed".into()));
        }
        if flag("panic") {
            panic!("the handler cannot bear this event");
        }
        sqlx::query("INSERT INTO counted (projection, position) VALUES ($1, $2)")
            .bind(self.name)
            .bind(event.global_position)
            .execute(&mut *conn)
            .await?;
        sqlx::query(
            "INSERT INTO totals (projection, n) VALUES ($1, 1) \
             ON CONFLICT (projection) DO UPDATE SET n = totals.n + 1",
        )
        .bind(self.name)
        .execute(&mut *conn)
        .await?;
        if self.stall_at.is_some() && event.payload["n"].as_i64() == self.stall_at {
            self.reached.notify_one();
            futures::future::pending::<()>().await;
        }
        Ok(())
    }
}

async fn create_test_tables(pool: &PgPool) {
    for sql in [
        "CREATE TABLE counted (projection text NOT NULL, position bigint NOT NULL)",
        "CREATE TABLE totals (projection text PRIMARY KEY, n bigint NOT NULL)",
    ] {
        sqlx::query(sql).execute(pool).await.unwrap();
    }
}

async fn append_counted(
    store: &EventStore,
    stream: &str,
    payloads: Vec<serde_json::Value>,
) -> Vec<i64> {
    store
        .append(&[StreamAppend {
            stream_id: stream.into(),
            expected: ExpectedVersion::Any,
            events: payloads
                .into_iter()
                .map(|p| event(COUNTED, "t1", p))
                .collect(),
        }])
        .await
        .unwrap()
}

fn numbered(range: std::ops::Range<i64>) -> Vec<serde_json::Value> {
    range.map(|n| json!({ "n": n })).collect()
}

/// (rows, distinct positions, running total) for one counting projection.
async fn counts(pool: &PgPool, name: &str) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT count(*), count(DISTINCT position), \
                coalesce((SELECT n FROM totals WHERE projection = $1), 0) \
         FROM counted WHERE projection = $1",
    )
    .bind(name)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn status(pool: &PgPool, projection: &Arc<dyn Projection>) -> checkpoints::ProjectionStatus {
    checkpoints::statuses(pool, std::slice::from_ref(projection))
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.name == projection.name() && s.version == projection.version())
        .unwrap()
}

/// Waits until the projection's checkpoint has passed every event it reads.
async fn caught_up(
    pool: &PgPool,
    projection: &Arc<dyn Projection>,
) -> checkpoints::ProjectionStatus {
    eventually(Duration::from_secs(30), async || {
        let status = status(pool, projection).await;
        if status.lag_events == 0 && status.state == "running" {
            Ok(status)
        } else {
            Err(format!("not caught up: {status:?}"))
        }
    })
    .await
}

/// Waits until the log holds `count` more events than now: the writer
/// beside the test has kept going.
async fn until_more_events(pool: &PgPool, count: i64) {
    let event_count = async || -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(pool)
            .await
            .unwrap()
    };
    let before = event_count().await;
    eventually(Duration::from_secs(30), async || {
        let written = event_count().await - before;
        if written >= count {
            Ok(())
        } else {
            Err(format!("{written} of {count} more events written"))
        }
    })
    .await;
}

async fn wait_for_state(runner: &mut RunnerHandle, wanted: RunnerState, within: Duration) {
    tokio::time::timeout(within, runner.state.wait_for(|s| *s == wanted))
        .await
        .unwrap_or_else(|_| panic!("runner did not become {wanted:?} within {within:?}"))
        .unwrap();
}

fn options(batch_size: usize) -> RunnerOptions {
    RunnerOptions {
        batch_size,
        ..RunnerOptions::default()
    }
}

/// A second pool on the same database: another process, as far as locks go.
async fn second_process(db: &crate::support::TestDatabase) -> EventStore {
    let pool = PgPoolOptions::new()
        .max_connections(10)
        .connect_with(db.options.clone())
        .await
        .unwrap();
    EventStore::new(pool)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_runner_killed_mid_batch_neither_loses_nor_double_counts() {
    let db = fresh_database().await;
    create_test_tables(&db.pool).await;
    let store = EventStore::new(db.pool.clone());
    for chunk in 0..5 {
        append_counted(&store, "s-1", numbered(chunk * 10..chunk * 10 + 10)).await;
    }
    let stalling = Arc::new(Counting {
        stall_at: Some(35),
        ..Counting::new("count")
    });
    let reached = stalling.reached.clone();
    let projection: Arc<dyn Projection> = stalling;
    let shutdown = CancellationToken::new();
    let runner = projections::spawn(
        store.clone(),
        projection.clone(),
        options(10),
        shutdown.clone(),
    );
    tokio::time::timeout(Duration::from_secs(30), reached.notified())
        .await
        .expect("the runner reached event 35");
    // Three batches of ten committed; the fourth has written six rows in its
    // transaction when the process dies.
    runner.task.abort();
    let _ = runner.task.await;
    let status_after_crash = status(&db.pool, &projection).await;
    assert_eq!(status_after_crash.events_processed, 30);
    eventually(
        Duration::from_secs(10),
        async || match checkpoints::holder(&db.pool, "count", 1).await.unwrap() {
            None => Ok(()),
            Some(holder) => Err(format!(
                "the dead runner's session {holder:?} holds the lock"
            )),
        },
    )
    .await;
    assert_eq!(counts(&db.pool, "count").await, (30, 30, 30));

    let restarted: Arc<dyn Projection> = Arc::new(Counting::new("count"));
    let runner = projections::spawn(
        store.clone(),
        restarted.clone(),
        options(10),
        shutdown.clone(),
    );
    append_counted(&store, "s-2", numbered(50..60)).await;
    let done = caught_up(&db.pool, &restarted).await;
    assert_eq!(counts(&db.pool, "count").await, (60, 60, 60));
    assert_eq!(done.events_processed, 60);
    let last: i64 = sqlx::query_scalar("SELECT max(global_position) FROM events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(done.checkpoint.global_position, last);

    shutdown.cancel();
    runner.task.await.unwrap();
    assert_eq!(*runner.state.borrow(), RunnerState::Stopped);
    assert_eq!(
        checkpoints::holder(&db.pool, "count", 1).await.unwrap(),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_standby_process_takes_over_from_the_checkpoint_when_the_holder_dies() {
    let db = fresh_database().await;
    create_test_tables(&db.pool).await;
    let store_a = EventStore::new(db.pool.clone());
    let store_b = second_process(&db).await;
    let projection: Arc<dyn Projection> = Arc::new(Counting::new("count"));
    let shutdown = CancellationToken::new();

    let mut a = projections::spawn(
        store_a.clone(),
        projection.clone(),
        options(7),
        shutdown.clone(),
    );
    wait_for_state(&mut a, RunnerState::Running, Duration::from_secs(10)).await;
    let mut b = projections::spawn(
        store_b.clone(),
        projection.clone(),
        options(7),
        shutdown.clone(),
    );
    wait_for_state(&mut b, RunnerState::Standby, Duration::from_secs(10)).await;
    assert_eq!(*a.state.borrow(), RunnerState::Running);
    let holder = checkpoints::holder(&db.pool, "count", 1).await.unwrap();
    assert!(holder.is_some(), "the running process holds the lock");

    // Events keep arriving, from both processes, throughout the takeover.
    let writer = {
        let (store_a, store_b) = (store_a.clone(), store_b.clone());
        tokio::spawn(async move {
            for i in 0..60 {
                let store = if i % 2 == 0 { &store_a } else { &store_b };
                append_counted(store, &format!("w-{}", i % 5), numbered(i * 5..i * 5 + 5)).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    // A applies some of them before it dies.
    let before_crash = eventually(Duration::from_secs(10), async || {
        match status(&db.pool, &projection).await.events_processed {
            0 => Err("A has applied no event yet"),
            applied => Ok(applied),
        }
    })
    .await;
    a.task.abort();
    let killed_at = Instant::now();
    wait_for_state(&mut b, RunnerState::Running, Duration::from_secs(5)).await;
    let took = killed_at.elapsed();
    assert!(took < Duration::from_secs(3), "takeover took {took:?}");
    assert_ne!(
        checkpoints::holder(&db.pool, "count", 1).await.unwrap(),
        holder
    );

    writer.await.unwrap();
    let done = caught_up(&db.pool, &projection).await;
    assert_eq!(counts(&db.pool, "count").await, (300, 300, 300));
    assert_eq!(done.events_processed, 300);
    eprintln!("takeover after {took:?}; A had applied {before_crash} events");

    shutdown.cancel();
    b.task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_event_stops_only_its_projection_until_retried_or_skipped() {
    let db = fresh_database().await;
    create_test_tables(&db.pool).await;
    let store = EventStore::new(db.pool.clone());
    let picky_model = Arc::new(Counting::new("picky"));
    let fixed = picky_model.fixed.clone();
    let picky: Arc<dyn Projection> = picky_model;
    let easy: Arc<dyn Projection> = Arc::new(Counting {
        strict: false,
        ..Counting::new("easy")
    });
    let shutdown = CancellationToken::new();
    let mut picky_runner =
        projections::spawn(store.clone(), picky.clone(), options(100), shutdown.clone());
    let easy_runner =
        projections::spawn(store.clone(), easy.clone(), options(100), shutdown.clone());

    // Poison in the middle of one batch.
    let mut payloads = numbered(0..5);
    payloads.push(json!({ "n": 5, "poison": true }));
    payloads.extend(numbered(6..10));
    let positions = append_counted(&store, "s-1", payloads).await;
    wait_for_state(
        &mut picky_runner,
        RunnerState::Failed,
        Duration::from_secs(10),
    )
    .await;
    let failed = status(&db.pool, &picky).await;
    assert_eq!(failed.state, "failed");
    assert_eq!(failed.failed_position, Some(positions[5]));
    assert_eq!(failed.error.as_deref(), Some("poison, until fixed"));
    // The events before it are applied, and the checkpoint stops right there.
    assert_eq!(failed.checkpoint.global_position, positions[4]);
    assert_eq!(counts(&db.pool, "picky").await, (5, 5, 5));
    assert_eq!(failed.lag_events, 5);
    // The other projection kept going.
    caught_up(&db.pool, &easy).await;
    assert_eq!(counts(&db.pool, "easy").await, (10, 10, 10));
    // It stays stopped; it does not skip on its own. Nothing happening has
    // no event to wait for: this watches while it looks for an operator's
    // retry or skip (every `standby_retry`) at least once.
    tokio::time::sleep(options(100).standby_retry * 6 / 5).await;
    assert_eq!(counts(&db.pool, "picky").await, (5, 5, 5));

    // Fix the handler, retry: it applies the failed event and the rest.
    fixed.store(true, Ordering::SeqCst);
    assert_eq!(checkpoints::retry(&db.pool, "picky").await.unwrap(), 1);
    caught_up(&db.pool, &picky).await;
    assert_eq!(counts(&db.pool, "picky").await, (10, 10, 10));

    // A handler that panics is a failure too; skip steps over exactly that event.
    let positions = append_counted(
        &store,
        "s-2",
        vec![
            json!({ "n": 10 }),
            json!({ "n": 11, "panic": true }),
            json!({ "n": 12 }),
            json!({ "n": 13 }),
        ],
    )
    .await;
    wait_for_state(
        &mut picky_runner,
        RunnerState::Failed,
        Duration::from_secs(10),
    )
    .await;
    let failed = status(&db.pool, &picky).await;
    assert_eq!(failed.failed_position, Some(positions[1]));
    assert!(
        failed
            .error
            .as_deref()
            .unwrap()
            .contains("panicked: the handler cannot bear this event"),
        "{failed:?}"
    );
    assert!(matches!(
        checkpoints::skip(&store, "picky", positions[2], "wrong one", "test").await,
        Err(checkpoints::SkipError::NotFailedThere { failed_at: Some(p), .. }) if p == positions[1]
    ));
    let recorded = checkpoints::skip(
        &store,
        "picky",
        positions[1],
        "bad input, ticket 42",
        "test",
    )
    .await
    .unwrap();
    caught_up(&db.pool, &picky).await;
    let applied: Vec<i64> = sqlx::query_scalar(
        "SELECT position FROM counted WHERE projection = 'picky' AND position >= $1 ORDER BY position",
    )
    .bind(positions[0])
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(applied, vec![positions[0], positions[2], positions[3]]);
    let skip_record = store.read_stream("projection-picky", 1).await.unwrap();
    assert_eq!(skip_record.len(), 1);
    assert_eq!(skip_record[0].global_position, recorded);
    assert_eq!(skip_record[0].event_type, "ProjectionEventSkipped");
    assert_eq!(
        skip_record[0].payload,
        json!({ "type": "ProjectionEventSkipped", "name": "picky", "version": 1,
                "position": positions[1], "reason": "bad input, ticket 42" })
    );
    assert_eq!(counts(&db.pool, "easy").await, (14, 14, 14));

    shutdown.cancel();
    picky_runner.task.await.unwrap();
    easy_runner.task.await.unwrap();
}

fn send_input(channel: &str, tag: &str) -> SendNotification {
    serde_json::from_value(json!({
        "recipient": { "id": "user-1", "email": "ada@example.com", "phone": "+14155550100" },
        "channels": [channel],
        "content": { "title": "Hello", "text": "Your code is 123456" },
        "tags": [tag],
    }))
    .unwrap()
}

type StatusRow = (
    uuid::Uuid,
    String,
    String,
    String,
    Vec<String>,
    Option<String>,
    Vec<String>,
    chrono::DateTime<chrono::Utc>,
    chrono::DateTime<chrono::Utc>,
    i32,
);

async fn status_rows(pool: &PgPool) -> Vec<StatusRow> {
    sqlx::query_as(
        "SELECT notification_id, tenant_id, status, priority, channels, recipient_id, tags, \
                created_at, updated_at, stream_version \
         FROM notification_status ORDER BY notification_id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn notification_status_and_analytics_fold_the_log() {
    let db = fresh_database().await;
    let store = EventStore::new(db.pool.clone());
    let actor = Actor::new("test");
    let tenant = TenantId::parse("t_proj").unwrap();
    let window = Duration::from_secs(3600);
    let mut sent = Vec::new();
    for i in 0..12 {
        let channel = if i % 3 == 0 { "sms" } else { "email" };
        let notification = commands::notifications::send(
            &store,
            &tenant,
            send_input(channel, "otp"),
            &commands::notifications::SendPolicy::unlimited(window),
            &actor,
        )
        .await
        .unwrap();
        sent.push(notification.notification.notification_id);
    }
    for id in sent.iter().take(5) {
        commands::notifications::cancel(
            &store,
            &tenant,
            id,
            Some("changed my mind".into()),
            &actor,
        )
        .await
        .unwrap();
    }
    // What the inline path wrote, then gone: the projection must rebuild it exactly.
    let inline = status_rows(&db.pool).await;
    assert_eq!(inline.len(), 12);
    sqlx::query("DELETE FROM notification_status")
        .execute(&db.pool)
        .await
        .unwrap();

    let all = status_and_analytics();
    // Other read models have rows too (webhook_outbox starts at the horizon).
    let listed: Vec<_> = checkpoints::statuses(&db.pool, &all)
        .await
        .unwrap()
        .into_iter()
        .filter(|status| all.iter().any(|p| p.name() == status.name))
        .collect();
    assert_eq!(listed.len(), 2);
    for status in &listed {
        assert_eq!(status.state, "not started");
        assert_eq!(status.holder_pid, None);
    }
    // 12 requested + 5 cancelled events, all read by both.
    assert_eq!(
        listed.iter().map(|s| s.lag_events).collect::<Vec<_>>(),
        vec![17, 17]
    );

    let shutdown = CancellationToken::new();
    let runner = projections::spawn_all(store.clone(), shutdown.clone());
    for projection in &all {
        caught_up(&db.pool, projection).await;
    }
    assert_eq!(status_rows(&db.pool).await, inline);

    // Events appended without the inline upsert (a worker's, say) arrive
    // through the runner alone.
    let late = sent[11];
    let stream = format!("notification-{}", late.as_uuid());
    store
        .append(&[StreamAppend {
            stream_id: stream,
            expected: ExpectedVersion::Exact(1),
            events: vec![event(
                "NotificationCancelled",
                tenant.as_str(),
                json!({ "type": "NotificationCancelled", "reason": "by a worker" }),
            )],
        }])
        .await
        .unwrap();
    for projection in &all {
        caught_up(&db.pool, projection).await;
    }
    let page = projections::notification_status::page(
        &db.pool,
        &tenant,
        &projections::notification_status::Filter {
            statuses: Some(vec!["CANCELLED".into()]),
            ..Default::default()
        },
        50,
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        page.0.len(),
        6,
        "{:?}",
        page.0.iter().map(|r| &r.status).collect::<Vec<_>>()
    );

    let now = chrono::Utc::now();
    let counts = projections::analytics::counts(
        &db.pool,
        tenant.as_str(),
        now - chrono::TimeDelta::hours(2),
        now + chrono::TimeDelta::hours(1),
    )
    .await
    .unwrap();
    let total = |channel: &str, status: &str| -> i64 {
        counts
            .iter()
            .filter(|c| c.channel == channel && c.status == status)
            .map(|c| c.count)
            .sum()
    };
    assert_eq!(total("sms", "REQUESTED"), 4);
    assert_eq!(total("email", "REQUESTED"), 8);
    // Cancelled: sent[0] and sent[3] are sms, sent[1,2,4] and the late sent[11] email.
    assert_eq!(total("sms", "CANCELLED"), 2);
    assert_eq!(total("email", "CANCELLED"), 4);

    shutdown.cancel();
    runner.await.unwrap();
}

/// Analytics counts, all of them, in a stable order.
async fn all_counts(
    pool: &PgPool,
) -> Vec<(String, chrono::DateTime<chrono::Utc>, String, String, i64)> {
    sqlx::query_as(
        "SELECT tenant_id, hour, channel, status, count FROM analytics_counts \
         ORDER BY tenant_id, hour, channel, status",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Hands `batches` to `projection`, each in a transaction, as the runner would.
async fn apply_batches(pool: &PgPool, projection: &dyn Projection, batches: &[&[RecordedEvent]]) {
    for batch in batches {
        let mut tx = pool.begin().await.unwrap();
        projection.handle_batch(&mut tx, batch).await.unwrap();
        tx.commit().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_spanning_many_notifications_write_what_the_inline_path_does() {
    let db = fresh_database().await;
    let store = EventStore::new(db.pool.clone());
    let actor = Actor::new("test");
    let tenant = TenantId::parse("t_batch").unwrap();
    let window = Duration::from_secs(3600);
    let mut sent = Vec::new();
    let send = |channel: &'static str| {
        let (store, tenant, actor) = (store.clone(), tenant.clone(), actor.clone());
        async move {
            commands::notifications::send(
                &store,
                &tenant,
                send_input(channel, "otp"),
                &commands::notifications::SendPolicy::unlimited(window),
                &actor,
            )
            .await
            .unwrap()
            .notification
            .notification_id
        }
    };
    for i in 0..8 {
        sent.push(send(if i % 3 == 0 { "sms" } else { "email" }).await);
    }
    let cancel = |id| {
        let (store, tenant, actor) = (store.clone(), tenant.clone(), actor.clone());
        async move {
            commands::notifications::cancel(&store, &tenant, &id, Some("no".into()), &actor)
                .await
                .unwrap();
        }
    };
    for id in [sent[0], sent[3], sent[5]] {
        cancel(id).await;
    }
    for _ in 0..2 {
        sent.push(send("email").await);
    }
    cancel(sent[9]).await;

    // Every payload: analytics reads them all, notification_status only the requests'.
    let filter = projections::analytics::AnalyticsProjection::new().filter();
    let log = store
        .read_all(herald::eventstore::Checkpoint::ORIGIN, 1000, &filter)
        .await
        .unwrap()
        .events;
    assert_eq!(log.len(), 14);
    // The first batch holds the eight requests: the cancellations of three
    // of them come in the second, which also starts and finishes two more.
    let (first, second) = log.split_at(8);
    assert!(first.iter().all(|e| e.stream_version == 1));
    assert!(
        second
            .iter()
            .any(|e| e.stream_version == 2 && first.iter().any(|f| f.stream_id == e.stream_id))
    );

    let inline = status_rows(&db.pool).await;
    assert_eq!(inline.len(), 10);
    let status = projections::notification_status::NotificationStatusProjection;
    sqlx::query("DELETE FROM notification_status")
        .execute(&db.pool)
        .await
        .unwrap();
    apply_batches(&db.pool, &status, &[first, second]).await;
    assert_eq!(status_rows(&db.pool).await, inline);
    // The whole log in one batch, and one event at a time, agree.
    for batches in [vec![&log[..]], log.chunks(1).collect::<Vec<_>>()] {
        sqlx::query("DELETE FROM notification_status")
            .execute(&db.pool)
            .await
            .unwrap();
        apply_batches(&db.pool, &status, &batches).await;
        assert_eq!(status_rows(&db.pool).await, inline);
    }
    // Applying a batch again changes nothing: the rows already hold those versions.
    apply_batches(&db.pool, &status, &[second]).await;
    assert_eq!(status_rows(&db.pool).await, inline);

    // Analytics counts each event once however the log is cut into batches.
    let analytics = projections::analytics::AnalyticsProjection::new();
    apply_batches(&db.pool, &analytics, &log.chunks(1).collect::<Vec<_>>()).await;
    let one_by_one = all_counts(&db.pool).await;
    assert_eq!(one_by_one.iter().map(|c| c.4).sum::<i64>(), 14);
    for batches in [
        vec![first, second],
        vec![&log[..]],
        vec![&log[..5], &log[5..11], &log[11..]],
    ] {
        sqlx::query("DELETE FROM analytics_counts")
            .execute(&db.pool)
            .await
            .unwrap();
        apply_batches(&db.pool, &analytics, &batches).await;
        assert_eq!(all_counts(&db.pool).await, one_by_one);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_swaps_in_while_events_arrive_and_queries_answer() {
    let db = fresh_database().await;
    let store = EventStore::new(db.pool.clone());
    let tenant = TenantId::parse("t_rebuild").unwrap();
    let shutdown = CancellationToken::new();
    let runners = projections::spawn_all(store.clone(), shutdown.clone());
    let indexes = |pool: PgPool| async move {
        sqlx::query_scalar::<_, String>(
            "SELECT indexname::text FROM pg_indexes \
             WHERE schemaname = 'public' AND tablename IN ('notification_status', 'analytics_counts') \
             ORDER BY 1",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    let indexes_before = indexes(db.pool.clone()).await;

    // Sends and cancels keep arriving: (sms requested, email requested, sms cancelled, email cancelled).
    let writing = CancellationToken::new();
    let writer = {
        let (store, tenant, writing) = (store.clone(), tenant.clone(), writing.clone());
        tokio::spawn(async move {
            let actor = Actor::new("test");
            let mut done = [0i64; 4];
            let mut i = 0;
            while !writing.is_cancelled() {
                let sms = i % 3 == 0;
                let sent = commands::notifications::send(
                    &store,
                    &tenant,
                    send_input(if sms { "sms" } else { "email" }, "otp"),
                    &commands::notifications::SendPolicy::unlimited(Duration::from_secs(3600)),
                    &actor,
                )
                .await
                .unwrap();
                done[if sms { 0 } else { 1 }] += 1;
                if i % 4 == 0 {
                    let id = sent.notification.notification_id;
                    commands::notifications::cancel(&store, &tenant, &id, None, &actor)
                        .await
                        .unwrap();
                    done[if sms { 2 } else { 3 }] += 1;
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            done
        })
    };
    // Queries answer throughout (never an error).
    let reader = {
        let (pool, tenant, writing) = (db.pool.clone(), tenant.clone(), writing.clone());
        tokio::spawn(async move {
            let mut answered = 0;
            while !writing.is_cancelled() {
                projections::notification_status::page(
                    &pool,
                    &tenant,
                    &Default::default(),
                    20,
                    None,
                )
                .await
                .expect("the status page answers during the rebuild");
                let now = chrono::Utc::now();
                projections::analytics::counts(
                    &pool,
                    tenant.as_str(),
                    now - chrono::TimeDelta::hours(2),
                    now + chrono::TimeDelta::hours(1),
                )
                .await
                .expect("analytics answer during the rebuild");
                answered += 1;
            }
            answered
        })
    };
    // Rebuild once there is something to rebuild, while more keeps coming.
    eventually(Duration::from_secs(30), async || {
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM notification_status")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        if rows >= 30 {
            Ok(())
        } else {
            Err(format!("the writer has made {rows} notifications"))
        }
    })
    .await;
    for projection in status_and_analytics() {
        crate::support::wait_until_readable(&store).await;
        let mut reports = 0;
        let done = projections::rebuild::rebuild(&store, projection.as_ref(), |_| reports += 1)
            .await
            .unwrap();
        assert!(done.swapped && done.events > 0 && reports >= 2, "{done:?}");
        until_more_events(&db.pool, 20).await;
    }
    writing.cancel();
    let [sms, email, sms_cancelled, email_cancelled] = writer.await.unwrap();
    assert!(reader.await.unwrap() > 10);
    for projection in &status_and_analytics() {
        caught_up(&db.pool, projection).await;
    }

    // Equal to what the log says, nothing counted twice or lost.
    let rows = status_rows(&db.pool).await;
    assert_eq!(rows.len() as i64, sms + email);
    for row in &rows {
        let id = herald::domain::values::NotificationId::from(row.0);
        let details = commands::notifications::get(&store, &tenant, &id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.2, details.state.status.as_str());
        assert_eq!(row.9 as usize, details.timeline.len());
        assert_eq!(row.8, details.timeline.last().unwrap().recorded_at);
    }
    let now = chrono::Utc::now();
    let counts = projections::analytics::counts(
        &db.pool,
        tenant.as_str(),
        now - chrono::TimeDelta::hours(2),
        now + chrono::TimeDelta::hours(1),
    )
    .await
    .unwrap();
    let total = |channel: &str, status: &str| -> i64 {
        counts
            .iter()
            .filter(|c| c.channel == channel && c.status == status)
            .map(|c| c.count)
            .sum()
    };
    assert_eq!(
        [
            total("sms", "REQUESTED"),
            total("email", "REQUESTED"),
            total("sms", "CANCELLED"),
            total("email", "CANCELLED")
        ],
        [sms, email, sms_cancelled, email_cancelled]
    );
    // The swapped-in tables carry the migrations' index names; no shadow is left.
    assert_eq!(indexes(db.pool.clone()).await, indexes_before);
    let shadows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'rebuild\\_%'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(shadows, 0);
    eprintln!("rebuilt while {sms}+{email} notifications were sent");

    shutdown.cancel();
    runners.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_keeps_what_an_operator_skipped_skipped() {
    let db = fresh_database().await;
    create_test_tables(&db.pool).await;
    let store = EventStore::new(db.pool.clone());
    let projection: Arc<dyn Projection> = Arc::new(Counting {
        tables: &["counted", "totals"],
        ..Counting::new("solo")
    });
    let shutdown = CancellationToken::new();
    let mut runner = projections::spawn(
        store.clone(),
        projection.clone(),
        options(100),
        shutdown.clone(),
    );
    let positions = append_counted(
        &store,
        "s-1",
        vec![
            json!({ "n": 0 }),
            json!({ "n": 1, "fatal": true }),
            json!({ "n": 2 }),
        ],
    )
    .await;
    wait_for_state(&mut runner, RunnerState::Failed, Duration::from_secs(10)).await;
    checkpoints::skip(&store, "solo", positions[1], "never valid", "test")
        .await
        .unwrap();
    caught_up(&db.pool, &projection).await;
    assert_eq!(counts(&db.pool, "solo").await, (2, 2, 2));

    let done = projections::rebuild::rebuild(&store, projection.as_ref(), |_| {})
        .await
        .unwrap();
    assert_eq!(done.events, 3, "read, the skipped one included");
    append_counted(&store, "s-1", vec![json!({ "n": 3 })]).await;
    let status = caught_up(&db.pool, &projection).await;
    assert_eq!(counts(&db.pool, "solo").await, (3, 3, 3));
    assert_eq!(status.events_processed, 3);

    shutdown.cancel();
    runner.task.await.unwrap();
}

/// The database's URL, for the CLI's configuration.
fn url_of(options: &sqlx::postgres::PgConnectOptions) -> String {
    let mut url = url::Url::parse("postgresql://localhost").unwrap();
    url.set_path(options.get_database().unwrap());
    url.set_username(options.get_username()).unwrap();
    match options.get_socket() {
        Some(socket) => {
            url.query_pairs_mut()
                .append_pair("host", &socket.to_string_lossy());
        }
        None => url.set_host(Some(options.get_host())).unwrap(),
    }
    url.query_pairs_mut()
        .append_pair("port", &options.get_port().to_string());
    url.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cli_lists_retries_and_skips() {
    use herald::cli::projections::{ProjectionsCommand, run};

    let db = fresh_database().await;
    create_test_tables(&db.pool).await;
    let store = EventStore::new(db.pool.clone());
    let config = herald::config::Config {
        database_url: Some(herald::config::DatabaseUrl::new(url_of(&db.options))),
        database_max_connections: 3,
        ..herald::config::Config::default()
    };
    let projection: Arc<dyn Projection> = Arc::new(Counting::new("picky"));
    let shutdown = CancellationToken::new();
    let mut runner = projections::spawn(
        store.clone(),
        projection.clone(),
        options(100),
        shutdown.clone(),
    );
    let positions = append_counted(
        &store,
        "s-1",
        vec![json!({ "n": 0, "fatal": true }), json!({ "n": 1 })],
    )
    .await;
    wait_for_state(&mut runner, RunnerState::Failed, Duration::from_secs(10)).await;

    run(&config, ProjectionsCommand::List).await.unwrap();
    let failed = status(&db.pool, &projection).await;
    // Retrying a fatal event fails again at the same place.
    run(
        &config,
        ProjectionsCommand::Retry {
            name: "picky".into(),
        },
    )
    .await
    .unwrap();
    let failed_again = eventually(Duration::from_secs(10), async || {
        let now = status(&db.pool, &projection).await;
        if now.state == "failed" && now.updated_at > failed.updated_at {
            Ok(now)
        } else {
            Err(format!("not run again: {now:?}"))
        }
    })
    .await;
    assert_eq!(failed_again.failed_position, Some(positions[0]));
    let wrong = run(
        &config,
        ProjectionsCommand::Skip {
            name: "picky".into(),
            position: positions[1],
            reason: "wrong".into(),
        },
    )
    .await;
    assert!(
        wrong
            .unwrap_err()
            .to_string()
            .contains("not failed at position")
    );
    run(
        &config,
        ProjectionsCommand::Skip {
            name: "picky".into(),
            position: positions[0],
            reason: "never valid".into(),
        },
    )
    .await
    .unwrap();
    caught_up(&db.pool, &projection).await;
    assert_eq!(counts(&db.pool, "picky").await, (1, 1, 1));
    assert!(
        run(
            &config,
            ProjectionsCommand::Retry {
                name: "picky".into()
            }
        )
        .await
        .is_err(),
        "nothing to retry"
    );
    let unknown = run(
        &config,
        ProjectionsCommand::Rebuild {
            name: "nope".into(),
        },
    )
    .await;
    assert!(
        unknown
            .unwrap_err()
            .to_string()
            .contains("no projection nope")
    );

    shutdown.cancel();
    runner.task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_version_rebuilds_beside_the_old_one_and_takes_over() {
    let db = fresh_database().await;
    create_test_tables(&db.pool).await;
    let old_process = EventStore::new(db.pool.clone());
    let new_process = second_process(&db).await;
    let v1: Arc<dyn Projection> = Arc::new(Counting {
        tables: &["counted", "totals"],
        ..Counting::new("count")
    });
    let v2: Arc<dyn Projection> = Arc::new(Counting {
        tables: &["counted", "totals"],
        version: 2,
        ..Counting::new("count")
    });
    let shutdown = CancellationToken::new();
    let mut old = projections::spawn(
        old_process.clone(),
        v1.clone(),
        options(50),
        shutdown.clone(),
    );
    wait_for_state(&mut old, RunnerState::Running, Duration::from_secs(10)).await;

    let writing = CancellationToken::new();
    let writer = {
        let (store, writing) = (old_process.clone(), writing.clone());
        tokio::spawn(async move {
            let mut written = 0;
            while !writing.is_cancelled() {
                append_counted(&store, "w", numbered(written..written + 10)).await;
                written += 10;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            written
        })
    };
    let reader = {
        let (pool, writing) = (db.pool.clone(), writing.clone());
        tokio::spawn(async move {
            let mut answered = 0;
            while !writing.is_cancelled() {
                let _: i64 = sqlx::query_scalar("SELECT count(*) FROM counted")
                    .fetch_one(&pool)
                    .await
                    .expect("the read model answers throughout");
                answered += 1;
            }
            answered
        })
    };
    until_more_events(&db.pool, 50).await;

    // The new version's process starts: it rebuilds beside the serving tables,
    // swaps them in, and the old version stops writing.
    let mut new = projections::spawn(
        new_process.clone(),
        v2.clone(),
        options(50),
        shutdown.clone(),
    );
    wait_for_state(&mut new, RunnerState::Running, Duration::from_secs(30)).await;
    wait_for_state(&mut old, RunnerState::Retired, Duration::from_secs(10)).await;
    until_more_events(&db.pool, 20).await;
    writing.cancel();
    let written = writer.await.unwrap();
    assert!(reader.await.unwrap() > 10);
    let done = caught_up(&db.pool, &v2).await;
    assert_eq!(counts(&db.pool, "count").await, (written, written, written));
    assert_eq!(done.events_processed, written);
    assert_eq!(status(&db.pool, &v1).await.state, "retired");
    eprintln!("{written} events; the new version took over");

    shutdown.cancel();
    old.task.await.unwrap();
    new.task.await.unwrap();
}

/// The read models these tests write events for (the others see none).
fn status_and_analytics() -> Vec<std::sync::Arc<dyn projections::Projection>> {
    projections::all()
        .into_iter()
        .filter(|p| {
            [
                projections::notification_status::NAME,
                projections::analytics::NAME,
            ]
            .contains(&p.name())
        })
        .collect()
}
