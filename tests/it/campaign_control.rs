//! Cancel and pause of a running campaign stop everything not yet handed to
//! the provider (issue 15, item 1), through a real `herald serve` mailing a
//! real SMTP server (aiosmtpd) that records each recipient it receives.
//!
//! Messages a dispatcher claimed wait for the provider's slots after their
//! `DeliveryAttempted`; the stop must reach them too. So the service claims
//! many more messages (`claim_batch`) than it may call the provider with at
//! once (`provider_concurrency`), and after a cancel or pause at most those
//! calls already under way may still arrive.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::peers::{SmtpRecorder, smtp_recorder};
use crate::served::{Served, serve, smtp_config};
use crate::support::eventually;

const MESSAGES: usize = 2_000;
/// Received before the test stops the campaign.
const STOP_AT: usize = 200;
/// Provider calls in flight at most: what may still arrive after a stop.
const PROVIDER_CONCURRENCY: usize = 8;

const SUMMARY: &str = r#"query($id: ID!) {
  campaign(id: $id) { status summary { totalMessages pending sent failed cancelled } }
}"#;

struct Service {
    served: Served,
    smtp: SmtpRecorder,
    dir: PathBuf,
    campaign: String,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Service {
    /// A service whose campaign of [`MESSAGES`] emails has started sending.
    async fn with_running_campaign() -> Service {
        let dir = std::env::temp_dir().join(format!("herald-control-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let smtp = smtp_recorder(&dir).await;
        // LOW messages may take every slot, so the slots alone bound the
        // calls in flight; each claim takes far more messages than that.
        let config = format!(
            "{}\n[delivery]\nprovider_concurrency = {PROVIDER_CONCURRENCY}\nlow_priority_share = 1.0\n\
             tenant_share = 1.0\nclaim_batch = 100\n\n\
             [campaigns]\npoll_millis = 50\nprogress_every_millis = 100\nqueued_batches = 4\n",
            smtp_config(smtp.peer.port)
        );
        let served = serve(&dir, "Control", &config).await;
        served
            .graphql(
                "mutation($input: PublishTemplateInput!) { publishTemplate(input: $input) { key } }",
                json!({ "input": {
                    "key": "sale",
                    "defaultLocale": "en",
                    "variables": [{ "name": "name", "type": "STRING" }],
                    "locales": [{ "locale": "en", "email": {
                        "subject": "A sale for {{ name }}",
                        "text": "Hello {{ name }}, everything is half price."
                    }}]
                }}),
            )
            .await;
        let created = served
            .graphql(
                "mutation($input: CreateCampaignInput!) { createCampaign(input: $input) { campaign { id } } }",
                json!({ "input": {
                    "name": "sale",
                    "template": { "key": "sale" },
                    "channel": "email",
                    "batchSize": 100,
                }}),
            )
            .await;
        let campaign = created["createCampaign"]["campaign"]["id"]
            .as_str()
            .expect("campaign id")
            .to_string();
        let recipients: Vec<Value> = (0..MESSAGES)
            .map(|i| json!({ "address": format!("reader{i}@campaign.test"), "variables": { "name": format!("Reader {i}") } }))
            .collect();
        let added = served
            .graphql(
                "mutation($id: ID!, $recipients: [CampaignRecipientInput!]!) { addCampaignRecipients(id: $id, recipients: $recipients) { accepted } }",
                json!({ "id": campaign, "recipients": recipients }),
            )
            .await;
        assert_eq!(added["addCampaignRecipients"]["accepted"], MESSAGES);
        Service {
            served,
            smtp,
            dir,
            campaign,
        }
    }

    async fn control(&self, mutation: &str) -> Value {
        let query = format!("mutation($id: ID!) {{ {mutation}(id: $id) {{ status }} }}");
        self.served
            .graphql(&query, json!({ "id": self.campaign }))
            .await[mutation]
            .clone()
    }

    async fn campaign(&self) -> Value {
        self.served
            .graphql(SUMMARY, json!({ "id": self.campaign }))
            .await["campaign"]
            .clone()
    }

    fn received(&self) -> usize {
        self.smtp.receipts().len()
    }

    /// Waits until the SMTP server has received at least `count` messages.
    /// It looks every 5 ms, closer than [`eventually`] does, so that what
    /// the test does next lands soon after the `count`th.
    async fn received_at_least(&self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.received() < count {
            assert!(
                Instant::now() < deadline,
                "only {} received",
                self.received()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The campaign once `done` holds for it, within 60 s.
    async fn campaign_when(&self, done: impl Fn(&Value) -> bool) -> Value {
        eventually(Duration::from_secs(60), async || {
            let campaign = self.campaign().await;
            if done(&campaign) {
                Ok(campaign)
            } else {
                Err(format!("not settled: {campaign}"))
            }
        })
        .await
    }
}

impl Service {
    /// Waits until nothing of the paused campaign is in flight or due
    /// (the queue says so, not a projection) and every email received is
    /// counted sent; returns how many were sent.
    async fn settled_while_paused(&self) -> usize {
        eventually(Duration::from_secs(60), async || {
            let data = self
                .served
                .graphql(
                    "query($id: ID!) { deliveryQueue { due leased } campaign(id: $id) { status summary { totalMessages pending sent failed cancelled } } }",
                    json!({ "id": self.campaign }),
                )
                .await;
            let idle = data["deliveryQueue"]
                .as_array()
                .expect("queue lines")
                .iter()
                .all(|line| line["due"] == 0 && line["leased"] == 0);
            let sent = count(&data["campaign"], "sent");
            if idle
                && sent == self.received()
                && count(&data["campaign"], "pending") == MESSAGES - sent
            {
                Ok(sent)
            } else {
                Err(format!("not settled: {data}"))
            }
        })
        .await
    }
}

fn count(campaign: &Value, field: &str) -> usize {
    campaign["summary"][field].as_u64().expect("a count") as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_campaign_sends_only_what_was_already_with_the_provider() {
    let service = Service::with_running_campaign().await;
    service.received_at_least(STOP_AT).await;

    let cancelled = service.control("cancelCampaign").await;
    assert_eq!(cancelled["status"], "CANCELLED");
    let at_cancel = service.received();

    let campaign = service
        .campaign_when(|c| {
            count(c, "pending") == 0 && count(c, "sent") + count(c, "cancelled") == MESSAGES
        })
        .await;
    let receipts = service.smtp.receipts();
    eprintln!(
        "cancelled with {at_cancel} received; in the end {} received, {campaign}",
        receipts.len()
    );
    let addresses: HashSet<&String> = receipts.iter().map(|(_, address)| address).collect();
    assert_eq!(addresses.len(), receipts.len(), "each email once");
    assert!(
        receipts.len() <= at_cancel + PROVIDER_CONCURRENCY,
        "{} received when the cancel returned, {} in the end: more than the {PROVIDER_CONCURRENCY} calls in flight went out",
        at_cancel,
        receipts.len()
    );
    assert_eq!(count(&campaign, "sent"), receipts.len(), "{campaign}");
    assert_eq!(
        count(&campaign, "cancelled"),
        MESSAGES - receipts.len(),
        "{campaign}"
    );
    assert_eq!(count(&campaign, "failed"), 0, "{campaign}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_campaign_stops_sending_until_resumed_then_sends_the_rest_once() {
    let service = Service::with_running_campaign().await;
    service.received_at_least(STOP_AT).await;

    let paused = service.control("pauseCampaign").await;
    assert_eq!(paused["status"], "PAUSED");
    let at_pause = service.received();

    let stopped_at = service.settled_while_paused().await;
    eprintln!("paused with {at_pause} received; stopped at {stopped_at}");
    assert!(
        stopped_at <= at_pause + PROVIDER_CONCURRENCY,
        "{at_pause} received when the pause returned, {stopped_at} after: more than the {PROVIDER_CONCURRENCY} calls in flight went out"
    );
    // And it stays so: the campaign worker and the dispatcher look many
    // times a second (`poll_millis`, each append), and each look would
    // release or send more if the pause let them.
    let hold_until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < hold_until {
        assert_eq!(service.received(), stopped_at, "sent while paused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(service.campaign().await["status"], "PAUSED");

    let resumed = service.control("resumeCampaign").await;
    assert_eq!(resumed["status"], "SENDING");
    let campaign = service.campaign_when(|c| c["status"] == "COMPLETED").await;
    assert_eq!(count(&campaign, "sent"), MESSAGES, "{campaign}");
    let receipts = service.smtp.receipts();
    let addresses: HashSet<&String> = receipts.iter().map(|(_, address)| address).collect();
    assert_eq!(addresses.len(), MESSAGES, "every email arrived");
    assert_eq!(receipts.len(), MESSAGES, "each email once");
    let withheld = service.served.metric("notifications_withheld_total").await;
    let reads = service.served.metric("campaign_gate_reads_total").await;
    eprintln!(
        "{MESSAGES} sent and {withheld} withheld after {reads} reads of the campaign's status"
    );
}
