//! Administration from the shell: the subcommands beyond `serve`.

pub mod campaigns;
pub mod dead_letters;
pub mod ingest;
pub mod projections;
pub mod replay;
pub mod tenants;

use std::path::Path;

use anyhow::Context;
use tokio::io::{AsyncBufRead, BufReader};

use crate::config::{Config, DatabaseUrl};
use crate::database::Database;
use crate::domain::values::TenantId;
use crate::eventstore::EventStore;

/// Large reads: an import or ingest file is read once, front to back.
const READ_BUFFER_BYTES: usize = 256 * 1024;

/// The file an import reads, or standard input for `-`.
async fn open_input(path: &Path) -> anyhow::Result<Box<dyn AsyncBufRead + Unpin + Send>> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(BufReader::with_capacity(
            READ_BUFFER_BYTES,
            tokio::io::stdin(),
        )));
    }
    let file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("cannot open {}", path.display()))?;
    Ok(Box::new(BufReader::with_capacity(READ_BUFFER_BYTES, file)))
}

fn tenant_arg(raw: &str) -> anyhow::Result<TenantId> {
    TenantId::parse(raw).map_err(|e| anyhow::anyhow!("--tenant: {e}"))
}

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
