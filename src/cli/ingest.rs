//! `herald ingest FILE.ndjson --tenant TENANT`: a file of a source's events into
//! the log, one event per line, by the same engine as `POST /api/events/bulk`.
//! Progress goes to stderr every second; the summary is JSON on stdout.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::io::AsyncBufRead;

use crate::commands::Actor;
use crate::commands::ingest::{self, Progress};
use crate::config::Config;
use crate::domain::values::TenantId;
use crate::eventstore::EventStore;

#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// NDJSON, one event per line (`-` reads standard input); the fields are
    /// those of the JSON Schema at GET /schemas/event.json.
    pub file: PathBuf,
    /// The tenant the events belong to.
    #[arg(long)]
    pub tenant: String,
}

pub async fn run(config: &Config, args: IngestArgs) -> anyhow::Result<()> {
    let tenant = super::tenant_arg(&args.tenant)?;
    let input = super::open_input(&args.file).await?;
    super::with_store(config, |store| async move {
        execute(&store, &tenant, input).await
    })
    .await
}

async fn execute(
    store: &EventStore,
    tenant: &TenantId,
    input: Box<dyn AsyncBufRead + Unpin + Send>,
) -> anyhow::Result<()> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tenants WHERE tenant_id = $1)")
            .bind(tenant.as_str())
            .fetch_one(store.pool())
            .await?;
    if !exists {
        anyhow::bail!("--tenant: no tenant {tenant} (see `herald tenants list`)");
    }
    let progress = Arc::new(Progress::default());
    let reporter = tokio::spawn(report_every_second(progress.clone()));
    let result = ingest::ingest_ndjson(store, tenant, input, &Actor::new("cli"), &progress).await;
    reporter.abort();
    eprintln!("{}", progress_line(&progress, None));
    match result {
        Ok(summary) => {
            println!("{}", serde_json::to_string_pretty(&summary)?);
            Ok(())
        }
        Err(failed) => {
            println!("{}", serde_json::to_string_pretty(&failed.committed)?);
            Err(anyhow::anyhow!(failed.cause)
                .context("ingest stopped; the summary above counts what was stored"))
        }
    }
}

async fn report_every_second(progress: Arc<Progress>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last = (Instant::now(), 0u64);
    loop {
        tick.tick().await;
        let lines = progress.lines.load(Ordering::Relaxed);
        let per_second = (lines - last.1) as f64 / last.0.elapsed().as_secs_f64();
        last = (Instant::now(), lines);
        eprintln!("{}", progress_line(&progress, Some(per_second)));
    }
}

fn progress_line(progress: &Progress, per_second: Option<f64>) -> String {
    let rate = per_second
        .map(|rate| format!(", {rate:.0} lines/s"))
        .unwrap_or_default();
    format!(
        "ingest: {} lines read, {} accepted, {} duplicates, {} rejected{rate}",
        progress.lines.load(Ordering::Relaxed),
        progress.accepted.load(Ordering::Relaxed),
        progress.duplicates.load(Ordering::Relaxed),
        progress.rejected.load(Ordering::Relaxed),
    )
}
