-- Raw source events (seed 001), one row per SourceEventIngested in the log,
-- written in the transaction that appends it. Two jobs:
--   * idempotency: at most one original per (tenant, source, event id); a
--     repeat is stored too, flagged as a duplicate;
--   * the entity index that replay reads: entity + time window -> positions.
CREATE TABLE ingested_events (
    -- The SourceEventIngested event in the log.
    global_position bigint      PRIMARY KEY,
    tenant_id       text        NOT NULL,
    source          text        NOT NULL,
    -- The producer's id for the event, not the log's.
    event_id        text        NOT NULL,
    entity_type     text        NOT NULL,
    entity_id       text        NOT NULL,
    event_type      text        NOT NULL,
    occurred_at     timestamptz NOT NULL,
    duplicate       boolean     NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now()
);

-- Decides original versus duplicate: ingest inserts originals with
-- ON CONFLICT DO NOTHING on this index, so concurrent identical ingests
-- produce exactly one original.
CREATE UNIQUE INDEX ingested_events_one_original
    ON ingested_events (tenant_id, source, event_id)
    WHERE NOT duplicate;

CREATE INDEX ingested_events_by_entity
    ON ingested_events (tenant_id, entity_type, entity_id, occurred_at);
