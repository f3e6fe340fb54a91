-- dead_letters: notifications that gave up, until an operator requeues them
-- (seed 002's DLQ, one view for every channel). Kept by the projection
-- runner; a requeue marks the row (a tombstone, so replaying an older range
-- cannot bring it back), a later dead letter makes it live again.
CREATE TABLE dead_letters (
    notification_id  uuid        PRIMARY KEY,
    tenant_id        text        NOT NULL,
    reason           text        NOT NULL,
    dead_lettered_at timestamptz NOT NULL,
    -- The NotificationDeadLettered event: a replayed older event never
    -- overwrites a newer one.
    global_position  bigint      NOT NULL,
    -- The row's last event was NotificationRequeued: no longer a dead letter.
    requeued         boolean     NOT NULL DEFAULT false
);
CREATE INDEX dead_letters_by_tenant ON dead_letters (tenant_id, dead_lettered_at DESC, notification_id DESC)
    WHERE NOT requeued;
