"""Two scheduler processes, one leader: kill -9 the leader, the other takes over.

Runs with the fast clock (FNBUS_SCHEDULER_SECONDS_PER_MINUTE) in its own database
and under its own topic prefix, so the session's in-process scheduler is not a third
candidate. Asserts that no due minute fires twice and none is missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from fnbus.config import REPO_ROOT, Settings
from fnbus.kafka import Producer
from fnbus.schemas import EventSource, InvocationRequest, LambdaChange, LambdaState, Runtime
from fnbus.topics import Topics, ensure_topics
from tests.conftest import _with_db
from tests.support import eventually, free_port

pytestmark = pytest.mark.integration

SECONDS_PER_MINUTE = 4.0
MINUTE_MS = 60_000


@pytest.fixture
async def isolated(settings: Settings, run_id: str) -> AsyncIterator[tuple[str, str]]:
    """(database url, topic prefix) used by nothing else."""
    name = f"fnbus_test_{run_id}_failover"
    admin = await asyncpg.connect(settings.database_url.rsplit("/", 1)[0] + "/fnbus")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield _with_db(settings.database_url, name), f"t{run_id}fo"
    admin = await asyncpg.connect(settings.database_url.rsplit("/", 1)[0] + "/fnbus")
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def _spawn(settings: Settings, db_url: str, prefix: str, instance: str, port: int,
           home: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "FNBUS_HOME": str(home), "FNBUS_DATABASE_URL": db_url,
        "FNBUS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap, "FNBUS_TOPIC_PREFIX": prefix,
        "FNBUS_SERVICE_TOKEN": settings.service_token, "FNBUS_INSTANCE_ID": instance,
        "FNBUS_REGISTRY_URL": settings.registry_url, "FNBUS_LOG_JSON": "false",
        "FNBUS_SCHEDULER_SECONDS_PER_MINUTE": str(SECONDS_PER_MINUTE),
        "FNBUS_SCHEDULER_LEASE_TTL_MS": "1500", "FNBUS_SCHEDULER_LEASE_RENEW_MS": "300",
    }
    with open(home / f"{instance}.log", "wb") as log:  # the child keeps its own descriptor
        return subprocess.Popen([sys.executable, "-m", "fnbus.cli", "serve", "scheduler",
                                 "--port", str(port)], env=env, cwd=REPO_ROOT, stdout=log,
                                stderr=subprocess.STDOUT)


async def test_leader_failover_neither_doubles_nor_misses_a_minute(
        settings: Settings, isolated: tuple[str, str], tmp_path: Path) -> None:
    db_url, prefix = isolated
    topics = Topics(prefix)
    await ensure_topics(settings.kafka_bootstrap, topics.specs())
    lambdas = [str(uuid.uuid4()) for _ in range(3)]
    async with Producer(settings.kafka_bootstrap) as producer:
        for lid in lambdas:
            change = LambdaChange(lambda_id=lid, account_id="fo", name=f"fo-{lid[:4]}",
                                  runtime=Runtime.NODEJS, state=LambdaState.PRODUCTIVE,
                                  deployed_version=1)
            await producer.send(topics.lambda_changes, change.to_bytes(), key=lid)

    ports = {"a": free_port(), "b": free_port()}
    procs = {name: _spawn(settings, db_url, prefix, f"sched-{name}", port, tmp_path)
             for name, port in ports.items()}
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None)
    await consumer.start()
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            for name, port in ports.items():
                async def healthy(port: int = port) -> bool:
                    with contextlib.suppress(httpx.HTTPError):
                        return (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
                    return False
                await eventually(healthy, timeout_s=60, what=f"scheduler {name} healthy")
            headers = {"Authorization": f"Bearer {settings.service_token}",
                       "X-Fnbus-Account": "fo"}
            for lid in lambdas:
                r = await http.post(f"http://127.0.0.1:{ports['a']}/internal/accounts/fo/schedules",
                                    json={"lambda_id": lid, "cron": "* * * * *",
                                          "payload": {"lambda": lid}}, headers=headers)
                assert r.status_code == 201, r.text

        parts = [TopicPartition(topics.invocations, p)
                 for p in sorted(consumer.partitions_for_topic(topics.invocations) or
                                 await _partitions(consumer, topics.invocations))]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        seen: list[InvocationRequest] = []

        async def collect(seconds: float) -> None:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    seen.extend(InvocationRequest.from_bytes(r.value) for r in records)

        await collect(4 * SECONDS_PER_MINUTE)
        assert len(seen) >= 6, "the leader should have fired for a few minutes"
        holder = await pool.fetchval("SELECT holder FROM scheduler_lease")
        leader, standby = ("a", "b") if holder == "sched-a" else ("b", "a")
        procs[leader].send_signal(signal.SIGKILL)
        procs[leader].wait(timeout=10)
        killed_at = len(seen)
        await collect(5 * SECONDS_PER_MINUTE)
        assert await pool.fetchval("SELECT holder FROM scheduler_lease") == f"sched-{standby}"
        assert len(seen) - killed_at >= 9, "the standby should have fired after the kill"

        fires = await pool.fetch("SELECT schedule_id, due_ms, activation_id, produced_ms "
                                 "FROM schedule_fires ORDER BY due_ms")
        by_schedule: dict[str, list[int]] = {}
        for f in fires:
            by_schedule.setdefault(str(f["schedule_id"]), []).append(f["due_ms"])
        assert len(by_schedule) == 3
        for dues in by_schedule.values():
            # Every minute from the first fire to the last, each exactly once.
            assert dues == list(range(dues[0], dues[-1] + MINUTE_MS, MINUTE_MS)), dues
        produced = {f["activation_id"] for f in fires if f["produced_ms"] is not None}
        requested = {r.activation_id for r in seen}
        assert all(r.source == EventSource.SCHEDULER and r.reply_to is None for r in seen)
        # Every recorded fire reached the topic; nothing reached it without a fire record.
        assert produced <= requested <= {f["activation_id"] for f in fires}
        # The only repeats allowed are re-produces of the same fire (same activation id).
        assert len(requested) >= len(fires) - 3  # the last minute may still be in flight
    finally:
        await consumer.stop()
        await pool.close()
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    for _ in range(50):
        await consumer._client.force_metadata_update()
        found = consumer.partitions_for_topic(topic)
        if found:
            return set(found)
        await asyncio.sleep(0.1)
    raise AssertionError(f"topic {topic} has no partitions")
