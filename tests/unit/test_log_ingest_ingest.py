"""BatchIngestor against a fake database: skipping, dedup, retries, shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from prometheus_client import REGISTRY

from fnbus.schemas import LogLevel, LogLine
from services.log_ingest.ingest import BatchIngestor
from services.log_ingest.records import Envelope, Kind
from services.log_ingest.store import WriteResult


class FakeWriter:
    """Stores rows by primary key; can fail the next N writes or refuse given rows."""

    def __init__(self, fail_times: int = 0, refuse: set[tuple[str, int]] | None = None) -> None:
        self.fail_times = fail_times
        self.refuse = refuse or set()
        self.rows: dict[tuple[str, int], tuple[Any, ...]] = {}
        self.calls = 0

    async def _write(self, rows: Sequence[tuple[Any, ...]]) -> WriteResult:
        self.calls += 1
        if self.fail_times:
            self.fail_times -= 1
            raise ConnectionError("database went away")
        inserted = 0
        rejected = []
        for index, row in enumerate(rows):
            key = (row[0], row[1])
            if key in self.refuse:
                rejected.append((index, "DataError: no"))
            elif key not in self.rows:
                self.rows[key] = tuple(row)
                inserted += 1
        return WriteResult(inserted, rejected)

    async def write_activations(self, rows: Sequence[tuple[Any, ...]]) -> WriteResult:
        return await self._write(rows)

    async def write_log_lines(self, rows: Sequence[tuple[Any, ...]]) -> WriteResult:
        return await self._write(rows)


def envelope(value: bytes | None, offset: int = 0) -> Envelope:
    return Envelope("t.logs", 0, offset, value)


def line(seq: int, activation_id: str = "act") -> bytes:
    return LogLine(
        activation_id=activation_id, account_id="acc", lambda_id="lam", seq=seq,
        level=LogLevel.INFO, message=f"m{seq}", ts_ms=1_000 + seq,
    ).to_bytes()


def sample(name: str, kind: str = "log") -> float:
    return REGISTRY.get_sample_value(name, {"kind": kind}) or 0.0


async def test_writes_valid_records_and_skips_malformed(caplog: pytest.LogCaptureFixture) -> None:
    writer = FakeWriter()
    ingestor = BatchIngestor(writer)
    malformed_before = sample("fnbus_log_ingest_records_malformed_total")
    batch = [envelope(line(0), 10), envelope(b"junk", 11), envelope(None, 12), envelope(line(1), 13)]
    assert await ingestor.ingest(Kind.LOG, batch) is True
    assert sorted(writer.rows) == [("act", 0), ("act", 1)]
    assert sample("fnbus_log_ingest_records_malformed_total") - malformed_before == 2
    skipped = [r for r in caplog.records if r.getMessage() == "skipping malformed record"]
    assert [(r.topic, r.partition, r.offset) for r in skipped] == [("t.logs", 0, 11), ("t.logs", 0, 12)]  # type: ignore[attr-defined]


async def test_batch_of_only_malformed_records_is_done_without_a_write() -> None:
    writer = FakeWriter()
    assert await BatchIngestor(writer).ingest(Kind.ACTIVATION, [envelope(b"{}"), envelope(b"x")])
    assert writer.calls == 0


async def test_duplicates_collapse_and_are_counted() -> None:
    writer = FakeWriter()
    ingestor = BatchIngestor(writer)
    duplicates_before = sample("fnbus_log_ingest_records_duplicate_total")
    ingested_before = sample("fnbus_log_ingest_records_ingested_total")
    assert await ingestor.ingest(Kind.LOG, [envelope(line(0)), envelope(line(0)), envelope(line(1))])
    assert await ingestor.ingest(Kind.LOG, [envelope(line(1)), envelope(line(2))])
    assert sorted(writer.rows) == [("act", 0), ("act", 1), ("act", 2)]
    assert sample("fnbus_log_ingest_records_ingested_total") - ingested_before == 3
    assert sample("fnbus_log_ingest_records_duplicate_total") - duplicates_before == 2


async def test_failed_writes_are_retried_until_they_succeed(caplog: pytest.LogCaptureFixture) -> None:
    writer = FakeWriter(fail_times=3)
    ingestor = BatchIngestor(writer, retry_initial_ms=1, retry_max_ms=4)
    failures_before = sample("fnbus_log_ingest_write_failures_total")
    assert await ingestor.ingest(Kind.LOG, [envelope(line(0))]) is True
    assert writer.calls == 4
    assert ("act", 0) in writer.rows
    assert sample("fnbus_log_ingest_write_failures_total") - failures_before == 3
    retries = [r for r in caplog.records if r.getMessage() == "batch write failed; retrying"]
    assert [r.retry_in_ms for r in retries] == [1, 2, 4]  # type: ignore[attr-defined]


async def test_drain_gives_up_a_failing_write_without_success() -> None:
    writer = FakeWriter(fail_times=10**6)
    ingestor = BatchIngestor(writer, retry_initial_ms=60_000, retry_max_ms=60_000)
    task = asyncio.create_task(ingestor.ingest(Kind.LOG, [envelope(line(0))]))
    await asyncio.sleep(0.05)
    assert not task.done()  # sleeping before the next retry
    ingestor.drain()
    assert await asyncio.wait_for(task, 1) is False  # the batch must stay unacknowledged
    assert writer.rows == {}


async def test_drain_lets_a_working_write_finish() -> None:
    writer = FakeWriter()
    ingestor = BatchIngestor(writer)
    ingestor.drain()
    assert await ingestor.ingest(Kind.LOG, [envelope(line(0))]) is True
    assert ("act", 0) in writer.rows


async def test_rows_the_database_refuses_are_skipped(caplog: pytest.LogCaptureFixture) -> None:
    writer = FakeWriter(refuse={("act", 1)})
    malformed_before = sample("fnbus_log_ingest_records_malformed_total")
    batch = [envelope(line(0), 1), envelope(line(1), 2), envelope(line(2), 3)]
    assert await BatchIngestor(writer).ingest(Kind.LOG, batch) is True
    assert sorted(writer.rows) == [("act", 0), ("act", 2)]
    assert sample("fnbus_log_ingest_records_malformed_total") - malformed_before == 1
    refused = [r for r in caplog.records if r.getMessage() == "skipping malformed record"]
    assert refused[0].offset == 2 and refused[0].activation_id == "act"  # type: ignore[attr-defined]


async def test_cancellation_is_not_swallowed() -> None:
    writer = FakeWriter(fail_times=10**6)
    ingestor = BatchIngestor(writer, retry_initial_ms=60_000)
    task = asyncio.create_task(ingestor.ingest(Kind.LOG, [envelope(line(0))]))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
