-- analytics, version 2: the provider and template dimensions and delivery
-- latency. New tables beside `analytics_counts`, which keeps its shape: the
-- previous version's runners (older binaries in a rolling deploy) go on
-- writing and reading it until version 2, rebuilt beside them from the start
-- of the log, swaps in all three tables at once and retires them.
--
-- provider: that of the latest DeliveryAttempted before the event, else
-- 'none'; template: the request's template key, else 'none'.
CREATE TABLE analytics_counts_detailed (
    tenant_id text        NOT NULL,
    hour      timestamptz NOT NULL,
    channel   text        NOT NULL,
    provider  text        NOT NULL,
    template  text        NOT NULL,
    status    text        NOT NULL,
    count     bigint      NOT NULL,
    PRIMARY KEY (tenant_id, hour, channel, provider, template, status)
);

-- Time from a notification's request to each NotificationSent, counted into
-- fixed buckets: `le_ms` is the bucket's upper bound in milliseconds
-- ('Infinity' for the last), as in a Prometheus histogram, but not
-- cumulative. The hour is that of the NotificationSent.
CREATE TABLE analytics_latency (
    tenant_id text             NOT NULL,
    hour      timestamptz      NOT NULL,
    channel   text             NOT NULL,
    provider  text             NOT NULL,
    template  text             NOT NULL,
    le_ms     double precision NOT NULL,
    count     bigint           NOT NULL,
    PRIMARY KEY (tenant_id, hour, channel, provider, template, le_ms)
);
