//! `herald replay`: an event range to stdout as NDJSON, one event a line, in
//! log order: an entity within a time window (seed 001), or a position range.

use std::io::Write;

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::config::Config;
use crate::eventstore::{Checkpoint, RecordedEvent};
use crate::projections::entity_index::{self, MAX_REPLAY_PAGE, ReplayQuery};

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    #[arg(long)]
    tenant: String,
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
}

pub async fn run(config: &Config, args: ReplayArgs) -> anyhow::Result<()> {
    super::with_store(
        config,
        |store| async move { replay(store.pool(), args).await },
    )
    .await
}

async fn replay(pool: &sqlx::PgPool, args: ReplayArgs) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut written = 0usize;
    if let Some(range) = &args.positions {
        let (from, to) = range
            .split_once("..")
            .and_then(|(a, b)| Some((a.trim().parse::<i64>().ok()?, b.trim().parse::<i64>().ok()?)))
            .ok_or_else(|| anyhow::anyhow!("--positions takes A..B, e.g. 100..250"))?;
        for event in entity_index::by_positions(pool, &args.tenant, from, to, args.limit).await? {
            write_line(&mut out, &event, None)?;
            written += 1;
        }
    } else {
        let entity = args.entity.as_deref().unwrap_or_default();
        let (entity_type, entity_id) = entity
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("--entity takes TYPE:ID, e.g. order:o-42"))?;
        let mut query = ReplayQuery {
            tenant_id: args.tenant.clone(),
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
                write_line(&mut out, &replayed.event, Some(replayed.duplicate))?;
                written += 1;
            }
            match page.next {
                Some(next) => query.after = next,
                None => break,
            }
        }
    }
    out.flush()?;
    eprintln!("replayed {written} events");
    if written == args.limit {
        eprintln!("stopped at --limit {}; raise it to replay more", args.limit);
    }
    Ok(())
}

fn write_line(
    out: &mut impl Write,
    event: &RecordedEvent,
    duplicate: Option<bool>,
) -> anyhow::Result<()> {
    let line = json!({
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
    });
    serde_json::to_writer(&mut *out, &line)?;
    out.write_all(b"\n")?;
    Ok(())
}
