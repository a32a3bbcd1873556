"""Daily partitions of ``activations`` and ``log_lines``: create ahead, drop past retention.

Contract of :class:`PartitionMaintainer`:
1. ``run_once(today)`` makes sure the partitions of ``today`` … ``today + days_ahead``
   exist (creating one moves that day's rows out of the default partition first;
   see ``fnbus_ensure_day_partition`` in migration 0007), drops every daily
   partition whose whole day lies before the retention cut-off
   (``today - retention_days``), deletes rows older than the cut-off from the
   default partitions, and prunes rollup rows older than the cut-off. It is
   idempotent, and safe to run from several log-ingest instances at once.
2. ``start()`` runs it at once and then every ``interval_s`` in the background; a
   failing run is logged and retried at the next tick. ``stop()`` cancels it and
   is safe twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from datetime import UTC, date, datetime, timedelta
from types import TracebackType

import asyncpg

log = logging.getLogger(__name__)

DEFAULT_DAYS_AHEAD = 2
DEFAULT_INTERVAL_S = 3600.0
# (table, partition column); partitions are named <table>_pYYYYMMDD.
PARTITIONED = (("activations", "finished_at"), ("log_lines", "ts"))
ROLLUPS = ("activation_rollups_minute", "activation_rollups_hour")
_DAY_SUFFIX = re.compile(r"_p(\d{8})$")


def partition_day(name: str) -> date | None:
    """``log_lines_p20261204`` → 2026-12-04; None for other names (the default)."""
    match = _DAY_SUFFIX.search(name)
    if match is None:
        return None
    return datetime.strptime(match[1], "%Y%m%d").replace(tzinfo=UTC).date()


def cutoff(today: date, retention_days: int) -> date:
    """The first day that is kept: days before it are past retention."""
    return today - timedelta(days=retention_days)


class PartitionMaintainer:
    def __init__(self, pool: asyncpg.Pool, *, retention_days: int,
                 days_ahead: int = DEFAULT_DAYS_AHEAD,
                 interval_s: float = DEFAULT_INTERVAL_S) -> None:
        self._pool = pool
        self.retention_days = retention_days
        self.days_ahead = days_ahead
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    async def run_once(self, today: date | None = None) -> list[str]:
        """One maintenance pass; returns the names of the partitions it dropped."""
        today = today or datetime.now(UTC).date()
        keep_from = cutoff(today, self.retention_days)
        keep_from_ts = datetime(keep_from.year, keep_from.month, keep_from.day, tzinfo=UTC)
        dropped: list[str] = []
        async with self._pool.acquire() as conn:
            for table, column in PARTITIONED:
                for offset in range(self.days_ahead + 1):
                    await conn.fetchval("SELECT fnbus_ensure_day_partition($1, $2, $3)",
                                        table, column, today + timedelta(days=offset))
                names = await conn.fetch(
                    """SELECT c.relname FROM pg_inherits i
                       JOIN pg_class c ON c.oid = i.inhrelid
                       WHERE i.inhparent = $1::regclass""", table)
                for row in names:
                    day = partition_day(row["relname"])
                    if day is not None and day < keep_from:
                        # A name we built ourselves from a date: safe to quote as is.
                        await conn.execute(f'DROP TABLE IF EXISTS "{row["relname"]}"')
                        dropped.append(row["relname"])
                await conn.execute(
                    f'DELETE FROM "{table}_default" WHERE "{column}" < $1', keep_from_ts)
            for table in ROLLUPS:
                await conn.execute(f"DELETE FROM {table} WHERE bucket_start < $1", keep_from_ts)
        if dropped:
            log.info("dropped partitions past retention",
                     extra={"partitions": dropped, "retention_days": self.retention_days})
        return dropped

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except (asyncpg.PostgresError, OSError) as exc:
                log.warning("partition maintenance failed; retrying at the next tick",
                            extra={"error": repr(exc)})
            await asyncio.sleep(self.interval_s)

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("partition maintainer already started")
        self._task = asyncio.create_task(self._loop(), name="partition-maintainer")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> PartitionMaintainer:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()
