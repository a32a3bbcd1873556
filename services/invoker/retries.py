"""Retry policies applied after an invocation, and the relay of the delay topics.

After every attempt, :class:`Retries` asks the source's policy
(:func:`fnbus.retry.decide`) what next, for asynchronous requests only:

- retry: the request, with ``attempt + 1`` and ``not_before_ms``, goes to the
  delay topic that fits the wait (``fnbus.invocations.retry.<n>s``);
- dead-letter: a :class:`DeadLetter` goes to the DLQ topic (the registry
  mirrors it for the API);
- drop: one warning line with the reason, nothing kept.

Every attempt also publishes its own activation record (``attempt`` tells
them apart); a synchronous caller gets its result at once and is never retried.

Contract of :class:`RetryRelay` (one consumer group over all delay topics):
1. Records of a partition are relayed in offset order, each not before its own
   ``not_before_ms``, whatever topic carried it.
2. While a partition waits, it is paused; other partitions (other lambdas,
   other tenants) keep flowing. A topic's delay bounds how long one record can
   hold up the ones behind it on the same partition.
3. A record's offset is committed after the request was re-produced to the
   invocations topic (at-least-once; the invoker skips an (activation id,
   attempt) it already ran recently).
4. ``request_stop()`` stops fetching; ``stop()`` cancels the waits (their
   records stay uncommitted and come again) and leaves the group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import httpx
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import Counter, Histogram
from pydantic import ValidationError

from fnbus.kafka import Producer, consumer_alive
from fnbus.retry import Action, Decision, RetryPolicy, decide, default_policy, delay_topic_s
from fnbus.schemas import (
    DeadLetter,
    EventSource,
    InvocationOutcome,
    InvocationRequest,
    InvocationResult,
    now_ms,
)
from fnbus.topics import Topics

log = logging.getLogger(__name__)

ORDER_KEY_HEADER = "fnbus-order-key"
POLICY_TTL_S = 2.0

RETRIES = Counter("fnbus_retries_total", "Attempts sent to a delay topic", ["source"])
DEAD_LETTERS = Counter("fnbus_dead_letters_total", "Invocations dead-lettered", ["source"])
DROPPED = Counter("fnbus_dropped_invocations_total", "Invocations dropped after failing",
                  ["source"])
EVENT_LAG = Histogram(
    "fnbus_event_invocation_lag_seconds",
    "From the event (or request) time to the first attempt's start", ["source"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
RELAY_LATENESS = Histogram(
    "fnbus_retry_relay_lateness_seconds", "How late a retry was relayed after its not_before_ms",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))


def headers_for(request: InvocationRequest) -> list[tuple[str, bytes]]:
    headers = [("fnbus-source", request.source.value.encode())]
    if request.partition_key:
        headers.append((ORDER_KEY_HEADER, request.partition_key.encode()))
    return headers


class PolicyCache:
    """Effective retry policy per (account, source), from the registry, cached briefly.

    Looked up only after a failure. If the registry does not answer, the
    source's default applies (and is not cached, so the override is found later).
    """

    def __init__(self, registry: httpx.AsyncClient, ttl_s: float = POLICY_TTL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = registry
        self.ttl_s = ttl_s
        self.clock = clock
        self._entries: dict[tuple[str, EventSource], tuple[float, RetryPolicy]] = {}

    async def get(self, account_id: str, source: EventSource) -> RetryPolicy:
        key = (account_id, source)
        hit = self._entries.get(key)
        now = self.clock()
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            r = await self.registry.get(
                f"/internal/accounts/{account_id}/retry-policies/{source.value}")
            r.raise_for_status()
            body = r.json()
            policy = RetryPolicy.model_validate(
                {k: v for k, v in body.items() if k in RetryPolicy.model_fields})
        except (httpx.HTTPError, ValueError, ValidationError) as exc:
            log.warning("retry policy lookup failed; using the default",
                        extra={"account_id": account_id, "source": source.value,
                               "error": str(exc)[:200]})
            return default_policy(source)
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[key] = (now + self.ttl_s, policy)
        return policy


class Retries:
    """Decides and carries out what follows an attempt (see the module docstring)."""

    def __init__(self, producer: Producer, topics: Topics, policies: PolicyCache,
                 clock_ms: Callable[[], int] = now_ms) -> None:
        self.producer = producer
        self.topics = topics
        self.policies = policies
        self.clock_ms = clock_ms

    async def decide(self, request: InvocationRequest, result: InvocationResult) -> Decision:
        synchronous = request.reply_to is not None
        if synchronous or result.outcome is InvocationOutcome.SUCCEEDED:
            return Decision(Action.DONE)
        policy = await self.policies.get(request.account_id, request.source)
        return decide(policy, attempt=request.attempt, outcome=result.outcome, error=result.error,
                      synchronous=synchronous, created_ms=request.created_ms,
                      now_ms=self.clock_ms())

    async def apply(self, request: InvocationRequest, result: InvocationResult,
                    decision: Decision) -> None:
        fields = {"activation_id": request.activation_id, "account_id": request.account_id,
                  "lambda_id": request.lambda_id, "source": request.source.value,
                  "attempt": request.attempt}
        if decision.action is Action.RETRY:
            nxt = request.model_copy(update={
                "attempt": request.attempt + 1,
                "not_before_ms": self.clock_ms() + decision.delay_ms})
            topic = self.topics.retry(delay_topic_s(decision.delay_ms))
            await self.producer.send(topic, nxt.to_bytes(), key=request.lambda_id,
                                     headers=headers_for(nxt))
            RETRIES.labels(request.source.value).inc()
            log.info("invocation will be retried", extra={
                **fields, "delay_ms": decision.delay_ms, "outcome": result.outcome.value})
        elif decision.action is Action.DEAD_LETTER:
            letter = DeadLetter(request=request, reason=decision.reason, last_error=result.error)
            await self.producer.send(self.topics.dlq, letter.to_bytes(), key=request.account_id)
            DEAD_LETTERS.labels(request.source.value).inc()
            log.warning("invocation dead-lettered", extra={**fields, "reason": decision.reason})
        elif decision.action is Action.DROP:
            DROPPED.labels(request.source.value).inc()
            log.warning("invocation dropped after failing", extra={
                **fields, "reason": decision.reason,
                "error": result.error.message[:200] if result.error else None})


class RetryRelay(ConsumerRebalanceListener):
    """Moves due retries from the delay topics back to the invocations topic."""

    def __init__(self, bootstrap: str, topics: list[str], *, group_id: str, producer: Producer,
                 invocations_topic: str, client_id: str = "fnbus-retry-relay",
                 clock_ms: Callable[[], int] = now_ms) -> None:
        self._bootstrap = bootstrap
        self._topics = topics
        self._group_id = group_id
        self._producer = producer
        self._target = invocations_topic
        self._client_id = client_id
        self._clock_ms = clock_ms
        self._consumer: AIOKafkaConsumer | None = None
        self._busy: dict[TopicPartition, asyncio.Task[None]] = {}
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        if self._consumer is not None:
            raise RuntimeError("retry relay already started")
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap, group_id=self._group_id, client_id=self._client_id,
            enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=50,
            max_poll_records=100, session_timeout_ms=10_000, heartbeat_interval_ms=2_000)
        self._consumer.subscribe(self._topics, listener=self)
        await self._consumer.start()

    async def ping(self) -> bool:
        return consumer_alive(self._consumer)

    def request_stop(self) -> None:
        self._stopping.set()

    async def stop(self) -> None:
        self._stopping.set()
        await self._cancel(list(self._busy))
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    async def _cancel(self, tps: list[TopicPartition]) -> None:
        tasks = [t for tp in tps if (t := self._busy.pop(tp, None)) is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # Waiting records of these partitions stay uncommitted: their new owner relays them.
        await self._cancel([tp for tp in revoked if tp in self._busy])

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        return None

    async def run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        while not self._stopping.is_set():
            try:
                batches = await consumer.getmany(timeout_ms=100)
            except KafkaError as exc:
                if self._stopping.is_set():
                    break
                log.warning("retry relay poll failed", extra={"error": str(exc)})
                await asyncio.sleep(0.5)
                continue
            for tp, records in batches.items():
                # Hold this partition until its records are relayed; others flow on.
                consumer.pause(tp)
                self._busy[tp] = asyncio.create_task(self._relay(consumer, tp, records),
                                                     name=f"relay-{tp.topic}-{tp.partition}")

    async def _relay(self, consumer: AIOKafkaConsumer, tp: TopicPartition,
                     records: list[ConsumerRecord]) -> None:
        try:
            for record in records:
                await self._relay_one(record)
                await self._commit(consumer, tp, record.offset + 1)
        finally:
            if self._busy.get(tp) is asyncio.current_task():
                self._busy.pop(tp, None)
                if tp in consumer.assignment():
                    consumer.resume(tp)

    async def _relay_one(self, record: ConsumerRecord) -> None:
        try:
            request = InvocationRequest.from_bytes(record.value)
        except ValidationError as exc:
            log.error("dropping malformed retry record",
                      extra={"topic": record.topic, "offset": record.offset,
                             "error": str(exc)[:300]})
            return
        wait_ms = request.not_before_ms - self._clock_ms()
        if wait_ms > 0:
            await asyncio.sleep(wait_ms / 1000)
        RELAY_LATENESS.observe(max(0, self._clock_ms() - request.not_before_ms) / 1000)
        backoff_s = 0.2
        while True:
            try:
                await self._producer.send(self._target, request.to_bytes(), key=request.lambda_id,
                                          headers=headers_for(request))
                return
            except KafkaError as exc:
                log.warning("relaying a retry failed; trying again",
                            extra={"activation_id": request.activation_id, "error": str(exc)})
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, 5.0)

    @staticmethod
    async def _commit(consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> None:
        try:
            await consumer.commit({tp: offset})
        except KafkaError as exc:
            log.warning("retry relay commit failed; the record may be relayed twice",
                        extra={"error": str(exc)})
