"""The invoker's consumer group membership on the real broker (dispatch.py, contracts 10-11).

- An invoker killed with SIGKILL and relaunched with the same instance id gets
  its partitions back at once, not after the dead member's session expired.
- A second process that joins with an instance id already in use takes the
  place; the first one stops consuming for good and says why (unhealthy,
  ``InstanceFencedError``) instead of both running every record.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka import ConsumerRecord

from fnbus.config import Settings
from fnbus.kafka import Producer
from fnbus.topics import TopicSpec, ensure_topics
from services.invoker.dispatch import SESSION_TIMEOUT_MS, Dispatcher, InstanceFencedError
from tests.support import eventually

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PARTITIONS = 3


async def new_topic(settings: Settings) -> str:
    topic = f"{settings.topic_prefix}.membership-{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings.kafka_bootstrap, [TopicSpec(topic, PARTITIONS)])
    return topic


async def produce(settings: Settings, topic: str, values: list[str]) -> None:
    async with Producer(settings.kafka_bootstrap) as producer:
        for n, value in enumerate(values):
            await producer.send(topic, value.encode(), key=str(n))


class Member:
    """A dispatcher in this process that records what it ran."""

    def __init__(self, settings: Settings, topic: str, group: str, instance: str) -> None:
        self.ran: list[str] = []
        self.dispatcher = Dispatcher(settings.kafka_bootstrap, [topic], group_id=group,
                                     handler=self._handle, group_instance_id=instance,
                                     client_id=instance)
        self.task: asyncio.Task[None] | None = None

    async def _handle(self, record: ConsumerRecord) -> None:
        self.ran.append(record.value.decode())

    def partitions(self) -> set[int]:
        consumer = self.dispatcher._consumer
        return set() if consumer is None else {tp.partition for tp in consumer.assignment()}


@contextlib.asynccontextmanager
async def member(settings: Settings, topic: str, group: str, instance: str
                 ) -> AsyncIterator[Member]:
    m = Member(settings, topic, group, instance)
    await m.dispatcher.start()
    m.task = asyncio.create_task(m.dispatcher.run())
    try:
        yield m
    finally:
        m.dispatcher.request_stop()
        with contextlib.suppress(InstanceFencedError):
            await asyncio.wait_for(m.task, timeout=60)
        await m.dispatcher.stop()


async def read_line(proc: asyncio.subprocess.Process, prefix: str, timeout_s: float) -> str:
    assert proc.stdout is not None
    async with asyncio.timeout(timeout_s):
        while True:
            line = (await proc.stdout.readline()).decode()
            if not line:
                raise AssertionError(f"the member process exited before printing {prefix!r}")
            if line.startswith(prefix):
                return line.strip()


async def test_a_relaunched_invoker_takes_its_partitions_back_at_once(settings: Settings) -> None:
    topic = await new_topic(settings)
    group = f"{settings.topic_prefix}.membership-relaunch"
    instance = f"invoker-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "libs")])}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.integration.invoker_member", settings.kafka_bootstrap, topic,
        group, instance, cwd=str(REPO), env=env, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL)
    try:
        assert await read_line(proc, "assigned", 60) == "assigned [0, 1, 2]"
        await produce(settings, topic, ["before"])
        assert await read_line(proc, "ran", 30) == "ran before"
    finally:
        proc.send_signal(signal.SIGKILL)  # no LeaveGroup, no commit: as a crash
        await proc.wait()
    await produce(settings, topic, ["after"])
    relaunched = time.monotonic()
    async with member(settings, topic, group, instance) as back:
        # start() returns once partitions are assigned.
        took_s = time.monotonic() - relaunched
        assert back.partitions() == {0, 1, 2}
        # A dynamic member would wait for the dead one's session (10 s) to expire.
        assert took_s < SESSION_TIMEOUT_MS / 1000 / 3, f"partitions after {took_s:.1f} s"
        await eventually(lambda: _async("after" in back.ran), timeout_s=10,
                         what="the record produced while the invoker was down")
        assert await back.dispatcher.ping()


async def test_a_second_process_with_the_same_instance_id_fences_the_first(
        settings: Settings) -> None:
    topic = await new_topic(settings)
    group = f"{settings.topic_prefix}.membership-fence"
    instance = f"invoker-{uuid.uuid4().hex[:6]}"
    async with member(settings, topic, group, instance) as first:
        assert first.partitions() == {0, 1, 2}
        async with member(settings, topic, group, instance) as second:
            # The first loses its membership at its next heartbeat, sees the id taken, stops.
            await eventually(lambda: _async(first.dispatcher.fenced_by), timeout_s=15,
                             what="the first process to be fenced")
            assert second.dispatcher.fenced_by is None
            assert not await first.dispatcher.ping()
            assert first.task is not None
            with pytest.raises(InstanceFencedError, match=instance):
                await asyncio.wait_for(first.task, timeout=30)
            # The newer process keeps every partition, heartbeats go on undisturbed.
            for _ in range(3):
                await asyncio.sleep(2)
                assert second.partitions() == {0, 1, 2}
                assert second.dispatcher.fenced_by is None
            assert await second.dispatcher.ping()
            await produce(settings, topic, [f"r{n}" for n in range(6)])
            await eventually(lambda: _async(len(second.ran) == 6), timeout_s=15,
                             what="the newer process to run every record")
            assert first.ran == []


async def test_a_second_invoker_with_its_own_id_shares_the_partitions(settings: Settings) -> None:
    topic = await new_topic(settings)
    group = f"{settings.topic_prefix}.membership-share"
    async with member(settings, topic, group, f"invoker-{uuid.uuid4().hex[:6]}") as one, \
            member(settings, topic, group, f"invoker-{uuid.uuid4().hex[:6]}") as two:
        await eventually(lambda: _async(one.partitions() and two.partitions()
                                        and one.partitions() | two.partitions() == {0, 1, 2}),
                         timeout_s=30, what="the partitions to be shared")
        assert not one.partitions() & two.partitions()
        assert one.dispatcher.fenced_by is None and two.dispatcher.fenced_by is None


async def _async(value: object) -> object:
    return value


async def test_a_waiting_caller_goes_before_its_accounts_async_backlog(settings: Settings) -> None:
    topic = f"{settings.topic_prefix}.membership-urgent-{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings.kafka_bootstrap, [TopicSpec(topic, 1)])
    group = f"{settings.topic_prefix}.membership-urgent"
    # A backlog of async work, then one synchronous call, all of one account.
    await produce(settings, topic, [f"async-{n}" for n in range(20)] + ["sync-0"])
    release = asyncio.Event()
    ran: list[str] = []

    async def handler(record: ConsumerRecord) -> None:
        await release.wait()
        ran.append(record.value.decode())

    dispatcher = Dispatcher(settings.kafka_bootstrap, [topic], group_id=group, handler=handler,
                            group_of=lambda r: "acct", max_per_group=2,
                            urgent_of=lambda r: r.value.startswith(b"sync"))
    await dispatcher.start()
    task = asyncio.create_task(dispatcher.run())
    try:
        await eventually(lambda: _async(dispatcher.waiting == 19), timeout_s=20,
                         what="the backlog to be fetched")
        release.set()
        await eventually(lambda: _async(len(ran) == 21), timeout_s=20, what="every record")
        # The two already running finish first; the caller's record is next.
        assert ran.index("sync-0") == 2, ran
        assert [r for r in ran if r.startswith("async")] == [f"async-{n}" for n in range(20)]
    finally:
        dispatcher.request_stop()
        await asyncio.wait_for(task, timeout=30)
        await dispatcher.stop()
