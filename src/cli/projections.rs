//! `herald projections ...`: where each projection stands, and what to do
//! about a failed one. Output is JSON on stdout, like the other admin commands.

use serde_json::json;

use crate::config::Config;
use crate::eventstore::EventStore;
use crate::projections::{self, checkpoints, rebuild};

#[derive(Debug, clap::Subcommand)]
pub enum ProjectionsCommand {
    /// Every projection: version, state (the checkpoint row's) and activity
    /// (running, standby, rebuilding, failed or retired, across processes),
    /// checkpoint, lag (events and seconds), failed position, error and the
    /// failing event's tenant, rebuild progress; as the GraphQL `projections`.
    List,
    /// Run a failed projection again from the event it failed on.
    Retry { name: String },
    /// Step a failed projection over the one event it failed on; the skip is
    /// recorded in the log (stream projection-NAME).
    Skip {
        name: String,
        /// The failed event's global position, as `list` shows it.
        #[arg(long)]
        position: i64,
        #[arg(long)]
        reason: String,
    },
    /// Fill the projection's tables again from the start of the log beside the
    /// serving ones, then swap them in; progress goes to stderr.
    Rebuild { name: String },
}

pub async fn run(config: &Config, command: ProjectionsCommand) -> anyhow::Result<()> {
    super::with_store(
        config,
        |store| async move { execute(&store, command).await },
    )
    .await
}

async fn execute(store: &EventStore, command: ProjectionsCommand) -> anyhow::Result<()> {
    let output = match command {
        ProjectionsCommand::List => {
            json!(checkpoints::statuses(store.pool(), &projections::all()).await?)
        }
        ProjectionsCommand::Retry { name } => {
            let cleared = checkpoints::retry(store.pool(), &name).await?;
            if cleared == 0 {
                anyhow::bail!("projection {name} is not failed");
            }
            json!({ "retried": name })
        }
        ProjectionsCommand::Skip {
            name,
            position,
            reason,
        } => {
            let recorded = checkpoints::skip(store, &name, position, &reason, "cli").await?;
            json!({ "skipped": position, "projection": name, "recorded_at_position": recorded })
        }
        ProjectionsCommand::Rebuild { name } => {
            let all = projections::all();
            let Some(projection) = all.iter().find(|p| p.name() == name) else {
                anyhow::bail!(
                    "no projection {name}; known: {}",
                    all.iter().map(|p| p.name()).collect::<Vec<_>>().join(", ")
                );
            };
            let mut last_report = std::time::Instant::now();
            let done = rebuild::rebuild(store, projection.as_ref(), |progress| {
                if progress.swapped || last_report.elapsed() >= std::time::Duration::from_secs(1) {
                    last_report = std::time::Instant::now();
                    eprintln!(
                        "{name}: {}/{} events, {:.0} events/s, {}",
                        progress.events,
                        progress.total,
                        progress.events_per_second(),
                        match (progress.swapped, progress.eta()) {
                            (true, _) => "swapped in".to_string(),
                            (false, Some(eta)) => format!("ETA {:.0}s", eta.as_secs_f64()),
                            (false, None) => "ETA unknown".to_string(),
                        }
                    );
                }
            })
            .await?;
            json!({
                "rebuilt": name,
                "events": done.events,
                "seconds": done.elapsed.as_secs_f64(),
            })
        }
    };
    println!("{}", serde_json::to_string_pretty(&output)?);
    Ok(())
}
