-- A notification held for the same reason again (an open breaker, a
-- throttle) records no new event: its queue row alone moves, and counts
-- how often it was looked at again.
ALTER TABLE delivery_queue ADD COLUMN rechecks integer NOT NULL DEFAULT 0;

-- Until then a bucket's tokens go to HIGH and NORMAL attempts only: some
-- were refused and come back for them, and a LOW one must not take theirs.
ALTER TABLE token_buckets ADD COLUMN urgent_until timestamptz;
