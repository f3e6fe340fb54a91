-- Recipients, their preferences, and each tenant's default quiet hours.

-- Kept in step with the `recipient-<tenant>/<id>` streams in the append's
-- transaction; the log is the source of truth. A row may have preferences
-- and no profile: an unsubscribe can come before any upsert.
CREATE TABLE recipients (
    tenant_id    text        NOT NULL,
    recipient_id text        NOT NULL,
    -- The profile as the domain serialises it; NULL until upserted.
    profile      jsonb,
    -- [{"category", "channel", "opted_in", "source", "changed_at"}]; absent
    -- category or channel means all of them.
    preferences  jsonb       NOT NULL,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, recipient_id)
);

-- Kept in step with the `audience-settings-<tenant>` streams. No row, or
-- NULL times: quiet hours are off for the tenant.
CREATE TABLE audience_settings (
    tenant_id         text        PRIMARY KEY,
    quiet_hours_start time,
    quiet_hours_end   time,
    updated_at        timestamptz NOT NULL,
    CHECK ((quiet_hours_start IS NULL) = (quiet_hours_end IS NULL))
);
