"""Consume invocation requests concurrently, commit only what is finished.

Contract:
1. Records are handed to ``handler`` as tasks, at most ``max_in_flight`` at once.
2. A partition's offset is committed up to the first record whose handler has
   not finished: nothing is committed before its result is out (at-least-once).
3. Records with the same ordering key (``key_of``) run one after another, in
   offset order; different keys run in parallel.
4. Fair share: with ``group_of`` (the account), a group runs at most
   ``max_per_group`` records at once. Its further records wait in the group's
   own queue, which holds none of the ``max_in_flight`` slots, so a group that
   floods the topic with slow work cannot take the slots other groups need.
   A waiting record starts when one of its group's records finishes (in offset
   order, so per-key order holds).
5. Backpressure is per group, and fetching goes on: a group's queue keeps at
   most ``max_held_per_group`` records (and ``max_held_bytes_per_group``; all
   groups together ``max_backlog_bytes``) with their values. Its further records
   are *spilled*: only their partition and offset are kept (a few dozen bytes)
   and the value is read again from the broker when the record's turn comes
   (with the spilled records that follow it on that partition). So a flood
   costs the flooding group's own queue, and other groups' records — on the
   same partitions too — are still fetched and started at once.
6. Nothing is committed past a waiting record: a partition's offset stays at
   its first unfinished record (contract 2), so an invoker that stops or loses
   the partition leaves waiting records, held or spilled, to the next owner.
7. Last resort, when the whole invoker is overloaded rather than one group:
   while ``max_backlog`` records wait (held and spilled, all groups), fetching
   pauses until half of them have started.
8. On rebalance, revoked partitions' running records finish (bounded by
   ``drain_timeout_s``) and are committed; their waiting records are dropped
   uncommitted, for the partition's next owner.
9. ``request_stop()`` stops fetching; ``run()`` returns once running records
   finished and were committed. Waiting records stay uncommitted.
10. Static membership: with ``group_instance_id`` the consumer is a static
    member of its group (KIP-345). A process relaunched with the same id takes
    its partitions back at once, without waiting for the dead one's session to
    expire; a member that does not come back loses its partitions when its
    session (``session_timeout_ms``) expires, as a dynamic one would. A static
    member does not leave the group when it stops either: its partitions wait
    for its return or for that expiry.
11. Fencing: one instance id belongs to one live process. When a second process
    joins with it, the broker hands it this member's place; this dispatcher
    finds that out when it loses its membership (its next heartbeat), checks
    that the id is now held by another member (not a session that expired),
    and then stops for good: it does not join again (that would take the place
    back and run every record twice), ``ping()`` turns false and ``run()``
    raises ``InstanceFencedError``. The newer process keeps the partitions.
12. Callers first: with ``urgent_of``, a group's waiting records that someone
    waits for (synchronous invocations) start before its other waiting records,
    so a group's own backlog of asynchronous work (a flood, or what piled up while
    an invoker was down) does not make its synchronous callers time out. Records
    with an ordering key are never urgent: per-key order (contract 3) holds.

Why spill rather than pause: a consumer can only pause whole partitions, and
records are keyed by lambda, so a flooding account shares partitions with
others; pausing the partitions it blocks would stall whoever hashes there.
Re-publishing the excess to an overflow topic would keep memory flat too, but
moves records between topics (ordering per key, a second consumer to balance);
re-reading a spilled record costs one fetch per run of records, paid only by
the group that floods.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterator

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from prometheus_client import Gauge

from fnbus.kafka import consumer_alive

log = logging.getLogger(__name__)

Handler = Callable[[ConsumerRecord], Awaitable[None]]
KeyOf = Callable[[ConsumerRecord], str | None]
GroupOf = Callable[[ConsumerRecord], str | None]
UrgentOf = Callable[[ConsumerRecord], bool]


#: How long reading a spilled record back may take before it is tried again.
REFETCH_TIMEOUT_S = 10.0
#: Spilled records filled in by one read (the run that follows the one asked for).
REFETCH_MAX_RECORDS = 100
#: A member that stops heartbeating loses its partitions after this long. With static
#: membership that bounds only a process that does not come back (contract 10).
SESSION_TIMEOUT_MS = 10_000
HEARTBEAT_INTERVAL_MS = 2_000
#: The broker names a static member ``<group instance id>-<uuid>``.
_MEMBER_SUFFIX = re.compile(r"-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


#: Records on the broker this invoker has not fetched yet, per topic (highwater minus the
#: fetch position, summed over the partitions assigned to it). Fetched records that
#: wait for their account's turn are not in it.
CONSUMER_LAG = Gauge("fnbus_invoker_consumer_lag_records",
                     "Records on the broker not fetched yet by this invoker (highwater - position)",
                     ["topic"])


class InstanceFencedError(RuntimeError):
    """Another process joined the consumer group with this dispatcher's instance id."""


def _size(record: ConsumerRecord) -> int:
    return len(record.value or b"")


class _Waiting:
    """A record waiting for its group's turn; ``record`` is None while spilled."""

    __slots__ = ("tp", "offset", "record", "group", "key")

    def __init__(self, tp: TopicPartition, offset: int, record: ConsumerRecord | None,
                 group: str, key: str | None) -> None:
        self.tp = tp
        self.offset = offset
        self.record = record
        self.group = group
        self.key = key  # ordering key, kept so a spilled record takes its turn in order


class _Queue:
    """A group's waiting records: the urgent lane first (contract 12), each in offset order."""

    __slots__ = ("urgent", "normal")

    def __init__(self) -> None:
        self.urgent: deque[_Waiting] = deque()
        self.normal: deque[_Waiting] = deque()

    def __bool__(self) -> bool:
        return bool(self.urgent or self.normal)

    def __iter__(self) -> Iterator[_Waiting]:
        yield from self.urgent
        yield from self.normal

    def popleft(self) -> _Waiting:
        return self.urgent.popleft() if self.urgent else self.normal.popleft()

    def remove_if(self, gone: Callable[[_Waiting], bool]) -> list[_Waiting]:
        """Drop (and return) the records for which ``gone`` is true."""
        removed = [item for item in self if gone(item)]
        if removed:
            self.urgent = deque(item for item in self.urgent if not gone(item))
            self.normal = deque(item for item in self.normal if not gone(item))
        return removed


class _Gone(Exception):
    """A spilled record is no longer on the broker (retention deleted it)."""


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
                 max_per_group: int = 16, max_held_per_group: int = 256,
                 max_held_bytes_per_group: int = 8 * 1024 * 1024, max_backlog: int = 50_000,
                 max_backlog_bytes: int = 64 * 1024 * 1024, group_instance_id: str | None = None,
                 session_timeout_ms: int = SESSION_TIMEOUT_MS,
                 urgent_of: UrgentOf | None = None) -> None:
        self._bootstrap = bootstrap
        self._topics = topics
        self._group_id = group_id
        self._instance_id = group_instance_id or None
        self._session_timeout_ms = session_timeout_ms
        self._joined_as: str | None = None  # our member id at the last assignment
        self._fenced_by: str | None = None  # the member that took our instance id
        self._handler = handler
        self._key_of = key_of
        self._slots = asyncio.Semaphore(max_in_flight)
        self._client_id = client_id
        self._drain_timeout_s = drain_timeout_s
        self._consumer: AIOKafkaConsumer | None = None
        self._refetcher: AIOKafkaConsumer | None = None
        self._refetch_lock = asyncio.Lock()
        self._parts: dict[TopicPartition, _Partition] = {}
        self._key_locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._group_of = group_of
        self._urgent_of = urgent_of
        self._max_per_group = max_per_group
        self._max_held_per_group = max_held_per_group
        self._max_held_bytes_per_group = max_held_bytes_per_group
        self._max_backlog = max_backlog
        self._max_backlog_bytes = max_backlog_bytes
        self._group_running: dict[str, int] = {}
        self._backlog: dict[str, _Queue] = {}
        self._held: dict[str, int] = {}  # per group: waiting records with their value
        self._held_bytes: dict[str, int] = {}
        self._spilled: dict[tuple[TopicPartition, int], _Waiting] = {}
        self._waiting = 0
        self._waiting_bytes = 0
        self._paused = False
        self._stopping = asyncio.Event()
        self._progress = asyncio.Event()

    async def start(self) -> None:
        if self._consumer is not None:
            raise RuntimeError("dispatcher already started")
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap, group_id=self._group_id, client_id=self._client_id,
            enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=200,
            max_poll_records=200, session_timeout_ms=self._session_timeout_ms,
            heartbeat_interval_ms=min(HEARTBEAT_INTERVAL_MS, self._session_timeout_ms // 3),
            max_poll_interval_ms=300_000, group_instance_id=self._instance_id)
        self._consumer.subscribe(self._topics, listener=self)
        # Returns once the group assigned partitions: at once for a static member that
        # comes back, after the old session expired for a dynamic one.
        await self._consumer.start()
        # Reads spilled records back by offset; no group, commits nothing.
        self._refetcher = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap, group_id=None, enable_auto_commit=False,
            client_id=f"{self._client_id}-refetch", fetch_max_wait_ms=100)
        await self._refetcher.start()

    async def ping(self) -> bool:
        return self._fenced_by is None and consumer_alive(self._consumer)

    @property
    def fenced_by(self) -> str | None:
        """The member (and its host) that took this dispatcher's instance id (contract 11)."""
        return self._fenced_by

    @property
    def waiting(self) -> int:
        """Records fetched and waiting for their group's turn (held or spilled)."""
        return self._waiting

    @property
    def spilled(self) -> int:
        """Waiting records whose value is not in memory (contract 5)."""
        return len(self._spilled)

    @property
    def paused(self) -> bool:
        """True while fetching is paused because the whole backlog is full (contract 7)."""
        return self._paused

    def request_stop(self) -> None:
        self._stopping.set()

    async def stop(self) -> None:
        self._stopping.set()
        consumer, self._consumer = self._consumer, None
        refetcher, self._refetcher = self._refetcher, None
        if consumer is not None:
            await consumer.stop()
        if refetcher is not None:
            await refetcher.stop()

    # -- membership ----------------------------------------------------------------------
    def _member_id(self) -> str:
        # aiokafka keeps the member id on its (private) coordinator; "" once the broker
        # no longer knows this member.
        coordinator = getattr(self._consumer, "_coordinator", None)
        return str(getattr(coordinator, "member_id", "") or "")

    async def _other_holder(self) -> str | None:
        """A member other than us that holds our instance id now, as "member at host"."""
        assert self._instance_id is not None
        admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap,
                                    client_id=f"{self._client_id}-membership")
        try:
            await admin.start()
            responses = await admin.describe_consumer_groups([self._group_id])
        except KafkaError as exc:
            # Cannot tell: join again (fencing is checked again at the next loss).
            log.warning("could not check who holds this instance id",
                        extra={"instance": self._instance_id, "error": str(exc)})
            return None
        finally:
            with contextlib.suppress(Exception):
                await admin.close()
        for response in responses:
            for group in response.groups:
                for member in group[5]:  # (member_id, client_id, client_host, metadata, assignment)
                    member_id, client_host = str(member[0]), str(member[2])
                    if (member_id != self._joined_as
                            and member_id.startswith(self._instance_id)
                            and _MEMBER_SUFFIX.fullmatch(member_id[len(self._instance_id):])):
                        return f"{member_id} at {client_host}"
        return None

    async def _check_fenced(self) -> bool:
        """Contract 11: we lost our membership; True if another process has our id now."""
        if (self._instance_id is None or self._joined_as is None or self._stopping.is_set()
                or self._member_id() == self._joined_as):
            return False
        holder = await self._other_holder()
        if holder is None:
            log.warning("consumer group session lost (expired); joining again",
                        extra={"instance": self._instance_id})
            return False
        self._fenced_by = holder
        log.error("another process joined the invoker group with this instance id; this one "
                  "stops consuming (each invoker needs its own FNBUS_INSTANCE_ID)",
                  extra={"instance": self._instance_id, "holder": holder})
        return True

    # -- rebalance -----------------------------------------------------------------------
    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        if await self._check_fenced():
            self._stopping.set()
            for queue in self._backlog.values():
                for item in queue:
                    self._forget(item)
            self._backlog.clear()
            self._parts.clear()  # the partitions are the other process's now
            # aiokafka joins the group again as soon as this listener returns (and it
            # catches any Exception raised here): joining would take the place back and
            # both processes would run every record. Cancelling its coordination task
            # is what keeps this member out; run() then raises InstanceFencedError.
            raise asyncio.CancelledError
        gone = set(revoked)
        for group, queue in list(self._backlog.items()):
            for item in queue.remove_if(lambda item: item.tp in gone):
                self._forget(item)
            if not queue:
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
        self._joined_as = self._member_id()
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
                        key = self._key_of(record) if self._key_of else None
                        if group is not None and (group in self._backlog or
                                                  self._group_running.get(group, 0) >= self._max_per_group):
                            urgent = key is None and self._urgent_of is not None \
                                and self._urgent_of(record)
                            self._enqueue(tp, record, group, key, urgent)
                            continue
                        await self._slots.acquire()
                        if not self._start(tp, record.offset, record, group, key):
                            self._slots.release()
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=self._drain_timeout_s)
        finally:
            committer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await committer
            await self._commit(list(self._parts))
        if self._fenced_by is not None:
            raise InstanceFencedError(f"instance id {self._instance_id!r} is held by "
                                      f"{self._fenced_by}; this process stopped consuming")

    def _flow_control(self, consumer: AIOKafkaConsumer) -> None:
        """Contract 7: pause while the whole backlog is full; resume once half of it started."""
        if not self._paused and self._waiting >= self._max_backlog:
            consumer.pause(*consumer.assignment())
            self._paused = True
            log.warning("backlog full; fetching paused",
                        extra={"waiting": self._waiting, "spilled": len(self._spilled)})
        elif self._paused and self._waiting <= self._max_backlog // 2:
            consumer.resume(*consumer.paused())
            self._paused = False

    # -- the groups' queues ----------------------------------------------------------------
    def _may_hold(self, group: str, size: int) -> bool:
        return (self._held.get(group, 0) < self._max_held_per_group
                and self._held_bytes.get(group, 0) + size <= self._max_held_bytes_per_group
                and self._waiting_bytes + size <= self._max_backlog_bytes)

    def _hold(self, item: _Waiting, record: ConsumerRecord) -> None:
        size = _size(record)
        item.record = record
        self._held[item.group] = self._held.get(item.group, 0) + 1
        self._held_bytes[item.group] = self._held_bytes.get(item.group, 0) + size
        self._waiting_bytes += size

    def _enqueue(self, tp: TopicPartition, record: ConsumerRecord, group: str,
                 key: str | None, urgent: bool = False) -> None:
        item = _Waiting(tp, record.offset, None, group, key)
        if self._may_hold(group, _size(record)):
            self._hold(item, record)
        else:
            self._spilled[(tp, record.offset)] = item
        queue = self._backlog.setdefault(group, _Queue())
        (queue.urgent if urgent else queue.normal).append(item)
        self._waiting += 1

    def _forget(self, item: _Waiting) -> None:
        """Account for ``item`` leaving its group's queue."""
        self._waiting -= 1
        if item.record is None:
            self._spilled.pop((item.tp, item.offset), None)
            return
        size = _size(item.record)
        self._waiting_bytes -= size
        self._held_bytes[item.group] -= size
        self._held[item.group] -= 1
        if not self._held[item.group]:
            del self._held[item.group]
            del self._held_bytes[item.group]

    def _next_of(self, group: str) -> _Waiting | None:
        queue = self._backlog.get(group)
        if not queue or self._stopping.is_set():
            return None
        item = queue.popleft()
        self._forget(item)
        if not queue:
            del self._backlog[group]
        return item

    def _start(self, tp: TopicPartition, offset: int, record: ConsumerRecord | None,
               group: str | None, key: str | None) -> bool:
        """Run a record in a slot the caller holds; False if its partition was revoked meanwhile.

        ``record`` None: a spilled record, read back from the broker by its task.
        """
        part = self._parts.get(tp)
        if part is None or offset not in part.pending:
            return False  # the partition's next owner runs it
        part.running += 1
        if group is not None:
            self._group_running[group] = self._group_running.get(group, 0) + 1
        task = asyncio.create_task(self._run_one(tp, part, offset, record, group, key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _refetch(self, tp: TopicPartition, offset: int) -> ConsumerRecord:
        """Read a spilled record back; fill the spilled records that follow it as room allows."""
        async with self._refetch_lock:
            consumer = self._refetcher
            if consumer is None:
                raise KafkaError("dispatcher stopped")
            if set(consumer.assignment()) != {tp}:
                consumer.assign([tp])
            consumer.seek(tp, offset)
            records: list[ConsumerRecord] = []
            deadline = time.monotonic() + REFETCH_TIMEOUT_S
            while not records:
                if time.monotonic() > deadline:
                    raise KafkaError(f"no record at {tp.topic}[{tp.partition}]@{offset} within "
                                     f"{REFETCH_TIMEOUT_S:g} s")
                batch = await consumer.getmany(tp, timeout_ms=500, max_records=REFETCH_MAX_RECORDS)
                records = batch.get(tp, [])
        found = None
        for record in records:
            if record.offset == offset:
                found = record
                continue
            other = self._spilled.get((tp, record.offset))
            if other is not None and self._may_hold(other.group, _size(record)):
                del self._spilled[(tp, record.offset)]
                self._hold(other, record)
        if found is None:
            raise _Gone(f"{tp.topic}[{tp.partition}]@{offset} is no longer on the broker "
                        f"(the earliest is {records[0].offset})")
        return found

    async def _run_one(self, tp: TopicPartition, part: _Partition, offset: int,
                       record: ConsumerRecord | None, group: str | None, key: str | None) -> None:
        finished = False
        try:
            if key is None:
                finished = await self._load_and_attempt(tp, part, offset, record)
            else:
                # Taken before a spilled record is read back: tasks start in offset order.
                lock = self._key_locks.setdefault(key, asyncio.Lock())
                async with lock:
                    finished = await self._load_and_attempt(tp, part, offset, record)
                if not lock.locked() and not lock._waiters:
                    self._key_locks.pop(key, None)
        finally:
            part.running -= 1
            if finished and self._parts.get(tp) is part:  # not revoked meanwhile
                part.finish(offset)
            handed_on = False
            if group is not None:
                self._group_running[group] -= 1
                # Hand this slot on to the group's next waiting record.
                while not handed_on and (following := self._next_of(group)) is not None:
                    handed_on = self._start(following.tp, following.offset, following.record,
                                            group, following.key)
                if not self._group_running[group]:
                    del self._group_running[group]
            if not handed_on:
                self._slots.release()
            self._progress.set()

    async def _load_and_attempt(self, tp: TopicPartition, part: _Partition, offset: int,
                                record: ConsumerRecord | None) -> bool:
        """Run the record (read back first if spilled); True when it counts as finished."""
        if record is None:
            record = await self._read_back(tp, offset)
            if record is None:  # gone from the broker, or we are stopping
                return not self._stopping.is_set() and self._parts.get(tp) is part
            if self._parts.get(tp) is not part or offset not in part.pending:
                return False  # revoked while it was read back: the next owner runs it
        return await self._attempt(tp, record)

    async def _read_back(self, tp: TopicPartition, offset: int) -> ConsumerRecord | None:
        """A spilled record's value, retried while the broker is away; None if it is gone."""
        backoff_s = 0.2
        while not self._stopping.is_set():
            try:
                return await self._refetch(tp, offset)
            except _Gone as exc:
                # Deleted by retention while it waited: nothing left to run.
                log.error("a spilled invocation request is gone from the broker",
                          extra={"error": str(exc)})
                return None
            except KafkaError as exc:
                log.warning("reading a spilled record back failed; retrying",
                            extra={"topic": tp.topic, "partition": tp.partition, "offset": offset,
                                   "error": str(exc)})
            await asyncio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, 5.0)
        return None

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
            await self._measure_lag()

    async def _measure_lag(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        lag = dict.fromkeys(self._topics, 0)
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)  # None until the first fetch answered
            if highwater is None:
                continue
            try:
                position = await asyncio.wait_for(consumer.position(tp), timeout=1)
            except (KafkaError, TimeoutError):
                continue  # revoked or being reset meanwhile
            lag[tp.topic] = lag.get(tp.topic, 0) + max(0, highwater - position)
        for topic, records in lag.items():
            CONSUMER_LAG.labels(topic).set(records)

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
