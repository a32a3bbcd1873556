"""fnbus.kafka.Producer's two lanes (the setting the Kafka tuning sweep justifies), with a fake client.

The real client's behaviour against a broker is covered by the integration
tests (test_oversized_result: renewal after a refused batch); here only which
client a record goes through, and the lifecycle.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fnbus import kafka


class FakeClient:
    def __init__(self, client_id: str, linger_ms: int, max_batch_size: int, log: list[str]) -> None:
        self.client_id = client_id
        self.linger_ms = linger_ms
        self.max_batch_size = max_batch_size
        self.log = log
        self.sent: list[bytes] = []

        class Sender:
            sender_task = None

        self._sender = Sender()

    async def start(self) -> None:
        self.log.append(f"start {self.client_id}")

    async def stop(self) -> None:
        self.log.append(f"stop {self.client_id}")

    async def send(self, topic: str, value: bytes, key: bytes | None = None, headers: Any = None
                   ) -> asyncio.Future[Any]:
        self.sent.append(value)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        fut.set_result(("meta", topic))
        return fut


@pytest.fixture
def clients(monkeypatch: pytest.MonkeyPatch) -> tuple[list[FakeClient], list[str]]:
    made: list[FakeClient] = []
    log: list[str] = []

    def new_client(self: Any) -> FakeClient:
        client = FakeClient(self._client_id, self._linger_ms, self._max_batch_size, log)
        made.append(client)
        return client

    monkeypatch.setattr(kafka._Lane, "_new_client", new_client)
    return made, log


async def test_one_client_without_a_bulk_linger(clients: tuple[list[FakeClient], list[str]]) -> None:
    made, _ = clients
    async with kafka.Producer("x:9092", client_id="svc") as producer:
        await producer.send("t", b"a")
        await (await producer.send_nowait("t", b"b"))
    assert [(c.client_id, c.linger_ms, c.sent) for c in made] == [("svc", 0, [b"a", b"b"])]


async def test_send_nowait_goes_through_the_bulk_client(clients: tuple[list[FakeClient], list[str]]) -> None:
    made, log = clients
    producer = kafka.Producer("x:9092", client_id="svc", linger_ms=0, bulk_linger_ms=20,
                              bulk_max_batch_size=65536)
    await producer.start()
    assert producer.started
    assert await producer.send("replies", b"reply") == ("meta", "replies")
    futures = [await producer.send_nowait("activations", b"rec"), await producer.send_nowait("logs", b"line")]
    # bulk=False: queued without waiting, but on the latency lane (the invoker's reply).
    futures.append(await producer.send_nowait("replies", b"queued reply", bulk=False))
    await asyncio.gather(*futures)
    await producer.stop()
    await producer.stop()  # safe twice
    fast, bulk = made
    assert (fast.client_id, fast.linger_ms, fast.sent) == ("svc", 0, [b"reply", b"queued reply"])
    assert (bulk.client_id, bulk.linger_ms, bulk.max_batch_size, bulk.sent) == (
        "svc-bulk", 20, 65536, [b"rec", b"line"])
    # Started in order, stopped in reverse.
    assert log == ["start svc", "start svc-bulk", "stop svc-bulk", "stop svc"]
    assert not producer.started


async def test_start_refuses_to_run_twice_and_sends_need_a_start(
        clients: tuple[list[FakeClient], list[str]]) -> None:
    producer = kafka.Producer("x:9092", bulk_linger_ms=5)
    with pytest.raises(kafka.NotStartedError):
        await producer.send_nowait("t", b"x")
    await producer.start()
    with pytest.raises(RuntimeError):
        await producer.start()
    await producer.stop()
    with pytest.raises(kafka.NotStartedError):
        await producer.send("t", b"x")


async def test_a_failed_bulk_batch_renews_only_the_bulk_client(
        clients: tuple[list[FakeClient], list[str]]) -> None:
    made, _ = clients
    async with kafka.Producer("x:9092", client_id="svc", bulk_linger_ms=5) as producer:
        failing: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        bulk_lane = producer._bulk
        assert bulk_lane is not None and bulk_lane.producer is not None
        bulk_lane.watch(bulk_lane.producer, failing)
        failing.set_exception(RuntimeError("refused"))
        await asyncio.sleep(0)
        await producer.send("t", b"fast")  # the fast client is untouched
        await producer.send_nowait("t", b"after")
        assert producer.renewals == 1
    assert [c.client_id for c in made] == ["svc", "svc-bulk", "svc-bulk"]
    assert made[2].sent == [b"after"]
