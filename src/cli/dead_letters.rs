//! `herald dead-letters ...`: inspect and replay a tenant's dead-letter queue
//! (the shell's `deadLetters` and `replayDeadLetter(s)`). Lists are NDJSON on
//! stdout; a replay prints how many notifications were requeued.

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::commands::notifications;
use crate::commands::{Actor, CommandError};
use crate::config::Config;
use crate::domain::values::{Channel, NotificationId, TenantId};
use crate::projections::dead_letters;

#[derive(Debug, clap::Subcommand)]
pub enum DeadLettersCommand {
    /// The tenant's dead letters, newest first, one JSON object per line.
    List {
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        filter: FilterArgs,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Sends dead letters through again with a fresh retry budget: one by
    /// `--id`, or every one the filter selects with `--all`.
    Replay {
        #[arg(long)]
        tenant: String,
        #[arg(long, conflicts_with = "all", required_unless_present = "all")]
        id: Option<String>,
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        filter: FilterArgs,
    },
}

#[derive(Debug, clap::Args)]
pub struct FilterArgs {
    /// Only notifications that asked for this channel (email, sms, push, webhook, ntfy, in_app).
    #[arg(long)]
    channel: Option<String>,
    /// Dead-lettered at or after (RFC 3339).
    #[arg(long)]
    since: Option<DateTime<Utc>>,
    /// Dead-lettered before (RFC 3339).
    #[arg(long)]
    until: Option<DateTime<Utc>>,
}

impl FilterArgs {
    fn parse(self) -> anyhow::Result<dead_letters::Filter> {
        let channel = self
            .channel
            .map(|c| Channel::parse(&c).map(|c| c.as_str().to_string()))
            .transpose()?;
        Ok(dead_letters::Filter {
            channel,
            since: self.since,
            until: self.until,
        })
    }
}

/// At most this many are listed or replayed per run.
const MAX_ROWS: usize = 100_000;

pub async fn run(config: &Config, command: DeadLettersCommand) -> anyhow::Result<()> {
    super::with_store(config, |store| async move {
        let actor = Actor::new("cli");
        match command {
            DeadLettersCommand::List {
                tenant,
                filter,
                limit,
            } => {
                let tenant = TenantId::parse(&tenant)?;
                let (rows, more) = dead_letters::page(
                    store.pool(),
                    tenant.as_str(),
                    &filter.parse()?,
                    limit.min(MAX_ROWS),
                    None,
                )
                .await?;
                for row in rows {
                    println!(
                        "{}",
                        json!({
                            "notification_id": row.notification_id,
                            "reason": row.reason,
                            "dead_lettered_at": row.dead_lettered_at,
                        })
                    );
                }
                if more {
                    eprintln!("more dead letters match; raise --limit or narrow the filter");
                }
            }
            DeadLettersCommand::Replay {
                tenant,
                id,
                all: _,
                filter,
            } => {
                let tenant = TenantId::parse(&tenant)?;
                let ids = match id {
                    Some(id) => vec![NotificationId::parse(&id)?],
                    None => {
                        let (rows, _) = dead_letters::page(
                            store.pool(),
                            tenant.as_str(),
                            &filter.parse()?,
                            MAX_ROWS,
                            None,
                        )
                        .await?;
                        rows.into_iter()
                            .map(|row| NotificationId::from(row.notification_id))
                            .collect()
                    }
                };
                let mut requeued = 0;
                for id in &ids {
                    match notifications::requeue(
                        &store,
                        &tenant,
                        id,
                        "replayed from the dead-letter queue",
                        &actor,
                    )
                    .await
                    {
                        Ok(_) => requeued += 1,
                        // Requeued since the list was read; nothing to do.
                        Err(CommandError::Domain(error)) => {
                            eprintln!("{id}: not replayed: {error}")
                        }
                        Err(CommandError::NotFound(_)) => {
                            anyhow::bail!("notification {id} does not exist for tenant {tenant}")
                        }
                        Err(error) => return Err(error.into()),
                    }
                }
                println!("{}", json!({ "requeued": requeued, "selected": ids.len() }));
            }
        }
        Ok(())
    })
    .await
}
