-- provider_health: what each worker process sees of each provider (circuit
-- breaker state, calls in flight), refreshed every few seconds, so the ops
-- views can show it whichever process serves the API. A process that stops
-- refreshing is shown as stale, then dropped.
CREATE TABLE provider_health (
    worker_id       uuid        NOT NULL,
    provider        text        NOT NULL,
    state           text        NOT NULL CHECK (state IN ('closed', 'half_open', 'open')),
    recent_failures integer     NOT NULL,
    opened_at       timestamptz,
    in_flight       integer     NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (worker_id, provider)
);

-- delivery_queue churns: every row is inserted, updated a few times and
-- deleted within seconds. Vacuum it after 1% dead rows (not the default 20%)
-- so a long run keeps it small, and leave room for updates in place.
ALTER TABLE delivery_queue SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    fillfactor = 80
);
