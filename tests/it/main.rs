//! One integration-test binary (one link step) with a module per room.

mod support;

mod eventstore;
mod torture;
