"""``fnbus_invoker_consumer_lag_records{topic}``: records on the broker the invoker has not fetched."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from aiokafka import ConsumerRecord, TopicPartition
from prometheus_client import REGISTRY

from fnbus.config import Settings
from fnbus.kafka import Producer
from fnbus.topics import TopicSpec, ensure_topics
from services.invoker.dispatch import Dispatcher
from tests.support import eventually

pytestmark = pytest.mark.integration


def lag_of(topic: str) -> float | None:
    return REGISTRY.get_sample_value("fnbus_invoker_consumer_lag_records", {"topic": topic})


async def test_the_lag_counts_what_is_not_fetched_and_falls_to_zero(settings: Settings) -> None:
    topic = f"{settings.topic_prefix}.lag-{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings.kafka_bootstrap, [TopicSpec(topic, 1)])
    async with Producer(settings.kafka_bootstrap) as producer:
        for n in range(600):
            await producer.send(topic, json.dumps({"n": n}).encode(), key="k")
    release = asyncio.Event()
    ran = 0

    async def handler(record: ConsumerRecord) -> None:
        nonlocal ran
        await release.wait()
        ran += 1

    # One record at a time and a backlog of 50: fetching pauses after the first poll
    # (at most 200 records), so most of the 600 stay on the broker.
    dispatcher = Dispatcher(settings.kafka_bootstrap, [topic], group_id=f"{topic}.g",
                            handler=handler, group_of=lambda r: "acct", max_per_group=1,
                            max_backlog=50)
    await dispatcher.start()
    task = asyncio.create_task(dispatcher.run())
    try:
        await eventually(lambda: _async(dispatcher.paused), timeout_s=20, what="fetching to pause")
        consumer = dispatcher._consumer
        assert consumer is not None
        tp = TopicPartition(topic, 0)
        position = await consumer.position(tp)
        assert 0 < position < 600
        await eventually(lambda: _async(lag_of(topic) == 600 - position), timeout_s=10,
                         what=f"the lag to read {600 - position}")
        release.set()
        await eventually(lambda: _async(ran == 600 and lag_of(topic) == 0), timeout_s=60,
                         what="every record to run and the lag to fall to 0")
    finally:
        release.set()
        dispatcher.request_stop()
        await asyncio.wait_for(task, timeout=30)
        await dispatcher.stop()


async def _async(value: object) -> object:
    return value
