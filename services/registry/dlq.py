"""Failure handling the registry owns: dead letters and per-account retry policies.

Dead letters (contract):
1. The invoker produces a :class:`DeadLetter` to the DLQ topic when an
   asynchronous invocation gives up under a ``dead_letter`` policy; the
   registry mirrors the topic into ``dead_letters`` (id = uuid5 of activation
   id and attempt, so a redelivered record is stored once).
2. Listing and reading are per account. Replay re-produces the request as a
   fresh invocation (new activation id, attempt 1, the event's age reset, the
   version deployed now) and
   removes the entry — if it fails again it comes back as a new entry.
   Purge deletes entries without running anything.

Retry policies: an account may override the default of any source
(:data:`fnbus.retry.DEFAULT_POLICIES`) within :data:`fnbus.retry.BOUNDS`; a
``PUT`` merges the given fields over the current effective policy.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiokafka import ConsumerRecord
from pydantic import BaseModel, ValidationError

from fnbus.errors import NotFound, Unprocessable
from fnbus.kafka import Producer
from fnbus.retry import RetryPolicy, default_policy
from fnbus.schemas import DeadLetter, EventSource, InvocationError, InvocationRequest, new_id, now_ms
from fnbus.topics import Topics
from services.registry.accounts import ms
from services.registry.events import ORDER_KEY_HEADER, request_headers

log = logging.getLogger(__name__)

_DEAD_LETTER_NS = uuid.UUID("0b6f3f5e-1d0a-4c55-8f3e-3f0de3a4d7a9")
MAX_LIST = 500


def dead_letter_id(activation_id: str, attempt: int) -> str:
    return str(uuid.uuid5(_DEAD_LETTER_NS, f"{activation_id}/{attempt}"))


class DeadLetterOut(BaseModel):
    id: str
    lambda_id: str
    activation_id: str  # of the last failed attempt
    attempt: int  # attempts made
    source: str
    event_id: str | None
    reason: str
    last_error: InvocationError | None
    headers: list[dict[str, str]]
    payload: Any
    dead_ms: int


class ReplayOut(BaseModel):
    replayed: int
    invocations: list[dict[str, str]]  # [{dead_letter_id, lambda_id, activation_id}]


class RetryPolicyOut(RetryPolicy):
    source: str
    overridden: bool


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(f"dead letter {value} not found", code="dead_letter_not_found") from None


def _out(row: asyncpg.Record) -> DeadLetterOut:
    request = row["request"]
    return DeadLetterOut(
        id=str(row["id"]), lambda_id=row["lambda_id"], activation_id=row["activation_id"],
        attempt=row["attempt"], source=row["source"], event_id=row["event_id"],
        reason=row["reason"],
        last_error=InvocationError.model_validate(row["last_error"]) if row["last_error"] else None,
        headers=list(request.get("headers") or []), payload=request.get("payload"),
        dead_ms=ms(row["dead_at"]) or 0)


def _source(source: str) -> EventSource:
    try:
        return EventSource(source)
    except ValueError:
        valid = ", ".join(s.value for s in EventSource)
        raise NotFound(f"unknown event source {source!r}; sources: {valid}",
                       code="unknown_source") from None


class DeadLetters:
    def __init__(self, pool: asyncpg.Pool, producer: Producer, topics: Topics) -> None:
        self.pool = pool
        self.producer = producer
        self.topics = topics

    # -- the DLQ topic consumer -----------------------------------------------------------
    async def on_record(self, record: ConsumerRecord) -> None:
        try:
            letter = DeadLetter.from_bytes(record.value)
        except ValidationError as exc:
            log.error("skipping malformed dead letter",
                      extra={"offset": record.offset, "error": str(exc)[:500]})
            return
        req = letter.request
        await self.pool.execute(
            """INSERT INTO dead_letters (id, account_id, lambda_id, activation_id, attempt, source,
                                         event_id, reason, last_error, request, dead_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING""",
            uuid.UUID(dead_letter_id(req.activation_id, req.attempt)), req.account_id,
            req.lambda_id, req.activation_id, req.attempt, req.source.value, req.event_id,
            letter.reason, letter.last_error.model_dump(mode="json") if letter.last_error else None,
            req.model_dump(mode="json"), datetime.fromtimestamp(letter.dead_ms / 1000, UTC))

    # -- API -------------------------------------------------------------------------------
    async def list_all(self, account_id: str, lambda_id: str | None, limit: int) -> list[DeadLetterOut]:
        rows = await self.pool.fetch(
            """SELECT * FROM dead_letters WHERE account_id = $1
               AND ($2::text IS NULL OR lambda_id = $2) ORDER BY dead_at DESC, id LIMIT $3""",
            account_id, lambda_id, max(1, min(limit, MAX_LIST)))
        return [_out(r) for r in rows]

    async def get(self, account_id: str, letter_id: str) -> DeadLetterOut:
        row = await self.pool.fetchrow(
            "SELECT * FROM dead_letters WHERE account_id = $1 AND id = $2",
            account_id, _uuid(letter_id))
        if row is None:
            raise NotFound(f"dead letter {letter_id} not found", code="dead_letter_not_found")
        return _out(row)

    async def _replay_rows(self, conn: Any, rows: list[asyncpg.Record]) -> ReplayOut:
        done = []
        for row in rows:
            old = InvocationRequest.model_validate(row["request"])
            # A fresh invocation: its own activation id, attempts and event age start over,
            # and it runs the version deployed now (the fix, typically).
            request = old.model_copy(update={
                "activation_id": new_id(), "attempt": 1, "not_before_ms": 0, "version": None,
                "created_ms": now_ms(), "reply_to": None})
            headers = {"fnbus-source": request.source.value, "fnbus-replay-of": str(row["id"])}
            if request.partition_key:
                headers[ORDER_KEY_HEADER] = request.partition_key
            await self.producer.send(self.topics.invocations, request.to_bytes(),
                                     key=request.lambda_id, headers=request_headers(headers))
            await conn.execute("DELETE FROM dead_letters WHERE id = $1", row["id"])
            done.append({"dead_letter_id": str(row["id"]), "lambda_id": request.lambda_id,
                         "activation_id": request.activation_id})
            log.info("dead letter replayed", extra={
                "account_id": request.account_id, "lambda_id": request.lambda_id,
                "dead_letter_id": str(row["id"]), "activation_id": request.activation_id})
        return ReplayOut(replayed=len(done), invocations=done)

    async def replay(self, account_id: str, letter_id: str) -> ReplayOut:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT * FROM dead_letters WHERE account_id = $1 AND id = $2 FOR UPDATE",
                account_id, _uuid(letter_id))
            if row is None:
                raise NotFound(f"dead letter {letter_id} not found", code="dead_letter_not_found")
            return await self._replay_rows(conn, [row])

    async def replay_all(self, account_id: str, lambda_id: str | None) -> ReplayOut:
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """SELECT * FROM dead_letters WHERE account_id = $1
                   AND ($2::text IS NULL OR lambda_id = $2) ORDER BY dead_at, id FOR UPDATE""",
                account_id, lambda_id)
            return await self._replay_rows(conn, list(rows))

    async def delete(self, account_id: str, letter_id: str) -> None:
        deleted = await self.pool.fetchval(
            "DELETE FROM dead_letters WHERE account_id = $1 AND id = $2 RETURNING 1",
            account_id, _uuid(letter_id))
        if not deleted:
            raise NotFound(f"dead letter {letter_id} not found", code="dead_letter_not_found")

    async def purge(self, account_id: str, lambda_id: str | None) -> int:
        result = await self.pool.execute(
            "DELETE FROM dead_letters WHERE account_id = $1 AND ($2::text IS NULL OR lambda_id = $2)",
            account_id, lambda_id)
        count = int(result.split()[-1])
        log.info("dead letters purged", extra={"account_id": account_id, "count": count})
        return count


class RetryPolicies:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def get(self, account_id: str, source: str) -> RetryPolicyOut:
        src = _source(source)
        stored = await self.pool.fetchval(
            "SELECT policy FROM retry_policies WHERE account_id = $1 AND source = $2",
            account_id, src.value)
        policy = default_policy(src) if stored is None else RetryPolicy.model_validate(stored)
        return RetryPolicyOut(**policy.model_dump(), source=src.value, overridden=stored is not None)

    async def list_all(self, account_id: str) -> list[RetryPolicyOut]:
        return [await self.get(account_id, s.value) for s in EventSource]

    async def put(self, account_id: str, source: str, changes: dict[str, Any]) -> RetryPolicyOut:
        src = _source(source)
        current = await self.get(account_id, src.value)
        base = RetryPolicy.model_validate(current.model_dump(exclude={"source", "overridden"}))
        try:
            policy = base.merged(changes)
        except ValidationError as exc:
            details = [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
                       for e in exc.errors()]
            first = details[0] if details else {"loc": [], "msg": "invalid"}
            where = ".".join(str(p) for p in first["loc"]) or "policy"
            raise Unprocessable(f"{where}: {first['msg']}", code="invalid_retry_policy",
                                details=details) from None
        await self.pool.execute(
            """INSERT INTO retry_policies (account_id, source, policy) VALUES ($1, $2, $3)
               ON CONFLICT (account_id, source) DO UPDATE SET policy = $3, updated_at = now()""",
            account_id, src.value, policy.model_dump(mode="json"))
        log.info("retry policy changed", extra={"account_id": account_id, "source": src.value})
        return RetryPolicyOut(**policy.model_dump(), source=src.value, overridden=True)

    async def reset(self, account_id: str, source: str) -> RetryPolicyOut:
        src = _source(source)
        await self.pool.execute("DELETE FROM retry_policies WHERE account_id = $1 AND source = $2",
                                account_id, src.value)
        return await self.get(account_id, src.value)
