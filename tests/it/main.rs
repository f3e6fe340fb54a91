//! One integration-test binary (one link step) with a module per room.

mod peers;
mod support;

mod analytics;
mod api;
mod callbacks;
mod crash;
mod delivery;
mod eventstore;
mod inapp_feed;
mod ingest;
mod limits;
mod projections;
mod projections_ops;
mod providers_ntfy;
mod providers_smtp;
mod providers_sns;
mod providers_webhook;
mod replay;
mod subscriptions;
mod torture;
