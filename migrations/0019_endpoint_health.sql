-- provider_health.endpoints: the webhook endpoint breakers (per tenant and
-- origin) a worker process has that are not simply closed and healthy
-- (failures in the window, open, half-open), with calls in flight to each
-- origin: JSON objects {tenant_id, origin, state, recent_failures,
-- opened_at, in_flight}. Each tenant is shown only its own.
ALTER TABLE provider_health ADD COLUMN endpoints jsonb NOT NULL DEFAULT '[]';
