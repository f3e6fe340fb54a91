//! Metrics (issue 16 item 8), judged by Prometheus's own tools (Debian's
//! `prometheus` package, which `.ci/run` installs): a real Prometheus
//! scrapes a real `herald serve`, `promtool check metrics` lints what it
//! serves, and `promtool` checks and unit-tests `deploy/prometheus/alerts.yml`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::peers::{Peer, free_port};
use crate::served::{Served, serve};
use crate::support::eventually;

const INSTALL: &str = "apt-get install prometheus (Debian's package has prometheus and promtool; .ci/run installs it)";

/// The path of Prometheus's `tool`; a clear failure when it is missing.
fn require(tool: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(tool))
            .find(|candidate| candidate.is_file())
    });
    found.unwrap_or_else(|| panic!("{tool} is needed for this test and is not on PATH: {INSTALL}"))
}

async fn scrape(served: &Served) -> String {
    served
        .http
        .get(format!("{}/metrics", served.metrics_base))
        .send()
        .await
        .expect("metrics answered")
        .text()
        .await
        .expect("metrics text")
}

/// The value of the series of `name` with (at least) these labels.
fn series(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (labelled, value) = rest.rsplit_once(' ')?;
        let matches = labelled.is_empty() || labelled.starts_with('{');
        let has_labels = labels
            .iter()
            .all(|(key, value)| labelled.contains(&format!("{key}=\"{value}\"")));
        (matches && has_labels).then(|| value.parse().ok())?
    })
}

/// Every metric family's name, from its `# TYPE` line.
fn families(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.strip_prefix("# TYPE ")?.split(' ');
            Some((words.next()?.to_string(), words.next()?.to_string()))
        })
        .collect()
}

/// `promtool check metrics` over `text`: its findings.
fn promtool_findings(text: &str) -> (bool, Vec<String>) {
    use std::io::Write;
    let mut child = Command::new(require("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("metrics written to promtool");
    let output = child.wait_with_output().expect("promtool ran");
    let findings = String::from_utf8_lossy(&output.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&output.stderr).lines())
        .map(str::to_string)
        .filter(|line| !line.trim().is_empty())
        .collect();
    (output.status.success(), findings)
}

/// A real Prometheus scraping `target` every second, with its HTTP API on a
/// free port, once it says it is ready (it listens before its storage is
/// open, and answers 503 until then). Started again on another port when it
/// exits first: the port was taken between picking it and listening on it.
async fn prometheus(dir: &Path, target: &str) -> Peer {
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules}\n\
             scrape_configs:\n  - job_name: herald\n    static_configs:\n      - targets: ['{target}']\n",
            rules = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("deploy/prometheus/alerts.yml")
                .display()
        ),
    )
    .expect("prometheus.yml written");
    let prometheus = require("prometheus");
    let mut attempt = 0;
    loop {
        attempt += 1;
        let port = free_port();
        let mut command = Command::new(&prometheus);
        command.args([
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--log.level=error".to_string(),
        ]);
        let mut peer = Peer::start_unchecked("Prometheus", command, port, INSTALL);
        let ready = eventually(Duration::from_secs(60), async || {
            if let Some(status) = peer.exited() {
                return Ok(Err(status));
            }
            match reqwest::get(format!("http://127.0.0.1:{port}/-/ready")).await {
                Ok(answer) if answer.status().is_success() => Ok(Ok(())),
                Ok(answer) => Err(format!("Prometheus is not ready: {}", answer.status())),
                Err(error) => Err(format!("Prometheus does not answer on {port}: {error}")),
            }
        })
        .await;
        match ready {
            Ok(()) => return peer,
            Err(status) if attempt < 3 => eprintln!("Prometheus exited ({status}); again"),
            Err(status) => panic!("Prometheus exited with {status} three times"),
        }
    }
}

/// Prometheus's answer to an instant query: its result vector, or why
/// there is none (for the caller's `eventually` to ask again).
async fn query(prometheus: &Peer, promql: &str) -> Result<Vec<Value>, String> {
    let url = url::Url::parse_with_params(
        &format!("http://127.0.0.1:{}/api/v1/query", prometheus.port),
        [("query", promql)],
    )
    .expect("a query URL");
    let answer = reqwest::get(url)
        .await
        .map_err(|error| format!("{promql}: {error}"))?;
    let status = answer.status();
    let answer: Value = answer
        .json()
        .await
        .map_err(|error| format!("{promql}: {status} and no JSON: {error}"))?;
    if answer["status"] != "success" {
        return Err(format!("{promql}: {answer:#}"));
    }
    Ok(answer["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

#[tokio::test]
async fn prometheus_scrapes_what_herald_serves_and_promtool_accepts_it() {
    let dir = std::env::temp_dir().join(format!("herald-metrics-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    // The first send reaches the daily soft cap: its counter and alert.
    let served = serve(
        &dir,
        "Metered",
        "[limits]\nmessages_per_day = 10\nsoft_cap_fraction = 0.1\n",
    )
    .await;

    // Before any send: the counters are there, at 0, each described (the
    // provider series once the workers started, just after the API).
    let idle = eventually(Duration::from_secs(10), async || {
        let idle = scrape(&served).await;
        if idle.contains("notifications_retried_total{") {
            Ok(idle)
        } else {
            Err(format!("no provider series yet:\n{idle}"))
        }
    })
    .await;
    for (name, labels) in [
        ("campaign_gate_reads_total", vec![]),
        (
            "notifications_dead_lettered_total",
            vec![("channel", "email")],
        ),
        (
            "notifications_withheld_total",
            vec![("reason", "campaign_paused")],
        ),
        (
            "notifications_failed_total",
            vec![
                ("channel", "email"),
                ("provider", "console"),
                ("reason", "transient"),
            ],
        ),
        (
            "projection_events_total",
            vec![("projection", "dead_letters")],
        ),
    ] {
        assert_eq!(
            series(&idle, name, &labels),
            Some(0.0),
            "{name} {labels:?}:\n{idle}"
        );
    }
    for (family, _) in families(&idle) {
        assert!(
            idle.contains(&format!("# HELP {family} ")),
            "{family} has no HELP line:\n{idle}"
        );
    }

    let answer = served
        .http
        .post(format!("{}/api/notifications", served.base))
        .bearer_auth(&served.key)
        .json(&json!({
            "recipient": { "email": "ada@example.com" },
            "channels": ["email"],
            "content": { "title": "Counted", "text": "One for the histogram" },
        }))
        .send()
        .await
        .expect("an answer");
    assert_eq!(answer.status(), 202);
    // Counted, and every metric the alerts watch is served (the workers
    // refresh the queue gauges every 2 s).
    let watched = [
        "dead_letter_queue_depth",
        "provider_circuit_state",
        "eventstore_reader_lag_events",
        "delivery_queue_oldest_due_seconds",
        "tenant_quota_soft_cap_total",
    ];
    eventually(Duration::from_secs(30), async || {
        let text = scrape(&served).await;
        let sent = series(&text, "notifications_sent_total", &[]);
        let missing: Vec<&str> = watched
            .iter()
            .copied()
            .filter(|name| series(&text, name, &[]).is_none())
            .collect();
        if sent == Some(1.0) && missing.is_empty() {
            assert_eq!(series(&text, "tenant_quota_soft_cap_total", &[]), Some(1.0));
            assert_eq!(series(&text, "dead_letter_queue_depth", &[]), Some(0.0));
            Ok(())
        } else {
            Err(format!("sent {sent:?}, missing {missing:?}:\n{text}"))
        }
    })
    .await;

    // A histogram (delivery_latency_ms_bucket), not a summary.
    let text = scrape(&served).await;
    let kinds = families(&text);
    assert!(
        kinds.contains(&("delivery_latency_ms".into(), "histogram".into())),
        "{kinds:?}"
    );
    assert_eq!(
        series(&text, "delivery_latency_ms_bucket", &[("le", "+Inf")]),
        Some(1.0),
        "{text}"
    );
    assert!(kinds.iter().all(|(_, kind)| kind != "summary"), "{kinds:?}");
    for (family, _) in &kinds {
        assert!(
            text.contains(&format!("# HELP {family} ")),
            "{family}:\n{text}"
        );
    }

    // promtool lints it. Its one finding is `delivery_latency_ms`, kept on
    // purpose: promtool would have `_milliseconds` for `_ms`.
    let (clean, findings) = promtool_findings(&text);
    let kept_name = "delivery_latency_ms metric names should not contain abbreviated units";
    assert!(
        clean || findings.iter().all(|finding| finding == kept_name),
        "promtool check metrics: {findings:#?}"
    );

    // A real Prometheus scrapes it: up, and Herald's series stored.
    let prometheus = prometheus(&dir, served.metrics_base.trim_start_matches("http://")).await;
    eventually(Duration::from_secs(60), async || {
        let up = query(&prometheus, "up{job=\"herald\"}").await?;
        let sent = query(&prometheus, "sum(notifications_sent_total)").await?;
        let buckets = query(&prometheus, "delivery_latency_ms_bucket{le=\"+Inf\"}").await?;
        let is_up = up.first().is_some_and(|s| s["value"][1] == "1");
        let counted = sent.first().is_some_and(|s| s["value"][1] == "1");
        if is_up && counted && !buckets.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "Prometheus has not scraped Herald: up {up:?}, sent {sent:?}, buckets {buckets:?}"
            ))
        }
    })
    .await;
    // It loaded the alert rules and, evaluating them on what it scraped,
    // fires the soft cap's alert for this tenant, and no other.
    let rules: Value = reqwest::get(format!("http://127.0.0.1:{}/api/v1/rules", prometheus.port))
        .await
        .expect("rules answered")
        .json()
        .await
        .expect("JSON");
    let loaded = rules["data"]["groups"][0]["rules"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(loaded, 5, "{rules:#}");
    let firing = eventually(Duration::from_secs(30), async || {
        let firing = query(&prometheus, "ALERTS{alertstate=\"firing\"}").await?;
        if firing.is_empty() {
            Err("no alert fires".to_string())
        } else {
            Ok(firing)
        }
    })
    .await;
    assert_eq!(firing.len(), 1, "{firing:#?}");
    assert_eq!(
        firing[0]["metric"]["alertname"], "HeraldTenantSoftCapReached",
        "{firing:#?}"
    );
    assert_eq!(
        firing[0]["metric"]["quota"], "daily_messages",
        "{firing:#?}"
    );
}

/// What `promtool` says of `args`.
fn promtool(args: &[&str]) -> (bool, String) {
    let output = Command::new(require("promtool"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("promtool ran");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), said)
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let (ok, said) = promtool(&["check", "rules", "deploy/prometheus/alerts.yml"]);
    assert!(ok, "promtool check rules: {said}");
    let (ok, said) = promtool(&["test", "rules", "deploy/prometheus/alerts_test.yml"]);
    assert!(ok, "promtool test rules: {said}");
}

/// The alerts watch metrics Herald exports, by their exported names.
#[test]
fn alerts_use_herald_s_metric_names() {
    let rules = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/alerts.yml"),
    )
    .expect("alerts.yml");
    let exported: Vec<&str> = herald::telemetry::metrics::CATALOGUE
        .iter()
        .map(|(name, _, _)| *name)
        .collect();
    let promql = [
        "max", "sum", "by", "increase", "unless", "offset", "or", "h", "m",
    ];
    let labels = ["provider", "reader", "tenant", "quota"];
    let mut watched = Vec::new();
    for line in rules.lines().map(str::trim) {
        let Some(expr) = line.strip_prefix("expr:").or_else(|| {
            // A folded expression's lines follow `expr: >-`.
            (line.starts_with("sum ") || line.starts_with("or ")).then_some(line)
        }) else {
            continue;
        };
        for word in expr.split(|c: char| !(c.is_ascii_lowercase() || c == '_')) {
            if word.is_empty() || promql.contains(&word) || labels.contains(&word) {
                continue;
            }
            assert!(
                exported.contains(&word),
                "alerts.yml watches {word}, which Herald does not export"
            );
            watched.push(word.to_string());
        }
    }
    for name in [
        "dead_letter_queue_depth",
        "provider_circuit_state",
        "eventstore_reader_lag_events",
        "delivery_queue_oldest_due_seconds",
        "tenant_quota_soft_cap_total",
    ] {
        assert!(
            watched.iter().any(|w| w == name),
            "no alert on {name}: {watched:?}"
        );
    }
}
