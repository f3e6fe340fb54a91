-- inapp_feed: each recipient's in-app items, one row per notification
-- delivered on the in_app channel (its NotificationSent), with where the
-- recipient left it (InAppItemsMarked on the feed's stream). Kept by the
-- projection runner; rebuilt from the log like any read model.
CREATE TABLE inapp_feed (
    notification_id    uuid        PRIMARY KEY,
    tenant_id          text        NOT NULL,
    recipient_id       text        NOT NULL,
    title              text,
    text               text,
    cta_url            text,
    data               jsonb,
    category           text,
    delivered_at       timestamptz NOT NULL,
    -- The NotificationSent event: the feed's order and its cursor.
    delivered_position bigint      NOT NULL,
    state              text        NOT NULL DEFAULT 'unread'
                                   CHECK (state IN ('unread', 'read', 'archived')),
    read_at            timestamptz,
    archived_at        timestamptz,
    -- The last event that wrote the row: a replayed older event never
    -- overwrites a newer one.
    global_position    bigint      NOT NULL
);
CREATE INDEX inapp_feed_by_recipient ON inapp_feed (tenant_id, recipient_id, delivered_position DESC);
-- The unread count and "mark all read" read only these.
CREATE INDEX inapp_feed_unread ON inapp_feed (tenant_id, recipient_id) WHERE state = 'unread';
