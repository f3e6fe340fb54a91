//! Administration from the shell: the subcommands beyond `serve`.

pub mod tenants;
