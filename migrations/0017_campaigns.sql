-- Campaigns (seed 004): the current state of each campaign, kept in step with
-- its `campaign-<uuid>` stream by the command side; its messages (one per
-- good CSV row, in batches); the rows refused at import; signed callbacks.

CREATE TABLE campaigns (
    campaign_id      uuid        PRIMARY KEY,
    tenant_id        text        NOT NULL,
    name             text        NOT NULL,
    status           text        NOT NULL,
    spec             jsonb       NOT NULL,
    schedule_at      timestamptz,
    batches          integer     NOT NULL DEFAULT 0,
    released_batches integer     NOT NULL DEFAULT 0,
    total_messages   bigint      NOT NULL DEFAULT 0,
    rejected_rows    bigint      NOT NULL DEFAULT 0,
    progress_reached smallint    NOT NULL DEFAULT 0,
    started_at       timestamptz,
    completed_at     timestamptz,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    stream_version   integer     NOT NULL
);

CREATE INDEX campaigns_page ON campaigns (tenant_id, campaign_id DESC);
-- The worker's scan: campaigns that may have work.
CREATE INDEX campaigns_active ON campaigns (status)
    WHERE status IN ('SCHEDULED', 'SENDING', 'SENT');

-- One row per message. `row_no` is the message's number within the campaign
-- (the idempotency key is campaign:<id>:<row_no>); `line` the CSV line it
-- came from, when it came from a CSV.
CREATE TABLE campaign_messages (
    campaign_id     uuid    NOT NULL,
    row_no          bigint  NOT NULL,
    batch_no        integer NOT NULL,
    line            bigint,
    address         text    NOT NULL,
    variables       jsonb   NOT NULL,
    -- CREATED until released, then RELEASED; CANCELLED if never released.
    status          text    NOT NULL DEFAULT 'CREATED',
    notification_id uuid,
    PRIMARY KEY (campaign_id, row_no)
);

CREATE INDEX campaign_messages_batch ON campaign_messages (campaign_id, batch_no);
-- The pacing check walks the (small) delivery queue into a campaign's messages.
CREATE INDEX campaign_messages_notification ON campaign_messages (notification_id)
    WHERE notification_id IS NOT NULL;

CREATE TABLE campaign_batches (
    campaign_id   uuid        NOT NULL,
    batch_no      integer     NOT NULL,
    message_count integer     NOT NULL,
    status        text        NOT NULL,
    created_at    timestamptz NOT NULL,
    released_at   timestamptz,
    PRIMARY KEY (campaign_id, batch_no)
);

-- Rows an import refused, with the CSV line and why. Capped per import.
CREATE TABLE campaign_import_errors (
    campaign_id uuid   NOT NULL,
    import_id   uuid   NOT NULL,
    line        bigint NOT NULL,
    reason      text   NOT NULL,
    PRIMARY KEY (campaign_id, import_id, line)
);

-- The per-tenant secret that signs callbacks to URLs that are not a
-- registered webhook endpoint.
CREATE TABLE campaign_signing_secrets (
    tenant_id  text        PRIMARY KEY,
    secret     text        NOT NULL,
    created_at timestamptz NOT NULL
);

CREATE TABLE campaign_callbacks (
    callback_id     uuid        PRIMARY KEY,
    campaign_id     uuid        NOT NULL,
    tenant_id       text        NOT NULL,
    event           text        NOT NULL,
    url             text        NOT NULL,
    body            text        NOT NULL,
    status          text        NOT NULL DEFAULT 'PENDING',
    attempts        integer     NOT NULL DEFAULT 0,
    last_error      text,
    next_attempt_at timestamptz,
    delivered_at    timestamptz,
    created_at      timestamptz NOT NULL
);

CREATE INDEX campaign_callbacks_campaign ON campaign_callbacks (campaign_id, created_at);
CREATE INDEX campaign_callbacks_due ON campaign_callbacks (next_attempt_at)
    WHERE status IN ('PENDING', 'RETRYING');
