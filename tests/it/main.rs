//! One integration-test binary (one link step) with a module per room.

mod peers;
mod support;

mod analytics;
mod delivery;
mod api;
mod eventstore;
mod ingest;
mod projections;
mod replay;
mod subscriptions;
mod torture;
