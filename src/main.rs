use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use herald::config::Config;
use herald::{Role, bench};

/// mimalloc rather than the system allocator: the log's readers and the
/// send path allocate many short-lived JSON values, and glibc's malloc
/// showed up as a tenth of Herald's CPU time in `perf` (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Herald, a notification service on one PostgreSQL event log.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (default: $HERALD_CONFIG, else ./herald.toml when present).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Herald's data dir, where `herald serve` keeps its embedded cluster
    /// (overrides HERALD_DATA_DIR and `data_dir`; default ./.herald).
    /// Other commands must name the service's own: they never create one.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (without DATABASE_URL, on a private PostgreSQL cluster under the data dir).
    Serve {
        /// Which parts to run in this process.
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            default_value = "api,workers,projections"
        )]
        roles: Vec<Role>,
        /// Address of the HTTP API (overrides HERALD_LISTEN).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Print the effective configuration, secrets masked.
    Config {
        /// Print every default instead, as committed in herald.example.toml.
        #[arg(long)]
        defaults: bool,
    },
    /// Print the GraphQL schema (SDL), as committed in schema.graphql.
    Schema,
    /// Create tenants and manage their API keys.
    #[command(subcommand)]
    Tenants(herald::cli::tenants::TenantsCommand),
    /// Store a file of raw source events (NDJSON) for a tenant; prints a JSON summary.
    Ingest(herald::cli::ingest::IngestArgs),
    /// List projections, retry or skip a failed event, rebuild.
    #[command(subcommand)]
    Projections(herald::cli::projections::ProjectionsCommand),
    /// Inspect and replay a tenant's dead-letter queue.
    #[command(subcommand)]
    DeadLetters(herald::cli::dead_letters::DeadLettersCommand),
    /// Replay an entity's events in a time window, or a position range, as NDJSON;
    /// or re-run a position range through an idempotent projection (--into).
    Replay(herald::cli::replay::ReplayArgs),
    /// Create CSV email campaigns from the shell, with a progress display.
    #[command(subcommand)]
    Campaigns(herald::cli::campaigns::CampaignsCommand),
    /// Load generators that print throughput and latency figures.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The defaults need no configuration, and a broken one must not hide them.
    if let Command::Config { defaults: true } = cli.command {
        print!("{}", Config::example_toml());
        return std::process::ExitCode::SUCCESS;
    }
    let mut config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("herald: {error}");
            return std::process::ExitCode::from(2);
        }
    };
    if let Some(data_dir) = cli.data_dir {
        config.data_dir = data_dir;
    }
    if let Command::Serve {
        listen: Some(listen),
        ..
    } = &cli.command
    {
        config.listen = *listen;
    }
    match cli.command {
        Command::Config { .. } => {
            print!("{}", config.redacted_toml());
            return std::process::ExitCode::SUCCESS;
        }
        Command::Schema => {
            print!("{}", herald::api::graphql::sdl());
            return std::process::ExitCode::SUCCESS;
        }
        _ => {}
    }
    let _telemetry = match herald::telemetry::init(
        config.log_format,
        &config.log_filter,
        config.otel_exporter_otlp_endpoint.as_deref(),
    ) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("herald: {error:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("herald: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve { roles, .. } => herald::serve(config, &roles).await,
            Command::Migrate => herald::migrate(&config).await,
            Command::Tenants(command) => herald::cli::tenants::run(&config, command).await,
            Command::Ingest(args) => herald::cli::ingest::run(&config, args).await,
            Command::Replay(args) => herald::cli::replay::run(&config, args).await,
            Command::Campaigns(command) => herald::cli::campaigns::run(&config, command).await,
            Command::Projections(command) => herald::cli::projections::run(&config, command).await,
            Command::DeadLetters(command) => herald::cli::dead_letters::run(&config, command).await,
            Command::Bench(command) => bench::run(&config, command).await,
            Command::Config { .. } | Command::Schema => {
                unreachable!("handled before the runtime starts")
            }
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("herald: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
