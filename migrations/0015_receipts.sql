-- Delivery receipts name a message by the id its provider gave it. They are
-- matched against the log itself, not a projection, so a receipt arriving
-- a moment after the send already finds it; this keeps that lookup an index
-- probe over NotificationSent events only.
CREATE INDEX events_provider_message_id
    ON events ((payload->>'provider_message_id'))
    WHERE event_type = 'NotificationSent';

-- SNS topics this installation confirmed a subscription to (or was
-- unsubscribed from), for operators: the SubscribeURL's token is not kept.
CREATE TABLE sns_subscriptions (
    topic_arn  text        PRIMARY KEY,
    status     text        NOT NULL CHECK (status IN ('confirmed', 'unsubscribed')),
    -- The SNS message that last changed it.
    message_id text        NOT NULL,
    updated_at timestamptz NOT NULL
);
