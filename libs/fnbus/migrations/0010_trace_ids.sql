-- Tracing through the bus (docs/observability.md, "Tracing and hop timing"):
-- the W3C trace id of an invocation on its activation records and log lines, and
-- the hops the invoker measured (dispatch, runner) on the activation record.
--
-- Both tables are partitioned by day (0007): a column added to the parent is added
-- to every partition, and an index created on the parent is created on each
-- partition and on the partitions made later (fnbus_ensure_day_partition attaches
-- them, which builds the matching index). Older rows keep NULL, which the partial
-- indexes leave out.

ALTER TABLE activations ADD COLUMN trace_id text;
ALTER TABLE activations ADD COLUMN hops_ms jsonb;
ALTER TABLE log_lines ADD COLUMN trace_id text;

-- "Everything of one trace" for one account: a handful of rows per trace.
CREATE INDEX activations_trace ON activations (account_id, trace_id) WHERE trace_id IS NOT NULL;
CREATE INDEX log_lines_trace ON log_lines (account_id, trace_id, ts DESC)
    WHERE trace_id IS NOT NULL;
