-- Webhook endpoints and the status callbacks sent to them.

-- Kept in step with the `webhook-endpoint-<uuid>` streams in the append's
-- transaction. The secrets are here in clear because signing needs them
-- (an HMAC key cannot be hashed); the log holds them too and is the source
-- of truth. A deleted endpoint keeps its row, without secrets, so its
-- deliveries still name it.
CREATE TABLE webhook_endpoints (
    endpoint_id uuid        PRIMARY KEY,
    tenant_id   text        NOT NULL,
    url         text        NOT NULL,
    description text        NOT NULL,
    -- Notification event types; empty means all of them.
    event_types text[]      NOT NULL,
    -- [{"secret": "whsec_...", "valid_until": null | timestamp}], newest first.
    secrets     jsonb       NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    deleted_at  timestamptz
);
-- One live endpoint per URL and tenant: a callback_url names exactly one.
CREATE UNIQUE INDEX webhook_endpoints_live_url ON webhook_endpoints (tenant_id, url)
    WHERE deleted_at IS NULL;

-- The callback outbox, filled by the `webhook_outbox` projection and drained
-- by the callback sender. Delivered rows are deleted, so the table holds
-- work in hand and the failures a tenant should see.
CREATE TABLE webhook_deliveries (
    delivery_id     uuid        PRIMARY KEY,
    tenant_id       text        NOT NULL,
    -- The notification event reported; also the `webhook-id` header.
    event_id        uuid        NOT NULL,
    -- NULL: a callback_url no endpoint registers, failed without sending.
    endpoint_id     uuid,
    url             text        NOT NULL,
    notification_id uuid        NOT NULL,
    event_type      text        NOT NULL,
    global_position bigint      NOT NULL,
    -- The exact bytes signed and sent, the same on every attempt.
    body            text        NOT NULL,
    status          text        NOT NULL CHECK (status IN ('pending', 'retrying', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,
    last_error      text,
    -- When the row may be claimed; a claim moves it forward by the lease.
    -- NULL once failed.
    next_attempt_at timestamptz,
    leased_by       uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'failed') = (next_attempt_at IS NULL))
);
-- Handling an event twice enqueues nothing new.
CREATE UNIQUE INDEX webhook_deliveries_once ON webhook_deliveries (event_id, endpoint_id);
CREATE UNIQUE INDEX webhook_deliveries_once_unregistered ON webhook_deliveries (event_id)
    WHERE endpoint_id IS NULL;
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE next_attempt_at IS NOT NULL;
CREATE INDEX webhook_deliveries_by_tenant ON webhook_deliveries (tenant_id, delivery_id DESC);

-- The outbox starts at the log's current horizon: events older than this
-- migration had no endpoints to go to, and a callback_url on them must not
-- turn the whole history into failed deliveries.
INSERT INTO projection_checkpoints (name, version, transaction_id, global_position)
VALUES ('webhook_outbox', 1, pg_snapshot_xmin(pg_current_snapshot())::text::bigint, 0)
ON CONFLICT DO NOTHING;
