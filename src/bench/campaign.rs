//! `herald bench campaign`: a CSV campaign through the whole service. A
//! `herald serve` child process (API, workers, projections) takes a
//! generated CSV on `POST /api/campaigns/{id}/recipients`, then releases and
//! sends every message through the console provider (a local sink: it logs
//! at info, which the service's `warn` filter drops). The figures are rows/s
//! imported, messages/s sent and the service's peak RSS.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use super::ScratchDatabase;
use super::service::Service;
use crate::commands::{Actor, tenants};
use crate::eventstore::EventStore;

#[derive(Debug, clap::Args)]
pub struct CampaignArgs {
    /// Recipient rows in the generated CSV.
    #[arg(long, default_value_t = 1_000_000)]
    rows: usize,
    /// Messages per batch.
    #[arg(long, default_value_t = 1_000)]
    batch_size: u32,
    /// Give up waiting for the campaign to complete after this many seconds.
    #[arg(long, default_value_t = 3_600)]
    timeout_seconds: u64,
}

const PUBLISH: &str =
    "mutation($input: PublishTemplateInput!) { publishTemplate(input: $input) { key } }";
const CREATE: &str =
    "mutation($input: CreateCampaignInput!) { createCampaign(input: $input) { campaign { id } } }";
const STATUS: &str = "query($id: ID!) { campaign(id: $id) { status releasedBatches batches } }";
const SUMMARY: &str = "query($id: ID!) { campaign(id: $id) { status summary { totalMessages sent failed pending } } }";

pub async fn run(scratch: &ScratchDatabase, args: CampaignArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.rows > 0, "--rows must be at least 1");
    let pool = scratch.pool(4).await?;
    let store = EventStore::new(pool.clone());
    let tenant = tenants::create_tenant(&store, "bench", &Actor::new("bench")).await?;
    drop(store);
    pool.close().await;

    let csv =
        std::env::temp_dir().join(format!("herald-bench-campaign-{}.csv", std::process::id()));
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&csv)?);
        writeln!(file, "email,name,points")?;
        for row in 0..args.rows {
            writeln!(file, "user{row}@example.com,User {row},{}", row % 1000)?;
        }
        file.flush()?;
    }
    let service = Service::start(scratch, "api,workers,projections").await?;
    println!(
        "herald bench campaign: {} rows, batches of {}; service pid {}",
        args.rows, args.batch_size, service.pid
    );
    let client = reqwest::Client::new();
    let graphql = GraphQl {
        client: &client,
        endpoint: format!("http://{}/graphql", service.address),
        key: &tenant.api_key,
    };
    let result = measure(&graphql, &service, &csv, &args).await;
    std::fs::remove_file(&csv).ok();
    let peak = service.peak_rss_mib();
    service.stop().await;
    let (import_seconds, send_seconds, summary) = result?;
    println!(
        "imported {} rows in {import_seconds:.1} s: {:.0} rows/s",
        args.rows,
        args.rows as f64 / import_seconds
    );
    println!(
        "sent {} messages in {send_seconds:.1} s: {:.0} messages/s ({summary})",
        summary["sent"],
        summary["sent"].as_f64().unwrap_or(0.0) / send_seconds
    );
    match peak {
        Some(mib) => println!("service peak RSS: {mib:.0} MiB"),
        None => println!("service peak RSS: unavailable"),
    }
    Ok(())
}

struct GraphQl<'a> {
    client: &'a reqwest::Client,
    endpoint: String,
    key: &'a str,
}

impl GraphQl<'_> {
    async fn call(&self, query: &str, variables: Value) -> anyhow::Result<Value> {
        let response: Value = self
            .client
            .post(&self.endpoint)
            .bearer_auth(self.key)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await?
            .json()
            .await?;
        anyhow::ensure!(response["errors"].is_null(), "GraphQL error: {response}");
        Ok(response["data"].clone())
    }
}

/// Import seconds, send seconds (import end to completion), final summary.
async fn measure(
    graphql: &GraphQl<'_>,
    service: &Service,
    csv: &std::path::Path,
    args: &CampaignArgs,
) -> anyhow::Result<(f64, f64, Value)> {
    let template = json!({
        "key": "bench_campaign",
        "defaultLocale": "en",
        "variables": [
            { "name": "name", "type": "STRING" },
            { "name": "points", "type": "NUMBER" }
        ],
        "locales": [{ "locale": "en", "email": {
            "subject": "Hello {{ name }}",
            "text": "Hello {{ name }}, you have {{ points }} points"
        }}]
    });
    graphql.call(PUBLISH, json!({ "input": template })).await?;
    let created = graphql
        .call(
            CREATE,
            json!({ "input": {
                "name": "bench",
                "template": { "key": "bench_campaign" },
                "channel": "email",
                "batchSize": args.batch_size,
            }}),
        )
        .await?;
    let id = created["createCampaign"]["campaign"]["id"]
        .as_str()
        .context("no campaign id")?
        .to_string();
    // The bench holds the file; the service reads the body as it arrives.
    let body = tokio::fs::read(csv).await?;
    let started = Instant::now();
    let imported: Value = graphql
        .client
        .post(format!(
            "http://{}/api/campaigns/{id}/recipients",
            service.address
        ))
        .bearer_auth(graphql.key)
        .header("content-type", "text/csv")
        .body(body)
        .send()
        .await?
        .json()
        .await?;
    let import_seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        imported["accepted"].as_u64() == Some(args.rows as u64),
        "the import did not take every row: {imported}"
    );
    let sending = Instant::now();
    let deadline = sending + Duration::from_secs(args.timeout_seconds);
    let mut last_report = Instant::now();
    loop {
        let status = graphql.call(STATUS, json!({ "id": id })).await?;
        let campaign = &status["campaign"];
        if campaign["status"] == "COMPLETED" {
            break;
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            eprintln!(
                "campaign: {} batches of {} released, {}",
                campaign["releasedBatches"], campaign["batches"], campaign["status"]
            );
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the campaign did not complete within {} s: {campaign}",
            args.timeout_seconds
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let send_seconds = sending.elapsed().as_secs_f64();
    let summary = graphql.call(SUMMARY, json!({ "id": id })).await?;
    Ok((
        import_seconds,
        send_seconds,
        summary["campaign"]["summary"].clone(),
    ))
}
