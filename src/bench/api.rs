//! `herald bench api`: `sendNotification` throughput with concurrent clients,
//! and `notification(id)` latency at a fixed request rate, each beside raw SQL
//! doing the same insert or select on the same database in the same run.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use super::report::{latency_histogram, millis, peak_rss_mib, record};
use super::{ApiUnderTest, ScratchDatabase};
use crate::eventstore::EventStore;

#[derive(Debug, clap::Args)]
pub struct ApiArgs {
    /// Concurrent clients in the send phase.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Notifications each side sends.
    #[arg(long, default_value_t = 10_000)]
    sends: usize,
    /// Requests per second in the read phase.
    #[arg(long, default_value_t = 2_000)]
    rate: u32,
    /// Length of the read phase, per side.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Without the per-key request limiter (no bucket at all): the baseline
    /// for what the limiter costs. By default every request takes a token
    /// from a bucket too large to refuse any.
    #[arg(long)]
    no_rate_limit: bool,
}

const SEND: &str = "mutation($input: SendNotificationInput!) { sendNotification(input: $input) { notification { id } } }";
const READ: &str =
    "query($id: ID!) { notification(id: $id) { id status timeline { type position recordedAt } } }";

pub async fn run(scratch: &ScratchDatabase, args: ApiArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.clients > 0 && args.sends > 0 && args.rate > 0 && args.seconds > 0,
        "every figure must be at least 1"
    );
    let pool = scratch.pool(args.clients as u32 + 24).await?;
    let store = EventStore::new(pool.clone());
    let api = ApiUnderTest::start(
        &store,
        if args.no_rate_limit {
            None
        } else {
            super::bench_api_rate()
        },
    )
    .await?;
    let base = format!("http://{}/graphql", api.address);
    let tenant = &api.tenant;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let target = Target {
        client,
        base,
        key: tenant.api_key.clone(),
        pool: pool.clone(),
        tenant: tenant.tenant_id.to_string(),
    };

    println!(
        "herald bench api: {} sends per side with {} clients; reads at {}/s for {} s per side; \
         request limiter {}",
        args.sends,
        args.clients,
        args.rate,
        args.seconds,
        if args.no_rate_limit { "off" } else { "on" }
    );
    let (herald_send, ids) = send_phase(&target, &args, Side::Herald).await?;
    let (raw_send, raw_streams) = send_phase(&target, &args, Side::Raw).await?;
    let herald_read = read_phase(&target, &args, Side::Herald, &ids).await?;
    let raw_read = read_phase(&target, &args, Side::Raw, &raw_streams).await?;

    println!();
    println!("{:<22} {:>10} {:>9} {:>9}", "", "req/s", "p50 ms", "p99 ms");
    for (label, phase) in [
        ("send: GraphQL", &herald_send),
        ("send: raw SQL", &raw_send),
        ("read: GraphQL", &herald_read),
        ("read: raw SQL", &raw_read),
    ] {
        println!(
            "{label:<22} {:>10.0} {:>9.2} {:>9.2}{}",
            phase.rate,
            millis(&phase.latency, 0.50),
            millis(&phase.latency, 0.99),
            if phase.errors > 0 {
                format!("  ({} errors)", phase.errors)
            } else {
                String::new()
            }
        );
    }
    if let Some(rss) = peak_rss_mib() {
        println!("peak RSS (service and load generator in one process): {rss:.0} MiB");
    }
    println!(
        "api send clients={}: herald {:.0}/s, raw {:.0}/s, ratio {:.2}",
        args.clients,
        herald_send.rate,
        raw_send.rate,
        herald_send.rate / raw_send.rate
    );
    println!(
        "api read rate={}/s: herald p50 {:.2} ms p99 {:.2} ms, raw p50 {:.2} ms p99 {:.2} ms",
        args.rate,
        millis(&herald_read.latency, 0.50),
        millis(&herald_read.latency, 0.99),
        millis(&raw_read.latency, 0.50),
        millis(&raw_read.latency, 0.99)
    );
    drop(api);
    drop(store);
    pool.close().await;
    Ok(())
}

#[derive(Clone, Copy)]
enum Side {
    Herald,
    Raw,
}

#[derive(Clone)]
struct Target {
    client: reqwest::Client,
    base: String,
    key: String,
    pool: PgPool,
    tenant: String,
}

struct Phase {
    rate: f64,
    latency: Histogram<u64>,
    errors: usize,
}

fn send_input(n: usize) -> Value {
    json!({
        "recipient": { "id": format!("user-{n}"), "email": format!("user{n}@example.com") },
        "channels": ["EMAIL"],
        "content": { "title": "Your receipt", "text": "Thank you for your order." },
        "tags": ["bench"],
    })
}

impl Target {
    async fn graphql(&self, query: &str, variables: Value) -> anyhow::Result<Value> {
        let response: Value = self
            .client
            .post(&self.base)
            .bearer_auth(&self.key)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await?
            .json()
            .await?;
        anyhow::ensure!(
            response["errors"].is_null(),
            "GraphQL error: {}",
            response["errors"]
        );
        Ok(response)
    }

    /// The rows a send writes, without Herald: one event and one status row, one transaction.
    async fn raw_send(&self, n: usize) -> anyhow::Result<String> {
        let id = Uuid::now_v7();
        let stream = format!("raw-notification-{id}");
        let payload = json!({ "type": "NotificationRequested", "notification_id": id, "tenant_id": self.tenant, "request": send_input(n) });
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO events (stream_id, stream_version, event_id, event_type, schema_version, tenant_id, payload, metadata) \
             VALUES ($1, 1, $2, 'NotificationRequested', 1, $3, $4, '{}')",
        )
        .bind(&stream)
        .bind(Uuid::now_v7())
        .bind(&self.tenant)
        .bind(&payload)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO notification_status (notification_id, tenant_id, status, priority, channels, tags, created_at, updated_at, stream_version) \
             VALUES ($1, $2, 'REQUESTED', 'NORMAL', ARRAY['email'], ARRAY['bench'], now(), now(), 1)",
        )
        .bind(id)
        .bind(&self.tenant)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(stream)
    }

    async fn raw_read(&self, stream: &str) -> anyhow::Result<()> {
        let rows: Vec<(i64, String, Value)> =
            sqlx::query_as("SELECT global_position, event_type, payload FROM events WHERE stream_id = $1 ORDER BY stream_version")
                .bind(stream)
                .fetch_all(&self.pool)
                .await?;
        anyhow::ensure!(!rows.is_empty(), "no events for {stream}");
        Ok(())
    }
}

/// Closed loop: each client sends as soon as its last send returned.
async fn send_phase(
    target: &Target,
    args: &ApiArgs,
    side: Side,
) -> anyhow::Result<(Phase, Vec<String>)> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..args.clients {
        let next = next.clone();
        let sends = args.sends;
        let target = target.clone();
        clients.push(tokio::spawn(async move {
            let mut latency = latency_histogram();
            let mut ids = Vec::new();
            let mut errors = 0;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= sends {
                    break;
                }
                let at = Instant::now();
                let sent = match side {
                    Side::Herald => target
                        .graphql(SEND, json!({ "input": send_input(n) }))
                        .await
                        .map(|r| {
                            r["data"]["sendNotification"]["notification"]["id"]
                                .as_str()
                                .unwrap_or_default()
                                .to_string()
                        }),
                    Side::Raw => target.raw_send(n).await,
                };
                record(&mut latency, at.elapsed());
                match sent {
                    Ok(id) => ids.push(id),
                    Err(_) => errors += 1,
                }
            }
            (latency, ids, errors)
        }));
    }
    let mut phase = Phase {
        rate: 0.0,
        latency: latency_histogram(),
        errors: 0,
    };
    let mut ids = Vec::new();
    for client in clients {
        let (latency, client_ids, errors) = client.await?;
        phase.latency.add(&latency)?;
        ids.extend(client_ids);
        phase.errors += errors;
    }
    phase.rate = args.sends as f64 / started.elapsed().as_secs_f64();
    let label = match side {
        Side::Herald => "GraphQL sendNotification",
        Side::Raw => "raw SQL insert",
    };
    println!("send: {label:<26} {:>8.0}/s", phase.rate);
    Ok((phase, ids))
}

/// Open loop at a fixed rate; latency counts from when a request was due, so
/// a stall is not hidden by requests that were never sent.
async fn read_phase(
    target: &Target,
    args: &ApiArgs,
    side: Side,
    ids: &[String],
) -> anyhow::Result<Phase> {
    anyhow::ensure!(!ids.is_empty(), "nothing to read");
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let total = args.rate as usize * args.seconds as usize;
    let started = tokio::time::Instant::now();
    let mut requests = Vec::with_capacity(total);
    for i in 0..total {
        let due = started + interval * i as u32;
        tokio::time::sleep_until(due).await;
        let id = ids[i % ids.len()].clone();
        let target = target.clone();
        requests.push(tokio::spawn(async move {
            let result = match side {
                Side::Herald => target.graphql(READ, json!({ "id": id })).await.map(|_| ()),
                Side::Raw => target.raw_read(&id).await,
            };
            (due.elapsed(), result.is_ok())
        }));
    }
    let mut phase = Phase {
        rate: 0.0,
        latency: latency_histogram(),
        errors: 0,
    };
    for request in requests {
        let (latency, ok) = request.await?;
        record(&mut phase.latency, latency);
        if !ok {
            phase.errors += 1;
        }
    }
    phase.rate = total as f64 / started.elapsed().as_secs_f64();
    let label = match side {
        Side::Herald => "GraphQL notification(id)",
        Side::Raw => "raw SQL select",
    };
    println!(
        "read: {label:<26} {:>8.0}/s  p99 {:.2} ms",
        phase.rate,
        millis(&phase.latency, 0.99)
    );
    Ok(phase)
}
