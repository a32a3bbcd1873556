"""aiokafka producer and consumer with a clean lifecycle.

Contract of :class:`Consumer`:
1. ``start()`` joins the group; it refuses to run twice.
2. ``run(handler)`` calls ``handler`` for every record, in partition order, and
   commits a record's offset only after ``handler`` returned — at-least-once.
3. Offsets are committed once per partition batch, up to the last handled
   record. If ``handler`` raises, that record's offset is not committed; the error is logged and the
   record is retried after ``retry_backoff_ms`` (handlers decide what is poison).
4. ``request_stop()`` stops taking records; ``run`` returns after the record in
   hand finished and was committed. ``stop()`` then leaves the group. Safe twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

log = logging.getLogger(__name__)

Handler = Callable[[ConsumerRecord], Awaitable[None]]


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


class Producer:
    def __init__(self, bootstrap: str, *, client_id: str = "fnbus", linger_ms: int = 0) -> None:
        self._bootstrap = bootstrap
        self._client_id = client_id
        self._linger_ms = linger_ms
        self._producer: AIOKafkaProducer | None = None

    @property
    def started(self) -> bool:
        return self._producer is not None

    async def start(self) -> None:
        if self._producer is not None:
            raise RuntimeError("producer already started")
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            client_id=self._client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=self._linger_ms,
            max_request_size=8 * 1024 * 1024,
        )
        await producer.start()
        self._producer = producer

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()  # flushes what is pending

    async def send(
        self,
        topic: str,
        value: bytes,
        *,
        key: str | bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Any:
        """Send and wait until the broker acknowledged (durable)."""
        if self._producer is None:
            raise NotStartedError("producer not started")
        return await self._producer.send_and_wait(topic, value, key=_key(key), headers=headers)

    async def send_nowait(
        self, topic: str, value: bytes, *, key: str | bytes | None = None
    ) -> asyncio.Future[Any]:
        """Queue a record; the returned future resolves when the broker acknowledged it."""
        if self._producer is None:
            raise NotStartedError("producer not started")
        return await self._producer.send(topic, value, key=_key(key))

    async def ping(self) -> bool:
        """True while the client knows at least one live broker."""
        if self._producer is None:
            return False
        try:
            return bool(self._producer.client.cluster.brokers())
        except KafkaError:
            return False

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
    ) -> None:
        self._bootstrap = bootstrap
        self._topics = topics
        self._group_id = group_id
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
            *self._topics,
            bootstrap_servers=self._bootstrap,
            group_id=self._group_id,
            client_id=self._client_id,
            enable_auto_commit=False,
            auto_offset_reset=self._auto_offset_reset,
            max_poll_records=self._max_poll_records,
            fetch_max_wait_ms=100,
            isolation_level="read_committed",
        )
        await consumer.start()
        self._consumer = consumer
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
        """Consume until :meth:`stop`; commit each record after its handler returned."""
        consumer = self.raw
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
            # One commit per partition batch: at-least-once without a round trip per record.
            if done is not None and self._group_id is not None:
                try:
                    await consumer.commit({tp: done + 1})
                except KafkaError as exc:
                    log.warning("offset commit failed", extra={"error": str(exc)})

    async def __aenter__(self) -> Consumer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
