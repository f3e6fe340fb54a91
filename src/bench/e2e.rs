//! `herald bench e2e`: notifications through the whole service. A `herald
//! serve` child process (API, workers and projections) takes sends over
//! GraphQL at a fixed rate and delivers them as signed webhooks to a sink
//! this command runs; the figures are accepted/s, delivered/s, the latency
//! from accept to the sink's receipt with its stages as the log recorded
//! them, and the service's peak RSS.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use super::ScratchDatabase;
use super::report::{latency_histogram, millis, record};
use super::service::Service;
use crate::commands::webhook_endpoints;
use crate::commands::{Actor, tenants};
use crate::domain::webhook_endpoint::CreateWebhookEndpoint;
use crate::eventstore::EventStore;

#[derive(Debug, clap::Args)]
pub struct E2eArgs {
    /// Notifications offered per second (open loop).
    #[arg(long, default_value_t = 1_000)]
    rate: u32,
    /// Notifications in all.
    #[arg(long, default_value_t = 20_000)]
    count: usize,
    /// Notifications per GraphQL request (`sendNotifications` when above 1).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Requests in flight at most.
    #[arg(long, default_value_t = 128)]
    clients: usize,
    /// The roles of the service process (projections may run elsewhere).
    #[arg(long, default_value = "api,workers,projections")]
    roles: String,
}

const SEND_ONE: &str = "mutation($input: SendNotificationInput!) { sendNotification(input: $input) { notification { id } } }";
const SEND_MANY: &str = "mutation($inputs: [SendNotificationInput!]!) { sendNotifications(inputs: $inputs) { notification { id } error { code } } }";

/// When each notification was accepted and when the sink received it.
#[derive(Default)]
struct Timeline {
    accepted: HashMap<String, Instant>,
    received: HashMap<String, Instant>,
    duplicates: usize,
}

pub async fn run(scratch: &ScratchDatabase, args: E2eArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.rate > 0 && args.count > 0 && args.clients > 0 && (1..=1000).contains(&args.batch),
        "rate, count and clients must be at least 1, batch between 1 and 1000"
    );
    let timeline = Arc::new(Mutex::new(Timeline::default()));
    let sink = start_sink(timeline.clone()).await?;

    // The tenant and its registered endpoint, written straight to the database.
    let pool = scratch.pool(4).await?;
    let store = EventStore::new(pool.clone());
    let actor = Actor::new("bench");
    let tenant = tenants::create_tenant(&store, "bench", &actor).await?;
    let sink_url = format!("http://{sink}/hook");
    webhook_endpoints::create(
        &store,
        &tenant.tenant_id,
        CreateWebhookEndpoint {
            url: sink_url.clone(),
            description: Some("herald bench e2e sink".into()),
            // The messages themselves are what is measured; status
            // callbacks go out only for dead letters, which should not occur.
            event_types: vec!["NotificationDeadLettered".into()],
        },
        &crate::egress::Egress::new(&crate::egress::EgressConfig {
            allow: vec![crate::egress::AllowRule::Socket(sink)],
        }),
        &actor,
    )
    .await
    .map_err(|e| anyhow::anyhow!("registering the sink: {e:?}"))?;
    drop(store);
    pool.close().await;

    let service = Service::start(scratch, &args.roles).await?;
    println!(
        "herald bench e2e: {} notifications at {}/s, {} per request, to a webhook sink; service pid {}",
        args.count, args.rate, args.batch, service.pid
    );
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients)
        .build()?;
    let endpoint = format!("http://{}/graphql", service.address);
    let key = tenant.api_key.clone();

    let requests = args.count.div_ceil(args.batch);
    let interval = Duration::from_secs_f64(args.batch as f64 / f64::from(args.rate));
    let slots = Arc::new(Semaphore::new(args.clients));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let errors = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for request in 0..requests {
        let due = started + interval.mul_f64(request as f64);
        tokio::time::sleep_until(due.into()).await;
        let permit = slots.clone().acquire_owned().await?;
        let first = request * args.batch;
        let size = args.batch.min(args.count - first);
        let (client, endpoint, key, timeline, errors) = (
            client.clone(),
            endpoint.clone(),
            key.clone(),
            timeline.clone(),
            errors.clone(),
        );
        let url = sink_url.clone();
        tasks.spawn(async move {
            let _permit = permit;
            match send(&client, &endpoint, &key, &url, first, size).await {
                Ok(ids) => {
                    let at = Instant::now();
                    let mut timeline = timeline.lock().unwrap_or_else(|e| e.into_inner());
                    for id in ids {
                        timeline.accepted.insert(id, at);
                    }
                }
                Err(error) => {
                    if errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0 {
                        eprintln!("a send failed: {error:#}");
                    }
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let sent_for = started.elapsed();
    let accepted = timeline
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .accepted
        .len();

    // Wait for the sink to hear of everything accepted.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let received = {
            let timeline = timeline.lock().unwrap_or_else(|e| e.into_inner());
            timeline
                .accepted
                .keys()
                .filter(|id| timeline.received.contains_key(*id))
                .count()
        };
        if received >= accepted || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let peak_rss = service.peak_rss_mib();
    service.stop().await;
    let stages = stages(scratch).await?;

    let timeline = timeline.lock().unwrap_or_else(|e| e.into_inner());
    let mut latency: Histogram<u64> = latency_histogram();
    let mut last_receipt = started;
    let mut delivered = 0;
    for (id, accepted_at) in &timeline.accepted {
        if let Some(received_at) = timeline.received.get(id) {
            delivered += 1;
            last_receipt = last_receipt.max(*received_at);
            record(
                &mut latency,
                received_at.saturating_duration_since(*accepted_at),
            );
        }
    }
    let delivered_for = last_receipt.duration_since(started);
    println!();
    println!("offered        {:>9}/s", args.rate);
    println!(
        "accepted       {:>9.0}/s  ({accepted} in {:.2} s, {} failed requests)",
        accepted as f64 / sent_for.as_secs_f64(),
        sent_for.as_secs_f64(),
        errors.load(std::sync::atomic::Ordering::Relaxed)
    );
    println!(
        "delivered      {:>9.0}/s  ({delivered} of {accepted} by {:.2} s, {} duplicates)",
        delivered as f64 / delivered_for.as_secs_f64(),
        delivered_for.as_secs_f64(),
        timeline.duplicates
    );
    println!(
        "accept→receipt p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        millis(&latency, 0.50),
        millis(&latency, 0.99),
        latency.max() as f64 / 1000.0
    );
    for (stage, p50, p99) in &stages {
        println!("  {stage:<22} p50 {p50:.2} ms  p99 {p99:.2} ms");
    }
    match peak_rss {
        Some(rss) => println!("service peak RSS {rss:.0} MiB"),
        None => println!("service peak RSS unknown (no /proc)"),
    }
    println!(
        "e2e rate={} batch={}: accepted {:.0}/s, delivered {:.0}/s, p50 {:.2} ms, p99 {:.2} ms",
        args.rate,
        args.batch,
        accepted as f64 / sent_for.as_secs_f64(),
        delivered as f64 / delivered_for.as_secs_f64(),
        millis(&latency, 0.50),
        millis(&latency, 0.99)
    );
    anyhow::ensure!(
        delivered == accepted,
        "{} accepted notifications never reached the sink",
        accepted - delivered
    );
    Ok(())
}

/// Where the time went, by the log's clock (each event's transaction start,
/// so events appended together show 0 between them): waiting for the
/// ranker, then for a dispatcher's claim and permits, then the provider call
/// and the append of its outcome.
async fn stages(scratch: &ScratchDatabase) -> anyhow::Result<Vec<(String, f64, f64)>> {
    let pool = scratch.pool(1).await?;
    let stages = sqlx::query_as(
        "WITH life AS ( \
             SELECT min(recorded_at) FILTER (WHERE event_type = 'NotificationRequested') AS requested, \
                    min(recorded_at) FILTER (WHERE event_type = 'NotificationRanked') AS ranked, \
                    min(recorded_at) FILTER (WHERE event_type = 'DeliveryAttempted') AS attempted, \
                    min(recorded_at) FILTER (WHERE event_type = 'NotificationSent') AS sent \
             FROM events WHERE stream_id LIKE 'notification-%' GROUP BY stream_id), \
         spans AS ( \
             SELECT n, stage, (extract(epoch FROM took) * 1000)::float8 AS ms FROM life, LATERAL (VALUES \
                 (1, 'requested → ranked', ranked - requested), \
                 (2, 'ranked → attempted', attempted - ranked), \
                 (3, 'attempted → sent', sent - attempted)) AS span (n, stage, took) \
             WHERE took IS NOT NULL) \
         SELECT stage, percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::float8, \
                percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::float8 \
         FROM spans GROUP BY stage ORDER BY min(n)",
    )
    .fetch_all(&pool)
    .await?;
    pool.close().await;
    Ok(stages)
}

async fn send(
    client: &reqwest::Client,
    endpoint: &str,
    key: &str,
    url: &str,
    first: usize,
    size: usize,
) -> anyhow::Result<Vec<String>> {
    let input = |n: usize| {
        json!({
            "recipient": { "id": format!("user-{n}"), "webhookUrl": url },
            "channels": ["WEBHOOK"],
            "content": { "title": "Build finished", "text": format!("build {n} passed") },
        })
    };
    let body = if size == 1 {
        json!({ "query": SEND_ONE, "variables": { "input": input(first) } })
    } else {
        let inputs: Vec<Value> = (first..first + size).map(input).collect();
        json!({ "query": SEND_MANY, "variables": { "inputs": inputs } })
    };
    let answer: Value = client
        .post(endpoint)
        .bearer_auth(key)
        .json(&body)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    if let Some(errors) = answer.get("errors") {
        anyhow::bail!("GraphQL errors: {errors}");
    }
    let ids = if size == 1 {
        vec![
            answer["data"]["sendNotification"]["notification"]["id"]
                .as_str()
                .context("no id")?
                .to_string(),
        ]
    } else {
        answer["data"]["sendNotifications"]
            .as_array()
            .context("no results")?
            .iter()
            .filter_map(|item| item["notification"]["id"].as_str().map(str::to_string))
            .collect()
    };
    Ok(ids)
}

/// The webhook sink: records when each notification id first arrives.
async fn start_sink(timeline: Arc<Mutex<Timeline>>) -> anyhow::Result<std::net::SocketAddr> {
    async fn receive(
        State(timeline): State<Arc<Mutex<Timeline>>>,
        headers: HeaderMap,
    ) -> StatusCode {
        let at = Instant::now();
        let Some(id) = headers.get("webhook-id").and_then(|v| v.to_str().ok()) else {
            return StatusCode::BAD_REQUEST;
        };
        let mut timeline = timeline.lock().unwrap_or_else(|e| e.into_inner());
        if timeline.received.insert(id.to_string(), at).is_some() {
            timeline.duplicates += 1;
        }
        StatusCode::NO_CONTENT
    }
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(timeline);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(address)
}
