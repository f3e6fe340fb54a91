-- Recurring schedules: the current state of each `schedule-<uuid>` stream,
-- written in the transaction that appends its events. The scheduler finds
-- due schedules through `schedules_due`; a deleted schedule's row is removed
-- (its history stays in the log).
CREATE TABLE schedules (
    schedule_id   uuid PRIMARY KEY,
    tenant_id     text NOT NULL,
    name          text NOT NULL,
    cron          text NOT NULL,
    timezone      text NOT NULL,
    missed_policy text NOT NULL,
    notification  jsonb NOT NULL,
    paused        boolean NOT NULL DEFAULT false,
    -- NULL while paused or when the expression never matches again.
    next_fire_at  timestamptz,
    last_fired_at timestamptz,
    last_failure  text,
    -- Events in the stream: the expected version of the next append.
    version       bigint NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);

CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE next_fire_at IS NOT NULL;
CREATE INDEX schedules_by_tenant ON schedules (tenant_id, schedule_id);
