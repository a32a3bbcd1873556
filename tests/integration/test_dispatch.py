"""The invoker's dispatcher on the real broker: fair share per account, order, commits, no loss."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from fnbus.config import Settings
from fnbus.kafka import Producer
from fnbus.topics import TopicSpec, ensure_topics
from services.invoker.dispatch import Dispatcher, Handler
from tests.support import eventually

pytestmark = pytest.mark.integration


def group_of(record: ConsumerRecord) -> str | None:
    return str(json.loads(record.value)["g"])


def key_of(record: ConsumerRecord) -> str | None:
    key = json.loads(record.value).get("k")
    return str(key) if key else None


async def new_topic(settings: Settings, partitions: int = 1) -> str:
    topic = f"{settings.topic_prefix}.dispatch-{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings.kafka_bootstrap, [TopicSpec(topic, partitions)])
    return topic


async def produce(settings: Settings, topic: str, records: list[dict[str, object]]) -> None:
    async with Producer(settings.kafka_bootstrap) as producer:
        for record in records:
            await producer.send(topic, json.dumps(record).encode(), key=str(record.get("k", "")))


@contextlib.asynccontextmanager
async def running(settings: Settings, topic: str, group: str, handler: Handler,
                  **options: Any) -> AsyncIterator[Dispatcher]:
    """A dispatcher consuming ``topic`` until the block ends; then stopped as the invoker stops it."""
    options.setdefault("group_of", group_of)
    dispatcher = Dispatcher(settings.kafka_bootstrap, [topic], group_id=group, handler=handler, **options)
    await dispatcher.start()
    task = asyncio.create_task(dispatcher.run())
    try:
        yield dispatcher
    finally:
        dispatcher.request_stop()
        await asyncio.wait_for(task, timeout=60)
        await dispatcher.stop()


async def committed(settings: Settings, topic: str, group: str) -> int | None:
    return await _committed(settings, TopicPartition(topic, 0), group)


async def test_a_flooding_account_leaves_slots_for_the_others(settings: Settings) -> None:
    topic = await new_topic(settings)
    group = f"{settings.topic_prefix}.dispatch-fair"
    # The flood comes first in the partition, then the quiet account's records.
    await produce(settings, topic, [{"g": "flood", "n": n} for n in range(30)]
                  + [{"g": "quiet", "n": n} for n in range(3)])
    release = asyncio.Event()
    active = {"flood": 0, "quiet": 0}
    peak = {"flood": 0, "quiet": 0}
    done: list[tuple[str, int]] = []

    async def handler(record: ConsumerRecord) -> None:
        body = json.loads(record.value)
        active[body["g"]] += 1
        peak[body["g"]] = max(peak[body["g"]], active[body["g"]])
        if body["g"] == "flood":
            await release.wait()  # slow work: holds its slot until released
        active[body["g"]] -= 1
        done.append((body["g"], body["n"]))

    async with running(settings, topic, group, handler, max_per_group=4, max_in_flight=8):
        # The quiet account runs although 30 slow flood records came before it.
        await eventually(lambda: _async([g for g, _ in done if g == "quiet"] == ["quiet"] * 3),
                         timeout_s=30, what="the quiet account's records")
        assert not any(g == "flood" for g, _ in done)
        assert active["flood"] == 4  # its share, not all 8 slots
        release.set()
        await eventually(lambda: _async(len(done) == 33), timeout_s=30, what="all records")
        assert peak["flood"] == 4
        # The flood ran in offset order through its backlog.
        assert [n for g, n in done if g == "flood"] == list(range(30))
        assert await _committed_eventually(settings, topic, group, 33)


async def test_order_per_key_holds_with_a_backlog(settings: Settings) -> None:
    topic = await new_topic(settings)
    group = f"{settings.topic_prefix}.dispatch-order"
    records = [{"g": "a", "k": f"conv-{n % 3}", "n": n} for n in range(24)]
    await produce(settings, topic, records)
    seen: dict[str, list[int]] = {}

    async def handler(record: ConsumerRecord) -> None:
        body = json.loads(record.value)
        await asyncio.sleep(random.uniform(0, 0.02))
        seen.setdefault(body["k"], []).append(body["n"])

    async with running(settings, topic, group, handler, key_of=key_of, max_per_group=2, max_in_flight=8):
        await eventually(lambda: _async(sum(map(len, seen.values())) == 24), timeout_s=30, what="all records")
        for k, ns in seen.items():
            assert ns == sorted(ns), f"{k} ran out of order: {ns}"
        assert await _committed_eventually(settings, topic, group, 24)


async def test_waiting_records_are_not_committed_on_stop_and_come_back(settings: Settings) -> None:
    topic = await new_topic(settings)
    group = f"{settings.topic_prefix}.dispatch-stop"
    await produce(settings, topic, [{"g": "a", "n": n} for n in range(5)])
    started = asyncio.Event()
    release = asyncio.Event()
    first_run: list[int] = []

    async def slow(record: ConsumerRecord) -> None:
        started.set()
        await release.wait()
        first_run.append(json.loads(record.value)["n"])

    async with running(settings, topic, group, slow, max_per_group=1, max_in_flight=8) as dispatcher:
        await asyncio.wait_for(started.wait(), timeout=30)
        await asyncio.sleep(0.5)  # the other four are fetched and wait in the backlog
        dispatcher.request_stop()
        release.set()
    assert first_run == [0]  # the running record finished; the waiting ones did not start
    assert await committed(settings, topic, group) == 1

    second_run: list[int] = []

    async def quick(record: ConsumerRecord) -> None:
        second_run.append(json.loads(record.value)["n"])

    async with running(settings, topic, group, quick, max_per_group=1):
        await eventually(lambda: _async(len(second_run) == 4), timeout_s=30, what="the four waiting records")
        assert second_run == [1, 2, 3, 4]


async def test_a_full_backlog_pauses_fetching_and_loses_nothing(settings: Settings) -> None:
    topic = await new_topic(settings)
    group = f"{settings.topic_prefix}.dispatch-pause"
    await produce(settings, topic, [{"g": "a", "n": n} for n in range(10)])
    release = asyncio.Event()
    done: list[int] = []

    async def handler(record: ConsumerRecord) -> None:
        await release.wait()
        done.append(json.loads(record.value)["n"])

    async with running(settings, topic, group, handler, max_per_group=1, max_backlog=5) as dispatcher:
        # One runs, nine wait: over the limit of five, so fetching pauses …
        await eventually(lambda: _async(dispatcher.waiting == 9 and dispatcher.paused),
                         timeout_s=30, what="a paused dispatcher")
        await produce(settings, topic, [{"g": "a", "n": n} for n in range(10, 20)])
        await asyncio.sleep(1.0)
        assert dispatcher.waiting == 9  # … and the new records stay on the broker
        release.set()
        await eventually(lambda: _async(len(done) == 20), timeout_s=30, what="all records")
        assert done == list(range(20))
        await eventually(lambda: _async(not dispatcher.paused), what="fetching resumed")
        assert await _committed_eventually(settings, topic, group, 20)


async def test_a_rebalance_hands_waiting_records_to_the_new_owner(settings: Settings) -> None:
    topic = await new_topic(settings, partitions=2)
    group = f"{settings.topic_prefix}.dispatch-rebalance"
    total = 40
    await produce(settings, topic, [{"g": "a", "k": f"c{n}", "n": n} for n in range(total)])
    partitions = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    ends = await _end_offsets(settings, partitions)
    ran: dict[str, list[int]] = {"first": [], "second": []}

    def handler(name: str) -> Handler:
        async def handle(record: ConsumerRecord) -> None:
            await asyncio.sleep(0.2)
            ran[name].append(json.loads(record.value)["n"])

        return handle

    async with running(settings, topic, group, handler("first"), max_per_group=1) as first:
        await eventually(lambda: _async(len(ran["first"]) >= 2 and first.waiting > 0),
                         timeout_s=30, what="the first dispatcher with a backlog")
        # The second takes one of the two partitions, waiting records included.
        async with running(settings, topic, group, handler("second"), max_per_group=1):
            await eventually(lambda: _async(set(ran["first"]) | set(ran["second"]) == set(range(total))),
                             timeout_s=60, what="every record, once the group rebalanced")
            assert ran["second"], "the second dispatcher got no partition"
            for tp in partitions:
                async def at_end(tp: TopicPartition = tp) -> bool:
                    return await _committed(settings, tp, group) == ends[tp]

                await eventually(at_end, timeout_s=20, what=f"{tp} committed to its end")


async def _end_offsets(settings: Settings, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        return dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


async def _committed(settings: Settings, tp: TopicPartition, group: str) -> int | None:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=group)
    await consumer.start()
    try:
        return await consumer.committed(tp)
    finally:
        await consumer.stop()


async def _async(value: bool) -> bool:
    return value


async def _committed_eventually(settings: Settings, topic: str, group: str, offset: int) -> bool:
    async def check() -> bool:
        return await committed(settings, topic, group) == offset

    return await eventually(check, timeout_s=20, what=f"committed offset {offset}")


async def test_malformed_records_pass_the_fair_share_and_nothing_stalls(settings: Settings) -> None:
    """The invoker's own account key (``_account_of``) on garbage: no group, handled at once."""
    from services.invoker.app import _account_of

    topic = await new_topic(settings)
    group = f"{settings.topic_prefix}.dispatch-malformed"
    garbage = [b"not json", b'["a", "list"]', b'{"account_id": 5}', b"", b"\xff\xfe"]
    async with Producer(settings.kafka_bootstrap) as producer:
        for value in garbage:
            await producer.send(topic, value)
    await produce(settings, topic, [{"account_id": "acct", "n": n} for n in range(3)])
    seen: list[bytes] = []

    async def handler(record: ConsumerRecord) -> None:
        seen.append(record.value)

    async with running(settings, topic, group, handler, group_of=_account_of, max_per_group=1):
        await eventually(lambda: _async(len(seen) == len(garbage) + 3), timeout_s=30, what="every record")
        assert seen[:len(garbage)] == garbage
        assert await _committed_eventually(settings, topic, group, len(garbage) + 3)


async def test_a_flood_spills_and_never_delays_another_account_on_the_same_partition(
    settings: Settings,
) -> None:
    """Per-account backpressure: the flooding account's excess is spilled, the partition flows."""
    topic = await new_topic(settings)
    group = f"{settings.topic_prefix}.dispatch-spill"
    flood = 200
    await produce(settings, topic, [{"g": "flood", "k": f"k{n % 3}", "n": n} for n in range(flood)])
    release = asyncio.Event()
    done: list[tuple[str, int]] = []
    quiet_latency_s: list[float] = []

    async def handler(record: ConsumerRecord) -> None:
        body = json.loads(record.value)
        if body["g"] == "flood":
            await release.wait()
        else:
            quiet_latency_s.append(asyncio.get_running_loop().time() - body["t"])
        done.append((body["g"], body["n"]))

    # A budget far below the flood: 2 run, 10 are held with their value, the rest spilled.
    async with running(settings, topic, group, handler, key_of=key_of, max_per_group=2,
                       max_held_per_group=10, max_backlog=1_000) as dispatcher:
        await eventually(lambda: _async(dispatcher.waiting == flood - 2), timeout_s=30,
                         what="the flood fetched")
        assert dispatcher.spilled == flood - 2 - 10 and not dispatcher.paused
        # The quiet account's records come after the flood, on the same partition.
        for n in range(5):
            now = asyncio.get_running_loop().time()
            await produce(settings, topic, [{"g": "quiet", "n": n, "t": now}])
        await eventually(lambda: _async(len(quiet_latency_s) == 5), timeout_s=10,
                         what="the quiet account's records")
        assert max(quiet_latency_s) < 1.0, quiet_latency_s  # the broker's round trips, no queue
        assert not any(g == "flood" for g, _ in done)
        release.set()
        await eventually(lambda: _async(len(done) == flood + 5), timeout_s=60, what="every record")
        # Spilled records were read back and ran once each, in order per key.
        ran = [n for g, n in done if g == "flood"]
        assert sorted(ran) == list(range(flood))
        for k in range(3):
            assert [n for n in ran if n % 3 == k] == list(range(k, flood, 3))
        assert dispatcher.waiting == 0 and dispatcher.spilled == 0
        assert await _committed_eventually(settings, topic, group, flood + 5)


async def test_spilled_records_are_not_committed_on_stop_and_come_back(settings: Settings) -> None:
    topic = await new_topic(settings)
    group = f"{settings.topic_prefix}.dispatch-spill-stop"
    await produce(settings, topic, [{"g": "a", "n": n} for n in range(30)])
    started = asyncio.Event()
    release = asyncio.Event()
    first_run: list[int] = []

    async def slow(record: ConsumerRecord) -> None:
        started.set()
        await release.wait()
        first_run.append(json.loads(record.value)["n"])

    async with running(settings, topic, group, slow, max_per_group=1,
                       max_held_per_group=3) as dispatcher:
        await asyncio.wait_for(started.wait(), timeout=30)
        await eventually(lambda: _async(dispatcher.spilled == 26), timeout_s=30, what="spilled records")
        dispatcher.request_stop()
        release.set()
    assert first_run == [0]
    assert await committed(settings, topic, group) == 1

    second_run: list[int] = []

    async def quick(record: ConsumerRecord) -> None:
        second_run.append(json.loads(record.value)["n"])

    async with running(settings, topic, group, quick, max_per_group=1, max_held_per_group=3):
        await eventually(lambda: _async(len(second_run) == 29), timeout_s=30, what="the rest")
        assert second_run == list(range(1, 30))
        assert await _committed_eventually(settings, topic, group, 30)
