"""Reads for the log search, the live tail and the invocation metrics (asyncpg).

Contract of :class:`SearchStore`:
1. Nothing older than the retention window (``retention_days``) is ever returned,
   whether or not the partition maintainer has dropped it yet.
2. :meth:`search` pages newest first on the keyset (ts, activation_id, seq): a
   page's cursor names its last line and the next page starts strictly after it,
   so lines stored meanwhile never shift or repeat a page.
3. :meth:`tail` returns lines in the order log-ingest stored them (``ingest_id``).
4. Metrics read rollup rows only (one per bucket and lambda), never activations.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from services.log_ingest.records import EPOCH
from services.log_ingest.rollups import COUNT_COLUMNS, Grain

_LOG_COLUMNS = ("activation_id, seq, account_id, lambda_id, level, message, ts, trace_id, "
                "ingest_id")


class BadCursor(ValueError):
    """A cursor that this service did not hand out."""


@dataclass(frozen=True)
class Cursor:
    ts_us: int  # microseconds since the epoch of the last line of the previous page
    activation_id: str
    seq: int

    def encode(self) -> str:
        raw = json.dumps([self.ts_us, self.activation_id, self.seq], separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            ts_us, activation_id, seq = json.loads(raw)
            if not (isinstance(ts_us, int) and isinstance(activation_id, str)
                    and isinstance(seq, int) and "\x00" not in activation_id
                    and abs(seq) < 2**31):
                raise TypeError
            cursor = cls(ts_us, activation_id, seq)
            cursor.ts  # noqa: B018 - a time datetime cannot hold is not ours either
        except (ValueError, TypeError, OverflowError) as exc:
            raise BadCursor("cursor is not one this API handed out") from exc
        return cursor

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Cursor:
        return cls((row["ts"] - EPOCH) // timedelta(microseconds=1), row["activation_id"],
                   row["seq"])

    @property
    def ts(self) -> datetime:
        return EPOCH + timedelta(microseconds=self.ts_us)


@dataclass(frozen=True)
class LogFilter:
    account_id: str
    lambda_ids: Sequence[str] = ()
    levels: Sequence[str] = ()  # stored level names (info includes the original's "log")
    since: datetime | None = None
    until: datetime | None = None
    q: str | None = None
    activation_id: str | None = None
    trace_id: str | None = None  # every line of one trace (W3C trace id)


def _like_pattern(q: str) -> str:
    escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _where(f: LogFilter, retention_days: int) -> tuple[list[str], list[Any]]:
    """WHERE clauses and their parameters ($1 … $n, in order)."""
    args: list[Any] = [f.account_id, retention_days]
    clauses = ["account_id = $1", "ts >= now() - make_interval(days => $2::int)"]

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if f.lambda_ids:
        clauses.append(f"lambda_id = ANY({arg(list(f.lambda_ids))}::text[])")
    if f.levels:
        clauses.append(f"level = ANY({arg(list(f.levels))}::text[])")
    if f.since is not None:
        clauses.append(f"ts >= {arg(f.since)}")
    if f.until is not None:
        clauses.append(f"ts < {arg(f.until)}")
    if f.q:
        clauses.append(f"message ILIKE {arg(_like_pattern(f.q))}")
    if f.activation_id is not None:
        clauses.append(f"activation_id = {arg(f.activation_id)}")
    if f.trace_id is not None:
        clauses.append(f"trace_id = {arg(f.trace_id)}")
    return clauses, args


class SearchStore:
    def __init__(self, pool: asyncpg.Pool, *, retention_days: int) -> None:
        self._pool = pool
        self.retention_days = retention_days

    # --- log search ----------------------------------------------------------------------
    async def search(self, f: LogFilter, *, limit: int, cursor: Cursor | None
                     ) -> tuple[list[Mapping[str, Any]], Cursor | None]:
        """One page, newest first, and the cursor of the next page (None at the end)."""
        clauses, args = _where(f, self.retention_days)
        if cursor is not None:
            n = len(args)
            args += [cursor.ts, cursor.activation_id, cursor.seq]
            clauses.append(f"(ts, activation_id, seq) < (${n + 1}, ${n + 2}, ${n + 3})")
        args.append(limit + 1)
        sql = (f"SELECT {_LOG_COLUMNS} FROM log_lines WHERE {' AND '.join(clauses)} "
               f"ORDER BY ts DESC, activation_id DESC, seq DESC LIMIT ${len(args)}")
        async with self._pool.acquire() as conn:
            rows = list(await conn.fetch(sql, *args))
        if len(rows) > limit:
            return rows[:limit], Cursor.of(rows[limit - 1])
        return rows, None

    # --- live tail -----------------------------------------------------------------------
    async def newest_ingest_id(self, account_id: str) -> int:
        async with self._pool.acquire() as conn:
            value = await conn.fetchval(
                "SELECT max(ingest_id) FROM log_lines WHERE account_id = $1", account_id)
        return int(value or 0)

    async def tail(self, f: LogFilter, *, after_ingest_id: int, limit: int
                   ) -> list[Mapping[str, Any]]:
        """Lines stored after ``after_ingest_id`` that match ``f``, in storing order."""
        clauses, args = _where(f, self.retention_days)
        args += [after_ingest_id, limit]
        n = len(args)
        sql = (f"SELECT {_LOG_COLUMNS} FROM log_lines WHERE {' AND '.join(clauses)} "
               f"AND ingest_id > ${n - 1} ORDER BY ingest_id LIMIT ${n}")
        async with self._pool.acquire() as conn:
            return list(await conn.fetch(sql, *args))

    # --- metrics -------------------------------------------------------------------------
    async def lambda_exists(self, account_id: str, lambda_id: str) -> bool:
        async with self._pool.acquire() as conn:
            return bool(await conn.fetchval(
                "SELECT 1 FROM lambdas WHERE id::text = $1 AND account_id = $2",
                lambda_id, account_id))

    async def rollup_rows(self, account_id: str, lambda_id: str | None, grain: Grain,
                          since: datetime) -> list[Mapping[str, Any]]:
        """Rollup rows from ``since`` on, lambdas merged: one row per stored bucket.

        Minute buckets read the minute table; hour and day buckets the hour table.
        """
        table = "activation_rollups_minute" if grain is Grain.MINUTE else "activation_rollups_hour"
        sums = ", ".join(f"sum({c})::int AS {c}" for c in COUNT_COLUMNS)
        sql = f"""SELECT bucket_start, {sums}, max(duration_max_ms) AS duration_max_ms,
                         fnbus_hist_sum(duration_hist) AS duration_hist
                  FROM {table}
                  WHERE account_id = $1 AND ($2::text IS NULL OR lambda_id = $2)
                    AND bucket_start >= $3
                    AND bucket_start >= now() - make_interval(days => $4::int)
                  GROUP BY bucket_start ORDER BY bucket_start"""
        async with self._pool.acquire() as conn:
            return list(await conn.fetch(sql, account_id, lambda_id, since, self.retention_days))

    async def dead_letters(self, account_id: str, lambda_id: str | None, grain: Grain,
                           since: datetime) -> dict[datetime, int]:
        """Dead letters per bucket, from the registry's mirror of the DLQ topic."""
        sql = """SELECT date_trunc($4, dead_at, 'UTC') AS bucket, count(*)::int AS n
                 FROM dead_letters
                 WHERE account_id = $1 AND ($2::text IS NULL OR lambda_id = $2)
                   AND dead_at >= $3
                 GROUP BY 1"""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(sql, account_id, lambda_id, since, grain.value)
        return {r["bucket"]: r["n"] for r in rows}
