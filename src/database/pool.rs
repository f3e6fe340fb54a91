//! Opening the database Herald runs on: a server named by URL, or the private
//! embedded cluster. Migrations are compiled into the binary.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::embedded::{self, EmbeddedError, EmbeddedOptions, EmbeddedPostgres};

pub static MIGRATOR: Migrator = sqlx::migrate!();

/// The database the embedded cluster serves Herald from.
const EMBEDDED_DATABASE: &str = "herald";

#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error(transparent)]
    Embedded(#[from] EmbeddedError),
    #[error("DATABASE_URL is not a valid PostgreSQL URL: {0}")]
    InvalidUrl(sqlx::Error),
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(sqlx::Error),
    #[error("migrating the database failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(
        "no Herald database in the data dir {data_dir} (no embedded cluster under {pg_dir}); \
         only `herald serve` creates one. Run this command in the directory `herald serve` \
         runs in, or point it at the service's data dir (--data-dir DIR or HERALD_DATA_DIR=DIR) \
         or at its database (DATABASE_URL)"
    )]
    NoCluster { data_dir: PathBuf, pg_dir: PathBuf },
}

pub struct Database {
    pub pool: PgPool,
    embedded: Option<EmbeddedPostgres>,
}

impl Database {
    /// Connects to `url`, or starts the embedded cluster under `data_dir/pg`.
    pub async fn open(
        url: Option<&str>,
        data_dir: &Path,
        max_connections: u32,
    ) -> Result<Database, DatabaseError> {
        Database::open_with(url, data_dir, max_connections, false).await
    }

    /// Like `open`, but when a running `herald serve` owns the embedded
    /// cluster, connects to it as a client instead of failing: what the
    /// administration commands want while the service runs. Never creates
    /// a cluster: one made by a command run from the wrong directory would
    /// be a second database, whose tenants and keys the service never sees.
    pub async fn open_as_client(
        url: Option<&str>,
        data_dir: &Path,
        max_connections: u32,
    ) -> Result<Database, DatabaseError> {
        Database::open_with(url, data_dir, max_connections, true).await
    }

    async fn open_with(
        url: Option<&str>,
        data_dir: &Path,
        max_connections: u32,
        join_running: bool,
    ) -> Result<Database, DatabaseError> {
        let pg_dir = data_dir.join("pg");
        let (options, embedded) = match url {
            Some(url) => (
                PgConnectOptions::from_str(url).map_err(DatabaseError::InvalidUrl)?,
                None,
            ),
            None if join_running && !embedded::is_initialised(&pg_dir) => {
                let absolute = |dir: &Path| std::path::absolute(dir).unwrap_or(dir.to_path_buf());
                return Err(DatabaseError::NoCluster {
                    data_dir: absolute(data_dir),
                    pg_dir: absolute(&pg_dir),
                });
            }
            None if join_running && pg_dir.join(".s.PGSQL.5432").exists() && is_locked(&pg_dir) => {
                (embedded::connect_options(&pg_dir, EMBEDDED_DATABASE), None)
            }
            None => {
                let cluster = EmbeddedPostgres::start(
                    &pg_dir,
                    EmbeddedOptions {
                        max_connections: (max_connections * 2 + 20).max(100),
                        fast_unsafe: false,
                    },
                )
                .await?;
                cluster.ensure_database(EMBEDDED_DATABASE).await?;
                (cluster.connect_options(EMBEDDED_DATABASE), Some(cluster))
            }
        };
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(DatabaseError::Connect)?;
        Ok(Database { pool, embedded })
    }

    pub async fn migrate(&self) -> Result<(), DatabaseError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// Closes the pool, then stops the embedded cluster if Herald started it.
    pub async fn close(self) {
        self.pool.close().await;
        if let Some(cluster) = self.embedded
            && let Err(error) = cluster.stop().await
        {
            tracing::error!(%error, "stopping the embedded PostgreSQL failed");
        }
    }
}

/// Whether another process holds the cluster's lock (a running `herald serve`).
fn is_locked(pg_dir: &Path) -> bool {
    match std::fs::File::open(pg_dir.join("herald.lock")) {
        Ok(file) => match file.try_lock_shared() {
            Ok(()) => {
                let _ = file.unlock();
                false
            }
            Err(_) => true,
        },
        Err(_) => false,
    }
}

/// Whether the schema this binary needs is in place.
pub async fn is_migrated<'c>(connection: impl sqlx::PgExecutor<'c>) -> Result<bool, sqlx::Error> {
    let Some(latest) = MIGRATOR.iter().map(|m| m.version).max() else {
        return Ok(true);
    };
    let applied: Option<i64> =
        sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(connection)
            .await
            .or_else(|e| match &e {
                // No migrations table yet: nothing applied.
                sqlx::Error::Database(db) if db.code().as_deref() == Some("42P01") => Ok(None),
                _ => Err(e),
            })?;
    Ok(applied.is_some_and(|v| v >= latest))
}
