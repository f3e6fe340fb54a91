//! PostgreSQL for Herald: the private embedded cluster, the pool and the
//! migrations compiled into the binary.

pub mod embedded;
mod pool;

pub use embedded::{EmbeddedError, EmbeddedOptions, EmbeddedPostgres};
pub use pool::{Database, DatabaseError, MIGRATOR, is_migrated};
