"""Pure: invocation rollups — deltas from new activations, histograms, percentiles, series.

log-ingest keeps two rollup tables (migration 0007): ``activation_rollups_minute``
and ``activation_rollups_hour``, one row per (account, lambda, bucket start) with
counts by outcome, cold starts, retries and a duration histogram with the fixed
bounds below. Histograms add up element-wise, so the percentiles of any range are
computed from the merged histogram of its rows: a metrics query reads one row per
bucket and lambda, never the activations.

A percentile is reported as the upper bound of the histogram bucket that holds it
(the largest duration seen for the last, open-ended bucket), so it is exact to the
bucket's resolution and never below the true value.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

from fnbus.schemas import InvocationOutcome

# Lower bounds (ms) of the duration buckets: bucket i holds [BOUNDS[i], BOUNDS[i+1]),
# the last one everything from 30 s on (a hard-killed lambda lands there).
DURATION_BOUNDS_MS: tuple[int, ...] = (
    0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 30000,
)
PERCENTILES = (50, 95, 99)
OUTCOME_COLUMNS: dict[InvocationOutcome, str] = {
    InvocationOutcome.SUCCEEDED: "succeeded",
    InvocationOutcome.CODING_FAILURE: "coding_failure",
    InvocationOutcome.PLATFORM_FAILURE: "platform_failure",
    InvocationOutcome.TIMEOUT: "timeout",
    InvocationOutcome.UNKNOWN: "unknown",
}
COUNT_COLUMNS = (*OUTCOME_COLUMNS.values(), "cold_starts", "retries")


class Grain(str, Enum):
    MINUTE = "minute"
    HOUR = "hour"
    DAY = "day"

    @property
    def step(self) -> timedelta:
        return {Grain.MINUTE: timedelta(minutes=1), Grain.HOUR: timedelta(hours=1),
                Grain.DAY: timedelta(days=1)}[self]

    def floor(self, ts: datetime) -> datetime:
        ts = ts.astimezone(UTC)
        if self is Grain.MINUTE:
            return ts.replace(second=0, microsecond=0)
        if self is Grain.HOUR:
            return ts.replace(minute=0, second=0, microsecond=0)
        return ts.replace(hour=0, minute=0, second=0, microsecond=0)


class Window(str, Enum):
    """``last=``: how far back a metrics query looks."""

    H1 = "1h"
    H24 = "24h"
    D7 = "7d"

    @property
    def span(self) -> timedelta:
        return {Window.H1: timedelta(hours=1), Window.H24: timedelta(hours=24),
                Window.D7: timedelta(days=7)}[self]


def bucket_index(duration_ms: int) -> int:
    """Index of the histogram bucket that holds ``duration_ms``."""
    index = 0
    for i, lower in enumerate(DURATION_BOUNDS_MS):
        if duration_ms >= lower:
            index = i
    return index


def empty_hist() -> list[int]:
    return [0] * len(DURATION_BOUNDS_MS)


def add_hist(a: Sequence[int], b: Sequence[int]) -> list[int]:
    return [x + y for x, y in zip(a, b, strict=True)]


def percentile(hist: Sequence[int], pct: float, max_ms: int) -> int | None:
    """The ``pct`` percentile of a histogram (upper bound of its bucket); None when empty."""
    total = sum(hist)
    if total == 0:
        return None
    rank = max(1, math.ceil(total * pct / 100))
    seen = 0
    for i, count in enumerate(hist):
        seen += count
        if seen >= rank:
            if i + 1 < len(DURATION_BOUNDS_MS):
                return min(DURATION_BOUNDS_MS[i + 1], max_ms)
            return max_ms
    return max_ms


@dataclass
class Delta:
    """What one batch of new activations adds to one rollup row."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNT_COLUMNS, 0))
    max_ms: int = 0
    hist: list[int] = field(default_factory=empty_hist)


RollupKey = tuple[str, str, datetime]  # (account_id, lambda_id, bucket start)


def deltas(rows: Iterable[Mapping[str, Any]], grain: Grain) -> dict[RollupKey, Delta]:
    """Rows of newly inserted activations → the increments of each rollup row.

    Each row needs ``account_id``, ``lambda_id``, ``finished_at``, ``outcome``,
    ``duration_ms``, ``cold_start`` and ``attempt``.
    """
    out: dict[RollupKey, Delta] = {}
    for row in rows:
        key = (row["account_id"], row["lambda_id"], grain.floor(row["finished_at"]))
        d = out.setdefault(key, Delta())
        try:
            column = OUTCOME_COLUMNS[InvocationOutcome(row["outcome"])]
        except ValueError:
            column = "unknown"
        d.counts[column] += 1
        d.counts["cold_starts"] += int(bool(row["cold_start"]))
        d.counts["retries"] += int(row["attempt"] > 1)
        duration = max(0, int(row["duration_ms"]))
        d.max_ms = max(d.max_ms, duration)
        d.hist[bucket_index(duration)] += 1
    return out


def bucket_starts(now: datetime, window: Window, grain: Grain) -> list[datetime]:
    """Bucket starts covering the last ``window`` up to ``now``, oldest first."""
    first = grain.floor(now - window.span)
    last = grain.floor(now)
    starts = []
    t = first
    while t <= last:
        starts.append(t)
        t += grain.step
    return starts


def series(rows: Iterable[Mapping[str, Any]], starts: Sequence[datetime], grain: Grain
           ) -> list[dict[str, Any]]:
    """Rollup rows (of any finer grain) → one item per bucket start, empty buckets included."""
    acc: dict[datetime, Delta] = {s: Delta() for s in starts}
    for row in rows:
        start = grain.floor(row["bucket_start"])
        d = acc.get(start)
        if d is None:
            continue
        for column in COUNT_COLUMNS:
            d.counts[column] += row[column]
        d.max_ms = max(d.max_ms, row["duration_max_ms"])
        d.hist = add_hist(d.hist, row["duration_hist"])
    return [item(start, acc[start]) for start in starts]


def item(start: datetime, d: Delta) -> dict[str, Any]:
    invocations = {outcome.value: d.counts[column] for outcome, column in OUTCOME_COLUMNS.items()}
    return {
        "bucket_start_ms": int(start.timestamp() * 1000),
        "bucket_start": start.isoformat().replace("+00:00", "Z"),
        "invocations": invocations,
        "total": sum(invocations.values()),
        "duration_ms": {f"p{p}": percentile(d.hist, p, d.max_ms) for p in PERCENTILES},
        "cold_starts": d.counts["cold_starts"],
        "retries": d.counts["retries"],
        "dead_letters": 0,
    }


CSV_COLUMNS = ("bucket_start", "lambda_id", "SUCCEEDED", "CODING_FAILURE", "PLATFORM_FAILURE",
               "TIMEOUT", "UNKNOWN", "total", "duration_p50_ms", "duration_p95_ms",
               "duration_p99_ms", "cold_starts", "retries", "dead_letters")


def csv_rows(items: Iterable[Mapping[str, Any]], lambda_id: str | None) -> list[list[Any]]:
    """Series items → CSV rows in :data:`CSV_COLUMNS` order (empty cell for no value)."""
    out = []
    for it in items:
        inv = it["invocations"]
        dur = it["duration_ms"]
        out.append([
            it["bucket_start"], lambda_id or "", *(inv[o.value] for o in OUTCOME_COLUMNS),
            it["total"], *("" if dur[f"p{p}"] is None else dur[f"p{p}"] for p in PERCENTILES),
            it["cold_starts"], it["retries"], it["dead_letters"],
        ])
    return out
