-- Workflows (docs/workflows.md): the tables the command side keeps in the
-- transaction that appends a workflow's or a run's events, so a read or a
-- worker right after an append sees them. Timers are rows, never memory.

-- A workflow key's latest version, and every published version whole.
CREATE TABLE workflows (
    tenant_id      text NOT NULL,
    workflow_key   text NOT NULL,
    latest_version integer NOT NULL,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, workflow_key)
);

CREATE TABLE workflow_versions (
    tenant_id    text NOT NULL,
    workflow_key text NOT NULL,
    version      integer NOT NULL,
    definition   jsonb NOT NULL,
    published_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, workflow_key, version)
);

-- Each run as its stream has it: for `workflowRun` and `workflowRuns`.
CREATE TABLE workflow_runs (
    run_id         uuid PRIMARY KEY,
    tenant_id      text NOT NULL,
    workflow_key   text NOT NULL,
    version        integer NOT NULL,
    -- waiting, completed, cancelled
    status         text NOT NULL,
    recipient      jsonb NOT NULL,
    trigger_id     text NOT NULL,
    -- The step the run rests at, and until when; NULL once it has ended.
    current_step   text,
    waiting_until  timestamptz,
    -- Events in the run's stream.
    stream_version bigint NOT NULL,
    started_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL
);

CREATE INDEX workflow_runs_by_tenant ON workflow_runs (tenant_id, run_id DESC);

-- One row per run resting on a delay, a digest window or a wait's timeout.
-- `until` is the run's own time; `due_at` is when the worker fires it (the
-- same, unless `[workflows] time_scale` shortens rests, as tests do). The
-- worker claims due rows with FOR UPDATE SKIP LOCKED under a lease.
CREATE TABLE workflow_timers (
    run_id       uuid PRIMARY KEY,
    tenant_id    text NOT NULL,
    visit        integer NOT NULL,
    until        timestamptz NOT NULL,
    due_at       timestamptz NOT NULL,
    leased_until timestamptz,
    lease_owner  uuid
);

CREATE INDEX workflow_timers_due ON workflow_timers (due_at);

-- The events waiting runs listen for: position 0 is the rest's `wait_for`,
-- 1.. the armed `cancel_on` matchers in the order they were armed.
-- `match_value` is the first expected value (its JSON text) of the matcher,
-- NULL when it has none. Only events read after `armed_xid` (the
-- transaction that armed the matcher) are fed to the run.
CREATE TABLE workflow_waits (
    run_id      uuid NOT NULL,
    position    integer NOT NULL,
    tenant_id   text NOT NULL,
    event_type  text NOT NULL,
    match_value text,
    matcher     jsonb NOT NULL,
    armed_xid   bigint NOT NULL DEFAULT (pg_current_xact_id()::text::int8),
    PRIMARY KEY (run_id, position)
);

CREATE INDEX workflow_waits_by_event ON workflow_waits (tenant_id, event_type, match_value);

-- Open digest windows: a trigger with the same key joins the run.
CREATE TABLE workflow_digests (
    tenant_id    text NOT NULL,
    workflow_key text NOT NULL,
    digest_key   text NOT NULL,
    run_id       uuid NOT NULL,
    closes_at    timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, workflow_key, digest_key)
);

CREATE INDEX workflow_digests_by_run ON workflow_digests (run_id);

-- Runs that passed a throttle step, counted when a run starts.
CREATE TABLE workflow_throttle_passes (
    run_id       uuid NOT NULL,
    step         text NOT NULL,
    tenant_id    text NOT NULL,
    workflow_key text NOT NULL,
    throttle_key text NOT NULL,
    passed_at    timestamptz NOT NULL,
    PRIMARY KEY (run_id, step)
);

CREATE INDEX workflow_throttle_passes_window
    ON workflow_throttle_passes (tenant_id, workflow_key, step, throttle_key, passed_at);

-- Where the worker that feeds observed events to waiting runs has read the
-- log to.
CREATE TABLE workflow_observer (
    name            text PRIMARY KEY,
    transaction_id  bigint NOT NULL,
    global_position bigint NOT NULL
);
