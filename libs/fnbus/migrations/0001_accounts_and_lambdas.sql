-- Accounts, users and credentials, lambdas and their immutable versions.

CREATE TABLE accounts (
    id                text PRIMARY KEY,
    name              text NOT NULL,
    terms_accepted_at timestamptz,          -- provisioning happened when set
    created_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id         uuid PRIMARY KEY,
    account_id text NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name       text NOT NULL,
    roles      text[] NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (account_id, name)
);

-- API keys and OAuth client secrets are stored as SHA-256 of a 256-bit random
-- secret: high entropy makes a slow hash unnecessary.
CREATE TABLE api_keys (
    id         uuid PRIMARY KEY,
    account_id text NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    user_id    uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind       text NOT NULL CHECK (kind IN ('api_key', 'oauth_client')),
    key_hash   text NOT NULL UNIQUE,
    prefix     text NOT NULL,               -- first characters, to recognise a key
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE INDEX api_keys_user ON api_keys (user_id);

CREATE TABLE lambdas (
    id                uuid PRIMARY KEY,
    account_id        text NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name              text NOT NULL,
    description       text NOT NULL DEFAULT '',
    runtime           text NOT NULL,
    event_id          text,
    skills            text[] NOT NULL DEFAULT '{}',
    template_id       text,
    state             text NOT NULL DEFAULT 'Draft',
    current_version   integer NOT NULL DEFAULT 1,
    deployed_version  integer,
    deployed_image    text,
    deployment_state  text,                 -- Deploying / Deployed / Failed / Undeployed
    deployment_cause  text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (account_id, name)
);
CREATE INDEX lambdas_event ON lambdas (account_id, event_id);

CREATE TABLE lambda_versions (
    lambda_id    uuid NOT NULL REFERENCES lambdas(id) ON DELETE CASCADE,
    version      integer NOT NULL,
    code         text NOT NULL,
    env          jsonb NOT NULL DEFAULT '{}',
    dependencies jsonb NOT NULL DEFAULT '{}',
    created_by   uuid,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (lambda_id, version)
);

CREATE TABLE deployments (
    id         uuid PRIMARY KEY,
    account_id text NOT NULL,
    lambda_id  uuid NOT NULL REFERENCES lambdas(id) ON DELETE CASCADE,
    version    integer NOT NULL,
    action     text NOT NULL DEFAULT 'deploy',
    state      text NOT NULL,
    image      text,
    cause      text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deployments_lambda ON deployments (lambda_id, created_at DESC);

CREATE TABLE secrets (
    account_id text NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    key        text NOT NULL,
    value_enc  bytea NOT NULL,
    is_default boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, key)
);

CREATE TABLE domains (
    account_id text NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    domain     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, domain)
);
