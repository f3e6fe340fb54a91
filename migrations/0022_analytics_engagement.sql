-- analytics, version 3: engagement. Per tenant, hour, channel, provider and
-- template (as in analytics_counts_detailed), the notifications sent in that
-- hour and how many of those were delivered, opened, clicked, bounced or
-- complained about, whenever that happened: the hour is that of the
-- NotificationSent (the send's cohort), so each measure is a share of `sent`
-- in the same row. Each notification counts at most once per measure (its
-- first open, its first click). Filled by the rebuild of version 3 beside
-- version 2, which swaps it in with the other analytics tables.
CREATE TABLE analytics_engagement (
    tenant_id  text        NOT NULL,
    hour       timestamptz NOT NULL,
    channel    text        NOT NULL,
    provider   text        NOT NULL,
    template   text        NOT NULL,
    sent       bigint      NOT NULL DEFAULT 0,
    delivered  bigint      NOT NULL DEFAULT 0,
    opened     bigint      NOT NULL DEFAULT 0,
    clicked    bigint      NOT NULL DEFAULT 0,
    bounced    bigint      NOT NULL DEFAULT 0,
    complained bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, hour, channel, provider, template)
);

-- The engagement gauges read every tenant's recent hours.
CREATE INDEX analytics_engagement_hour ON analytics_engagement (hour);
