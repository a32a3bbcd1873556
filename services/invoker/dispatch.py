"""Consume invocation requests concurrently, commit only what is finished.

Contract:
1. Records are handed to ``handler`` as tasks, at most ``max_in_flight`` at once.
2. A partition's offset is committed up to the first record whose handler has
   not finished: nothing is committed before its result is out (at-least-once).
3. Records with the same ordering key (``key_of``) run one after another, in
   offset order; different keys run in parallel.
4. Fair share: with ``group_of`` (the account), a group runs at most
   ``max_per_group`` records at once. Its further records wait in an in-memory
   backlog that holds none of the ``max_in_flight`` slots, so a group that
   floods the topic with slow work cannot take the slots other groups need.
   A waiting record starts when one of its group's records finishes (in offset
   order, so per-key order holds). While ``max_backlog`` records or
   ``max_backlog_bytes`` wait, fetching pauses until half of that has started.
5. On rebalance, revoked partitions' running records finish (bounded by
   ``drain_timeout_s``) and are committed; their waiting records are dropped
   uncommitted, for the partition's next owner.
6. ``request_stop()`` stops fetching; ``run()`` returns once running records
   finished and were committed. Waiting records stay uncommitted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from fnbus.kafka import consumer_alive

log = logging.getLogger(__name__)

Handler = Callable[[ConsumerRecord], Awaitable[None]]
KeyOf = Callable[[ConsumerRecord], str | None]
GroupOf = Callable[[ConsumerRecord], str | None]


def _size(record: ConsumerRecord) -> int:
    return len(record.value or b"")


class _Partition:
    def __init__(self) -> None:
        self.pending: OrderedDict[int, bool] = OrderedDict()  # offset → finished
        self.commit_to: int | None = None  # next offset to commit
        self.running = 0  # records of this partition started and not finished

    def finish(self, offset: int) -> None:
        if offset not in self.pending:
            return  # fetched before the partition was revoked and assigned again
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
                 drain_timeout_s: float = 40.0, group_of: GroupOf | None = None,
                 max_per_group: int = 16, max_backlog: int = 1_000,
                 max_backlog_bytes: int = 64 * 1024 * 1024) -> None:
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
        self._group_of = group_of
        self._max_per_group = max_per_group
        self._max_backlog = max_backlog
        self._max_backlog_bytes = max_backlog_bytes
        self._waiting_bytes = 0
        self._group_running: dict[str, int] = {}
        self._backlog: dict[str, deque[tuple[TopicPartition, ConsumerRecord]]] = {}
        self._waiting = 0
        self._paused = False
        self._stopping = asyncio.Event()
        self._progress = asyncio.Event()

    async def start(self) -> None:
        if self._consumer is not None:
            raise RuntimeError("dispatcher already started")
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap, group_id=self._group_id, client_id=self._client_id,
            enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=200,
            max_poll_records=200, session_timeout_ms=10_000, heartbeat_interval_ms=2_000,
            max_poll_interval_ms=300_000)
        self._consumer.subscribe(self._topics, listener=self)
        await self._consumer.start()

    async def ping(self) -> bool:
        return consumer_alive(self._consumer)

    @property
    def waiting(self) -> int:
        """Records fetched and waiting for their group's turn."""
        return self._waiting

    @property
    def paused(self) -> bool:
        """True while fetching is paused because the backlog is full."""
        return self._paused

    def request_stop(self) -> None:
        self._stopping.set()

    async def stop(self) -> None:
        self._stopping.set()
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    # -- rebalance -----------------------------------------------------------------------
    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        gone = set(revoked)
        for group, queue in list(self._backlog.items()):
            kept = deque(item for item in queue if item[0] not in gone)
            self._waiting -= len(queue) - len(kept)
            self._waiting_bytes -= sum(_size(record) for tp, record in queue if tp in gone)
            if kept:
                self._backlog[group] = kept
            else:
                del self._backlog[group]
        try:
            async with asyncio.timeout(self._drain_timeout_s):
                while any(self._parts.get(tp) and self._parts[tp].running for tp in revoked):
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
                self._flow_control(consumer)
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
                        part.pending[record.offset] = False
                        group = self._group_of(record) if self._group_of else None
                        if group is not None and (group in self._backlog or
                                                  self._group_running.get(group, 0) >= self._max_per_group):
                            self._backlog.setdefault(group, deque()).append((tp, record))
                            self._waiting += 1
                            self._waiting_bytes += _size(record)
                            continue
                        await self._slots.acquire()
                        if not self._start(tp, record, group):
                            self._slots.release()
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=self._drain_timeout_s)
        finally:
            committer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await committer
            await self._commit(list(self._parts))

    def _flow_control(self, consumer: AIOKafkaConsumer) -> None:
        """Pause fetching while the backlog is full; resume once half of it has started."""
        if not self._paused and (self._waiting >= self._max_backlog or
                                 self._waiting_bytes >= self._max_backlog_bytes):
            consumer.pause(*consumer.assignment())
            self._paused = True
            log.warning("backlog full; fetching paused",
                        extra={"waiting": self._waiting, "waiting_bytes": self._waiting_bytes})
        elif self._paused and (self._waiting <= self._max_backlog // 2 and
                               self._waiting_bytes <= self._max_backlog_bytes // 2):
            consumer.resume(*consumer.paused())
            self._paused = False

    def _start(self, tp: TopicPartition, record: ConsumerRecord, group: str | None) -> bool:
        """Run a record in a slot the caller holds; False if its partition was revoked meanwhile."""
        part = self._parts.get(tp)
        if part is None or record.offset not in part.pending:
            return False  # the partition's next owner runs it
        part.running += 1
        if group is not None:
            self._group_running[group] = self._group_running.get(group, 0) + 1
        task = asyncio.create_task(self._run_one(tp, part, record, group))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    def _next_of(self, group: str) -> tuple[TopicPartition, ConsumerRecord] | None:
        queue = self._backlog.get(group)
        if not queue or self._stopping.is_set():
            return None
        item = queue.popleft()
        self._waiting -= 1
        self._waiting_bytes -= _size(item[1])
        if not queue:
            del self._backlog[group]
        return item

    async def _run_one(self, tp: TopicPartition, part: _Partition, record: ConsumerRecord,
                       group: str | None) -> None:
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
            part.running -= 1
            if finished and self._parts.get(tp) is part:  # not revoked meanwhile
                part.finish(record.offset)
            handed_on = False
            if group is not None:
                self._group_running[group] -= 1
                # Hand this slot on to the group's next waiting record.
                while not handed_on and (following := self._next_of(group)) is not None:
                    handed_on = self._start(*following, group)
                if not self._group_running[group]:
                    del self._group_running[group]
            if not handed_on:
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
