//! PostgreSQL for Herald: the private embedded cluster, the pool and the
//! migrations compiled into the binary.

pub mod embedded;
mod health;
mod pool;

pub use embedded::{EmbeddedError, EmbeddedOptions, EmbeddedPostgres};
pub use health::{DatabaseHealth, Health, is_unreachable};
pub use pool::{Database, DatabaseError, MIGRATOR, is_migrated};
