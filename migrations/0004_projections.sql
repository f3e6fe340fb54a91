-- Projections (DESIGN.md section 5): one checkpoint row per projection version,
-- written in the same transaction as the projection's tables, so a crash never
-- double-counts or loses an update.
CREATE TABLE projection_checkpoints (
    name             text        NOT NULL,
    version          integer     NOT NULL,
    -- The last event applied, in the log's read order (transaction_id, global_position);
    -- (0, 0) before the first.
    transaction_id   bigint      NOT NULL DEFAULT 0,
    global_position  bigint      NOT NULL DEFAULT 0,
    -- 'failed' stops the projection until an operator retries or skips the event;
    -- 'retired': a newer version was rebuilt beside it and swapped in.
    state            text        NOT NULL DEFAULT 'running'
                                 CHECK (state IN ('running', 'failed', 'retired')),
    error            text,
    failed_position  bigint,
    events_processed bigint      NOT NULL DEFAULT 0,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, version),
    CHECK ((state = 'failed') = (failed_position IS NOT NULL))
);

-- analytics: notifications entering each status, per tenant, hour, and channel
-- (the attempted channel once there is one, else the first requested).
CREATE TABLE analytics_counts (
    tenant_id text        NOT NULL,
    hour      timestamptz NOT NULL,
    channel   text        NOT NULL,
    status    text        NOT NULL,
    count     bigint      NOT NULL,
    PRIMARY KEY (tenant_id, hour, channel, status)
);
