"""The faust-streaming side: two agents that feed batches to :class:`BatchIngestor`.

faust runs *inside* the service's event loop (uvicorn's): the faust ``App`` is
built in the FastAPI lifespan, when that loop is running, and driven through its
mode ``Service`` API — ``await app.start()`` / ``await app.stop()`` — instead of
a faust ``Worker``, which would want to own the loop, the signals and logging.
(faust's aiokafka driver still polls the broker in a thread of its own; agents,
streams, acks and offset commits all run in the service's loop.)

Contract of :class:`IngestStream`:
1. ``start()`` builds and starts a fresh faust app (consumer group
   :data:`GROUP_ID`) with one agent per topic; it refuses to run twice. faust
   never creates or alters topics (``topic_allow_declare=False``, no leader
   topic): the platform creates them with their settings first.
2. An agent takes up to ``batch_max`` records or what arrived within
   ``batch_within_s``, hands them to the ingestor, and acknowledges the records
   only when the ingestor says they are durable. Acknowledged offsets are what
   faust commits; so an offset is committed only after its record is in the
   database (or was skipped as malformed).
3. ``stop()`` drains: no new batch is started, the batch in hand may finish
   within ``grace_s`` (a failing write stops retrying at once), then faust stops,
   committing what was acknowledged. Unacknowledged records are redelivered to
   whoever consumes the partitions next. Safe to call twice.
4. ``check()`` is the health check: true while the faust app and its consumer
   run and both agents are iterating their streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

import faust

from fnbus.config import Settings
from fnbus.topics import Topics
from services.log_ingest.ingest import BatchIngestor
from services.log_ingest.records import Envelope, Kind

log = logging.getLogger(__name__)

GROUP_ID = "log-ingest"  # prefixed with the topic prefix: <prefix>.log-ingest
DEFAULT_BATCH_MAX = 500
DEFAULT_BATCH_WITHIN_S = 0.5
DEFAULT_GRACE_S = 10.0
SESSION_TIMEOUT_S = 10.0  # a crashed member holds its partitions this long


def broker_urls(bootstrap: str) -> list[str]:
    """``"h1:9092,h2:9092"`` (our setting) → faust's ``["kafka://h1:9092", ...]``."""
    hosts = [h.strip() for h in bootstrap.split(",") if h.strip()]
    if not hosts:
        raise ValueError("empty Kafka bootstrap address")
    return [h if "://" in h else f"kafka://{h}" for h in hosts]


def envelope_of(event: Any) -> Envelope:
    """A faust event (raw serializer) → the transport-free :class:`Envelope`."""
    message = event.message
    value = event.value
    if value is not None and not isinstance(value, bytes):
        value = bytes(value) if isinstance(value, bytearray | memoryview) else str(value).encode()
    return Envelope(message.topic, message.partition, message.offset, value)


class IngestStream:
    def __init__(
        self,
        settings: Settings,
        ingestor: BatchIngestor,
        *,
        batch_max: int = DEFAULT_BATCH_MAX,
        batch_within_s: float = DEFAULT_BATCH_WITHIN_S,
        grace_s: float = DEFAULT_GRACE_S,
        client_id: str = GROUP_ID,
    ) -> None:
        self._settings = settings
        self._ingestor = ingestor
        self._batch_max = batch_max
        self._batch_within_s = batch_within_s
        self._grace_s = grace_s
        self._client_id = client_id
        self._app: faust.App | None = None
        self._stopped = False
        self._iterating: set[Kind] = set()  # agents currently inside their stream loop
        self._busy = 0  # batches being written right now
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def faust_app(self) -> faust.App:
        if self._app is None:
            raise RuntimeError("ingest stream not started")
        return self._app

    def _build_app(self) -> faust.App:
        settings = self._settings
        datadir = Path(settings.home) / "faust"
        # faust creates only the last level of its data directory.
        datadir.mkdir(parents=True, exist_ok=True)
        app = faust.App(
            Topics(settings.topic_prefix).group(GROUP_ID),  # the app id is faust's group id
            broker=broker_urls(settings.kafka_bootstrap),
            broker_client_id=self._client_id,
            loop=asyncio.get_running_loop(),
            datadir=str(datadir),
            store="memory://",  # no tables; never RocksDB
            web_enabled=False,  # uvicorn serves HTTP
            autodiscover=False,
            topic_allow_declare=False,  # topics come from fnbus.topics.ensure_topics
            topic_disable_leader=True,  # no <id>-__assignor-__leader topic
            # Our own drain decides what waits; faust must not block shutdown on
            # a batch whose database write keeps failing (it stays unacked).
            stream_wait_empty=False,
            consumer_auto_offset_reset="earliest",
            # faust's default is 60 s: after a crash, the group waits that long for
            # the dead member before the restarted one gets the partitions (and this
            # service's start-up waits for them). 10 s, like the other consumers.
            broker_session_timeout=SESSION_TIMEOUT_S,
        )
        topics = Topics(settings.topic_prefix)
        for kind, name in ((Kind.ACTIVATION, topics.activations), (Kind.LOG, topics.logs)):
            topic = app.topic(name, key_serializer="raw", value_serializer="raw")
            app.agent(topic, name=f"log-ingest-{kind.value}", concurrency=1)(self._agent_fun(kind))
        return app

    def _agent_fun(self, kind: Kind) -> Any:
        async def consume(stream: Any) -> None:
            self._iterating.add(kind)
            try:
                # noack_take (not take): take() acks a batch even when processing it
                # raised or was cancelled; here nothing is acked before it is durable.
                async for events in stream.noack_take(self._batch_max, within=self._batch_within_s):
                    if self._ingestor.draining:
                        await _forever()  # shutting down: leave the batch for redelivery
                    if not await self._process(kind, events):
                        await _forever()
                    for event in events:
                        await stream.ack(event)
            finally:
                self._iterating.discard(kind)

        consume.__name__ = f"consume_{kind.value}"
        consume.__qualname__ = consume.__name__
        return consume

    async def _process(self, kind: Kind, events: list[Any]) -> bool:
        self._busy += 1
        self._idle.clear()
        try:
            return await self._ingestor.ingest(kind, [envelope_of(e) for e in events])
        finally:
            self._busy -= 1
            if self._busy == 0:
                self._idle.set()

    async def start(self) -> None:
        if self._app is not None:
            raise RuntimeError("ingest stream already started")
        self._app = app = self._build_app()
        try:
            await app.start()
        except BaseException:
            # Half-started services (consumer thread, producer) must not outlive us.
            self._stopped = True
            with contextlib.suppress(Exception):
                await app.stop()
            raise
        log.info("faust consumer started", extra={"group_id": GROUP_ID})

    async def stop(self) -> None:
        app = self._app
        if app is None or self._stopped:
            return
        self._stopped = True
        self._ingestor.drain()
        started = time.monotonic()
        try:
            await asyncio.wait_for(self._idle.wait(), self._grace_s)
        except TimeoutError:
            log.warning("batch still in progress after the grace period; it will be redelivered")
        await app.stop()
        log.info(
            "faust consumer stopped",
            extra={"drain_ms": int((time.monotonic() - started) * 1000)},
        )

    async def check(self) -> bool:
        app = self._app
        if app is None or self._stopped or not app.started or app.crashed or app.should_stop:
            return False
        consumer = app.consumer
        # faust's aiokafka consumer polls in a thread of its own; it must be up too.
        thread = getattr(consumer, "_thread", None)
        for service in (consumer, thread):
            if service is not None and (service.crashed or service.should_stop):
                return False
        return self._iterating == {Kind.ACTIVATION, Kind.LOG}

    async def __aenter__(self) -> IngestStream:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def _forever() -> None:
    """Park an agent until faust cancels it on stop."""
    await asyncio.Event().wait()
