"""Pure helpers of the faust side of log-ingest."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from fnbus.config import Settings
from services.log_ingest.ingest import BatchIngestor
from services.log_ingest.records import Envelope
from services.log_ingest.store import WriteResult
from services.log_ingest.stream import IngestStream, broker_urls, envelope_of


def test_broker_urls_from_our_bootstrap_setting() -> None:
    assert broker_urls("127.0.0.1:9092") == ["kafka://127.0.0.1:9092"]
    assert broker_urls(" h1:9092, h2:9093 ,") == ["kafka://h1:9092", "kafka://h2:9093"]
    assert broker_urls("kafka://h:1") == ["kafka://h:1"]
    with pytest.raises(ValueError):
        broker_urls(" , ")


def _event(value: object) -> SimpleNamespace:
    message = SimpleNamespace(topic="p.logs", partition=3, offset=42)
    return SimpleNamespace(message=message, value=value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(b"raw", b"raw"), (None, None), (bytearray(b"ba"), b"ba"), ("text", b"text")],
)
def test_envelope_of_a_faust_event(value: object, expected: bytes | None) -> None:
    assert envelope_of(_event(value)) == Envelope("p.logs", 3, 42, expected)


class _NoWrites:
    async def write_activations(self, rows: object) -> WriteResult:
        raise AssertionError("no writes expected")

    async def write_log_lines(self, rows: object) -> WriteResult:
        raise AssertionError("no writes expected")


async def test_lifecycle_guards_before_start(tmp_path: Path) -> None:
    stream = IngestStream(Settings(home=tmp_path), BatchIngestor(_NoWrites()))
    assert await stream.check() is False  # not started: unhealthy
    await stream.stop()  # stopping what never started is a no-op
    await stream.stop()
    with pytest.raises(RuntimeError):
        _ = stream.faust_app
