//! `herald bench subscribe`: many GraphQL subscribers over graphql-transport-ws
//! follow the log while events are appended; prints the latency from append
//! commit to a subscriber's receipt, and the process's peak RSS.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::report::{latency_histogram, millis, peak_rss_mib, record};
use super::{ApiUnderTest, ScratchDatabase};
use crate::eventstore::{EventStore, ExpectedVersion, NewEvent, StreamAppend};

#[derive(Debug, clap::Args)]
pub struct SubscribeArgs {
    /// Subscriptions in all.
    #[arg(long, default_value_t = 10_000)]
    subscribers: usize,
    /// WebSocket connections the subscriptions are spread over (graphql-transport-ws multiplexes).
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// Events appended per second while subscribed.
    #[arg(long, default_value_t = 5)]
    rate: u32,
    /// How long events are appended.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

/// When each position was committed, for the receivers to measure against.
type Commits = Arc<Mutex<HashMap<i64, Instant>>>;

pub async fn run(scratch: &ScratchDatabase, args: SubscribeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.subscribers > 0 && args.connections > 0 && args.rate > 0 && args.seconds > 0,
        "every figure must be at least 1"
    );
    let connections = args.connections.min(args.subscribers);
    let pool = scratch.pool(16).await?;
    let store = EventStore::new(pool.clone());
    let api = ApiUnderTest::start(&store, super::bench_api_rate()).await?;
    let url = format!("ws://{}/graphql/ws", api.address);
    let tenant = &api.tenant;

    println!(
        "herald bench subscribe: {} subscriptions over {} connections; {} events/s for {} s",
        args.subscribers, connections, args.rate, args.seconds
    );
    let commits: Commits = Arc::default();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(connections);
    let expected_events = args.rate as usize * args.seconds as usize;
    let mut clients = Vec::new();
    for c in 0..connections {
        let per = args.subscribers / connections + usize::from(c < args.subscribers % connections);
        clients.push(tokio::spawn(client(
            url.clone(),
            tenant.api_key.clone(),
            per,
            expected_events,
            commits.clone(),
            ready_tx.clone(),
        )));
    }
    drop(ready_tx);
    let subscribing = Instant::now();
    for _ in 0..connections {
        ready_rx
            .recv()
            .await
            .ok_or_else(|| anyhow::anyhow!("a client failed to subscribe"))?;
    }
    println!(
        "all {} subscriptions acknowledged in {:.1} s",
        args.subscribers,
        subscribing.elapsed().as_secs_f64()
    );
    // Subscriptions are registered with the hub when their first poll runs.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let started = tokio::time::Instant::now();
    for i in 0..expected_events {
        tokio::time::sleep_until(started + interval * i as u32).await;
        let positions = store
            .append(&[StreamAppend {
                stream_id: format!("bench-tick-{i}"),
                expected: ExpectedVersion::NoStream,
                events: vec![NewEvent {
                    event_id: uuid::Uuid::now_v7(),
                    event_type: "BenchTick".into(),
                    schema_version: 1,
                    tenant_id: tenant.tenant_id.to_string(),
                    payload: json!({ "i": i }),
                    metadata: json!({}),
                }],
            }])
            .await?;
        commits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(positions[0], Instant::now());
    }

    let mut latency = latency_histogram();
    let (mut received, mut lost) = (0usize, 0usize);
    for client in clients {
        let outcome = client.await??;
        latency.add(&outcome.latency)?;
        received += outcome.received;
        lost += outcome.missing;
    }
    drop(api);

    println!();
    println!(
        "deliveries: {received} of {} ({lost} missing)",
        expected_events * args.subscribers
    );
    println!(
        "commit -> receipt: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        millis(&latency, 0.50),
        millis(&latency, 0.99),
        latency.max() as f64 / 1000.0
    );
    if let Some(rss) = peak_rss_mib() {
        println!("peak RSS (service and clients in one process): {rss:.0} MiB");
    }
    println!(
        "subscribe subscribers={}: p50 {:.1} ms, p99 {:.1} ms",
        args.subscribers,
        millis(&latency, 0.50),
        millis(&latency, 0.99)
    );
    drop(store);
    pool.close().await;
    Ok(())
}

struct Outcome {
    latency: Histogram<u64>,
    received: usize,
    missing: usize,
}

/// One WebSocket connection carrying `subscriptions` subscriptions.
async fn client(
    url: String,
    api_key: String,
    subscriptions: usize,
    expected_events: usize,
    commits: Commits,
    ready: tokio::sync::mpsc::Sender<()>,
) -> anyhow::Result<Outcome> {
    let mut request = url.into_client_request()?;
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse()?);
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await?;
    socket
        .send(Message::text(
            json!({ "type": "connection_init", "payload": { "apiKey": api_key } }).to_string(),
        ))
        .await?;
    loop {
        let message = socket
            .next()
            .await
            .ok_or_else(|| anyhow::anyhow!("closed before ack"))??;
        if let Message::Text(text) = message {
            let message: Value = serde_json::from_str(&text)?;
            anyhow::ensure!(message["type"] == "connection_ack", "unexpected {message}");
            break;
        }
    }
    for id in 0..subscriptions {
        let subscribe = json!({
            "id": id.to_string(),
            "type": "subscribe",
            "payload": { "query": "subscription { events(types: [\"BenchTick\"]) { position } }" },
        });
        socket.send(Message::text(subscribe.to_string())).await?;
    }
    let _ = ready.send(()).await;
    let mut latency = latency_histogram();
    let mut received = 0usize;
    let wanted = subscriptions * expected_events;
    let deadline = tokio::time::Instant::now()
        + Duration::from_secs(60)
        + Duration::from_secs(expected_events as u64);
    while received < wanted {
        let message = match tokio::time::timeout_at(deadline, socket.next()).await {
            Ok(Some(message)) => message?,
            Ok(None) | Err(_) => break,
        };
        let at = Instant::now();
        let Message::Text(text) = message else {
            continue;
        };
        let message: Value = serde_json::from_str(&text)?;
        match message["type"].as_str() {
            Some("next") => {
                // A `Position` is a string of digits.
                let Some(position) = message["payload"]["data"]["events"]["position"]
                    .as_str()
                    .and_then(|digits| digits.parse::<i64>().ok())
                else {
                    anyhow::bail!("subscription error: {message}");
                };
                received += 1;
                // The commit time is recorded right after append returns, which
                // can be a moment after delivery: count that as no delay.
                let committed = loop {
                    if let Some(committed) = commits
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(&position)
                    {
                        break *committed;
                    }
                    tokio::task::yield_now().await;
                };
                record(&mut latency, at.saturating_duration_since(committed));
            }
            Some("error") => anyhow::bail!("subscription error: {message}"),
            _ => {}
        }
    }
    let _ = socket.close(None).await;
    Ok(Outcome {
        latency,
        received,
        missing: wanted - received,
    })
}
