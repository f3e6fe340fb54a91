//! Workers as separate `herald serve --roles workers` processes: SIGKILL one
//! mid-load and restart it, and nothing accepted is lost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use serde_json::json;

use herald::commands::{Actor, notifications, tenants};
use herald::domain::SendNotification;
use herald::eventstore::EventStore;

use sqlx::ConnectOptions;

use crate::support::{eventually, fresh_database};

/// An ntfy-compatible sink that counts every publish per notification id.
#[derive(Clone, Default)]
struct Sink {
    received: Arc<Mutex<HashMap<String, u32>>>,
    times: Arc<Mutex<Vec<std::time::Instant>>>,
}

impl Sink {
    async fn start(self, pause: Duration) -> u16 {
        async fn publish(
            State((sink, pause)): State<(Sink, Duration)>,
            headers: HeaderMap,
        ) -> axum::Json<serde_json::Value> {
            // A provider that takes a while, so a kill lands mid-call.
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            let id = headers
                .get("x-herald-notification-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("missing")
                .to_string();
            *sink.received.lock().unwrap().entry(id.clone()).or_default() += 1;
            sink.times.lock().unwrap().push(std::time::Instant::now());
            axum::Json(json!({ "id": id, "event": "message" }))
        }
        let app = axum::Router::new()
            .route("/{topic}", axum::routing::post(publish))
            .with_state((self, pause));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        port
    }

    fn totals(&self) -> (usize, u32) {
        let received = self.received.lock().unwrap();
        (received.len(), received.values().sum())
    }
}

/// Writes a config file routing ntfy to the sink and returns its path.
fn config_file(dir: &std::path::Path, sink_port: u16, extra: &str) -> std::path::PathBuf {
    let path = dir.join("herald.toml");
    std::fs::write(
        &path,
        format!(
            "log_filter = \"warn\"\n\
             [providers.sink]\nkind = \"ntfy\"\nserver_url = \"http://127.0.0.1:{sink_port}\"\n\
             [routing.channels]\nntfy = [\"sink\"]\n\
             [delivery]\nlease_seconds = 2\nprovider_concurrency = 16\n{extra}"
        ),
    )
    .unwrap();
    path
}

pub fn workers_process(database_url: &str, config: &std::path::Path) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--roles", "workers"])
        .env("DATABASE_URL", database_url)
        .env("HERALD_CONFIG", config)
        .kill_on_drop(true)
        .spawn()
        .expect("herald starts")
}

async fn send_many(store: &EventStore, count: usize) -> herald::domain::values::TenantId {
    let tenant = tenants::create_tenant(store, "Crash", &Actor::new("test"))
        .await
        .unwrap()
        .tenant_id;
    for n in 0..count {
        let input: SendNotification = serde_json::from_value(json!({
            "recipient": { "ntfy_topic": "alerts" },
            "channels": ["ntfy"],
            "content": { "title": "Disk full", "text": format!("message {n}") },
        }))
        .unwrap();
        notifications::send(
            store,
            &tenant,
            input,
            &notifications::SendPolicy::unlimited(Duration::from_secs(3600)),
            &Actor::new("test"),
        )
        .await
        .unwrap();
    }
    tenant
}

async fn sent_count(store: &EventStore) -> i64 {
    sqlx::query_scalar(
        "SELECT count(DISTINCT stream_id) FROM events WHERE event_type = 'NotificationSent'",
    )
    .fetch_one(store.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn a_worker_killed_mid_load_loses_nothing_after_restart() {
    const COUNT: usize = 1_500;
    let db = fresh_database().await;
    let store = EventStore::new(db.pool.clone());
    send_many(&store, COUNT).await;
    let sink = Sink::default();
    let port = sink.clone().start(Duration::from_millis(20)).await;
    let dir = tempfile_dir();
    let config = config_file(&dir, port, "");
    let url = db.options.to_url_lossy().to_string();

    let mut worker = workers_process(&url, &config);
    eventually(Duration::from_secs(60), async || match sink.totals().0 {
        received if received >= COUNT / 5 => Ok(()),
        received => Err(format!("the worker has sent {received} of {}", COUNT / 5)),
    })
    .await;
    worker.start_kill().unwrap();
    worker.wait().await.unwrap();
    let at_kill = sink.totals().0;
    assert!(
        at_kill < COUNT,
        "the load finished before the kill; make it longer"
    );

    let mut restarted = workers_process(&url, &config);
    eventually(Duration::from_secs(120), async || {
        match sent_count(&store).await {
            sent if sent >= COUNT as i64 => Ok(()),
            sent => Err(format!("{sent} of {COUNT} sent after the restart")),
        }
    })
    .await;
    let (unique, total) = sink.totals();
    eprintln!(
        "SIGKILL after {at_kill} of {COUNT} received: all {COUNT} sent after the restart; \
         {} duplicate deliveries (at least once, each carrying its notification id)",
        total as usize - unique
    );
    assert_eq!(
        unique, COUNT,
        "every accepted notification reached the receiver"
    );
    let unfinished: i64 = sqlx::query_scalar("SELECT count(*) FROM delivery_queue")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(unfinished, 0, "the queue is empty once everything is sent");
    restarted.start_kill().unwrap();
    restarted.wait().await.unwrap();
    std::fs::remove_dir_all(dir).ok();
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("herald-crash-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn a_token_bucket_holds_across_two_worker_processes() {
    const COUNT: usize = 40;
    const RATE: f64 = 10.0;
    const BURST: f64 = 5.0;
    let db = fresh_database().await;
    let store = EventStore::new(db.pool.clone());
    let sink = Sink::default();
    let port = sink.clone().start(Duration::ZERO).await;
    let dir = tempfile_dir();
    let config = config_file(
        &dir,
        port,
        &format!("[limits.channel_rates]\nntfy = {{ per_second = {RATE}, burst = {BURST} }}\n"),
    );
    let url = db.options.to_url_lossy().to_string();
    let mut first = workers_process(&url, &config);
    let mut second = workers_process(&url, &config);
    // Both processes are up and idle before the load arrives: each
    // dispatcher has published its providers' health.
    eventually(Duration::from_secs(60), async || {
        let dispatchers: i64 =
            sqlx::query_scalar("SELECT count(DISTINCT worker_id) FROM provider_health")
                .fetch_one(store.pool())
                .await
                .unwrap();
        if dispatchers == 2 {
            Ok(())
        } else {
            Err(format!("{dispatchers} of 2 worker processes are up"))
        }
    })
    .await;
    let started = std::time::Instant::now();
    send_many(&store, COUNT).await;

    eventually(Duration::from_secs(60), async || {
        let (unique, total) = sink.totals();
        if unique >= COUNT {
            Ok(())
        } else {
            Err(format!("{unique} of {COUNT} arrived ({total} in all)"))
        }
    })
    .await;
    let times = sink.times.lock().unwrap().clone();
    let mut times: Vec<f64> = times.iter().map(|t| (*t - started).as_secs_f64()).collect();
    times.sort_by(f64::total_cmp);
    // By any moment t, at most burst + rate × t have gone out, whichever
    // process sent them (a little slack for the sink's own clock).
    for (n, at) in times.iter().enumerate() {
        let allowed = BURST + RATE * (at + 0.05);
        assert!(
            (n + 1) as f64 <= allowed.floor() + 1.0,
            "message {} at {at:.3} s, allowed {allowed:.1}: {times:?}",
            n + 1
        );
    }
    let took = times.last().copied().unwrap_or_default();
    let floor = (COUNT as f64 - BURST) / RATE;
    assert!(
        took >= floor - 0.2,
        "{COUNT} messages in {took:.2} s, faster than the bucket allows ({floor:.2} s)"
    );
    let throttled: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'NotificationScheduled' AND payload->>'reason' LIKE 'throttled:%'")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert!(
        throttled > 0,
        "throttling is recorded as NotificationScheduled events"
    );
    eprintln!(
        "two processes, bucket {RATE}/s burst {BURST}: {COUNT} messages in {took:.2} s (floor {floor:.2} s), {throttled} throttle decisions recorded"
    );
    first.start_kill().unwrap();
    second.start_kill().unwrap();
    first.wait().await.unwrap();
    second.wait().await.unwrap();
    std::fs::remove_dir_all(dir).ok();
}
