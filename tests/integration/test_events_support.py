"""Helpers for the event, retry and dead-letter tests (no tests here)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from fnbus import cloud_events
from fnbus.config import Settings
from fnbus.topics import Topics
from tests.integration.mgmt_support import Account
from tests.support import eventually

ECHO = """function lambda(input, callback) {
  callback(null, { payload: input.payload, headers: input.headers });
}
"""
FAILS = """function lambda(input, callback) {
  callback(new Error('always fails'));
}
"""


async def send_event(settings: Settings, event_type: str, account_id: str, data: Any, *,
                     binary: bool = True, **attrs: Any) -> str:
    message = cloud_events.make(event_type, account_id, data, binary=binary, **attrs)
    event_id = (message.headers.get("ce_id") or b"").decode() or json.loads(message.value)["id"]
    await send_raw(settings, message.value, list(message.headers.items()),
                   key=message.key.encode() if isinstance(message.key, str) else message.key)
    return str(event_id)


async def send_raw(settings: Settings, value: bytes, headers: list[tuple[str, bytes]] | None = None,
                   key: bytes | None = None) -> None:
    await send_many(settings, [(value, headers or [], key)])


async def send_many(settings: Settings, records: list[tuple[bytes, list[tuple[str, bytes]],
                                                            bytes | None]]) -> None:
    """Produce records back to back with one producer (so they arrive together)."""
    # gzip lets an oversized (but repetitive) record past the broker's own size limit.
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap,
                                compression_type="gzip", max_request_size=4 * 1024 * 1024)
    await producer.start()
    try:
        topic = Topics(settings.topic_prefix).platform_events
        futures = [await producer.send(topic, value, key=key, headers=headers)
                   for value, headers, key in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def activations(settings: Settings, account_id: str, lambda_id: str | None = None
                      ) -> list[dict[str, Any]]:
    """Every attempt's activation record of the account (or one lambda), oldest start first."""
    async with httpx.AsyncClient(base_url=settings.log_ingest_url, headers={
            "Authorization": f"Bearer {settings.service_token}"}) as c:
        params: dict[str, Any] = {"account_id": account_id, "limit": 1000}
        if lambda_id:
            params["lambda_id"] = lambda_id
        r = await c.get("/internal/activations", params=params)
        r.raise_for_status()
        return sorted(r.json()["items"], key=lambda a: a["started_ms"])


async def wait_activations(settings: Settings, account_id: str, lambda_id: str, count: int,
                           timeout_s: float = 40, where: Any = None) -> list[dict[str, Any]]:
    async def enough() -> list[dict[str, Any]] | None:
        found = [a for a in await activations(settings, account_id, lambda_id)
                 if where is None or where(a)]
        return found if len(found) >= count else None

    return await eventually(enough, timeout_s=timeout_s, interval_s=0.25,
                            what=f"{count} activation(s) of {lambda_id}")


async def quarantined(settings: Settings) -> list[dict[str, Any]]:
    topic = Topics(settings.topic_prefix).quarantine
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        found = []
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=500)
            found += [json.loads(r.value) for r in batch.get(tp, [])]
        return found
    finally:
        await consumer.stop()


async def set_policy(account: Account, source: str, **fields: Any) -> dict[str, Any]:
    async with account.client() as c:
        r = await c.put(f"/retry-policies/{source}", json=fields)
        assert r.status_code == 200, r.text
        return dict(r.json())
