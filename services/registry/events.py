"""Routing of platform events to the lambdas subscribed to them.

Contract of :class:`EventRouter`:
1. ``on_record`` never raises for bad input: a record that is not a CloudEvent,
   has an unknown type or account, or is over 1 MiB goes to the quarantine
   topic with its reason, is logged and counted, and the consumer moves on.
   Only infrastructure failures (database, broker) raise, so that the record
   is redelivered once they are back.
2. Targets: the account's deployed lambdas bound to the event type (Productive,
   and Modified ones with their deployed version), oldest first, at most the
   event's function limit, and for events with skill filters only lambdas
   whose skills are empty or contain the event's skill.
3. A CloudEvent id is routed once per account: ``processed_events`` records it
   in the same transaction that produces the requests; a redelivered event
   finds its row and is skipped. Activation ids are uuid5(event id, lambda id),
   so requests produced twice (a crash between produce and commit) carry the
   same id and the invoker runs them once.
4. Requests are keyed by lambda id and carry the ``fnbus-order-key`` header
   (the event's partition key), so the invoker runs one key's events in order.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiokafka import ConsumerRecord
from prometheus_client import Counter
from pydantic import BaseModel, Field

from fnbus import catalog, cloud_events
from fnbus.errors import NotFound
from fnbus.kafka import Producer
from fnbus.schemas import EventSource, Header, InvocationRequest, QuarantinedEvent, now_ms
from fnbus.topics import Topics
from fnbus.tracing import new_trace_id

log = logging.getLogger(__name__)

ORDER_KEY_HEADER = "fnbus-order-key"
_ACTIVATION_NS = uuid.UUID("5f0c3c1e-8f4b-4d8e-9a63-6c1f1f0e7b21")

EVENTS_ROUTED = Counter("fnbus_platform_events_total", "Platform events by result",
                        ["result"])  # routed, duplicate, no_target
QUARANTINED = Counter("fnbus_quarantined_events_total", "Platform events quarantined", ["reason"])


def activation_id_for(account_id: str, event_id: str, lambda_id: str) -> str:
    """Deterministic: the same event for the same lambda always has the same activation id."""
    return str(uuid.uuid5(_ACTIVATION_NS, f"{account_id}/{event_id}/{lambda_id}"))


@dataclass(frozen=True)
class Target:
    lambda_id: str
    version: int


class EventInvoke(BaseModel):
    """Internal body of an invocation by event (the gateway adds reply_to and activation_id)."""

    headers: list[Header] = Field(default_factory=list)
    payload: Any = None
    skill_id: str | None = None
    partition_key: str | None = None
    reply_to: str | None = None  # the gateway's reply topic when the caller waits
    activation_id: str | None = None  # chosen by the gateway before it starts waiting
    timeout_ms: int | None = None
    trace_id: str | None = Field(default=None, pattern="^[0-9a-f]{32}$")  # the caller's trace


def request_headers(extra: dict[str, str]) -> list[tuple[str, bytes]]:
    return [(k, v.encode()) for k, v in extra.items()]


class EventRouter:
    def __init__(self, pool: asyncpg.Pool, producer: Producer, topics: Topics) -> None:
        self.pool = pool
        self.producer = producer
        self.topics = topics

    # -- targets -----------------------------------------------------------------------
    async def targets(self, conn: Any, account_id: str, event_type: str,
                      skill_id: str | None) -> list[Target]:
        event = catalog.EVENTS.get(event_type)
        if event is None:
            return []
        rows = await conn.fetch(
            """SELECT id, deployed_version, skills FROM lambdas
               WHERE account_id = $1 AND event_id = $2 AND deployed_version IS NOT NULL
               ORDER BY created_at, id""", account_id, event_type)
        found = []
        for row in rows:
            skills = list(row["skills"])
            if event.skill_filter and skills and skill_id not in skills:
                continue
            found.append(Target(str(row["id"]), row["deployed_version"]))
        # Limits are enforced when lambdas are bound; this keeps routing honest regardless.
        return found[: event.limit] if event.limit is not None else found

    async def is_implemented(self, account_id: str, event_type: str) -> bool:
        """True when a deployed lambda of the account is bound to the event (any skill)."""
        if event_type not in catalog.EVENTS:
            raise NotFound(f"unknown event {event_type!r}; GET …/events lists them",
                           code="unknown_event")
        return bool(await self.pool.fetchval(
            """SELECT 1 FROM lambdas WHERE account_id = $1 AND event_id = $2
               AND deployed_version IS NOT NULL LIMIT 1""", account_id, event_type))

    async def invoke(self, account_id: str, event_type: str, body: EventInvoke) -> dict[str, Any]:
        """Invocation by event over HTTP: route like a platform event.

        Exactly one target and a ``reply_to`` (the gateway's reply topic) → the
        request is synchronous under the caller's ``activation_id``; otherwise
        every target gets an asynchronous request (retried by the event policy).
        """
        if event_type not in catalog.EVENTS:
            raise NotFound(f"unknown event {event_type!r}; GET …/events lists them",
                           code="unknown_event")
        targets = await self.targets(self.pool, account_id, event_type, body.skill_id)
        if not targets:
            raise NotFound(f"no deployed lambda implements {event_type}"
                           + (f" for skill {body.skill_id}" if body.skill_id else ""),
                           code="not_implemented")
        event_id = str(uuid.uuid4())  # every HTTP call is a new event
        sync = len(targets) == 1 and body.reply_to is not None and body.activation_id is not None
        headers = [*body.headers, Header(key="ce-id", value=event_id),
                   Header(key="ce-type", value=event_type)]
        if body.skill_id:
            headers.append(Header(key="skillId", value=body.skill_id))
        # One trace for the event, the caller's if it sent one: every lambda it fans out to.
        trace_id = body.trace_id or new_trace_id()
        requests = [self.build(account_id, event_id, event_type, t, payload=body.payload,
                               headers=headers, partition_key=body.partition_key,
                               created_ms=now_ms(),
                               reply_to=body.reply_to if sync else None,
                               activation_id=body.activation_id if sync else None,
                               timeout_ms=body.timeout_ms if sync else None,
                               trace_id=trace_id)
                    for t in targets]
        for request in requests:
            await self.produce(request)
        return {"mode": "sync" if sync else "async", "event_id": event_id,
                "invocations": [{"lambda_id": r.lambda_id, "activation_id": r.activation_id}
                                for r in requests]}

    async def account_exists(self, conn: Any, account_id: str) -> bool:
        return bool(await conn.fetchval(
            "SELECT 1 FROM accounts WHERE id = $1 AND terms_accepted_at IS NOT NULL", account_id))

    # -- producing ---------------------------------------------------------------------------
    async def produce(self, request: InvocationRequest) -> None:
        headers = {"fnbus-source": request.source.value}
        if request.partition_key:
            headers[ORDER_KEY_HEADER] = request.partition_key
        await self.producer.send(self.topics.invocations, request.to_bytes(),
                                 key=request.lambda_id, headers=request_headers(headers))

    def build(self, account_id: str, event_id: str, event_type: str, target: Target, *,
              payload: Any, headers: list[Header], partition_key: str | None, created_ms: int,
              reply_to: str | None = None, activation_id: str | None = None,
              timeout_ms: int | None = None, trace_id: str | None = None) -> InvocationRequest:
        traced: dict[str, Any] = {"trace_id": trace_id} if trace_id else {}  # none: a new trace
        return InvocationRequest(
            activation_id=activation_id or activation_id_for(account_id, event_id, target.lambda_id),
            account_id=account_id, lambda_id=target.lambda_id, version=target.version,
            source=EventSource.EVENT, event_id=event_type, headers=headers, payload=payload,
            reply_to=reply_to, created_ms=created_ms, partition_key=partition_key,
            timeout_ms=timeout_ms, **traced)

    # -- the platform-events consumer ------------------------------------------------------
    async def quarantine(self, record: ConsumerRecord, reason: str) -> None:
        kind = reason.split(":", 1)[0]
        QUARANTINED.labels(kind).inc()
        raw = record.value or b""
        if len(raw) > cloud_events.MAX_EVENT_BYTES:
            raw = raw[:4096]  # keep a prefix to recognise it; the topic is no dump
        headers = {}
        for name, value in record.headers or ():
            headers[name] = (value or b"")[:1024].decode("utf-8", errors="replace")
        message = QuarantinedEvent(reason=reason, raw_value=raw.decode("utf-8", errors="replace"),
                                   raw_headers=headers)
        await self.producer.send(self.topics.quarantine, message.to_bytes(), key=record.key)
        log.warning("platform event quarantined", extra={
            "reason": reason, "topic": record.topic, "partition": record.partition,
            "offset": record.offset})

    async def on_record(self, record: ConsumerRecord) -> None:
        try:
            event = cloud_events.parse(record.value, list(record.headers or ()), record.key)
        except cloud_events.InvalidEvent as exc:
            await self.quarantine(record, exc.reason)
            return
        if event.type not in catalog.EVENTS:
            await self.quarantine(record, f"unknown type: {event.type[:200]}")
            return
        async with self.pool.acquire() as conn:
            if not await self.account_exists(conn, event.account_id):
                await self.quarantine(record, f"unknown account: {event.account_id[:200]}")
                return
            await self.route_event(conn, event)

    async def route_event(self, conn: Any, event: cloud_events.PlatformEvent) -> int:
        """Produce one request per target, once per event id. Returns the number produced."""
        headers = [Header(key="ce-id", value=event.id), Header(key="ce-type", value=event.type),
                   Header(key="ce-source", value=event.source)]
        if event.skill_id:
            headers.append(Header(key="skillId", value=event.skill_id))
        created = event.time_ms if event.time_ms is not None else now_ms()
        async with conn.transaction():
            targets = await self.targets(conn, event.account_id, event.type, event.skill_id)
            inserted = await conn.fetchval(
                """INSERT INTO processed_events (account_id, event_id, event_type, targets)
                   VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING 1""",
                event.account_id, event.id, event.type, len(targets))
            if not inserted:
                EVENTS_ROUTED.labels("duplicate").inc()
                log.info("duplicate platform event skipped", extra={
                    "account_id": event.account_id, "event_id": event.id})
                return 0
            # Inside the transaction: if the broker refuses, the event stays unprocessed.
            trace_id = new_trace_id()  # one trace for the event: every lambda it fans out to
            for target in targets:
                await self.produce(self.build(
                    event.account_id, event.id, event.type, target, payload=event.data,
                    headers=headers, partition_key=event.partition_key, created_ms=created,
                    trace_id=trace_id))
        EVENTS_ROUTED.labels("routed" if targets else "no_target").inc()
        log.info("platform event routed", extra={
            "account_id": event.account_id, "event_id": event.id, "event_type": event.type,
            "targets": len(targets)})
        return len(targets)

    async def prune(self, keep_days: int = 7) -> int:
        result = await self.pool.execute(
            "DELETE FROM processed_events WHERE received_at < now() - make_interval(days => $1)",
            keep_days)
        return int(result.split()[-1])
