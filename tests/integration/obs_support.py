"""Helpers for the log search, metrics and retention tests: records through the real bus."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaProducer

from fnbus.config import Settings
from fnbus.schemas import ActivationRecord, EventSource, InvocationOutcome, LogLevel, LogLine
from fnbus.topics import Topics
from tests.support import eventually


def line(account_id: str, lambda_id: str, message: str, ts_ms: int, *,
         level: LogLevel = LogLevel.INFO, activation_id: str | None = None, seq: int = 0
         ) -> LogLine:
    return LogLine(activation_id=activation_id or str(uuid.uuid4()), account_id=account_id,
                   lambda_id=lambda_id, seq=seq, level=level, message=message, ts_ms=ts_ms)


def activation(account_id: str, lambda_id: str, finished_ms: int, *,
               outcome: InvocationOutcome = InvocationOutcome.SUCCEEDED, duration_ms: int = 10,
               cold: bool = False, attempt: int = 1) -> ActivationRecord:
    return ActivationRecord(
        activation_id=str(uuid.uuid4()), account_id=account_id, lambda_id=lambda_id,
        source=EventSource.HTTP, attempt=attempt, outcome=outcome,
        started_ms=finished_ms - duration_ms, finished_ms=finished_ms, duration_ms=duration_ms,
        cold_start=cold)


async def publish(settings: Settings, records: Sequence[LogLine | ActivationRecord]) -> None:
    topics = Topics(settings.topic_prefix)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for rec in records:
            topic = topics.logs if isinstance(rec, LogLine) else topics.activations
            await producer.send(topic, rec.to_bytes(), key=rec.activation_id.encode())
        await producer.flush()
    finally:
        await producer.stop()


async def stored(settings: Settings, sql: str, *args: Any, expect: int,
                 timeout_s: float = 30) -> None:
    """Wait until ``sql`` (a count) reaches ``expect``: log-ingest has written the records."""
    async def check() -> bool | None:
        conn = await asyncpg.connect(settings.database_url)
        try:
            return (await conn.fetchval(sql, *args)) >= expect or None
        finally:
            await conn.close()

    await eventually(check, timeout_s=timeout_s)


async def create_lambda(client: httpx.AsyncClient, name: str) -> str:
    code = "function lambda(input, callback) {\n  callback(null, 1);\n}\n"
    r = await client.post("/lambdas", json={"name": name, "code": code})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def invoke_scope_token(account: Any, gateway: str, name: str) -> str:
    """A JWT of an invocation client (scope faas.lambda.invoke only: no log or report reads)."""
    async with account.client() as c:
        r = await c.post("/users", json={"name": name, "roles": ["FaaS-Invocation"]})
        assert r.status_code == 201, r.text
        r = await c.post(f"/users/{r.json()['id']}/oauth-clients")
        assert r.status_code == 201, r.text
        body = r.json()
    async with httpx.AsyncClient(base_url=gateway) as c:
        r = await c.post("/oauth/token", data={"grant_type": "client_credentials",
                                                "client_id": body["prefix"],
                                                "client_secret": body["secret"]})
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])
