//! `herald campaigns import FILE --tenant T --template KEY ...`: creates a
//! campaign and imports a CSV file into it, read as a stream, by the same
//! engine as `POST /api/campaigns/{id}/recipients`. Progress (rows, rows/s,
//! bad rows) goes to stderr every second, in the style of `herald
//! projections rebuild`; the summary is JSON on stdout.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use crate::commands::Actor;
use crate::commands::campaigns::{self, ImportProgress};
use crate::config::Config;
use crate::domain::campaign::CreateCampaign;

#[derive(Debug, clap::Subcommand)]
pub enum CampaignsCommand {
    /// Create a campaign from a CSV file (header row; `-` reads standard input).
    Import(ImportArgs),
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    pub file: PathBuf,
    /// The tenant sending the campaign.
    #[arg(long)]
    pub tenant: String,
    /// Import into this existing campaign instead of creating one.
    #[arg(long)]
    pub campaign: Option<Uuid>,
    /// The template key (required unless --campaign is given).
    #[arg(long)]
    pub template: Option<String>,
    /// The template version (default: the latest published).
    #[arg(long)]
    pub template_version: Option<u32>,
    #[arg(long, default_value = "email")]
    pub channel: String,
    #[arg(long, default_value = "marketing")]
    pub category: String,
    /// The campaign's name (default: the file name).
    #[arg(long)]
    pub name: Option<String>,
    /// RFC 3339; default: as soon as the import is done.
    #[arg(long)]
    pub schedule_at: Option<DateTime<Utc>>,
    #[arg(long)]
    pub callback_url: Option<String>,
    /// The column holding the address.
    #[arg(long, default_value = "email")]
    pub address_column: String,
    /// Progress callback steps in percent, e.g. 25,50,75.
    #[arg(long, value_delimiter = ',')]
    pub progress_steps: Vec<i32>,
    #[arg(long)]
    pub batch_size: Option<u32>,
}

pub async fn run(config: &Config, command: CampaignsCommand) -> anyhow::Result<()> {
    match command {
        CampaignsCommand::Import(args) => import(config, args).await,
    }
}

async fn import(config: &Config, args: ImportArgs) -> anyhow::Result<()> {
    let tenant = super::tenant_arg(&args.tenant)?;
    let input = super::open_input(&args.file).await?;
    let herald_egress = crate::egress::Egress::new(&config.egress);
    super::with_store(config, |store| async move {
        let actor = Actor::new("cli");
        let (campaign_id, signing_secret) = match args.campaign {
            Some(id) => (id, None),
            None => {
                let template = args.template.clone().ok_or_else(|| {
                    anyhow::anyhow!("--template is required to create a campaign")
                })?;
                let name = args.name.clone().unwrap_or_else(|| {
                    args.file
                        .file_name()
                        .map(|n| n.to_string_lossy().to_string())
                        .unwrap_or_else(|| "campaign".into())
                });
                let created = campaigns::create(
                    &store,
                    &tenant,
                    CreateCampaign {
                        name,
                        template_key: template,
                        template_version: args.template_version,
                        channel: args.channel.clone(),
                        category: Some(args.category.clone()),
                        schedule_at: args.schedule_at,
                        callback_url: args.callback_url.clone(),
                        address_column: Some(args.address_column.clone()),
                        progress_steps: args.progress_steps.clone(),
                        batch_size: args.batch_size,
                    },
                    &herald_egress,
                    &actor,
                )
                .await
                .map_err(|error| anyhow::anyhow!("creating the campaign: {}", describe(error)))?;
                (created.campaign.campaign_id, created.signing_secret)
            }
        };
        let progress = Arc::new(ImportProgress::default());
        let reporter = tokio::spawn(report_every_second(progress.clone()));
        let started = Instant::now();
        let result = campaigns::import_csv(
            &store,
            &tenant,
            campaign_id,
            input,
            &args.file.display().to_string(),
            config.campaigns.max_import_bytes,
            &actor,
            &progress,
        )
        .await;
        reporter.abort();
        eprintln!("{}", progress_line(&progress, started.elapsed()));
        let summary = result.map_err(|error| anyhow::anyhow!("import: {}", describe(error)))?;
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "campaign_id": campaign_id,
                "signing_secret": signing_secret,
                "import": summary,
                "seconds": started.elapsed().as_secs_f64(),
            }))?
        );
        Ok(())
    })
    .await
}

fn describe(error: crate::commands::CommandError) -> String {
    match error {
        crate::commands::CommandError::Validation(errors) => errors.to_string(),
        other => other.to_string(),
    }
}

async fn report_every_second(progress: Arc<ImportProgress>) {
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        eprintln!("{}", progress_line(&progress, started.elapsed()));
    }
}

fn progress_line(progress: &ImportProgress, elapsed: Duration) -> String {
    let rows = progress.rows.load(Ordering::Relaxed);
    let rejected = progress.rejected.load(Ordering::Relaxed);
    let rate = rows as f64 / elapsed.as_secs_f64().max(0.001);
    format!("campaigns import: {rows} rows, {rate:.0} rows/s, {rejected} bad rows")
}
