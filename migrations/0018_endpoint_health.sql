-- provider_health.endpoints: the webhook endpoint origins a worker process
-- has a breaker for that is not simply closed and healthy (failures in the
-- window, open, half-open), with calls in flight to each: JSON objects
-- {origin, state, recent_failures, opened_at, in_flight}. Shown to a tenant
-- only for the origins of its own endpoints.
ALTER TABLE provider_health ADD COLUMN endpoints jsonb NOT NULL DEFAULT '[]';
