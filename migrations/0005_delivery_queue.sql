-- The dispatcher's work list (DESIGN.md §6): one row per notification that
-- still has something to do. It is written in the same transaction as the
-- event that makes the work due (NotificationRequested, a retry, a throttle
-- delay), and a row leaves as soon as its notification is sent or ends, so
-- the hot table holds only live work.
CREATE TABLE delivery_queue (
    notification_id uuid        PRIMARY KEY,
    tenant_id       text        NOT NULL,
    -- 0 HIGH, 1 NORMAL, 2 LOW: claimed in this order when all are due.
    priority        smallint    NOT NULL CHECK (priority BETWEEN 0 AND 2),
    -- When the row may be claimed. A claim moves it forward by the lease, so
    -- a worker that dies returns its claims when the lease runs out.
    due_at          timestamptz NOT NULL,
    leased_by       uuid,
    -- Claims so far: a row that keeps coming back unfinished is visible.
    claims          integer     NOT NULL DEFAULT 0,
    enqueued_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX delivery_queue_claim ON delivery_queue (priority, due_at);
CREATE INDEX delivery_queue_due ON delivery_queue (due_at);
