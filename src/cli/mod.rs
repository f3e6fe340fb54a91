//! Administration from the shell: the subcommands beyond `serve`.

pub mod ingest;
pub mod projections;
pub mod replay;
pub mod tenants;
