//! Read models. Each file owns one table and the queries over it.

pub mod notification_status;
