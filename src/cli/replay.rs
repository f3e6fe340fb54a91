//! `herald replay`: an event range to stdout as NDJSON, one event a line, in
//! log order: an entity within a time window, or a position range.
//! With `--to-endpoint`, each line is POSTed instead to a registered webhook
//! endpoint, signed like a status callback, at a steady pace. With `--into`,
//! a position range is run through an idempotent projection's handler again.

use std::io::Write;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::time::Instant;
use uuid::Uuid;

use crate::commands::webhook_endpoints::{SigningTarget, signing_target};
use crate::config::Config;
use crate::egress::{Egress, EgressClient, SendError};
use crate::eventstore::{Checkpoint, RecordedEvent};
use crate::projections::entity_index::{self, MAX_REPLAY_PAGE, ReplayQuery};
use crate::projections::rebuild::{self, RebuildError};
use crate::signing::{CALLBACK, client, post_signed};

/// Retries of one event after a transient failure before the replay stops.
const MAX_RETRIES: u32 = 4;
/// The longest pause before a retry, whatever the endpoint's Retry-After says.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(60);
/// A call to the endpoint taking longer fails as transient.
const TIMEOUT_SECONDS: u64 = 10;
/// Events per transaction of `--into`.
const INTO_BATCH: usize = 500;

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Whose events; with --into, optional: only this tenant's events of the range.
    #[arg(long, required_unless_present = "into")]
    tenant: Option<String>,
    /// The entity, as TYPE:ID (e.g. order:o-42).
    #[arg(long, required_unless_present = "positions")]
    entity: Option<String>,
    /// Occurred at or after (RFC 3339).
    #[arg(long)]
    from: Option<DateTime<Utc>>,
    /// Occurred before (RFC 3339).
    #[arg(long)]
    to: Option<DateTime<Utc>>,
    /// Also the repeats of an event id already seen in the window.
    #[arg(long)]
    include_duplicates: bool,
    /// At most this many events, a guard against accidental broad replays.
    #[arg(long, default_value_t = 10_000)]
    limit: usize,
    /// A range of global positions, A..B (both included), instead of an entity.
    #[arg(long, conflicts_with_all = ["entity", "from", "to"])]
    positions: Option<String>,
    /// Send the events to this registered webhook endpoint of the tenant,
    /// signed, one POST each (webhook-id: the event id), instead of stdout.
    #[arg(long, value_name = "ID")]
    to_endpoint: Option<Uuid>,
    /// Events per second sent to --to-endpoint.
    #[arg(long, default_value_t = 10.0, requires = "to_endpoint")]
    rate: f64,
    /// Instead of printing, run the events of --positions A..B through this
    /// projection's handler again, 500 per transaction, to repair its tables
    /// in place: every event of the range it reads, of every tenant (of
    /// --tenant's only, when given); events an operator skipped stay
    /// skipped. Only idempotent projections (notification_status,
    /// dead_letters): others count twice and are rebuilt instead (herald
    /// projections rebuild NAME). An entity window selects ingested source
    /// events, which those projections do not read, so --into takes positions.
    #[arg(
        long,
        value_name = "PROJECTION",
        requires = "positions",
        conflicts_with_all = ["to_endpoint", "include_duplicates"]
    )]
    into: Option<String>,
}

pub async fn run(config: &Config, args: ReplayArgs) -> anyhow::Result<()> {
    // An endpoint is a tenant's URL: it is reached through the guarded client.
    let egress = Egress::new(&config.egress);
    super::with_store(config, |store| async move {
        replay(store.pool(), args, &egress).await
    })
    .await
}

async fn replay(pool: &sqlx::PgPool, args: ReplayArgs, egress: &Egress) -> anyhow::Result<()> {
    if let Some(name) = &args.into {
        return replay_into(pool, &args, name).await;
    }
    // Required by clap without --into.
    let tenant = args.tenant.as_deref().unwrap_or_default();
    let mut out = match args.to_endpoint {
        Some(endpoint_id) => Sink::Endpoint(Box::new(
            EndpointSink::open(pool, tenant, endpoint_id, args.rate, egress).await?,
        )),
        None => Sink::Stdout(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut written = 0usize;
    if let Some(range) = &args.positions {
        let (from, to) = positions(range)?;
        for event in entity_index::by_positions(pool, tenant, from, to, args.limit).await? {
            out.emit(&event, None).await?;
            written += 1;
        }
    } else {
        let entity = args.entity.as_deref().unwrap_or_default();
        let (entity_type, entity_id) = entity
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("--entity takes TYPE:ID, e.g. order:o-42"))?;
        let mut query = ReplayQuery {
            tenant_id: tenant.to_owned(),
            entity_type: entity_type.to_string(),
            entity_id: entity_id.to_string(),
            from: args.from,
            to: args.to,
            include_duplicates: args.include_duplicates,
            limit: MAX_REPLAY_PAGE.min(args.limit),
            after: Checkpoint::ORIGIN,
        };
        while written < args.limit {
            query.limit = MAX_REPLAY_PAGE.min(args.limit - written);
            let page = entity_index::replay(pool, &query).await?;
            for replayed in &page.events {
                out.emit(&replayed.event, Some(replayed.duplicate)).await?;
                written += 1;
            }
            match page.next {
                Some(next) => query.after = next,
                None => break,
            }
        }
    }
    match out {
        Sink::Stdout(mut out) => {
            out.flush()?;
            eprintln!("replayed {written} events");
        }
        Sink::Endpoint(sink) => eprintln!(
            "replayed {written} events to webhook endpoint {}",
            sink.endpoint_id
        ),
    }
    if written == args.limit {
        eprintln!("stopped at --limit {}; raise it to replay more", args.limit);
    }
    Ok(())
}

/// Where the replayed events go.
enum Sink<W> {
    Stdout(W),
    /// Boxed: it is much larger than a writer, and there is one per run.
    Endpoint(Box<EndpointSink>),
}

impl<W: Write> Sink<W> {
    async fn emit(&mut self, event: &RecordedEvent, duplicate: Option<bool>) -> anyhow::Result<()> {
        let line = line(event, duplicate);
        match self {
            Sink::Stdout(out) => {
                serde_json::to_writer(&mut *out, &line)?;
                out.write_all(b"\n")?;
                Ok(())
            }
            Sink::Endpoint(sink) => sink.send(event, &line).await,
        }
    }
}

/// A registered endpoint taking the replay at `rate` events a second.
struct EndpointSink {
    endpoint_id: Uuid,
    target: SigningTarget,
    client: EgressClient,
    interval: Duration,
    next_at: Instant,
    sent: usize,
    started: Instant,
    reported: Instant,
}

impl EndpointSink {
    async fn open(
        pool: &sqlx::PgPool,
        tenant: &str,
        endpoint_id: Uuid,
        rate: f64,
        egress: &Egress,
    ) -> anyhow::Result<EndpointSink> {
        anyhow::ensure!(
            rate.is_finite() && rate > 0.0,
            "--rate must be a positive number of events per second"
        );
        let target = signing_target(pool, tenant, endpoint_id)
            .await?
            .ok_or_else(|| {
                anyhow::anyhow!("{endpoint_id} is not a live webhook endpoint of tenant {tenant}")
            })?;
        let now = Instant::now();
        Ok(EndpointSink {
            endpoint_id,
            target,
            client: client(egress, TIMEOUT_SECONDS)?,
            interval: Duration::from_secs_f64(1.0 / rate),
            next_at: now,
            sent: 0,
            started: now,
            reported: now,
        })
    }

    /// Sends one event, paced; retries transient failures a few times and
    /// stops the replay on a permanent one.
    async fn send(&mut self, event: &RecordedEvent, line: &Value) -> anyhow::Result<()> {
        tokio::time::sleep_until(self.next_at).await;
        // Paced from the start of each send, so a slow endpoint only slows it.
        self.next_at = Instant::now() + self.interval;
        let body = line.to_string();
        let webhook_id = event.event_id.to_string();
        let mut retries = 0;
        loop {
            match post_signed(
                &self.client,
                &self.target.url,
                &self.target.secrets,
                &webhook_id,
                body.clone().into_bytes(),
                CALLBACK,
            )
            .await
            {
                Ok(()) => break,
                Err(SendError::Transient {
                    message,
                    retry_after,
                }) if retries < MAX_RETRIES => {
                    retries += 1;
                    let wait = retry_after
                        .unwrap_or(Duration::from_secs(1 << retries))
                        .min(MAX_RETRY_WAIT);
                    eprintln!(
                        "position {}: {message}; retry {retries} of {MAX_RETRIES} in {} s",
                        event.global_position,
                        wait.as_secs_f64()
                    );
                    tokio::time::sleep(wait).await;
                }
                Err(error) => anyhow::bail!(
                    "stopped at position {} (event {}) after {} events were sent: {error}",
                    event.global_position,
                    event.event_id,
                    self.sent
                ),
            }
        }
        self.sent += 1;
        if self.reported.elapsed() >= Duration::from_secs(1) {
            self.reported = Instant::now();
            eprintln!(
                "sent {} events ({:.1}/s)",
                self.sent,
                self.sent as f64 / self.started.elapsed().as_secs_f64()
            );
        }
        Ok(())
    }
}

fn line(event: &RecordedEvent, duplicate: Option<bool>) -> Value {
    json!({
        "position": event.global_position,
        "transaction_id": event.transaction_id,
        "stream_id": event.stream_id,
        "version": event.stream_version,
        "event_id": event.event_id,
        "type": event.event_type,
        "schema_version": event.schema_version,
        "tenant_id": event.tenant_id,
        "recorded_at": event.recorded_at,
        "duplicate": duplicate,
        "data": event.payload,
        "metadata": event.metadata,
    })
}

fn positions(range: &str) -> anyhow::Result<(i64, i64)> {
    range
        .split_once("..")
        .and_then(|(a, b)| Some((a.trim().parse::<i64>().ok()?, b.trim().parse::<i64>().ok()?)))
        .ok_or_else(|| anyhow::anyhow!("--positions takes A..B, e.g. 100..250"))
}

/// `--into`: the range through the projection's handler, a page per
/// transaction, beside its runner (the handler's guards make the second of
/// two writes a no-op); progress on stderr each second.
async fn replay_into(pool: &sqlx::PgPool, args: &ReplayArgs, name: &str) -> anyhow::Result<()> {
    let all = crate::projections::all();
    let Some(projection) = all.iter().find(|p| p.name() == name) else {
        anyhow::bail!(
            "no projection {name}; known: {}",
            all.iter().map(|p| p.name()).collect::<Vec<_>>().join(", ")
        );
    };
    if !projection.idempotent() {
        return Err(RebuildError::NotIdempotent(name.to_owned()).into());
    }
    let (from, to) = positions(args.positions.as_deref().unwrap_or_default())?;
    let skipped = rebuild::skipped(pool, name).await?;
    let mut filter = projection.filter();
    filter.tenant_id = args.tenant.clone();
    let (mut selected, mut applied) = (0usize, 0u64);
    let started = Instant::now();
    let mut reported = started;
    let mut after = Checkpoint::ORIGIN;
    while selected < args.limit {
        let page = INTO_BATCH.min(args.limit - selected);
        let events = rebuild::in_positions(pool, (from, to), &filter, after, page).await?;
        let Some(last) = events.last() else { break };
        after = last.checkpoint();
        applied += rebuild::reapply(pool, projection.as_ref(), &skipped, &events).await?;
        selected += events.len();
        if reported.elapsed() >= Duration::from_secs(1) {
            reported = Instant::now();
            eprintln!(
                "{name}: {selected} events re-run, at position {} of {from}..{to} ({:.0}/s)",
                after.global_position,
                selected as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    eprintln!(
        "re-ran {applied} events of {from}..{to} through {name} ({} skipped by an operator)",
        selected as u64 - applied
    );
    if selected == args.limit {
        eprintln!("stopped at --limit {}; raise it to re-run more", args.limit);
    }
    Ok(())
}
