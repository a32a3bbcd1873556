"""Pure parts of the metrics: histogram buckets, percentiles, deltas, series, cursors, levels."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from fnbus.errors import Unprocessable
from services.log_ingest import rollups
from services.log_ingest.partitions import cutoff, partition_day
from services.log_ingest.rollups import Grain, Window
from services.log_ingest.search import BadCursor, Cursor
from services.log_ingest.search_api import parse_time, stored_levels

T = datetime(2026, 12, 4, 10, 17, 42, tzinfo=UTC)


@pytest.mark.parametrize(("ms", "index"), [(0, 0), (1, 1), (4, 2), (5, 3), (199, 7), (200, 8),
                                           (29_999, 14), (30_000, 15), (10**9, 15)])
def test_bucket_index(ms: int, index: int) -> None:
    assert rollups.bucket_index(ms) == index


def test_percentile_is_the_upper_bound_of_its_bucket_capped_by_the_max() -> None:
    hist = rollups.empty_hist()
    for d in (10, 120, 3000):
        hist[rollups.bucket_index(d)] += 1
    assert rollups.percentile(hist, 50, 3000) == 200
    assert rollups.percentile(hist, 99, 3000) == 3000  # bucket ends at 5 s, the max is 3 s
    assert rollups.percentile(rollups.empty_hist(), 50, 0) is None
    over = rollups.empty_hist()
    over[-1] = 1
    assert rollups.percentile(over, 50, 30_012) == 30_012  # open-ended bucket: the max


def test_deltas_count_once_per_row_and_bucket() -> None:
    rows = [
        {"account_id": "a", "lambda_id": "l", "finished_at": T, "outcome": "SUCCEEDED",
         "duration_ms": 7, "cold_start": True, "attempt": 1},
        {"account_id": "a", "lambda_id": "l", "finished_at": T + timedelta(seconds=5),
         "outcome": "TIMEOUT", "duration_ms": 30_000, "cold_start": False, "attempt": 3},
        {"account_id": "a", "lambda_id": "l", "finished_at": T + timedelta(minutes=1),
         "outcome": "whatever", "duration_ms": 1, "cold_start": False, "attempt": 1},
    ]
    minute = rollups.deltas(rows, Grain.MINUTE)
    assert len(minute) == 2
    d = minute[("a", "l", T.replace(second=0))]
    assert d.counts["succeeded"] == 1 and d.counts["timeout"] == 1
    assert d.counts["cold_starts"] == 1 and d.counts["retries"] == 1
    assert d.max_ms == 30_000 and sum(d.hist) == 2
    assert minute[("a", "l", T.replace(minute=18, second=0))].counts["unknown"] == 1
    hour = rollups.deltas(rows, Grain.HOUR)
    assert list(hour) == [("a", "l", T.replace(minute=0, second=0))]
    assert sum(hour[("a", "l", T.replace(minute=0, second=0))].hist) == 3


@pytest.mark.parametrize(("window", "grain", "count"), [
    (Window.H1, Grain.MINUTE, 61), (Window.H24, Grain.HOUR, 25), (Window.D7, Grain.DAY, 8),
    (Window.H1, Grain.HOUR, 2), (Window.D7, Grain.MINUTE, 7 * 24 * 60 + 1)])
def test_bucket_starts(window: Window, grain: Grain, count: int) -> None:
    starts = rollups.bucket_starts(T, window, grain)
    assert len(starts) == count
    assert starts[-1] == grain.floor(T)
    assert all(b - a == grain.step for a, b in zip(starts, starts[1:], strict=False))


def test_series_merges_finer_rows_and_fills_empty_buckets() -> None:
    starts = rollups.bucket_starts(T, Window.H24, Grain.HOUR)
    hist = rollups.empty_hist()
    hist[3] = 2
    row = {"bucket_start": T.replace(minute=0, second=0), "duration_max_ms": 6,
           "duration_hist": hist, **dict.fromkeys(rollups.COUNT_COLUMNS, 1)}
    items = rollups.series([row, row], starts, Grain.HOUR)
    assert len(items) == 25
    last = items[-1]
    assert last["invocations"]["SUCCEEDED"] == 2 and last["total"] == 10
    assert last["duration_ms"] == {"p50": 6, "p95": 6, "p99": 6}
    assert items[0]["total"] == 0 and items[0]["duration_ms"]["p50"] is None
    assert rollups.csv_rows(items[:1], None)[0][-7:] == [0, "", "", "", 0, 0, 0]


def test_cursor_round_trip_and_garbage() -> None:
    c = Cursor(1_764_800_000_123_456, "act-1", 3)
    assert Cursor.decode(c.encode()) == c
    huge = Cursor(2**62, "a", 1).encode()  # a time beyond datetime's range
    for bad in ("", "bm9wZQ", "W10", "WzEsMiwzXQ", huge):  # '', 'nope', '[]', '[1,2,3]'
        with pytest.raises(BadCursor):
            Cursor.decode(bad)


def test_time_parameters() -> None:
    assert parse_time("since", "1764800000000") == datetime(2025, 12, 3, 22, 13, 20, tzinfo=UTC)
    assert parse_time("since", "2026-12-04T10:00:00Z") == datetime(2026, 12, 4, 10, tzinfo=UTC)
    assert parse_time("since", "2026-12-04T10:00:00") == datetime(2026, 12, 4, 10, tzinfo=UTC)
    assert parse_time("since", None) is None
    with pytest.raises(Unprocessable):
        parse_time("since", "last tuesday")


def test_levels_map_to_stored_names() -> None:
    assert stored_levels(["info"]) == ["info", "log"]
    assert stored_levels(["warn,ERROR", "log"]) == ["warn", "error", "info", "log"]
    assert stored_levels([]) == []
    with pytest.raises(Unprocessable):
        stored_levels(["trace"])


def test_partition_names_and_cutoff() -> None:
    assert partition_day("log_lines_p20261204") == date(2026, 12, 4)
    assert partition_day("log_lines_default") is None
    assert cutoff(date(2026, 12, 4), 7) == date(2026, 11, 27)
