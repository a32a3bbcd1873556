-- The Conversation Context store: namespaces per account, properties per
-- (namespace, session) with an optional expiry (docs/toolbelt.md).

CREATE TABLE context_namespaces (
    account_id text NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name       text NOT NULL,
    ttl_s      integer,                     -- default TTL of property writes; NULL = none
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, name)
);

CREATE TABLE context_properties (
    account_id text NOT NULL,
    namespace  text NOT NULL,
    session_id text NOT NULL,
    name       text NOT NULL,
    value      jsonb NOT NULL,              -- JSON null is a value, SQL NULL never
    expires_at timestamptz,                 -- NULL = permanent; reads skip past ones
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, namespace, session_id, name),
    FOREIGN KEY (account_id, namespace)
        REFERENCES context_namespaces (account_id, name) ON DELETE CASCADE
);
-- The background purge deletes by expiry; only rows with one are indexed.
CREATE INDEX context_properties_expiry ON context_properties (expires_at)
    WHERE expires_at IS NOT NULL;
