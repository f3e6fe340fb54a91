-- Templates, their published versions and the tenant's partials and layouts.

-- Kept in step with the `template-<tenant>-<key>` and
-- `template-partials-<tenant>` streams in the append's transaction, so a
-- send right after a publish sees the new version. The log is the source of
-- truth; these tables serve listing, pinning and rendering.
CREATE TABLE templates (
    tenant_id      text        NOT NULL,
    template_key   text        NOT NULL,
    latest_version integer     NOT NULL CHECK (latest_version >= 1),
    default_locale text        NOT NULL,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, template_key)
);

-- Immutable: a row is written once, when its version is published.
CREATE TABLE template_versions (
    tenant_id    text        NOT NULL,
    template_key text        NOT NULL,
    version      integer     NOT NULL CHECK (version >= 1),
    -- The whole TemplateDefinition: schema, parts per locale, and the
    -- partials and layouts it used as they were at publish time.
    definition   jsonb       NOT NULL,
    published_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, template_key, version),
    FOREIGN KEY (tenant_id, template_key) REFERENCES templates (tenant_id, template_key)
);

CREATE TABLE template_partials (
    tenant_id  text        NOT NULL,
    kind       text        NOT NULL CHECK (kind IN ('partial', 'layout')),
    name       text        NOT NULL,
    body       text        NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, kind, name)
);
