"""aiokafka producer and consumer with a clean lifecycle.

Contract of :class:`Consumer`:
1. ``start()`` joins the group; it refuses to run twice.
2. ``run(handler)`` calls ``handler`` for every record, in partition order, and
   commits a record's offset only after ``handler`` returned — at-least-once.
3. Offsets are committed up to the last handled record at most every
   ``commit_interval_ms`` (and when partitions are revoked, and when ``run``
   returns), not once per batch: a steady stream of single records would
   otherwise cost an offset commit — a broker round trip and a write to
   ``__consumer_offsets`` — per record. A crash redelivers at most that
   interval's records, as at-least-once allows. If ``handler`` raises, that
   record's offset is not committed; the error is logged and the record is
   retried after ``retry_backoff_ms`` (handlers decide what is poison).
4. ``request_stop()`` stops taking records; ``run`` returns after the record in
   hand finished and everything handled was committed. ``stop()`` then leaves
   the group. Safe twice.

Contract of :class:`Producer` (idempotent, ``acks=all``):
1. A record over :data:`fnbus.topics.MAX_MESSAGE_BYTES` (the topics'
   ``max.message.bytes``, also the producer's ``max_request_size``) is refused
   before it is queued (``MessageSizeTooLargeError``); nothing else is harmed.
2. Retriable broker errors are retried inside the client; what reaches the
   caller is final for that record.
3. An idempotent producer that had a batch refused has a gap in its sequence
   numbers and would fail every later batch of that partition
   (``OutOfOrderSequenceNumber``), and its sender task ends for good. After any
   such failure the next send goes through a new client (new producer id);
   the old one is closed in the background. ``renewals`` counts them.
4. ``send`` (the caller awaits the ack) and ``send_nowait`` (queued, gathered
   later) may go through two clients with their own ``linger_ms`` and
   ``max_batch_size`` (``bulk_linger_ms``); records of one method keep their
   order per partition, records of the two methods are not ordered relative to
   each other. Without ``bulk_linger_ms`` one client carries both.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    ConsumerRecord,
    TopicPartition,
)
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner, murmur2

from fnbus.topics import MAX_MESSAGE_BYTES

log = logging.getLogger(__name__)

Handler = Callable[[ConsumerRecord], Awaitable[None]]

# aiokafka's default batch per partition (bytes); bench/README.md has the sweep.
DEFAULT_MAX_BATCH_BYTES = 16384
#: How often a :class:`Consumer` commits what it handled (contract 3).
COMMIT_INTERVAL_MS = 500



class KeyPartitioner:
    """aiokafka's default placement (the Java client's murmur2 of the key), cheaper: a
    topic of one partition (replies) needs no hash, and the hash of a recent key (a
    lambda's id, an activation's id for its log lines) is remembered, not recomputed
    in pure Python for every record. Where a record lands is unchanged."""

    def __init__(self, remember: int = 4096) -> None:
        self.remember = remember
        self._hashes: dict[bytes, int] = {}
        self._keyless = DefaultPartitioner()

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return int(self._keyless(key, all_partitions, available))
        if len(all_partitions) == 1:
            return all_partitions[0]
        hashed = self._hashes.get(key)
        if hashed is None:
            if len(self._hashes) >= self.remember:
                self._hashes.clear()
            hashed = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return all_partitions[hashed % len(all_partitions)]

class KafkaHelperError(Exception):
    """Root of this module's errors.

    KafkaHelperError
     └── NotStartedError
    """


class NotStartedError(KafkaHelperError):
    pass


def _key(key: str | bytes | None) -> bytes | None:
    if key is None or isinstance(key, bytes):
        return key
    return key.encode()


def consumer_alive(consumer: AIOKafkaConsumer | None) -> bool:
    """Health check: the consumer is started and knows at least one live broker."""
    if consumer is None:
        return False
    try:
        return bool(consumer._client.cluster.brokers())
    except KafkaError:
        return False


class _Lane:
    """One aiokafka client with its own linger and batch size, renewed after a failed batch (contract 3)."""

    def __init__(self, bootstrap: str, client_id: str, linger_ms: int, max_batch_size: int,
                 max_request_size: int) -> None:
        self._bootstrap = bootstrap
        self._client_id = client_id
        self._linger_ms = linger_ms
        self._max_batch_size = max_batch_size
        self._max_request_size = max_request_size
        self.producer: AIOKafkaProducer | None = None
        self._broken: AIOKafkaProducer | None = None  # the client that failed a batch
        self._renewing = asyncio.Lock()
        self._retired: set[asyncio.Task[None]] = set()
        self.renewals = 0

    def _new_client(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            client_id=self._client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=self._linger_ms,
            max_batch_size=self._max_batch_size,
            max_request_size=self._max_request_size,
            partitioner=KeyPartitioner(),
        )

    async def start(self) -> None:
        producer = self._new_client()
        await producer.start()
        self.producer = producer

    async def stop(self) -> None:
        producer, self.producer = self.producer, None
        if producer is not None:
            await producer.stop()  # flushes what is pending
        if self._retired:
            await asyncio.gather(*self._retired, return_exceptions=True)

    @staticmethod
    def _sender_dead(producer: AIOKafkaProducer) -> bool:
        # aiokafka ends its sender task on OutOfOrderSequenceNumber and never
        # restarts it: records queued after that would wait forever.
        task = producer._sender.sender_task
        return task is not None and task.done()

    async def client(self) -> AIOKafkaProducer:
        producer = self.producer
        if producer is None:
            raise NotStartedError("producer not started")
        if self._broken is producer or self._sender_dead(producer):
            async with self._renewing:
                if self.producer is producer:  # not renewed by a concurrent send meanwhile
                    await self._renew(producer)
            if self.producer is None:
                raise NotStartedError("producer stopped")
        return self.producer

    async def _renew(self, old: AIOKafkaProducer) -> None:
        fresh = self._new_client()
        await fresh.start()
        self.producer = fresh
        self.renewals += 1
        log.warning("kafka producer renewed after a failed batch",
                    extra={"client_id": self._client_id, "renewals": self.renewals})

        async def retire() -> None:
            try:
                async with asyncio.timeout(30):
                    await old.stop()
            except Exception as exc:  # noqa: BLE001 - it is being thrown away
                log.info("closing a failed kafka producer: %r", exc)

        task = asyncio.create_task(retire())
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)

    def watch(self, producer: AIOKafkaProducer, future: asyncio.Future[Any]) -> None:
        """After a batch failed at the broker, the next send renews the client (contract 3)."""
        def done(f: asyncio.Future[Any]) -> None:
            if not f.cancelled() and f.exception() is not None:
                self._broken = producer

        future.add_done_callback(done)

    async def ping(self) -> bool:
        if self.producer is None:
            return False
        try:
            return bool(self.producer.client.cluster.brokers())
        except KafkaError:
            return False


class Producer:
    """See the module docstring for the contract. Two lanes when ``bulk_linger_ms`` is given:

    - ``send`` (the caller awaits the ack: requests, replies, state changes) always
      goes through a client with ``linger_ms`` (0 by default: bench/README.md,
      "Kafka tuning", measured +1.4 ms per hop at 1 ms and +5.8 ms at 5 ms);
    - ``send_nowait`` (records queued and gathered later: activation records, log
      lines, scheduler fires) goes through a second client with ``bulk_linger_ms``
      and ``bulk_max_batch_size``, which packs more records per produce request
      (the sweep: at 3,000 records/s, linger 20 ms and 64 KiB batches cost the
      broker a quarter of the CPU per record that linger 0 does).

    Without ``bulk_linger_ms`` there is one client for both.
    """

    def __init__(self, bootstrap: str, *, client_id: str = "fnbus", linger_ms: int = 0,
                 max_batch_size: int = DEFAULT_MAX_BATCH_BYTES,
                 bulk_linger_ms: int | None = None, bulk_max_batch_size: int = DEFAULT_MAX_BATCH_BYTES,
                 max_request_size: int = MAX_MESSAGE_BYTES) -> None:
        self._fast = _Lane(bootstrap, client_id, linger_ms, max_batch_size, max_request_size)
        self._bulk = None if bulk_linger_ms is None else _Lane(
            bootstrap, f"{client_id}-bulk", bulk_linger_ms, bulk_max_batch_size, max_request_size)
        self._started = False

    @property
    def started(self) -> bool:
        return self._started

    @property
    def renewals(self) -> int:
        return self._fast.renewals + (self._bulk.renewals if self._bulk is not None else 0)

    def _lanes(self) -> list[_Lane]:
        return [self._fast] if self._bulk is None else [self._fast, self._bulk]

    async def start(self) -> None:
        if self._started:
            raise RuntimeError("producer already started")
        started: list[_Lane] = []
        try:
            for lane in self._lanes():
                await lane.start()
                started.append(lane)
        except BaseException:
            for lane in reversed(started):
                await lane.stop()
            raise
        self._started = True

    async def stop(self) -> None:
        self._started = False
        for lane in reversed(self._lanes()):
            await lane.stop()

    async def send(
        self,
        topic: str,
        value: bytes,
        *,
        key: str | bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Any:
        """Send and wait until the broker acknowledged (durable)."""
        lane = self._fast
        producer = await lane.client()
        future = await producer.send(topic, value, key=_key(key), headers=headers)
        lane.watch(producer, future)
        return await future

    async def send_nowait(
        self, topic: str, value: bytes, *, key: str | bytes | None = None, bulk: bool = True,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[Any]:
        """Queue a record; the returned future resolves when the broker acknowledged it.

        ``bulk=False`` puts it on the latency lane (as :meth:`send` does) even when a
        bulk lane exists. Records queued in the same event-loop turn leave in one
        produce request per broker.
        """
        lane = (self._bulk if bulk else None) or self._fast
        producer = await lane.client()
        future = await producer.send(topic, value, key=_key(key), headers=headers)
        lane.watch(producer, future)
        return future

    async def ping(self) -> bool:
        """True while the client knows at least one live broker."""
        if not self._started:
            return False
        return all([await lane.ping() for lane in self._lanes()])

    async def __aenter__(self) -> Producer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class Consumer:
    def __init__(
        self,
        bootstrap: str,
        topics: list[str],
        *,
        group_id: str | None,
        client_id: str = "fnbus",
        auto_offset_reset: str = "earliest",
        retry_backoff_ms: int = 1000,
        max_poll_records: int = 100,
        commit_interval_ms: int = COMMIT_INTERVAL_MS,
        fetch_max_wait_ms: int = 100,
        fetch_min_bytes: int = 1,
    ) -> None:
        self._bootstrap = bootstrap
        self._topics = topics
        self._group_id = group_id
        self._commit_interval_s = commit_interval_ms / 1000
        # A reader that need not see each record at once (fetch_min_bytes > 1) lets the
        # broker gather records for up to fetch_max_wait_ms: one fetch per batch rather
        # than one per record.
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self._fetch_min_bytes = fetch_min_bytes
        self._uncommitted: dict[TopicPartition, int] = {}  # next offset to commit, per partition
        self._next_commit = 0.0  # monotonic time of the next due commit
        self._client_id = client_id
        self._auto_offset_reset = auto_offset_reset
        self._retry_backoff_ms = retry_backoff_ms
        self._max_poll_records = max_poll_records
        self._consumer: AIOKafkaConsumer | None = None
        self._stopping = asyncio.Event()
        self.last_error: str | None = None

    @property
    def started(self) -> bool:
        return self._consumer is not None

    @property
    def raw(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise NotStartedError("consumer not started")
        return self._consumer

    async def start(self) -> None:
        if self._consumer is not None:
            raise RuntimeError("consumer already started")
        consumer = AIOKafkaConsumer(
            *([] if self._group_id is not None else self._topics),
            bootstrap_servers=self._bootstrap,
            group_id=self._group_id,
            client_id=self._client_id,
            enable_auto_commit=False,
            auto_offset_reset=self._auto_offset_reset,
            max_poll_records=self._max_poll_records,
            fetch_max_wait_ms=self._fetch_max_wait_ms,
            fetch_min_bytes=self._fetch_min_bytes,
            isolation_level="read_committed",
        )
        if self._group_id is not None:
            # Subscribed with a listener: what was handled is committed before a
            # partition goes to another member.
            consumer.subscribe(self._topics, listener=_CommitOnRevoke(self))
        await consumer.start()
        self._consumer = consumer
        self._uncommitted.clear()
        self._stopping.clear()

    def request_stop(self) -> None:
        """Stop taking records; the record in hand finishes and is committed."""
        self._stopping.set()

    async def stop(self) -> None:
        self._stopping.set()
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    async def ping(self) -> bool:
        return consumer_alive(self._consumer)

    async def run(self, handler: Handler) -> None:
        """Consume until :meth:`stop`; commit records after their handler returned."""
        consumer = self.raw
        try:
            while not self._stopping.is_set():
                try:
                    batches = await consumer.getmany(timeout_ms=200)
                except (KafkaError, asyncio.CancelledError) as exc:
                    if self._stopping.is_set() or isinstance(exc, asyncio.CancelledError):
                        return
                    log.warning("kafka poll failed", extra={"error": str(exc)})
                    await asyncio.sleep(self._retry_backoff_ms / 1000)
                    continue
                for tp, records in batches.items():
                    await self._handle_partition(consumer, tp, records, handler)
                if self._uncommitted and time.monotonic() >= self._next_commit:
                    await self.commit()
        finally:
            if self._consumer is consumer:
                await asyncio.shield(self.commit())

    async def commit(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        """Commit what was handled (of ``partitions``, default all); failures are logged."""
        consumer = self._consumer
        wanted = self._uncommitted if partitions is None else {
            tp: self._uncommitted[tp] for tp in partitions if tp in self._uncommitted}
        if consumer is None or self._group_id is None or not wanted:
            return
        offsets = dict(wanted)
        for tp in offsets:
            self._uncommitted.pop(tp, None)
        self._next_commit = time.monotonic() + self._commit_interval_s
        try:
            await consumer.commit(offsets)
        except KafkaError as exc:
            log.warning("offset commit failed; records may be redelivered", extra={"error": str(exc)})

    async def _handle_partition(
        self,
        consumer: AIOKafkaConsumer,
        tp: TopicPartition,
        records: list[ConsumerRecord],
        handler: Handler,
    ) -> None:
        done: int | None = None  # offset of the last record whose effect is durable
        try:
            for record in records:
                try:
                    await handler(record)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - one bad record must not kill the loop
                    self.last_error = repr(exc)
                    log.exception(
                        "handler failed; record will be redelivered",
                        extra={
                            "topic": tp.topic,
                            "partition": tp.partition,
                            "offset": record.offset,
                        },
                    )
                    # Rewind so the same record comes again after a pause.
                    consumer.seek(tp, record.offset)
                    await asyncio.sleep(self._retry_backoff_ms / 1000)
                    return
                done = record.offset
                if self._stopping.is_set():
                    return
        finally:
            if done is not None and self._group_id is not None:
                self._uncommitted[tp] = done + 1  # committed by run() when due

    async def __aenter__(self) -> Consumer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class _CommitOnRevoke(ConsumerRebalanceListener):
    """Commits a :class:`Consumer`'s handled records of partitions it is about to lose."""

    def __init__(self, owner: Consumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._owner.commit(list(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        return None
