-- Daily partitions for activations and log lines (retention drops whole days),
-- the log search's indexes, and per-minute / per-hour invocation rollups.
--
-- Partitions are named <table>_pYYYYMMDD and cover one UTC day; a DEFAULT
-- partition (<table>_default) catches rows outside every daily partition
-- (a clock far ahead, a record that arrived long after it was made). log-ingest's
-- partition maintainer creates days ahead and drops days past the retention
-- window (services/log_ingest/partitions.py).

-- Trusted extension since PostgreSQL 13: the database owner may create it.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- Creates the partition of `parent` for `day` (partitioned on column `col`) if it is
-- missing and returns its name. Rows of that day that already sit in the default
-- partition are moved into the new one first, since PostgreSQL refuses to attach a
-- range that the default partition holds rows for.
CREATE FUNCTION fnbus_ensure_day_partition(parent text, col text, day date)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    part text := format('%s_p%s', parent, to_char(day, 'YYYYMMDD'));
    lo timestamptz := day::timestamp AT TIME ZONE 'UTC';
    hi timestamptz := (day + 1)::timestamp AT TIME ZONE 'UTC';
BEGIN
    IF to_regclass(part) IS NOT NULL THEN
        RETURN part;
    END IF;
    -- Taken before anything else so concurrent inserts (which lock the parent
    -- first, then a partition) cannot deadlock with the move below.
    EXECUTE format('LOCK TABLE %I IN ACCESS EXCLUSIVE MODE', parent);
    IF to_regclass(part) IS NOT NULL THEN
        RETURN part;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS)', part, parent);
    EXECUTE format(
        'WITH moved AS (DELETE FROM %I WHERE %I >= $1 AND %I < $2 RETURNING *) '
        'INSERT INTO %I SELECT * FROM moved',
        parent || '_default', col, col, part) USING lo, hi;
    EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                   parent, part, lo, hi);
    RETURN part;
END
$$;

-- Element-wise sum of two histograms (a missing side counts as zeros).
CREATE FUNCTION fnbus_hist_add(a integer[], b integer[])
RETURNS integer[] LANGUAGE sql IMMUTABLE AS $$
    SELECT array_agg(coalesce(x, 0) + coalesce(y, 0) ORDER BY i)
    FROM unnest(a, b) WITH ORDINALITY AS t(x, y, i)
$$;

-- Element-wise sum over rows: SELECT fnbus_hist_sum(duration_hist) ...
CREATE AGGREGATE fnbus_hist_sum(integer[]) (SFUNC = fnbus_hist_add, STYPE = integer[]);

-- --- activations -------------------------------------------------------------------------
ALTER TABLE activations RENAME TO activations_unpartitioned;
ALTER INDEX activations_pkey RENAME TO activations_unpartitioned_pkey;
ALTER INDEX activations_lambda RENAME TO activations_unpartitioned_lambda;

-- The partition column must be part of the primary key. A redelivered record
-- carries the same finished time, so (activation_id, attempt, finished_at) still
-- recognises it.
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
    PRIMARY KEY (activation_id, attempt, finished_at)
) PARTITION BY RANGE (finished_at);
CREATE TABLE activations_default PARTITION OF activations DEFAULT;
CREATE INDEX activations_lambda ON activations (account_id, lambda_id, finished_at DESC);

-- --- log lines ---------------------------------------------------------------------------
ALTER TABLE log_lines RENAME TO log_lines_unpartitioned;
ALTER INDEX log_lines_pkey RENAME TO log_lines_unpartitioned_pkey;
ALTER INDEX log_lines_lambda RENAME TO log_lines_unpartitioned_lambda;

-- ingest_id: the order in which log-ingest stored lines (the live tail follows it;
-- ts is the lambda's clock and lines may arrive late).
CREATE SEQUENCE log_lines_ingest_id;
CREATE TABLE log_lines (
    activation_id text NOT NULL,
    seq           integer NOT NULL,
    account_id    text NOT NULL,
    lambda_id     text NOT NULL,
    level         text NOT NULL,
    message       text NOT NULL,
    ts            timestamptz NOT NULL,
    ingest_id     bigint NOT NULL DEFAULT nextval('log_lines_ingest_id'),
    PRIMARY KEY (activation_id, seq, ts)
) PARTITION BY RANGE (ts);
ALTER SEQUENCE log_lines_ingest_id OWNED BY log_lines.ingest_id;
CREATE TABLE log_lines_default PARTITION OF log_lines DEFAULT;
-- Newest first, keyset (ts, activation_id, seq): the search without filters.
CREATE INDEX log_lines_account_ts ON log_lines (account_id, ts DESC, activation_id DESC, seq DESC);
CREATE INDEX log_lines_lambda ON log_lines (account_id, lambda_id, ts DESC);
CREATE INDEX log_lines_level ON log_lines (account_id, level, ts DESC);
CREATE INDEX log_lines_message_trgm ON log_lines USING gin (message gin_trgm_ops);
CREATE INDEX log_lines_ingest ON log_lines (account_id, ingest_id);

-- --- existing rows -------------------------------------------------------------------------
-- One partition per day that holds rows, then copy. (Days past the retention window
-- go away on the maintainer's first run.)
SELECT fnbus_ensure_day_partition('activations', 'finished_at', d)
FROM (SELECT DISTINCT (finished_at AT TIME ZONE 'UTC')::date AS d FROM activations_unpartitioned) s;
SELECT fnbus_ensure_day_partition('log_lines', 'ts', d)
FROM (SELECT DISTINCT (ts AT TIME ZONE 'UTC')::date AS d FROM log_lines_unpartitioned) s;
INSERT INTO activations SELECT * FROM activations_unpartitioned;
INSERT INTO log_lines (activation_id, seq, account_id, lambda_id, level, message, ts)
SELECT activation_id, seq, account_id, lambda_id, level, message, ts
FROM log_lines_unpartitioned ORDER BY ts, activation_id, seq;
DROP TABLE activations_unpartitioned;
DROP TABLE log_lines_unpartitioned;

-- --- rollups -------------------------------------------------------------------------------
-- Invocation counts per (account, lambda, minute) and per hour, maintained by
-- log-ingest in the transaction that inserts the activations (so a redelivered
-- record, which inserts nothing, adds nothing). duration_hist counts durations per
-- fixed bucket (bounds in services/log_ingest/rollups.py); histograms of several
-- rows add up element-wise, which is how percentiles over any range are computed.
CREATE TABLE activation_rollups_minute (
    account_id       text NOT NULL,
    lambda_id        text NOT NULL,
    bucket_start     timestamptz NOT NULL,
    succeeded        integer NOT NULL DEFAULT 0,
    coding_failure   integer NOT NULL DEFAULT 0,
    platform_failure integer NOT NULL DEFAULT 0,
    timeout          integer NOT NULL DEFAULT 0,
    unknown          integer NOT NULL DEFAULT 0,
    cold_starts      integer NOT NULL DEFAULT 0,
    retries          integer NOT NULL DEFAULT 0,  -- attempts after the first
    duration_max_ms  integer NOT NULL DEFAULT 0,
    duration_hist    integer[] NOT NULL,
    PRIMARY KEY (account_id, lambda_id, bucket_start)
);
CREATE INDEX activation_rollups_minute_account ON activation_rollups_minute (account_id, bucket_start);
CREATE TABLE activation_rollups_hour (LIKE activation_rollups_minute INCLUDING ALL);
