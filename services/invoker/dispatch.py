"""Consume invocation requests concurrently, commit only what is finished.

Contract:
1. Records are handed to ``handler`` as tasks, at most ``max_in_flight`` at once.
2. A partition's offset is committed up to the first record whose handler has
   not finished: nothing is committed before its result is out (at-least-once).
3. Records with the same ordering key (``key_of``) run one after another, in
   offset order; different keys run in parallel.
4. On rebalance, revoked partitions' in-flight records finish (bounded by
   ``drain_timeout_s``) and are committed before the partitions go.
5. ``request_stop()`` stops fetching; ``run()`` returns once in-flight records
   finished and were committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from fnbus.kafka import consumer_alive

log = logging.getLogger(__name__)

Handler = Callable[[ConsumerRecord], Awaitable[None]]
KeyOf = Callable[[ConsumerRecord], str | None]


class _Partition:
    def __init__(self) -> None:
        self.pending: OrderedDict[int, bool] = OrderedDict()  # offset → finished
        self.commit_to: int | None = None  # next offset to commit

    def finish(self, offset: int) -> None:
        self.pending[offset] = True
        while self.pending:
            first, done = next(iter(self.pending.items()))
            if not done:
                break
            self.pending.popitem(last=False)
            self.commit_to = first + 1


class Dispatcher(ConsumerRebalanceListener):
    def __init__(self, bootstrap: str, topics: list[str], *, group_id: str, handler: Handler,
                 key_of: KeyOf | None = None, max_in_flight: int = 64, client_id: str = "fnbus",
                 drain_timeout_s: float = 40.0) -> None:
        self._bootstrap = bootstrap
        self._topics = topics
        self._group_id = group_id
        self._handler = handler
        self._key_of = key_of
        self._slots = asyncio.Semaphore(max_in_flight)
        self._client_id = client_id
        self._drain_timeout_s = drain_timeout_s
        self._consumer: AIOKafkaConsumer | None = None
        self._parts: dict[TopicPartition, _Partition] = {}
        self._key_locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._progress = asyncio.Event()

    async def start(self) -> None:
        if self._consumer is not None:
            raise RuntimeError("dispatcher already started")
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap, group_id=self._group_id, client_id=self._client_id,
            enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=20,
            max_poll_records=200, session_timeout_ms=10_000, heartbeat_interval_ms=2_000,
            max_poll_interval_ms=300_000)
        self._consumer.subscribe(self._topics, listener=self)
        await self._consumer.start()

    async def ping(self) -> bool:
        return consumer_alive(self._consumer)

    def request_stop(self) -> None:
        self._stopping.set()

    async def stop(self) -> None:
        self._stopping.set()
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    # -- rebalance -----------------------------------------------------------------------
    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        try:
            async with asyncio.timeout(self._drain_timeout_s):
                while any(self._parts.get(tp) and self._parts[tp].pending for tp in revoked):
                    self._progress.clear()
                    await self._progress.wait()
        except TimeoutError:
            log.warning("revoking partitions with invocations still running")
        await self._commit([tp for tp in revoked if tp in self._parts])
        for tp in revoked:
            self._parts.pop(tp, None)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        for tp in assigned:
            self._parts.setdefault(tp, _Partition())

    # -- consuming -------------------------------------------------------------------------
    async def run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        committer = asyncio.create_task(self._commit_loop(), name="dispatch-commit")
        try:
            while not self._stopping.is_set():
                try:
                    batches = await consumer.getmany(timeout_ms=100)
                except KafkaError as exc:
                    if self._stopping.is_set():
                        break
                    log.warning("poll failed", extra={"error": str(exc)})
                    await asyncio.sleep(0.5)
                    continue
                for tp, records in batches.items():
                    part = self._parts.setdefault(tp, _Partition())
                    for record in records:
                        await self._slots.acquire()
                        part.pending[record.offset] = False
                        task = asyncio.create_task(self._run_one(tp, record))
                        self._tasks.add(task)
                        task.add_done_callback(self._tasks.discard)
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=self._drain_timeout_s)
        finally:
            committer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await committer
            await self._commit(list(self._parts))

    async def _run_one(self, tp: TopicPartition, record: ConsumerRecord) -> None:
        key = self._key_of(record) if self._key_of else None
        finished = False
        try:
            if key is None:
                finished = await self._attempt(tp, record)
            else:
                lock = self._key_locks.setdefault(key, asyncio.Lock())
                async with lock:
                    finished = await self._attempt(tp, record)
                if not lock.locked() and not lock._waiters:
                    self._key_locks.pop(key, None)
        finally:
            part = self._parts.get(tp)
            if part is not None and finished:
                part.finish(record.offset)
            self._slots.release()
            self._progress.set()

    async def _attempt(self, tp: TopicPartition, record: ConsumerRecord) -> bool:
        """Run the handler until it succeeds; False if we stopped first (record stays uncommitted)."""
        backoff_s = 0.2
        while True:
            try:
                await self._handler(record)
                return True
            except Exception:  # noqa: BLE001 - e.g. the broker refused the result; try again
                log.exception("invocation handler failed; retrying",
                              extra={"topic": tp.topic, "partition": tp.partition,
                                     "offset": record.offset})
            if self._stopping.is_set():
                return False
            await asyncio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, 5.0)

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            await self._commit(list(self._parts))

    async def _commit(self, tps: list[TopicPartition]) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        offsets = {}
        for tp in tps:
            part = self._parts.get(tp)
            if part is not None and part.commit_to is not None:
                offsets[tp] = part.commit_to
                part.commit_to = None
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except KafkaError as exc:
            log.warning("offset commit failed; records may be redelivered",
                        extra={"error": str(exc)})
