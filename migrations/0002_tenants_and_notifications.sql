-- Read models the command side keeps in step with the log, in the same
-- transaction as the append: tenants and their keys (for authentication),
-- idempotency reservations, and each notification's current status.

CREATE TABLE tenants (
    tenant_id  text        PRIMARY KEY,
    name       text        NOT NULL,
    created_at timestamptz NOT NULL
);

CREATE TABLE api_keys (
    key_id     uuid        PRIMARY KEY,
    tenant_id  text        NOT NULL REFERENCES tenants (tenant_id),
    name       text        NOT NULL,
    prefix     text        NOT NULL,
    -- SHA-256 of the secret; the secret itself is shown once and never stored.
    key_hash   text        NOT NULL UNIQUE,
    scopes     text[]      NOT NULL,
    created_at timestamptz NOT NULL,
    revoked_at timestamptz
);

CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id);

-- Reserved in the transaction that appends the notification, so concurrent
-- identical sends create one notification.
CREATE TABLE idempotency_keys (
    tenant_id       text        NOT NULL,
    idempotency_key text        NOT NULL,
    notification_id uuid        NOT NULL,
    fingerprint     text        NOT NULL,
    created_at      timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, idempotency_key)
);

CREATE TABLE notification_status (
    notification_id uuid        PRIMARY KEY,
    tenant_id       text        NOT NULL,
    status          text        NOT NULL,
    priority        text        NOT NULL,
    channels        text[]      NOT NULL,
    recipient_id    text,
    category        text,
    tags            text[]      NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    stream_version  integer     NOT NULL
);

-- Pages run newest first by id (UUIDv7, time-ordered) within a tenant.
CREATE INDEX notification_status_page ON notification_status (tenant_id, notification_id DESC);
CREATE INDEX notification_status_tags ON notification_status USING gin (tags);
