//! Every Prometheus metric Herald exports, with its help text, in one place.
//! One naming scheme: snake_case, no prefix (`delivery_latency_ms`, not `herald_...`), the unit
//! last (`_ms`, `_seconds`, `_events`), `_total` on counters. Counters are
//! at 0 from the start for every label value known then (channels,
//! reasons, configured providers, projections); a tenant's series appear
//! with its first count.

use metrics::{describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::domain::values::Channel;

/// How a metric reads in Prometheus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Name, kind and help of every metric.
pub const CATALOGUE: &[(&str, Kind, &str)] = &[
    // Sending and delivery.
    (
        "notifications_enqueued_total",
        Kind::Counter,
        "Notifications accepted, by first channel and tenant.",
    ),
    (
        "notifications_sent_total",
        Kind::Counter,
        "Notifications a provider accepted, by channel, provider and tenant.",
    ),
    (
        "notifications_failed_total",
        Kind::Counter,
        "Failed provider attempts, by channel, provider and reason (permanent or transient).",
    ),
    (
        "notifications_retried_total",
        Kind::Counter,
        "Failed attempts that are tried again, by channel and provider.",
    ),
    (
        "notifications_dead_lettered_total",
        Kind::Counter,
        "Notifications that gave up and went to the dead-letter queue, by channel.",
    ),
    (
        "notifications_throttled_total",
        Kind::Counter,
        "Attempts a token bucket made wait, by bucket kind (tenant, provider, recipient).",
    ),
    (
        "notifications_withheld_total",
        Kind::Counter,
        "Campaign messages stopped before their provider call, by reason.",
    ),
    (
        "delivery_latency_ms",
        Kind::Histogram,
        "Milliseconds from a notification's request to its provider's acceptance, by channel and provider.",
    ),
    (
        "delivery_queue_depth",
        Kind::Gauge,
        "Notifications waiting in the delivery queue (due or not), by priority.",
    ),
    (
        "delivery_queue_oldest_due_seconds",
        Kind::Gauge,
        "Seconds the longest-waiting due, unclaimed queue row has been due (0 when none is).",
    ),
    (
        "dead_letter_queue_depth",
        Kind::Gauge,
        "Dead-lettered notifications not replayed, every tenant.",
    ),
    (
        "delivery_claims_over_tenant_share_total",
        Kind::Counter,
        "Claimed queue rows handed back because their tenant held its share of the worker.",
    ),
    (
        "dispatcher_unreadable_streams_total",
        Kind::Counter,
        "Claims of a notification whose stream holds an unreadable event.",
    ),
    (
        "campaign_gate_reads_total",
        Kind::Counter,
        "Reads of a campaign's state by the last look before a campaign message's call.",
    ),
    (
        "provider_circuit_open",
        Kind::Gauge,
        "1 while the provider's circuit breaker is open in this process, else 0.",
    ),
    (
        "provider_circuit_state",
        Kind::Gauge,
        "The provider's circuit breaker in this process: 0 closed, 1 half-open, 2 open.",
    ),
    (
        "ranker_decisions_total",
        Kind::Counter,
        "Notifications ranked, by scorer.",
    ),
    (
        "tenant_quota_soft_cap_total",
        Kind::Counter,
        "Soft caps reached (once per tenant, quota and period), by tenant and quota.",
    ),
    (
        "schedule_firings_total",
        Kind::Counter,
        "Recurring schedule slots, by outcome.",
    ),
    (
        "workflow_timers_total",
        Kind::Counter,
        "Workflow timers claimed, by outcome (fired, stale, error).",
    ),
    (
        "workflow_events_observed_total",
        Kind::Counter,
        "Events of the log fed to workflow runs that listen for them.",
    ),
    (
        "workflow_sends_refused_total",
        Kind::Counter,
        "Workflow send steps whose notification the send path refused.",
    ),
    // Receipts, sockets, ingest.
    (
        "receipts_total",
        Kind::Counter,
        "Delivery receipts recorded, by provider and kind.",
    ),
    (
        "receipts_unmatched_total",
        Kind::Counter,
        "Receipts that match no notification, by provider.",
    ),
    (
        "receipts_foreign_address_total",
        Kind::Counter,
        "Receipts naming no address their notification was sent to, by provider.",
    ),
    (
        "receipts_refused_total",
        Kind::Counter,
        "Receipt requests refused, by provider and HTTP status.",
    ),
    (
        "websocket_refused_total",
        Kind::Counter,
        "GraphQL WebSockets refused, by reason.",
    ),
    (
        "source_events_ingested_total",
        Kind::Counter,
        "Source events stored, by tenant.",
    ),
    (
        "source_events_duplicate_total",
        Kind::Counter,
        "Source events already stored (same id), by tenant.",
    ),
    (
        "source_events_rejected_total",
        Kind::Counter,
        "Source events refused as invalid, by tenant.",
    ),
    // The log and its readers.
    (
        "eventstore_head_position",
        Kind::Gauge,
        "The log's last position, as its readers last saw it.",
    ),
    (
        "eventstore_reader_lag_events",
        Kind::Gauge,
        "Events between a reader (a projection, a live feed) and the log's head, by reader.",
    ),
    (
        "eventstore_oldest_transaction_seconds",
        Kind::Gauge,
        "Age of the oldest running transaction, which readers wait for.",
    ),
    (
        "projection_events_total",
        Kind::Counter,
        "Events a projection folded, by projection.",
    ),
    (
        "projection_failures_total",
        Kind::Counter,
        "Events a projection failed on, by projection.",
    ),
    (
        "projection_batch_seconds",
        Kind::Histogram,
        "Seconds a projection took for one batch, by projection.",
    ),
    // Engagement: ratios, so without a unit suffix.
    (
        "open_rate",
        Kind::Gauge,
        "Unique opens over emails sent in the gauge window, by tenant and template.",
    ),
    (
        "click_rate",
        Kind::Gauge,
        "Unique clicks over emails sent in the gauge window, by tenant and template.",
    ),
];

/// `delivery_latency_ms` buckets: a provider answering within tens of
/// milliseconds up to sends that waited an hour in the queue.
const LATENCY_MS_BUCKETS: &[f64] = &[
    5.0,
    10.0,
    25.0,
    50.0,
    100.0,
    250.0,
    500.0,
    1_000.0,
    2_500.0,
    5_000.0,
    10_000.0,
    30_000.0,
    60_000.0,
    300_000.0,
    900_000.0,
    3_600_000.0,
];

/// `projection_batch_seconds` buckets.
const BATCH_SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Installs the process's Prometheus recorder: histograms with buckets (no
/// summaries, whose quantiles read 0 when idle), every metric described,
/// the counters whose labels are known already at 0.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("delivery_latency_ms".into()),
            LATENCY_MS_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full("projection_batch_seconds".into()),
            BATCH_SECONDS_BUCKETS,
        )?
        .install_recorder()?;
    for (name, kind, help) in CATALOGUE {
        match kind {
            Kind::Counter => describe_counter!(*name, *help),
            Kind::Gauge => describe_gauge!(*name, *help),
            Kind::Histogram => describe_histogram!(*name, *help),
        }
    }
    for name in [
        "delivery_claims_over_tenant_share_total",
        "dispatcher_unreadable_streams_total",
        "campaign_gate_reads_total",
    ] {
        metrics::counter!(name).absolute(0);
    }
    for channel in Channel::ALL {
        metrics::counter!("notifications_dead_lettered_total", "channel" => channel.as_str())
            .absolute(0);
    }
    for reason in ["campaign_paused", "campaign_cancelled"] {
        metrics::counter!("notifications_withheld_total", "reason" => reason).absolute(0);
    }
    for bucket in ["tenant", "provider", "recipient"] {
        metrics::counter!("notifications_throttled_total", "bucket" => bucket).absolute(0);
    }
    for outcome in [
        "fired",
        "duplicate",
        "failed",
        "skipped",
        "lost_race",
        "error",
    ] {
        metrics::counter!("schedule_firings_total", "outcome" => outcome).absolute(0);
    }
    for outcome in ["fired", "stale", "error"] {
        metrics::counter!("workflow_timers_total", "outcome" => outcome).absolute(0);
    }
    metrics::counter!("workflow_events_observed_total").absolute(0);
    metrics::counter!("workflow_sends_refused_total").absolute(0);
    metrics::counter!("websocket_refused_total", "reason" => "too_many").absolute(0);
    Ok(handle)
}

/// The provider counters at 0 for each configured provider and channel it carries.
pub fn zero_providers<'a>(routes: impl IntoIterator<Item = (Channel, &'a str)>) {
    for (channel, provider) in routes {
        let (channel, provider) = (channel.as_str(), provider.to_string());
        for reason in ["permanent", "transient"] {
            metrics::counter!("notifications_failed_total", "channel" => channel, "provider" => provider.clone(), "reason" => reason)
                .absolute(0);
        }
        metrics::counter!("notifications_retried_total", "channel" => channel, "provider" => provider.clone())
            .absolute(0);
        metrics::gauge!("provider_circuit_open", "provider" => provider.clone()).set(0.0);
        metrics::gauge!("provider_circuit_state", "provider" => provider).set(0.0);
    }
}

/// A projection's counters at 0.
pub fn zero_projection(name: &str) {
    metrics::counter!("projection_events_total", "projection" => name.to_owned()).absolute(0);
    metrics::counter!("projection_failures_total", "projection" => name.to_owned()).absolute(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every metric the code records is in the catalogue, under the naming
    /// scheme; a new one without help text fails here.
    #[test]
    fn every_recorded_metric_is_described() {
        let recorded = recorded_names(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
        assert!(recorded.len() > 20, "found only {recorded:?}");
        for name in &recorded {
            let entry = CATALOGUE.iter().find(|(known, _, _)| known == name);
            let Some((_, kind, _)) = entry else {
                panic!("{name} is recorded but not in telemetry::metrics::CATALOGUE");
            };
            assert_eq!(
                *kind == Kind::Counter,
                name.ends_with("_total"),
                "{name}: counters, and only counters, end in _total"
            );
        }
        for (name, _, help) in CATALOGUE {
            assert!(
                recorded.contains(*name),
                "{name} is described but never recorded"
            );
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{name} is not snake_case"
            );
            assert!(help.ends_with('.'), "{name}: help is a sentence");
        }
    }

    /// The first string literal after each `counter!(`, `gauge!(` and
    /// `histogram!(` in the sources under `dir`.
    fn recorded_names(dir: std::path::PathBuf) -> std::collections::BTreeSet<String> {
        let mut names = std::collections::BTreeSet::new();
        let mut dirs = vec![dir];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).expect("src readable").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                    continue;
                }
                if path.extension().is_none_or(|ext| ext != "rs") || path.ends_with("metrics.rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).expect("source readable");
                for macro_name in ["counter!(", "gauge!(", "histogram!("] {
                    for (at, _) in text.match_indices(macro_name) {
                        let rest = text[at + macro_name.len()..].trim_start();
                        if let Some(rest) = rest.strip_prefix('"')
                            && let Some(end) = rest.find('"')
                        {
                            names.insert(rest[..end].to_string());
                        }
                    }
                }
            }
        }
        names
    }
}
