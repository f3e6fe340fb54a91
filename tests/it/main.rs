//! One integration-test binary (one link step) with a module per room.

mod peers;
mod served;
mod support;

mod analytics;
mod api;
mod attachments;
mod audience;
mod callbacks;
mod campaign_control;
mod campaigns;
mod contract;
mod crash;
mod delivery;
mod eventstore;
mod graphiql;
mod hostile_tenant;
mod inapp_feed;
mod ingest;
mod journey;
mod limits;
mod links;
mod outage;
mod projections;
mod projections_ops;
mod providers_ntfy;
mod providers_smtp;
mod providers_sns;
mod providers_webhook;
mod receipts;
mod replay;
mod schedules;
mod subscriptions;
mod templates;
mod torture;
mod unreadable;
