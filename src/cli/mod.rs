//! Administration from the shell: the subcommands beyond `serve`.

pub mod campaigns;
pub mod dead_letters;
pub mod ingest;
pub mod projections;
pub mod replay;
pub mod tenants;

use crate::config::{Config, DatabaseUrl};
use crate::database::Database;
use crate::eventstore::EventStore;

/// Runs `work` on the configured database, migrated (joining the embedded
/// cluster of a running `herald serve` when there is one), and closes the
/// database whatever `work` returns.
async fn with_store<T, F>(config: &Config, work: impl FnOnce(EventStore) -> F) -> anyhow::Result<T>
where
    F: Future<Output = anyhow::Result<T>>,
{
    let db = Database::open_as_client(
        config.database_url.as_ref().map(DatabaseUrl::expose),
        &config.data_dir,
        config.database_max_connections,
    )
    .await?;
    let result = async {
        db.migrate().await?;
        work(EventStore::new(db.pool.clone())).await
    }
    .await;
    db.close().await;
    result
}
