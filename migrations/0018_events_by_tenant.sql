-- Subscription catch-ups (`events(after:)`, `inappFeed(after:)`) read one
-- tenant's events in the log's read order. With this index that read
-- touches only the tenant's own rows, however large other tenants' share
-- of the log.
CREATE INDEX events_tenant_read_order ON events (tenant_id, transaction_id, global_position);
