//! `herald bench append`: the event store's append path against plain SQL
//! INSERTs of the same rows, at the same concurrency and batch size.

use std::time::Instant;

use hdrhistogram::Histogram;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use super::ScratchDatabase;
use super::report::{latency_histogram, millis, peak_rss_mib, record};
use crate::eventstore::{EventStore, ExpectedVersion, NewEvent, StreamAppend};

#[derive(Debug, clap::Args)]
pub struct AppendArgs {
    /// Concurrent writers (each with its own connection).
    #[arg(long, default_value_t = 8)]
    writers: usize,
    /// Events per append.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Events each side appends per round [default: 30,000 × min(batch, 8),
    /// a few seconds per round either way].
    #[arg(long)]
    events: Option<usize>,
    /// Rounds, alternating baseline and event store; throughput is the median.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Size of each event's payload.
    #[arg(long, default_value_t = 200)]
    payload_bytes: usize,
}

/// Streams each writer rotates through, so appends hit a realistic index.
const STREAMS_PER_WRITER: usize = 16;

#[derive(Clone, Copy)]
enum Side {
    Raw,
    Herald,
}

struct Figures {
    events_per_second: Vec<f64>,
    latency: Histogram<u64>,
}

impl Figures {
    fn new() -> Figures {
        Figures {
            events_per_second: Vec::new(),
            latency: latency_histogram(),
        }
    }

    fn median_rate(&self) -> f64 {
        let mut rates = self.events_per_second.clone();
        rates.sort_by(f64::total_cmp);
        rates[rates.len() / 2]
    }
}

pub async fn run(scratch: &ScratchDatabase, args: AppendArgs) -> anyhow::Result<()> {
    let events = args.events.unwrap_or(30_000 * args.batch.clamp(1, 8));
    anyhow::ensure!(
        args.writers > 0 && args.batch > 0 && events > 0 && args.rounds > 0,
        "--writers, --batch, --events and --rounds must be at least 1"
    );
    let pool = scratch.pool(args.writers as u32 + 2).await?;
    sqlx::query("CREATE TABLE raw_events (LIKE events INCLUDING ALL)")
        .execute(&pool)
        .await?;
    let store = EventStore::new(pool.clone());
    let raw_insert = raw_insert_sql(args.batch);

    println!(
        "herald bench append: writers={} batch={} events={} per side per round, rounds={}, payload={} B",
        args.writers, args.batch, events, args.rounds, args.payload_bytes
    );
    let mut raw = Figures::new();
    let mut herald = Figures::new();
    for round in 0..args.rounds {
        for side in [Side::Raw, Side::Herald] {
            let started = Instant::now();
            let writers: Vec<_> = (0..args.writers)
                .map(|writer| {
                    let job = Writer {
                        pool: pool.clone(),
                        store: store.clone(),
                        raw_insert: raw_insert.clone(),
                        prefix: format!("bench-{round}-{writer}"),
                        appends: events.div_ceil(args.batch).div_ceil(args.writers),
                        batch: args.batch,
                        padding: "x".repeat(args.payload_bytes),
                    };
                    tokio::spawn(job.run(side))
                })
                .collect();
            let mut appended = 0;
            let figures = match side {
                Side::Raw => &mut raw,
                Side::Herald => &mut herald,
            };
            for writer in writers {
                let (events, latency) = writer.await??;
                appended += events;
                figures.latency.add(&latency)?;
            }
            let rate = appended as f64 / started.elapsed().as_secs_f64();
            figures.events_per_second.push(rate);
            let label = match side {
                Side::Raw => "raw INSERT",
                Side::Herald => "event store",
            };
            println!("round {}: {label:<12} {rate:>10.0} ev/s", round + 1);
        }
    }

    println!();
    println!("{:<12} {:>10} {:>9} {:>9}", "", "ev/s", "p50 ms", "p99 ms");
    for (label, figures) in [("raw INSERT", &raw), ("event store", &herald)] {
        println!(
            "{label:<12} {:>10.0} {:>9.2} {:>9.2}",
            figures.median_rate(),
            millis(&figures.latency, 0.50),
            millis(&figures.latency, 0.99)
        );
    }
    if let Some(rss) = peak_rss_mib() {
        println!("peak RSS of the benchmark process: {rss:.0} MiB");
    }
    let (herald_rate, raw_rate) = (herald.median_rate(), raw.median_rate());
    println!(
        "append batch={} writers={}: herald {herald_rate:.0} ev/s, raw {raw_rate:.0} ev/s, ratio {:.2}",
        args.batch,
        args.writers,
        herald_rate / raw_rate
    );
    drop(store);
    pool.close().await;
    Ok(())
}

fn raw_insert_sql(batch: usize) -> String {
    let rows: Vec<String> = (0..batch)
        .map(|row| {
            let p: Vec<String> = (1..=8)
                .map(|column| format!("${}", row * 8 + column))
                .collect();
            format!("({})", p.join(", "))
        })
        .collect();
    format!(
        "INSERT INTO raw_events (stream_id, stream_version, event_id, event_type, schema_version, tenant_id, payload, metadata) VALUES {}",
        rows.join(", ")
    )
}

struct Writer {
    pool: PgPool,
    store: EventStore,
    raw_insert: String,
    prefix: String,
    appends: usize,
    batch: usize,
    padding: String,
}

impl Writer {
    async fn run(self, side: Side) -> anyhow::Result<(usize, Histogram<u64>)> {
        let mut latency = latency_histogram();
        let mut versions = [0i64; STREAMS_PER_WRITER];
        for append in 0..self.appends {
            let slot = append % STREAMS_PER_WRITER;
            let stream_id = format!("{}-{slot}", self.prefix);
            let events: Vec<NewEvent> = (0..self.batch).map(|_| self.event()).collect();
            let started = Instant::now();
            match side {
                Side::Herald => {
                    self.store
                        .append(&[StreamAppend {
                            stream_id,
                            expected: ExpectedVersion::Exact(versions[slot]),
                            events,
                        }])
                        .await?;
                }
                Side::Raw => {
                    let mut query = sqlx::query(sqlx::AssertSqlSafe(self.raw_insert.clone()));
                    for (offset, event) in events.into_iter().enumerate() {
                        query = query
                            .bind(stream_id.clone())
                            .bind((versions[slot] + offset as i64 + 1) as i32)
                            .bind(event.event_id)
                            .bind(event.event_type)
                            .bind(event.schema_version)
                            .bind(event.tenant_id)
                            .bind(event.payload)
                            .bind(event.metadata);
                    }
                    query.execute(&self.pool).await?;
                }
            }
            record(&mut latency, started.elapsed());
            versions[slot] += self.batch as i64;
        }
        Ok((self.appends * self.batch, latency))
    }

    fn event(&self) -> NewEvent {
        let id = Uuid::now_v7();
        NewEvent {
            event_id: id,
            event_type: "NotificationRequested".into(),
            schema_version: 1,
            tenant_id: "bench".into(),
            payload: json!({ "notification_id": id, "channel": "email", "priority": "NORMAL", "body": self.padding }),
            metadata: json!({ "correlation_id": id, "actor": "bench" }),
        }
    }
}
