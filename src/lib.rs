//! Herald: a multi-tenant notification service on one PostgreSQL event log.
//!
//! Each module is a room with one job; docs/architecture.md lists them and
//! the rooms each may use. This file wires them together: the roles of
//! `herald serve` and `herald migrate`.

pub mod api;
pub mod bench;
pub mod cli;
pub mod commands;
pub mod config;
pub mod database;
pub mod domain;
pub mod egress;
pub mod eventstore;
pub mod projections;
pub mod providers;
pub mod signing;
pub mod telemetry;
pub mod ttl_cache;
pub mod workers;

use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, DatabaseUrl};
use crate::database::Database;
use crate::eventstore::EventStore;

/// What a `herald serve` process runs; several processes may share one database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Role {
    /// The HTTP API: GraphQL, REST, health, metrics.
    Api,
    /// Rank, schedule, throttle and dispatch loops.
    Workers,
    /// Projection runners that fold the log into read models.
    Projections,
}

/// Opens the database the configuration names (starting the embedded cluster if none).
pub async fn open_database(config: &Config) -> anyhow::Result<Database> {
    Ok(Database::open(
        config.database_url.as_ref().map(DatabaseUrl::expose),
        &config.data_dir,
        config.database_max_connections,
    )
    .await?)
}

/// `herald migrate`: applies the embedded migrations and exits. Like the
/// other administration commands, it never creates the embedded cluster.
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let db = Database::open_as_client(
        config.database_url.as_ref().map(DatabaseUrl::expose),
        &config.data_dir,
        config.database_max_connections,
    )
    .await?;
    let result = db.migrate().await;
    db.close().await;
    result?;
    tracing::info!("database is migrated");
    Ok(())
}

/// `herald serve`: runs the given roles until SIGINT or SIGTERM.
pub async fn serve(config: Config, roles: &[Role]) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let metrics = telemetry::metrics::install().context("installing the Prometheus recorder")?;

    let db = open_database(&config).await?;
    let result = run(&config, roles, &db, metrics, shutdown).await;
    db.close().await;
    result
}

async fn run(
    config: &Config,
    roles: &[Role],
    db: &Database,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    db.migrate().await?;
    let store = EventStore::new(db.pool.clone());
    tracing::info!(?roles, "herald is starting");

    if let Some(address) = config.metrics_listen {
        serve_metrics(address, metrics, shutdown.clone()).await;
    }

    // The port is taken first, so that a port in use fails the start at
    // once, but served last: a process that answers is fully started, and a
    // start that fails (the database gone while the workers load their
    // keys) fails before anyone was told it is ready.
    let api = if roles.contains(&Role::Api) {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {} (set HERALD_LISTEN or --listen)",
                    config.listen
                )
            })?;
        let options = config.api_options();
        let app = api::router(api::ApiState::new(store.clone(), &options).await?, &options);
        Some((listener, app))
    } else {
        None
    };

    let projections = roles.contains(&Role::Projections).then(|| {
        let runners = projections::runner::spawn_all(store.clone(), shutdown.clone());
        let gauges = projections::engagement_gauges::spawn(
            store.pool().clone(),
            config.analytics.clone(),
            shutdown.clone(),
        );
        tokio::spawn(async move {
            let (runners, gauges) = tokio::join!(runners, gauges);
            for ended in [runners, gauges] {
                if let Err(error) = ended {
                    tracing::error!(%error, "a projections task panicked");
                }
            }
        })
    });

    let workers = if roles.contains(&Role::Workers) {
        let providers = providers::build(
            &config.provider_configs(),
            &egress::Egress::new(&config.egress),
        )
        .await
        .context("configuring providers")?;
        Some(
            workers::spawn(
                store.clone(),
                providers,
                config.worker_options(),
                shutdown.clone(),
            )
            .await?,
        )
    } else {
        None
    };

    let server = api.map(|(listener, app)| {
        tracing::info!("listening on http://{}", config.listen);
        let graceful = shutdown.clone().cancelled_owned();
        tokio::spawn(async move {
            // The peer address feeds tracking's truncated client network.
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .with_graceful_shutdown(graceful)
            .await
        })
    });

    shutdown.cancelled().await;
    if let Some(server) = server {
        let grace = Duration::from_secs(config.shutdown_timeout_seconds);
        match tokio::time::timeout(grace, server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => tracing::error!(%error, "the HTTP server failed"),
            Ok(Err(error)) => tracing::error!(%error, "the HTTP server task panicked"),
            Err(_) => tracing::warn!(
                ?grace,
                "in-flight requests did not finish in time; closing them"
            ),
        }
    }
    if let Some(workers) = workers {
        let grace = Duration::from_secs(config.shutdown_timeout_seconds);
        if tokio::time::timeout(grace, workers).await.is_err() {
            tracing::warn!(
                ?grace,
                "workers did not finish their provider calls in time; their leases return the work"
            );
        }
    }
    if let Some(projections) = projections {
        let grace = Duration::from_secs(config.shutdown_timeout_seconds);
        if tokio::time::timeout(grace, projections).await.is_err() {
            tracing::warn!(?grace, "projection runners did not stop in time");
        }
    }
    tracing::info!("herald stopped");
    Ok(())
}

/// Serves `/metrics` on `address` until shutdown. A port already taken
/// (another process on this host) costs the metrics, not the service.
async fn serve_metrics(
    address: std::net::SocketAddr,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
    shutdown: CancellationToken,
) {
    let listener = match tokio::net::TcpListener::bind(address).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::warn!(
                %error,
                %address,
                "metrics are not served: cannot listen (set metrics_listen, or \"off\")"
            );
            return;
        }
    };
    tracing::info!("metrics on http://{address}/metrics");
    tokio::spawn(async move {
        let served = axum::serve(listener, api::metrics_router(metrics))
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "the metrics server failed");
        }
    });
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::error!("cannot install signal handlers; stop herald with SIGKILL");
        return;
    };
    loop {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        if shutdown.is_cancelled() {
            tracing::warn!("already shutting down; waiting for in-flight work");
        } else {
            tracing::info!("shutting down: finishing in-flight work");
            shutdown.cancel();
        }
    }
}
