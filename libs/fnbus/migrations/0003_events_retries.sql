-- Platform events already routed, dead letters mirrored from the DLQ topic, and
-- per-account retry policy overrides.

-- One row per routed platform event: a redelivered CloudEvent (same id) is
-- recognised here and not invoked twice. Rows older than a week are pruned.
CREATE TABLE processed_events (
    account_id  text NOT NULL,
    event_id    text NOT NULL,               -- CloudEvent id
    event_type  text NOT NULL,
    targets     integer NOT NULL,            -- invocation requests produced
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, event_id)
);
CREATE INDEX processed_events_received ON processed_events (received_at);

-- The dead-letter topic, readable by account: list, inspect, replay, purge.
CREATE TABLE dead_letters (
    id            uuid PRIMARY KEY,          -- uuid5 of (activation id, attempt): idempotent
    account_id    text NOT NULL,
    lambda_id     text NOT NULL,
    activation_id text NOT NULL,
    attempt       integer NOT NULL,
    source        text NOT NULL,
    event_id      text,
    reason        text NOT NULL,
    last_error    jsonb,
    request       jsonb NOT NULL,            -- the InvocationRequest, for replay
    dead_at       timestamptz NOT NULL
);
CREATE INDEX dead_letters_account ON dead_letters (account_id, dead_at DESC);

CREATE TABLE retry_policies (
    account_id text NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    source     text NOT NULL,
    policy     jsonb NOT NULL,               -- a full RetryPolicy (defaults merged in)
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, source)
);
