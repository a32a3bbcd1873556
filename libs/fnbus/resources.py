"""Open the shared resources a service needs, register their health checks, close in reverse."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg

from fnbus import db
from fnbus.config import Settings
from fnbus.kafka import Consumer, Producer
from fnbus.service import Health

# Readers off the invocation path (the scheduler's view of activations, the gateway's
# async completions): the broker answers a fetch when 64 KiB are there or after
# 500 ms. At a few hundred invocations per second that is one fetch per half second
# instead of one per record (each a broker round trip and a wakeup of both sides).
BATCHED_FETCH_WAIT_MS = 500
BATCHED_FETCH_MIN_BYTES = 64 * 1024


@contextlib.asynccontextmanager
async def database(settings: Settings, health: Health) -> AsyncIterator[asyncpg.Pool]:
    pool = await db.create_pool(
        settings.database_url, min_size=settings.db_pool_min, max_size=settings.db_pool_max
    )
    health.add("postgres", lambda: db.ping(pool))
    try:
        yield pool
    finally:
        await pool.close()


@contextlib.asynccontextmanager
async def producer(settings: Settings, health: Health, client_id: str) -> AsyncIterator[Producer]:
    prod = Producer(settings.kafka_bootstrap, client_id=client_id,
                    linger_ms=settings.kafka_linger_ms,
                    bulk_linger_ms=settings.kafka_bulk_linger_ms,
                    bulk_max_batch_size=settings.kafka_bulk_batch_bytes)
    await prod.start()
    health.add("kafka_producer", prod.ping)
    try:
        yield prod
    finally:
        await prod.stop()


@contextlib.asynccontextmanager
async def consumer(
    settings: Settings,
    health: Health,
    topics: list[str],
    *,
    group_id: str | None,
    client_id: str,
    check_name: str = "kafka_consumer",
    auto_offset_reset: str = "earliest",
    batched: bool = False,
) -> AsyncIterator[Consumer]:
    """A started :class:`Consumer`; ``batched`` for readers that may see records up to
    :data:`BATCHED_FETCH_WAIT_MS` late (one fetch per batch instead of per record)."""
    fetch = {"fetch_max_wait_ms": BATCHED_FETCH_WAIT_MS, "fetch_min_bytes": BATCHED_FETCH_MIN_BYTES} \
        if batched else {}
    cons = Consumer(
        settings.kafka_bootstrap, topics, group_id=group_id, client_id=client_id,
        auto_offset_reset=auto_offset_reset, **fetch,
    )
    await cons.start()
    health.add(check_name, cons.ping)
    try:
        yield cons
    finally:
        await cons.stop()
