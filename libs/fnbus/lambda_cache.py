"""Current state of every lambda, rebuilt from the compacted ``lambda-changes`` topic.

Contract:
1. ``start()`` assigns all partitions, reads from the beginning and returns once
   it has caught up with the end offsets it saw at start (so a fresh process
   answers with the state as of its start).
2. A background loop then applies later changes as they come; ``get()`` is a
   dict lookup (the hot path never waits on I/O).
3. Tombstones (``deleted=True``) remove the entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from fnbus.schemas import LambdaChange

log = logging.getLogger(__name__)


class LambdaCache:
    def __init__(self, bootstrap: str, topic: str) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._entries: dict[str, LambdaChange] = {}
        self._changed = asyncio.Condition()
        self.listeners: list[asyncio.Queue[LambdaChange]] = []

    def get(self, lambda_id: str) -> LambdaChange | None:
        return self._entries.get(lambda_id)

    def all(self) -> list[LambdaChange]:
        return list(self._entries.values())

    def _apply(self, value: bytes | None) -> LambdaChange | None:
        if value is None:
            return None
        try:
            change = LambdaChange.from_bytes(value)
        except ValidationError as exc:
            log.error("skipping malformed lambda change", extra={"error": str(exc)})
            return None
        if change.deleted:
            self._entries.pop(change.lambda_id, None)
        else:
            current = self._entries.get(change.lambda_id)
            if current is None or current.changed_ms <= change.changed_ms:
                self._entries[change.lambda_id] = change
        for queue in self.listeners:
            queue.put_nowait(change)
        return change

    async def start(self, timeout_s: float = 60.0) -> None:
        if self._consumer is not None:
            raise RuntimeError("lambda cache already started")
        consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, enable_auto_commit=False,
                                    group_id=None, fetch_max_wait_ms=100)
        await consumer.start()
        self._consumer = consumer
        partitions = consumer.partitions_for_topic(self._topic)
        for _ in range(50):
            if partitions:
                break
            await asyncio.sleep(0.1)
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(self._topic)
        tps = [TopicPartition(self._topic, p) for p in sorted(partitions or [])]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        async with asyncio.timeout(timeout_s):
            while await self._behind(consumer, ends):
                batch = await consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    for record in records:
                        self._apply(record.value)
        self._task = asyncio.create_task(self._follow(), name="lambda-cache")

    @staticmethod
    async def _behind(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
        for tp, end in ends.items():
            if await consumer.position(tp) < end:
                return True
        return False

    async def _follow(self) -> None:
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(timeout_ms=500)
            changed = False
            for records in batch.values():
                for record in records:
                    changed |= self._apply(record.value) is not None
            if changed:
                async with self._changed:
                    self._changed.notify_all()

    async def wait_for(self, lambda_id: str, predicate: Callable[[LambdaChange | None], bool],
                       timeout_s: float) -> LambdaChange | None:
        """Wait until the entry of ``lambda_id`` satisfies ``predicate`` (or time runs out)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s), self._changed:
                await self._changed.wait_for(lambda: predicate(self._entries.get(lambda_id)))
        return self._entries.get(lambda_id)

    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    async def check(self) -> bool:
        return self.alive()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()
