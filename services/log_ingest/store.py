"""PostgreSQL side of log-ingest: idempotent batch inserts and the read queries.

Contract of :class:`IngestStore`:
1. ``write_activations`` / ``write_log_lines`` insert a batch in one statement with
   ``ON CONFLICT DO NOTHING`` on the primary key — (activation_id, attempt) and
   (activation_id, seq) — so a redelivered record never becomes a second row.
   They return how many rows were new. ``write_activations`` adds the new rows (and
   only those) to the minute and hour rollups in the same transaction, so rollups
   count every stored activation exactly once.
2. A row PostgreSQL refuses for what it contains (data, integrity or size errors)
   must not hold the rest of the batch hostage: the batch is then written row by
   row and the refused rows are reported back by index, for the caller to log and
   skip.
3. Any other error (connection lost, server shutting down, …) propagates: the
   batch was not written as a whole and the caller retries it. Retrying is safe
   because of (1).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from services.log_ingest.records import ACTIVATION_COLUMNS, LOG_COLUMNS, columns
from services.log_ingest.rollups import COUNT_COLUMNS, Grain, deltas

log = logging.getLogger(__name__)

# PostgreSQL error classes that depend on the row, not on the moment: 22 (data),
# 23 (integrity), 54 (program limit, e.g. an index entry too large). asyncpg also
# raises DataError itself when a Python value cannot be encoded for a parameter.
ROW_ERRORS: tuple[type[Exception], ...] = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.ProgramLimitExceededError,
)

_INSERT_ACTIVATIONS = f"""
INSERT INTO activations ({", ".join(ACTIVATION_COLUMNS)})
SELECT activation_id, attempt, account_id, lambda_id, version, source, event_id, outcome,
       result::jsonb, error::jsonb, started_at, finished_at, duration_ms, cold_start, invoker,
       trace_id, hops_ms::jsonb
FROM unnest($1::text[], $2::integer[], $3::text[], $4::text[], $5::integer[], $6::text[],
            $7::text[], $8::text[], $9::text[], $10::text[], $11::timestamptz[],
            $12::timestamptz[], $13::integer[], $14::boolean[], $15::text[], $16::text[],
            $17::text[])
     AS r({", ".join(ACTIVATION_COLUMNS)})
ON CONFLICT (activation_id, attempt, finished_at) DO NOTHING
RETURNING account_id, lambda_id, finished_at, outcome, duration_ms, cold_start, attempt
"""

_INSERT_LOG_LINES = f"""
INSERT INTO log_lines ({", ".join(LOG_COLUMNS)})
SELECT {", ".join(LOG_COLUMNS)}
FROM unnest($1::text[], $2::integer[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::timestamptz[], $8::text[])
     AS r({", ".join(LOG_COLUMNS)})
ON CONFLICT (activation_id, seq, ts) DO NOTHING
RETURNING 1
"""

# Adds one batch's increments to a rollup table ({table} is one of two fixed names).
_UPSERT_ROLLUP = """
INSERT INTO {table} (account_id, lambda_id, bucket_start, succeeded, coding_failure,
                     platform_failure, timeout, unknown, cold_starts, retries,
                     duration_max_ms, duration_hist)
SELECT account_id, lambda_id, bucket_start, succeeded, coding_failure, platform_failure,
       timeout, unknown, cold_starts, retries, duration_max_ms, duration_hist::integer[]
FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::integer[], $5::integer[],
            $6::integer[], $7::integer[], $8::integer[], $9::integer[], $10::integer[],
            $11::integer[], $12::text[])
     AS r(account_id, lambda_id, bucket_start, succeeded, coding_failure, platform_failure,
          timeout, unknown, cold_starts, retries, duration_max_ms, duration_hist)
ON CONFLICT (account_id, lambda_id, bucket_start) DO UPDATE SET
    succeeded = {table}.succeeded + excluded.succeeded,
    coding_failure = {table}.coding_failure + excluded.coding_failure,
    platform_failure = {table}.platform_failure + excluded.platform_failure,
    timeout = {table}.timeout + excluded.timeout,
    unknown = {table}.unknown + excluded.unknown,
    cold_starts = {table}.cold_starts + excluded.cold_starts,
    retries = {table}.retries + excluded.retries,
    duration_max_ms = greatest({table}.duration_max_ms, excluded.duration_max_ms),
    duration_hist = fnbus_hist_add({table}.duration_hist, excluded.duration_hist)
"""
ROLLUP_TABLES = {Grain.MINUTE: "activation_rollups_minute", Grain.HOUR: "activation_rollups_hour"}

_SELECT_ACTIVATION_COLUMNS = ", ".join(ACTIVATION_COLUMNS)
_SELECT_LOG_COLUMNS = ", ".join(LOG_COLUMNS)


@dataclass(frozen=True)
class WriteResult:
    inserted: int  # rows that were new (the rest were already there)
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (row index, why)


class IngestStore:
    def __init__(self, pool: asyncpg.Pool, *, retention_days: int | None = None) -> None:
        self._pool = pool
        # Reads hide rows past retention even before their partition is dropped.
        # None (unit tests of the write path) means no limit.
        self._retention_days = retention_days

    # --- writes ------------------------------------------------------------------------

    async def write_activations(self, rows: Sequence[tuple[Any, ...]]) -> WriteResult:
        """Insert activation rows (see :func:`records.activation_row`) and roll them up."""
        return await self._write(_INSERT_ACTIVATIONS, rows, len(ACTIVATION_COLUMNS),
                                 rollup=True)

    async def write_log_lines(self, rows: Sequence[tuple[Any, ...]]) -> WriteResult:
        """Insert log-line rows (see :func:`records.log_row`)."""
        return await self._write(_INSERT_LOG_LINES, rows, len(LOG_COLUMNS))

    async def _write(self, sql: str, rows: Sequence[tuple[Any, ...]], width: int,
                     *, rollup: bool = False) -> WriteResult:
        if not rows:
            return WriteResult(0)
        try:
            return WriteResult(await self._insert(sql, rows, width, rollup))
        except ROW_ERRORS as exc:
            log.warning(
                "batch refused by the database; writing row by row to find the bad rows",
                extra={"rows": len(rows), "error": repr(exc)},
            )
        inserted = 0
        rejected: list[tuple[int, str]] = []
        for index, row in enumerate(rows):
            try:
                inserted += await self._insert(sql, [row], width, rollup)
            except ROW_ERRORS as exc:
                rejected.append((index, f"{type(exc).__name__}: {exc}"))
        return WriteResult(inserted, rejected)

    async def _insert(self, sql: str, rows: Sequence[tuple[Any, ...]], width: int,
                      rollup: bool) -> int:
        # Sorted by primary key so two instances inserting overlapping keys lock in one order.
        ordered = sorted(rows, key=lambda r: (r[0], r[1]))
        async with self._pool.acquire() as conn, conn.transaction():
            new = await conn.fetch(sql, *columns(ordered, width))
            if rollup and new:
                for grain, table in ROLLUP_TABLES.items():
                    await conn.execute(_UPSERT_ROLLUP.format(table=table),
                                       *_rollup_columns(new, grain))
        return len(new)

    # --- reads -------------------------------------------------------------------------

    async def latest_activation(
        self, activation_id: str, *, account_id: str | None = None
    ) -> Mapping[str, Any] | None:
        """The record of the highest attempt of ``activation_id``, or None."""
        async with self._pool.acquire() as conn:
            return await conn.fetchrow(
                f"""SELECT {_SELECT_ACTIVATION_COLUMNS} FROM activations
                    WHERE activation_id = $1 AND ($2::text IS NULL OR account_id = $2)
                      AND ($3::int IS NULL OR finished_at >= now() - make_interval(days => $3))
                    ORDER BY attempt DESC LIMIT 1""",
                activation_id, account_id, self._retention_days,
            )

    async def list_activations(
        self, *, account_id: str, lambda_id: str | None, limit: int
    ) -> list[Mapping[str, Any]]:
        """Activation records (every attempt) of an account, newest finished first."""
        async with self._pool.acquire() as conn:
            return list(await conn.fetch(
                f"""SELECT {_SELECT_ACTIVATION_COLUMNS} FROM activations
                    WHERE account_id = $1 AND ($2::text IS NULL OR lambda_id = $2)
                      AND ($4::int IS NULL OR finished_at >= now() - make_interval(days => $4))
                    ORDER BY finished_at DESC, activation_id, attempt DESC
                    LIMIT $3""",
                account_id, lambda_id, limit, self._retention_days,
            ))

    async def list_log_lines(
        self, *, account_id: str, activation_id: str | None, lambda_id: str | None, limit: int
    ) -> list[Mapping[str, Any]]:
        """Log lines of an account, oldest first (by time, then position in the activation)."""
        async with self._pool.acquire() as conn:
            return list(await conn.fetch(
                f"""SELECT {_SELECT_LOG_COLUMNS} FROM log_lines
                    WHERE account_id = $1
                      AND ($2::text IS NULL OR activation_id = $2)
                      AND ($3::text IS NULL OR lambda_id = $3)
                      AND ($5::int IS NULL OR ts >= now() - make_interval(days => $5))
                    ORDER BY ts, seq, activation_id
                    LIMIT $4""",
                account_id, activation_id, lambda_id, limit, self._retention_days,
            ))


def _rollup_columns(new: Sequence[Mapping[str, Any]], grain: Grain) -> list[list[Any]]:
    """New activation rows → the unnest() columns of :data:`_UPSERT_ROLLUP`, in key order
    (so concurrent writers lock rollup rows in one order)."""
    cols: list[list[Any]] = [[] for _ in range(12)]
    for (account_id, lambda_id, start), d in sorted(deltas(new, grain).items()):
        values = [account_id, lambda_id, start, *(d.counts[c] for c in COUNT_COLUMNS),
                  d.max_ms, "{" + ",".join(map(str, d.hist)) + "}"]
        for i, v in enumerate(values):
            cols[i].append(v)
    return cols
