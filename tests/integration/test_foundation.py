"""The foundation on real parts: Kafka helpers, migrations, every service's health."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Awaitable, Callable

import asyncpg
import httpx
import pytest
from aiokafka import ConsumerRecord, TopicPartition

from fnbus.config import Settings
from fnbus.db import apply_migrations, load_migrations
from fnbus.kafka import Consumer, Producer
from fnbus.schemas import InvocationRequest
from fnbus.topics import Topics, TopicSpec, ensure_topics
from tests.support import eventually, free_port, serve_in_loop

pytestmark = pytest.mark.integration


async def test_message_round_trip_and_commit(settings: Settings, run_id: str) -> None:
    topic = f"{settings.topic_prefix}.roundtrip"
    created = await ensure_topics(settings.kafka_bootstrap, [TopicSpec(topic, 2)])
    assert created == [topic]
    assert await ensure_topics(settings.kafka_bootstrap, [TopicSpec(topic, 2)]) == []

    sent = [InvocationRequest(account_id="acc", lambda_id=f"l{i}", payload={"n": i})
            for i in range(5)]
    async with Producer(settings.kafka_bootstrap) as producer:
        for request in sent:
            await producer.send(topic, request.to_bytes(), key=request.lambda_id)

    received: list[InvocationRequest] = []
    group = f"g-{run_id}"

    async def handle(record: ConsumerRecord) -> None:
        received.append(InvocationRequest.from_bytes(record.value))
        if len(received) == len(sent):
            consumer.request_stop()

    consumer = Consumer(settings.kafka_bootstrap, [topic], group_id=group)
    async with consumer:
        await asyncio.wait_for(consumer.run(handle), timeout=60)
    assert sorted(r.activation_id for r in received) == sorted(r.activation_id for r in sent)
    assert {r.payload["n"] for r in received} == set(range(5))

    # Offsets were committed after handling: the same group sees nothing again,
    # and only a message produced later.
    late = InvocationRequest(account_id="acc", lambda_id="late")
    async with Producer(settings.kafka_bootstrap) as producer:
        await producer.send(topic, late.to_bytes(), key="late")
    again: list[str] = []

    async def handle_again(record: ConsumerRecord) -> None:
        again.append(InvocationRequest.from_bytes(record.value).activation_id)
        second.request_stop()

    second = Consumer(settings.kafka_bootstrap, [topic], group_id=group)
    async with second:
        await asyncio.wait_for(second.run(handle_again), timeout=60)
    assert again == [late.activation_id]


async def test_failed_handler_redelivers(settings: Settings, run_id: str) -> None:
    topic = f"{settings.topic_prefix}.redeliver"
    await ensure_topics(settings.kafka_bootstrap, [TopicSpec(topic, 1)])
    async with Producer(settings.kafka_bootstrap) as producer:
        await producer.send(topic, b"first")
        await producer.send(topic, b"second")
    seen: list[bytes] = []

    async def flaky(record: ConsumerRecord) -> None:
        seen.append(record.value)
        if seen.count(b"first") == 1:
            raise RuntimeError("transient failure")
        if record.value == b"second":
            consumer.request_stop()

    consumer = Consumer(settings.kafka_bootstrap, [topic], group_id=f"r-{run_id}",
                        retry_backoff_ms=50)
    async with consumer:
        await asyncio.wait_for(consumer.run(flaky), timeout=60)
    assert seen == [b"first", b"first", b"second"]


async def test_all_topics_created_with_compaction(settings: Settings) -> None:
    topics = Topics(settings.topic_prefix)
    await ensure_topics(settings.kafka_bootstrap, topics.specs())
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        names = set(await admin.list_topics())
        assert {s.name for s in topics.specs()} <= names
        described = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topics.lambda_changes)])
        entries = {e[0]: e[1] for e in described[0].resources[0][4]}
        assert entries["cleanup.policy"] == "compact"
    finally:
        await admin.close()


async def test_migrations_apply_once(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        # The session database may already be migrated by a service fixture; a
        # scratch schema proves the first application too.
        await conn.execute("DROP SCHEMA IF EXISTS mig_probe CASCADE; CREATE SCHEMA mig_probe")
        # Extensions (pg_trgm) live in public, where the session database has them already.
        await conn.execute("SET search_path TO mig_probe, public")
        first = await apply_migrations(conn)
        assert first == [m.version for m in load_migrations()]
        assert await apply_migrations(conn) == []
        tables = {r["tablename"] for r in await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'mig_probe'")}
        assert {"accounts", "lambdas", "lambda_versions", "activations", "log_lines",
                "schema_migrations"} <= tables
    finally:
        await conn.execute("DROP SCHEMA IF EXISTS mig_probe CASCADE")
        await conn.close()


async def _check_health_and_metrics(url: str, name: str) -> None:
    async with httpx.AsyncClient() as client:
        async def healthy() -> bool:
            r = await client.get(f"{url}/healthz")
            return r.status_code == 200

        await eventually(healthy, timeout_s=30, what=f"{name} /healthz")
        body = (await client.get(f"{url}/healthz")).json()
        assert body["service"] == name and body["status"] == "ok" and body["checks"], body
        assert all(v == "ok" for v in body["checks"].values())
        metrics = await client.get(f"{url}/metrics")
        assert metrics.status_code == 200, metrics.text
        assert "fnbus_http_requests_total" in metrics.text


async def test_registry_and_gateway_healthy(registry_url: str, gateway_url: str) -> None:
    await _check_health_and_metrics(registry_url, "registry")
    await _check_health_and_metrics(gateway_url, "gateway")


@pytest.mark.parametrize("name", ["deployer", "invoker", "scheduler", "log_ingest"])
async def test_service_healthy_and_metrics(settings: Settings, name: str) -> None:
    # Its own port, topics and instance id: the session's platform may be running too.
    own = settings.model_copy(update={"topic_prefix": f"{settings.topic_prefix}h{name}",
                                      "instance_id": f"{settings.instance_id}-health-{name}",
                                      "prewarm_per_runtime": 0})
    module = importlib.import_module(f"services.{name}.app")
    app = module.create_app(own)
    async with serve_in_loop(app, free_port()) as url:
        await _check_health_and_metrics(url, name)


async def test_commits_are_batched_in_time_and_flushed_on_stop(settings: Settings, run_id: str) -> None:
    """Contract 3: handled records are committed every commit_interval_ms, not per batch,
    and whatever is still uncommitted is committed when run() returns."""
    topic = f"{settings.topic_prefix}.commits"
    await ensure_topics(settings.kafka_bootstrap, [TopicSpec(topic, 1)])
    tp = TopicPartition(topic, 0)
    handled: list[bytes] = []

    async def handle(record: ConsumerRecord) -> None:
        handled.append(record.value)

    def seen(n: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return len(handled) >= n
        return check

    async def committed(consumer: Consumer) -> int | None:
        value: int | None = await consumer.raw.committed(tp)
        return value

    async with Producer(settings.kafka_bootstrap) as producer:
        # A long interval: records handled one by one stay uncommitted while running...
        slow = Consumer(settings.kafka_bootstrap, [topic], group_id=f"slow-{run_id}",
                        commit_interval_ms=60_000)
        async with slow:
            task = asyncio.create_task(slow.run(handle))
            for i in range(3):
                await producer.send(topic, f"r{i}".encode())
                await eventually(seen(i + 1), what=f"record {i} handled")
            first_commit = await committed(slow)
            await producer.send(topic, b"r3")
            await eventually(seen(4), what="record handled")
            assert await committed(slow) == first_commit  # not one commit per record
            # ... and all of them are committed when the consumer stops.
            slow.request_stop()
            await asyncio.wait_for(task, timeout=30)
            assert await committed(slow) == 4

        # A short interval: the committed offset follows while the consumer runs.
        handled.clear()
        fast = Consumer(settings.kafka_bootstrap, [topic], group_id=f"fast-{run_id}",
                        commit_interval_ms=100)
        async with fast:
            task = asyncio.create_task(fast.run(handle))
            await eventually(seen(4), what="record handled")
            await producer.send(topic, b"r4")
            await eventually(seen(5), what="record handled")
            deadline = asyncio.get_running_loop().time() + 10
            while await committed(fast) != 5:
                assert asyncio.get_running_loop().time() < deadline, "offset 5 never committed"
                await asyncio.sleep(0.05)
            assert not task.done()
            fast.request_stop()
            await asyncio.wait_for(task, timeout=30)
