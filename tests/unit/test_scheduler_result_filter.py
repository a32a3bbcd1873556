"""The scheduler's reader of fnbus.activations: only scheduled invocations reach the
schedules, and records of other sources are skipped by their header, unparsed."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from fnbus.schemas import ActivationRecord, EventSource, InvocationOutcome
from fnbus.topics import SOURCE_HEADER
from services.scheduler.watch import ResultHandler


class FakeSchedules:
    def __init__(self) -> None:
        self.recorded: list[str] = []

    async def record_result(self, activation: ActivationRecord) -> bool:
        self.recorded.append(activation.activation_id)
        return True


def activation(activation_id: str, source: EventSource) -> bytes:
    return ActivationRecord(
        activation_id=activation_id, account_id="acc", lambda_id="lam", source=source,
        outcome=InvocationOutcome.SUCCEEDED, started_ms=1, finished_ms=2, duration_ms=1,
    ).to_bytes()


def record(value: bytes | None, source: str | None) -> Any:
    headers = [] if source is None else [(SOURCE_HEADER, source.encode())]
    return SimpleNamespace(value=value, headers=headers)


async def test_only_scheduled_activations_are_recorded() -> None:
    schedules = FakeSchedules()
    handle = ResultHandler(schedules)  # type: ignore[arg-type]
    await handle(record(activation("s1", EventSource.SCHEDULER), EventSource.SCHEDULER.value))
    await handle(record(activation("h1", EventSource.HTTP), EventSource.HTTP.value))
    # A record of another source is skipped by its header: not even parsed.
    await handle(record(b"{not json", EventSource.HTTP.value))
    # Records of an older invoker carry no header: parsed, and judged by their body.
    await handle(record(activation("s2", EventSource.SCHEDULER), None))
    await handle(record(activation("h2", EventSource.HTTP), None))
    await handle(record(b"{not json", None))  # malformed: logged and skipped
    await handle(record(None, None))  # a tombstone
    assert schedules.recorded == ["s1", "s2"]
