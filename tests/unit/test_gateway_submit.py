"""The gateway's submit: a broker that does not take a request answers 503 in bounded time."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import pytest

from fnbus.errors import UpstreamUnavailable
from fnbus.kafka import Producer
from fnbus.lambda_cache import LambdaCache
from fnbus.schemas import EventSource, InvocationRequest
from services.gateway.invoke import Invocations, ReplyWaiter


class StuckProducer:
    """A producer whose broker never acknowledges (down or restarting), until released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.sent: list[bytes] = []
        self._deliveries: set[asyncio.Task[None]] = set()

    async def send_nowait(self, topic: str, value: bytes, *, key: Any = None,
                          bulk: bool = True) -> asyncio.Future[None]:
        """Queued at once; the returned future resolves when the broker acknowledged."""
        acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def deliver() -> None:
            await self.release.wait()
            self.sent.append(value)
            acked.set_result(None)

        self._deliveries.add(asyncio.create_task(deliver()))
        return acked


def _invocations(producer: StuckProducer) -> Invocations:
    return Invocations(cast(LambdaCache, None), cast(Producer, producer),
                       cast(ReplyWaiter, None), "t.invocations", 30_000)


def _request() -> InvocationRequest:
    return InvocationRequest(account_id="a", lambda_id="l", version=1, source=EventSource.HTTP,
                             payload={}, reply_to=None)


async def test_a_broker_that_does_not_answer_is_a_503_within_the_submit_timeout() -> None:
    producer = StuckProducer()
    request = _request()
    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable) as caught:
        await _invocations(producer).submit(request, timeout_s=0.2)
    assert time.monotonic() - started < 1
    assert caught.value.code == "broker_unavailable"
    assert request.activation_id in str(caught.value)  # the caller can look it up later
    # The send was not cancelled: a broker that comes back still gets the record.
    producer.release.set()
    await asyncio.sleep(0.05)
    assert producer.sent == [request.to_bytes()]


async def test_a_broker_that_answers_in_time_queues_the_request() -> None:
    producer = StuckProducer()
    producer.release.set()
    await _invocations(producer).submit(_request(), timeout_s=0.2)
    assert len(producer.sent) == 1
