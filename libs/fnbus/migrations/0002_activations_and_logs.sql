-- Activation records and lambda log lines, written by log-ingest.

CREATE TABLE activations (
    activation_id text NOT NULL,
    attempt       integer NOT NULL DEFAULT 1,
    account_id    text NOT NULL,
    lambda_id     text NOT NULL,
    version       integer,
    source        text NOT NULL,
    event_id      text,
    outcome       text NOT NULL,
    result        jsonb,
    error         jsonb,
    started_at    timestamptz NOT NULL,
    finished_at   timestamptz NOT NULL,
    duration_ms   integer NOT NULL,
    cold_start    boolean NOT NULL DEFAULT false,
    invoker       text NOT NULL DEFAULT '',
    PRIMARY KEY (activation_id, attempt)
);
CREATE INDEX activations_lambda ON activations (account_id, lambda_id, finished_at DESC);

CREATE TABLE log_lines (
    activation_id text NOT NULL,
    seq           integer NOT NULL,
    account_id    text NOT NULL,
    lambda_id     text NOT NULL,
    level         text NOT NULL,
    message       text NOT NULL,
    ts            timestamptz NOT NULL,
    PRIMARY KEY (activation_id, seq)
);
CREATE INDEX log_lines_lambda ON log_lines (account_id, lambda_id, ts DESC);
