//! `herald bench ...`: load generators that print their figures, each beside a
//! baseline measured in the same run so the ratio means something on a noisy machine.

mod api;
mod append;
mod campaign;
mod e2e;
mod rebuild;
mod report;
mod service;
mod subscribe;

use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

use crate::config::Config;
use crate::database::{MIGRATOR, embedded};

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Event store appends against plain SQL INSERTs of the same rows.
    Append(append::AppendArgs),
    /// GraphQL send throughput and read latency against raw SQL doing the same work.
    Api(api::ApiArgs),
    /// Many GraphQL subscribers: latency from append commit to receipt.
    Subscribe(subscribe::SubscribeArgs),
    /// Rebuilding notification_status and analytics from a large log against
    /// a raw COPY export of the same events.
    Rebuild(rebuild::RebuildArgs),
    /// Sends over GraphQL through a `herald serve` process to a webhook sink:
    /// accepted/s, delivered/s, accept-to-receipt latency, service RSS.
    E2e(e2e::E2eArgs),
    /// A generated CSV campaign imported and sent through a `herald serve`
    /// process: rows/s imported, messages/s sent, service RSS.
    Campaign(campaign::CampaignArgs),
}

pub async fn run(config: &Config, command: BenchCommand) -> anyhow::Result<()> {
    let scratch = ScratchDatabase::create(config).await?;
    let result = match command {
        BenchCommand::Append(args) => append::run(&scratch, args).await,
        BenchCommand::Api(args) => api::run(&scratch, args).await,
        BenchCommand::Subscribe(args) => subscribe::run(&scratch, args).await,
        BenchCommand::Rebuild(args) => rebuild::run(&scratch, args).await,
        BenchCommand::E2e(args) => e2e::run(&scratch, args).await,
        BenchCommand::Campaign(args) => campaign::run(&scratch, args).await,
    };
    scratch.drop_database().await;
    result
}

/// A fresh, migrated database for one benchmark run, dropped afterwards; on
/// the configured server, or on the embedded cluster when none is configured.
pub struct ScratchDatabase {
    admin: PgConnectOptions,
    target: PgConnectOptions,
    name: String,
    cluster: Option<embedded::EmbeddedPostgres>,
}

impl ScratchDatabase {
    async fn create(config: &Config) -> anyhow::Result<ScratchDatabase> {
        let (admin, cluster) = match &config.database_url {
            Some(url) => (url.expose().parse::<PgConnectOptions>()?, None),
            None => {
                let cluster = embedded::EmbeddedPostgres::start(
                    &config.data_dir.join("pg"),
                    embedded::EmbeddedOptions {
                        max_connections: 200,
                        fast_unsafe: false,
                    },
                )
                .await?;
                (cluster.connect_options("postgres"), Some(cluster))
            }
        };
        let name = format!("herald_bench_{}", std::process::id());
        let mut conn = admin
            .connect()
            .await
            .context("connecting to PostgreSQL for the benchmark")?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name}"
        )))
        .execute(&mut conn)
        .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .context("creating the benchmark database (the role needs CREATEDB)")?;
        let target = admin.clone().database(&name);
        let scratch = ScratchDatabase {
            admin,
            target,
            name,
            cluster,
        };
        let pool = scratch.pool(2).await?;
        MIGRATOR.run(&pool).await?;
        pool.close().await;
        Ok(scratch)
    }

    pub async fn pool(&self, connections: u32) -> anyhow::Result<PgPool> {
        Ok(PgPoolOptions::new()
            .max_connections(connections)
            .min_connections(connections)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(self.target.clone())
            .await?)
    }

    async fn drop_database(self) {
        let dropped = async {
            let mut conn = self.admin.connect().await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )))
            .execute(&mut conn)
            .await
        };
        if let Err(error) = dropped.await {
            eprintln!(
                "note: could not drop benchmark database {}: {error}",
                self.name
            );
        }
        if let Some(cluster) = self.cluster
            && let Err(error) = cluster.stop().await
        {
            eprintln!("note: stopping the embedded PostgreSQL failed: {error}");
        }
    }
}

/// The HTTP API over `store` on a loopback port, with a tenant to call it as:
/// what the API load generators measure. The server stops when the handle drops.
struct ApiUnderTest {
    address: std::net::SocketAddr,
    tenant: crate::commands::tenants::CreatedTenant,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// The load generators offer one key thousands of requests a second, past the
/// default `api_rate`. As the operator they raise it out of reach, so the
/// limiter still takes a token for every request but never refuses one.
const BENCH_API_RATE: f64 = 1e7;

fn bench_api_rate() -> Option<crate::domain::RateLimit> {
    Some(crate::domain::RateLimit::new(BENCH_API_RATE, BENCH_API_RATE).expect("a valid rate"))
}

impl ApiUnderTest {
    /// `api_rate`: each key's request rate; `None` is unlimited (no bucket).
    async fn start(
        store: &crate::eventstore::EventStore,
        api_rate: Option<crate::domain::RateLimit>,
    ) -> anyhow::Result<ApiUnderTest> {
        let mut config = Config::default();
        config.limits.api_rate = api_rate;
        let options = config.api_options();
        let state = crate::api::ApiState::new(store.clone(), &options).await?;
        let app = crate::api::router(state, &options);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let tenant = crate::commands::tenants::create_tenant(
            store,
            "bench",
            &crate::commands::Actor::new("bench"),
        )
        .await?;
        Ok(ApiUnderTest {
            address,
            tenant,
            server,
        })
    }
}

impl Drop for ApiUnderTest {
    fn drop(&mut self) {
        self.server.abort();
    }
}
