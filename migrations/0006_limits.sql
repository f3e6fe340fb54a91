-- Per-tenant limits (commands::limits) and the dispatcher's token buckets
-- (workers::throttle).

-- A tenant's overrides of the configured limits, kept in step with
-- TenantLimitsSet in the same transaction, so a send reads them in one lookup.
CREATE TABLE tenant_limits (
    tenant_id  text        PRIMARY KEY REFERENCES tenants (tenant_id),
    limits     jsonb       NOT NULL,
    updated_at timestamptz NOT NULL
);

-- One row per tenant and UTC month: the month's totals and the current day's
-- count, so one upsert of one row checks and counts every quota at once. A
-- send counts in its own transaction: a rolled-back send counts nothing.
CREATE TABLE tenant_usage (
    tenant_id      text    NOT NULL,
    -- The first day of the month.
    month          date    NOT NULL,
    -- The day `day_messages` counts; a later day starts it again from 0.
    day            date    NOT NULL,
    day_messages   bigint  NOT NULL,
    month_messages bigint  NOT NULL,
    -- numeric, so "before" = "after" - increment exactly, and a soft cap is
    -- crossed by exactly one increment.
    month_cost     numeric NOT NULL,
    PRIMARY KEY (tenant_id, month)
);

-- Token buckets shared by every process, on the database clock.
CREATE TABLE token_buckets (
    key             text             PRIMARY KEY,
    tokens          double precision NOT NULL,
    updated_at      timestamptz      NOT NULL,
    -- The shape the last take used: its own values reach ON CONFLICT through
    -- EXCLUDED, and a row can be recognised as full (and dropped) later.
    rate_per_second double precision NOT NULL,
    burst           double precision NOT NULL,
    -- The last take's grant: RETURNING sees only the new row, not the old
    -- tokens the grant was taken from.
    granted         bigint           NOT NULL
);

-- A bucket's tokens at `now`: refilled by the time since `since`, never above
-- `burst`, and never drained by a clock that reads earlier than `since`.
CREATE FUNCTION token_bucket_level(
    tokens double precision,
    since timestamptz,
    rate_per_second double precision,
    burst double precision,
    now timestamptz
) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN least(burst, tokens + rate_per_second * greatest(0, extract(epoch FROM now - since)::float8));
