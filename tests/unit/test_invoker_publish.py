"""Publishing an outcome never sends a part twice (services/invoker/engine.py, rule 7).

The reply, the activation record and the log lines leave together; when the broker
acknowledges some and fails others, the retry carries only the missing ones, so that
log-ingest sees one activation record per attempt. The producer is a recording stand-in
(this is the bookkeeping; the broker's side is tests/integration/test_oversized_result.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

from fnbus.runner_protocol import LogEntry, LogLevel
from fnbus.schemas import (
    ActivationRecord,
    ErrorCode,
    EventSource,
    InvocationOutcome,
    InvocationRequest,
    InvocationResult,
)
from fnbus.topics import Topics
from services.invoker import engine
from services.invoker.engine import Invoker


class FlakyBroker:
    """Acknowledges every record except the ones ``fail`` names, each failing once per entry."""

    def __init__(self, fail: list[tuple[str, BaseException]]) -> None:
        self.fail = list(fail)
        self.acked: list[tuple[str, bytes]] = []

    def _outcome(self, topic: str, value: bytes) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        for n, (prefix, exc) in enumerate(self.fail):
            if topic.startswith(prefix):
                del self.fail[n]
                future.set_exception(exc)
                return future
        self.acked.append((topic, value))
        future.set_result(None)
        return future

    async def send_nowait(self, topic: str, value: bytes, **_: Any) -> asyncio.Future[Any]:
        return self._outcome(topic, value)

    async def send(self, topic: str, value: bytes, **_: Any) -> None:
        await self._outcome(topic, value)

    def topics_acked(self) -> list[str]:
        return [topic for topic, _ in self.acked]


def invoker(broker: FlakyBroker) -> Invoker:
    return Invoker(pool=None, producer=broker, cache=None, registry=None,  # type: ignore[arg-type]
                   topics=Topics("unit"), instance="unit", default_timeout_ms=30_000,
                   runtime_images={}, max_per_account=1, publish_retry_s=5)


def outcome(result: object = "ok") -> tuple[InvocationRequest, InvocationResult, ActivationRecord,
                                            list[LogEntry]]:
    request = InvocationRequest(account_id="acc", lambda_id="lam", source=EventSource.HTTP,
                                reply_to="unit.replies.gw")
    reply = InvocationResult(activation_id=request.activation_id, account_id="acc",
                             lambda_id="lam", outcome=InvocationOutcome.SUCCEEDED, result=result)
    record = ActivationRecord(activation_id=request.activation_id, account_id="acc",
                              lambda_id="lam", source=EventSource.HTTP,
                              outcome=InvocationOutcome.SUCCEEDED, result=result,
                              started_ms=1, finished_ms=2, duration_ms=1)
    logs = [LogEntry(level=LogLevel.INFO, message=f"line {n}", ts_ms=1) for n in range(3)]
    return request, reply, record, logs


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "_PUBLISH_BACKOFF_FIRST_S", 0.001)


async def test_a_failed_reply_is_sent_again_without_a_second_activation_record() -> None:
    broker = FlakyBroker([("unit.replies", KafkaTimeoutError())])
    request, reply, record, logs = outcome()
    published, _, _ = await invoker(broker)._publish_or_fail(request, reply, record, logs)
    topics = broker.topics_acked()
    assert topics.count("unit.replies.gw") == 1
    assert topics.count(Topics("unit").activations) == 1
    assert topics.count(Topics("unit").logs) == 3
    assert published.outcome is InvocationOutcome.SUCCEEDED


async def test_a_failed_log_line_is_the_only_record_sent_again() -> None:
    broker = FlakyBroker([(Topics("unit").logs, KafkaTimeoutError())])
    request, reply, record, logs = outcome()
    await invoker(broker)._publish_or_fail(request, reply, record, logs)
    topics = broker.topics_acked()
    assert topics.count("unit.replies.gw") == 1
    assert topics.count(Topics("unit").activations) == 1
    assert topics.count(Topics("unit").logs) == 3


async def test_a_refused_reply_after_the_activation_is_out_becomes_the_failure_reply_alone() -> None:
    broker = FlakyBroker([("unit.replies", MessageSizeTooLargeError())])
    request, reply, record, logs = outcome()
    published, _, _ = await invoker(broker)._publish_or_fail(request, reply, record, logs)
    topics = broker.topics_acked()
    assert topics.count(Topics("unit").activations) == 1  # the one already out
    assert topics.count("unit.replies.gw") == 1
    sent = InvocationResult.from_bytes(next(v for t, v in broker.acked if t == "unit.replies.gw"))
    assert sent.outcome is InvocationOutcome.PLATFORM_FAILURE
    assert sent.error is not None and sent.error.code == ErrorCode.PLATFORM
    assert published.outcome is InvocationOutcome.PLATFORM_FAILURE


async def test_a_large_reply_refused_first_leaves_one_failure_activation_record() -> None:
    broker = FlakyBroker([("unit.replies", MessageSizeTooLargeError())])
    request, reply, record, logs = outcome("x" * (engine.ONE_TURN_REPLY_BYTES + 1))
    await invoker(broker)._publish_or_fail(request, reply, record, logs)
    activations = [v for t, v in broker.acked if t == Topics("unit").activations]
    assert len(activations) == 1
    assert ActivationRecord.from_bytes(activations[0]).outcome is InvocationOutcome.PLATFORM_FAILURE
    assert broker.topics_acked().count(Topics("unit").logs) == 0  # dropped with the outcome
