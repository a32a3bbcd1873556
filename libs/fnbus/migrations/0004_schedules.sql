-- Cron schedules, their fires and the scheduler's leader lease (owned by the scheduler).
-- Times are epoch milliseconds in scheduler time (UTC).

CREATE TABLE schedules (
    id                  uuid PRIMARY KEY,
    account_id          text NOT NULL,
    lambda_id           uuid NOT NULL,
    cron                text NOT NULL,          -- five fields, UTC
    payload             jsonb,                  -- the lambda's input payload (≤ 8,000 characters)
    enabled             boolean NOT NULL DEFAULT true,
    next_due_ms         bigint,                 -- next due minute; NULL while disabled
    last_invocation_ms  bigint,                 -- due minute of the last fire
    last_activation_id  text,
    last_result_due_ms  bigint,                 -- due minute of the fire whose result is shown
    last_state          text,                   -- success / failure
    last_outcome        text,                   -- InvocationOutcome of that result
    last_error          jsonb,
    last_run_ms         bigint,                 -- when that invocation started
    created_ms          bigint NOT NULL,
    updated_ms          bigint NOT NULL
);
-- The leader's only hot query: what is due now.
CREATE INDEX schedules_due ON schedules (next_due_ms) WHERE enabled;
CREATE INDEX schedules_account ON schedules (account_id, lambda_id);

-- One row per (schedule, due minute): the unique key is what makes a fire happen once.
CREATE TABLE schedule_fires (
    schedule_id   uuid NOT NULL,
    due_ms        bigint NOT NULL,
    activation_id text NOT NULL,
    fired_ms      bigint NOT NULL,
    produced_ms   bigint,                       -- NULL until the broker acknowledged the request
    outcome       text,
    PRIMARY KEY (schedule_id, due_ms)
);
CREATE INDEX schedule_fires_activation ON schedule_fires (activation_id);
CREATE INDEX schedule_fires_unproduced ON schedule_fires (due_ms) WHERE produced_ms IS NULL;

-- Whoever holds an unexpired row fires; see services/scheduler/lease.py.
CREATE TABLE scheduler_lease (
    name        text PRIMARY KEY,
    holder      text NOT NULL,
    expires_ms  bigint NOT NULL,
    term        bigint NOT NULL DEFAULT 0       -- +1 on every change of holder
);
