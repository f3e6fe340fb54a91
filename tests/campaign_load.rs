//! Issue 8's load test: a campaign of 100,000 emails goes through a real
//! `herald serve` to a real SMTP server (aiosmtpd) while transactional HIGH
//! sends keep flowing, and those keep their latency: p99 from the accepted
//! response to the SMTP server's receipt under 250 ms.
//!
//! Its own test binary, so `cargo test` runs it alone, after the others,
//! and nothing else competes for the two cores while it measures.
//! `HERALD_TEST_CAMPAIGN_ROWS` changes the size (default 100,000).

#[allow(dead_code)]
#[path = "it/peers.rs"]
mod peers;
#[allow(dead_code)]
#[path = "it/served.rs"]
mod served;
#[allow(dead_code)]
#[path = "it/support.rs"]
mod support;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use peers::{SmtpRecorder, smtp_recorder};
use served::{Served, serve, smtp_config};
use support::eventually;

const DEFAULT_ROWS: usize = 100_000;
/// One transactional send this often while the campaign runs.
const TRANSACTIONAL_EVERY: Duration = Duration::from_millis(100);
const P99_LIMIT_MS: f64 = 250.0;

struct Service {
    served: Served,
    smtp: SmtpRecorder,
    dir: PathBuf,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Service {
    async fn start() -> Service {
        let dir = std::env::temp_dir().join(format!("herald-load-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let smtp = smtp_recorder(&dir).await;
        let served = serve(&dir, "Load", &smtp_config(smtp.peer.port)).await;
        Service { served, smtp, dir }
    }
}

/// Each address the SMTP server received, with when (UNIX seconds), and the
/// number of receipts in all (repeats included).
fn read_receipts(smtp: &SmtpRecorder) -> (HashMap<String, f64>, usize) {
    let receipts = smtp.receipts();
    let total = receipts.len();
    let mut first = HashMap::new();
    for (at, address) in receipts {
        first.entry(address).or_insert(at);
    }
    (first, total)
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100k_campaign_reaches_the_smtp_server_while_transactional_sends_keep_their_latency() {
    let rows: usize = std::env::var("HERALD_TEST_CAMPAIGN_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_ROWS);
    let service = Service::start().await;
    service
        .served
        .graphql(
            "mutation($input: PublishTemplateInput!) { publishTemplate(input: $input) { key } }",
            json!({ "input": {
                "key": "newsletter",
                "defaultLocale": "en",
                "variables": [{ "name": "name", "type": "STRING" }],
                "locales": [{ "locale": "en", "email": {
                    "subject": "News for {{ name }}",
                    "text": "Hello {{ name }}, here is this week's news."
                }}]
            }}),
        )
        .await;
    let created = service
        .served.graphql(
            "mutation($input: CreateCampaignInput!) { createCampaign(input: $input) { campaign { id } } }",
            json!({ "input": {
                "name": "weekly news",
                "template": { "key": "newsletter" },
                "channel": "email",
                "batchSize": 1000,
            }}),
        )
        .await;
    let id = created["createCampaign"]["campaign"]["id"]
        .as_str()
        .expect("campaign id")
        .to_string();

    let mut csv = String::from("email,name\n");
    for row in 0..rows {
        csv.push_str(&format!("reader{row}@campaign.test,Reader {row}\n"));
    }
    let started = Instant::now();
    let imported: Value = service
        .served
        .http
        .post(format!(
            "{}/api/campaigns/{id}/recipients",
            service.served.base
        ))
        .bearer_auth(&service.served.key)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .expect("import sent")
        .json()
        .await
        .expect("import answer");
    assert_eq!(imported["accepted"], rows, "{imported}");
    eprintln!(
        "imported {rows} rows in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Transactional sends at a steady pace until the campaign completes.
    let mut accepted: Vec<(String, f64)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(1_800);
    let mut next_status = Instant::now();
    let mut ticker = tokio::time::interval(TRANSACTIONAL_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let to = format!("buyer{}@shop.test", accepted.len());
        service
            .served.graphql(
                "mutation($input: SendNotificationInput!) { sendNotification(input: $input) { notification { id } } }",
                json!({ "input": {
                    "recipient": { "email": to },
                    "channels": ["EMAIL"],
                    "priority": "HIGH",
                    "category": "receipts",
                    "content": { "title": "Your receipt", "text": "Thank you for your order." }
                }}),
            )
            .await;
        accepted.push((to, unix_now()));
        if Instant::now() >= next_status {
            next_status = Instant::now() + Duration::from_secs(2);
            let data = service
                .served
                .graphql(
                    "query($id: ID!) { campaign(id: $id) { status summary { sent pending } } }",
                    json!({ "id": id }),
                )
                .await;
            let campaign = &data["campaign"];
            eprintln!(
                "{:>5.0} s: campaign {} sent {} pending {}; {} transactional sends",
                started.elapsed().as_secs_f64(),
                campaign["status"],
                campaign["summary"]["sent"],
                campaign["summary"]["pending"],
                accepted.len()
            );
            if campaign["status"] == "COMPLETED" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the campaign did not complete: {campaign}"
            );
        }
    }
    let summary = service
        .served.graphql(
            "query($id: ID!) { campaign(id: $id) { status summary { totalMessages sent failed cancelled pending } } }",
            json!({ "id": id }),
        )
        .await;
    let summary = &summary["campaign"]["summary"];
    assert_eq!(summary["totalMessages"], rows, "{summary}");
    assert_eq!(summary["sent"], rows, "{summary}");

    // Every email reached the SMTP server: the campaign's and the transactional ones.
    let (receipts, total) = eventually(Duration::from_secs(30), async || {
        let (receipts, total) = read_receipts(&service.smtp);
        let missing = accepted
            .iter()
            .filter(|(to, _)| !receipts.contains_key(to))
            .count();
        if missing == 0 {
            Ok((receipts, total))
        } else {
            Err(format!("{missing} transactional emails not received"))
        }
    })
    .await;
    let readers: HashSet<&String> = receipts
        .keys()
        .filter(|a| a.ends_with("@campaign.test"))
        .collect();
    assert_eq!(readers.len(), rows, "campaign emails received");
    let mut latencies: Vec<f64> = accepted
        .iter()
        .map(|(to, at)| {
            let received = receipts
                .get(to)
                .unwrap_or_else(|| panic!("{to} never received its email"));
            ((received - at) * 1000.0).max(0.0)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    let p50 = percentile(&latencies, 0.50);
    let p99 = percentile(&latencies, 0.99);
    eprintln!(
        "campaign of {rows} done in {:.1} s ({} receipts, {} repeats); {} transactional sends: p50 {p50:.1} ms, p99 {p99:.1} ms, max {:.1} ms",
        started.elapsed().as_secs_f64(),
        total,
        total - receipts.len(),
        latencies.len(),
        latencies.last().copied().unwrap_or_default()
    );
    assert!(
        p99 < P99_LIMIT_MS,
        "transactional p99 {p99:.1} ms during the campaign (p50 {p50:.1} ms)"
    );
}
