//! A real `herald serve` child process over a fresh database with one
//! tenant, for the tests that meet Herald as its users do.

use std::fs::File;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use sqlx::ConnectOptions;

use crate::peers::free_port;
use crate::support::{data, eventually, fresh_database, graphql};

pub struct Served {
    /// Killed when dropped.
    _child: tokio::process::Child,
    pub base: String,
    /// Where `/metrics` is served, apart from the API.
    pub metrics_base: String,
    /// The tenant's API key.
    pub key: String,
    pub http: reqwest::Client,
    /// The server's database, for a test's own connections to it.
    pub database_url: String,
}

/// Writes `dir/herald.toml` (its own `listen` and `metrics_listen`,
/// warnings only, the suite's loopback peers allowed as egress, then
/// `config`), starts `herald serve` with it and waits until it is ready.
pub async fn serve(dir: &Path, tenant_name: &str, config: &str) -> Served {
    serve_with_stderr(dir, tenant_name, config, None).await
}

/// [`serve`], with the server's stderr written to `stderr`, for a test
/// that reads what the server printed (a panic, say).
pub async fn serve_with_stderr(
    dir: &Path,
    tenant_name: &str,
    config: &str,
    stderr: Option<&File>,
) -> Served {
    let db = fresh_database().await;
    serve_on(&db.pool, dir, tenant_name, config, stderr).await
}

/// How many times a server is started on new ports when the ones picked
/// were taken before it could listen on them.
const STARTS: usize = 3;

/// [`serve_with_stderr`] on the database `pool` connects to (migrated here),
/// for a test that runs that database itself.
pub async fn serve_on(
    pool: &sqlx::PgPool,
    dir: &Path,
    tenant_name: &str,
    config: &str,
    stderr: Option<&File>,
) -> Served {
    herald::database::MIGRATOR
        .run(pool)
        .await
        .expect("migrated");
    let store = herald::eventstore::EventStore::new(pool.clone());
    let tenant = herald::commands::tenants::create_tenant(
        &store,
        tenant_name,
        &herald::commands::Actor::new("test"),
    )
    .await
    .expect("tenant");
    let database_url = pool.connect_options().to_url_lossy().to_string();
    let http = reqwest::Client::new();
    for start in 1..=STARTS {
        // A free port now may be taken (by another test's connection or
        // server) before the child listens on it.
        let (port, metrics_port) = (free_port(), free_port());
        let file = dir.join("herald.toml");
        std::fs::write(
            &file,
            format!(
                "listen = \"127.0.0.1:{port}\"\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n\
                 log_filter = \"warn\"\negress.allow = [\"127.0.0.0/8\", \"::1/128\"]\n{config}"
            ),
        )
        .expect("config written");
        let stderr = stderr.map_or_else(Stdio::inherit, |file| {
            Stdio::from(file.try_clone().expect("the stderr file"))
        });
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
            .arg("serve")
            .env("DATABASE_URL", &database_url)
            .env("HERALD_CONFIG", &file)
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("herald starts");
        let base = format!("http://127.0.0.1:{port}");
        match ready(&mut child, &http, &base, &tenant.api_key).await {
            Ok(()) => {
                return Served {
                    _child: child,
                    base,
                    metrics_base: format!("http://127.0.0.1:{metrics_port}"),
                    key: tenant.api_key,
                    http,
                    database_url,
                };
            }
            Err(exited) if start < STARTS => {
                eprintln!("herald exited before it was ready ({exited}); starting it on new ports");
            }
            Err(exited) => panic!("herald exited before it was ready, {STARTS} times: {exited}"),
        }
    }
    unreachable!("every start returns or panics")
}

/// Whether the server at `base` is ready and knows `key`.
async fn answers(http: &reqwest::Client, base: &str, key: &str) -> Result<(), String> {
    let ready = http
        .get(format!("{base}/ready"))
        .send()
        .await
        .map_err(|error| error.to_string())?;
    if !ready.status().is_success() {
        return Err(format!("/ready answered {}", ready.status()));
    }
    let ours = http
        .post(format!("{base}/graphql"))
        .bearer_auth(key)
        .json(&serde_json::json!({ "query": "{ __typename }" }))
        .send()
        .await
        .map_err(|error| error.to_string())?;
    let status = ours.status();
    let body: Value = ours.json().await.map_err(|error| error.to_string())?;
    if status.is_success() && body["errors"].is_null() {
        Ok(())
    } else {
        Err(format!(
            "a query with the tenant's key answered {status}: {body}"
        ))
    }
}

/// Waits until `child` is ready and answers for the tenant holding `key`
/// (a server that took the port first would not know the key), or has
/// exited: then its exit status.
async fn ready(
    child: &mut tokio::process::Child,
    http: &reqwest::Client,
    base: &str,
    key: &str,
) -> Result<(), std::process::ExitStatus> {
    eventually(Duration::from_secs(60), async || {
        if let Some(exited) = child.try_wait().expect("the child's status") {
            return Ok(Err(exited));
        }
        answers(http, base, key).await.map(Ok)
    })
    .await
}

impl Served {
    /// The `data` of a GraphQL call that must succeed.
    pub async fn graphql(&self, query: &str, variables: Value) -> Value {
        data(graphql(&self.http, &self.base, Some(&self.key), query, variables).await)
    }

    /// The sum of every series of the Prometheus metric `name` (0 if none).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.metrics_base))
            .send()
            .await
            .expect("metrics answered")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .filter(|line| {
                line.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with([' ', '{']))
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// The SMTP settings of a `mail` provider at `port` that every email uses.
pub fn smtp_config(port: u16) -> String {
    format!(
        "[providers.mail]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {port}\n\
         tls = \"none\"\nfrom = \"Herald <no-reply@herald.test>\"\n\
         [routing.channels]\nemail = [\"mail\"]\n"
    )
}
