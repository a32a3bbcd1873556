"""log-ingest on the real broker and database.

The module works under its own topic prefix and in its own database
``fnbus_test_<run id>_li`` (dropped at the end), derived from the session's
settings: its consumer group and its table tricks (the outage test renames a
table) must not meet other tests' services. Each test runs the service in-process
through its lifespan — faust included — and talks to it with an ASGI client,
like the gateway will.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import REGISTRY

from fnbus.config import Settings
from fnbus.kafka import Producer
from fnbus.schemas import (
    ActivationRecord,
    EventSource,
    InvocationError,
    InvocationOutcome,
    LogLevel,
    LogLine,
)
from fnbus.topics import Topics
from services.log_ingest.app import create_app
from services.log_ingest.stream import GROUP_ID
from tests.support import eventually

pytestmark = pytest.mark.integration

TOKEN = "test-log-ingest-token"
INGEST_TIMEOUT_S = 30.0
# Record times an hour ago: well inside the retention window, which log-ingest
# enforces on start (older rows are deleted from the default partition).
BASE_MS = (int(time.time()) - 3600) * 1000


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def ingest_database_url(run_id: str) -> AsyncIterator[str]:
    name = f"fnbus_test_{run_id}_li"
    admin_url = Settings().database_url
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    yield urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def ingest_settings(
    settings: Settings, ingest_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    return settings.model_copy(update={
        "home": tmp_path_factory.mktemp("log_ingest_home"),
        "topic_prefix": f"{settings.topic_prefix}-li",
        "database_url": ingest_database_url,
        "service_token": TOKEN,
        "db_pool_max": 4,
    })


@pytest.fixture(scope="module")
def topics(ingest_settings: Settings) -> Topics:
    return Topics(ingest_settings.topic_prefix)


@pytest.fixture(scope="module")
async def producer(ingest_settings: Settings) -> AsyncIterator[Producer]:
    async with Producer(ingest_settings.kafka_bootstrap, client_id="test-log-ingest") as prod:
        yield prod


@pytest.fixture(scope="module")
async def db(ingest_settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    # The schema comes from the service's own start (migrations); tests only read.
    conn = await asyncpg.connect(ingest_settings.database_url)
    yield conn
    await conn.close()


@pytest.fixture
def account() -> str:
    """A fresh account per test, so tests never see each other's rows."""
    return f"acc-{uuid.uuid4().hex[:8]}"


AUTH = {"Authorization": f"Bearer {TOKEN}"}


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The service with its lifespan (faust, pool) running, and a client for it."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://log-ingest") as client:
            yield client


# --- helpers -----------------------------------------------------------------------------


def activation(account: str, activation_id: str, **fields: Any) -> ActivationRecord:
    now = int(time.time() * 1000)
    values: dict[str, Any] = {
        "activation_id": activation_id,
        "account_id": account,
        "lambda_id": "lambda-1",
        "source": EventSource.HTTP,
        "outcome": InvocationOutcome.SUCCEEDED,
        "result": {"ok": True},
        "started_ms": now - 20,
        "finished_ms": now,
        "duration_ms": 20,
        "invoker": "invoker-test",
    }
    values.update(fields)
    return ActivationRecord(**values)


def log_line(account: str, activation_id: str, seq: int, **fields: Any) -> LogLine:
    values: dict[str, Any] = {
        "activation_id": activation_id,
        "account_id": account,
        "lambda_id": "lambda-1",
        "seq": seq,
        "level": LogLevel.INFO,
        "message": f"line {seq}",
        "ts_ms": BASE_MS + seq,
    }
    values.update(fields)
    return LogLine(**values)


async def send_activations(producer: Producer, topics: Topics, *records: ActivationRecord) -> list[Any]:
    return [
        await producer.send(topics.activations, r.to_bytes(), key=r.activation_id) for r in records
    ]


async def send_logs(producer: Producer, topics: Topics, *lines: LogLine) -> list[Any]:
    return [await producer.send(topics.logs, line.to_bytes(), key=line.activation_id) for line in lines]


async def api_items(client: httpx.AsyncClient, path: str, **params: Any) -> list[dict[str, Any]]:
    response = await client.get(path, params=params, headers=AUTH)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def metric(name: str, kind: str) -> float:
    return REGISTRY.get_sample_value(name, {"kind": kind}) or 0.0


async def partitions_of(admin: AIOKafkaAdminClient, topic: str) -> list[int]:
    described = await admin.describe_topics([topic])
    return sorted(p["partition"] for t in described if t["topic"] == topic for p in t["partitions"])


async def committed_and_end(bootstrap: str, topic: str) -> tuple[dict[int, int], dict[int, int]]:
    """The group's committed offsets and the log-end offsets of ``topic``, per partition."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await admin.start()
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in await partitions_of(admin, topic)]
        group = Topics(topic.rsplit(".", 1)[0]).group(GROUP_ID)
        committed = await admin.list_consumer_group_offsets(group, partitions=partitions)
        end = await consumer.end_offsets(partitions)
        return (
            {tp.partition: max(meta.offset, 0) for tp, meta in committed.items()},
            {tp.partition: off for tp, off in end.items()},
        )
    finally:
        await consumer.stop()
        await admin.close()


# --- tests -------------------------------------------------------------------------------


async def test_activations_and_logs_reach_the_api(
    ingest_settings: Settings, topics: Topics, producer: Producer, account: str
) -> None:
    first = activation(account, f"{account}-a1", finished_ms=BASE_MS + 100, started_ms=BASE_MS)
    second = activation(
        account, f"{account}-a2", lambda_id="lambda-2", outcome=InvocationOutcome.CODING_FAILURE,
        result=None, error=InvocationError(code="custom", message="boom", details={"line": 3}),
        finished_ms=BASE_MS + 200, started_ms=BASE_MS + 150, duration_ms=50,
        version=7, cold_start=True, source=EventSource.SCHEDULER,
    )
    lines = [log_line(account, first.activation_id, seq) for seq in (2, 0, 1)]
    async with running(ingest_settings) as client:
        await send_activations(producer, topics, first, second)
        await send_logs(producer, topics, *lines)

        items = await eventually(lambda: _n_items(client, "/internal/activations", 2, account_id=account))
        # Newest finished first; field names and epoch-ms times of the pydantic model.
        assert [i["activation_id"] for i in items] == [second.activation_id, first.activation_id]
        assert items[0] == second.model_dump(mode="json")
        assert items[1] == first.model_dump(mode="json")

        only = await api_items(client, "/internal/activations", account_id=account, lambda_id="lambda-2")
        assert [i["activation_id"] for i in only] == [second.activation_id]
        assert len(await api_items(client, "/internal/activations", account_id=account, limit=1)) == 1

        logs = await eventually(lambda: _n_items(client, "/internal/logs", 3, account_id=account))
        assert [entry["seq"] for entry in logs] == [0, 1, 2]  # ordered by ts, seq
        assert logs[0] == lines[1].model_dump(mode="json")
        by_activation = await api_items(
            client, "/internal/logs", account_id=account, activation_id=first.activation_id
        )
        assert len(by_activation) == 3
        assert await api_items(client, "/internal/logs", account_id=account, lambda_id="other") == []

        one = await client.get(f"/internal/activations/{second.activation_id}", headers=AUTH)
        assert one.status_code == 200, one.text
        assert one.json() == second.model_dump(mode="json")

        health = await client.get("/healthz")
        assert health.status_code == 200, health.text
        assert health.json()["checks"] == {"postgres": "ok", "faust_consumer": "ok"}
        exposition = (await client.get("/metrics")).text
        for name in (
            "fnbus_log_ingest_records_ingested_total",
            "fnbus_log_ingest_records_malformed_total",
            "fnbus_log_ingest_batch_size_bucket",
        ):
            assert name in exposition


async def _n_items(client: httpx.AsyncClient, path: str, n: int, **params: Any) -> Any:
    items = await api_items(client, path, **params)
    return items if len(items) >= n else None


async def test_latest_attempt_wins(
    ingest_settings: Settings, topics: Topics, producer: Producer, account: str
) -> None:
    act_id = f"{account}-retried"
    attempts = [
        activation(account, act_id, attempt=1, outcome=InvocationOutcome.PLATFORM_FAILURE),
        activation(account, act_id, attempt=3, outcome=InvocationOutcome.SUCCEEDED),
        activation(account, act_id, attempt=2, outcome=InvocationOutcome.TIMEOUT),
    ]
    async with running(ingest_settings) as client:
        await send_activations(producer, topics, *attempts)
        await eventually(lambda: _n_items(client, "/internal/activations", 3, account_id=account))
        response = await client.get(f"/internal/activations/{act_id}", headers=AUTH)
        assert response.status_code == 200, response.text
        assert response.json()["attempt"] == 3
        assert response.json()["outcome"] == "SUCCEEDED"
        # Scoped to an account, another tenant's activation does not exist.
        other = await client.get(
            f"/internal/activations/{act_id}", params={"account_id": "someone-else"}, headers=AUTH
        )
        assert other.status_code == 404, other.text


async def test_redelivery_never_duplicates(
    ingest_settings: Settings, topics: Topics, producer: Producer, db: asyncpg.Connection, account: str
) -> None:
    records = [activation(account, f"{account}-dup{i}") for i in range(3)]
    lines = [log_line(account, f"{account}-dup0", seq) for seq in range(4)]
    async with running(ingest_settings) as client:
        for _ in range(2):  # the same records, twice
            await send_activations(producer, topics, *records)
            await send_logs(producer, topics, *lines)
        marker = log_line(account, f"{account}-marker", 0)
        await send_logs(producer, topics, marker)
        await eventually(lambda: _n_items(client, "/internal/logs", 5, account_id=account))
        # Give the second copies every chance to land, then count rows.
        await eventually(lambda: _n_items(client, "/internal/activations", 3, account_id=account))
    # Stopped: committed up to the end, so the second copies went through the database too.
    for topic in (topics.activations, topics.logs):
        committed, end = await committed_and_end(ingest_settings.kafka_bootstrap, topic)
        assert committed == end
    activations = await db.fetchval("SELECT count(*) FROM activations WHERE account_id = $1", account)
    log_lines = await db.fetchval("SELECT count(*) FROM log_lines WHERE account_id = $1", account)
    assert (activations, log_lines) == (3, 5)
    # And once more after a restart that redelivers nothing new.
    async with running(ingest_settings) as client:
        await send_logs(producer, topics, *lines)
        await send_logs(producer, topics, log_line(account, f"{account}-marker2", 0))
        await eventually(lambda: _n_items(client, "/internal/logs", 6, account_id=account))
    assert await db.fetchval("SELECT count(*) FROM log_lines WHERE account_id = $1", account) == 6


async def test_malformed_records_are_skipped(
    ingest_settings: Settings, topics: Topics, producer: Producer, account: str
) -> None:
    good_before = log_line(account, f"{account}-x", 0)
    good_after = log_line(account, f"{account}-x", 1)
    wrong_version = good_before.model_dump(mode="json") | {"schema_version": 99, "seq": 5}
    missing_fields = {"schema_version": 1, "activation_id": f"{account}-x", "seq": 6}
    bad_activation = activation(account, f"{account}-bad").model_dump(mode="json")
    del bad_activation["outcome"]
    malformed_logs = [
        b"not json at all",
        b"",
        json.dumps(wrong_version).encode(),
        json.dumps(missing_fields).encode(),
        json.dumps([1, 2, 3]).encode(),
    ]
    skipped_logs = metric("fnbus_log_ingest_records_malformed_total", "log")
    skipped_activations = metric("fnbus_log_ingest_records_malformed_total", "activation")
    async with running(ingest_settings) as client:
        await send_logs(producer, topics, good_before)
        for value in malformed_logs:
            # Same key as the good lines: same partition, right between them.
            await producer.send(topics.logs, value, key=good_before.activation_id)
        # A tombstone (no value at all) on the same partition.
        raw = AIOKafkaProducer(bootstrap_servers=ingest_settings.kafka_bootstrap)
        await raw.start()
        try:
            await raw.send_and_wait(topics.logs, None, key=good_before.activation_id.encode())
        finally:
            await raw.stop()
        await send_logs(producer, topics, good_after)
        await producer.send(topics.activations, json.dumps(bad_activation).encode(), key="k")
        await producer.send(topics.activations, b"\xff\xfe", key="k")
        good_activation = activation(account, f"{account}-good")
        await producer.send(topics.activations, good_activation.to_bytes(), key="k")

        logs = await eventually(lambda: _n_items(client, "/internal/logs", 2, account_id=account))
        assert [entry["seq"] for entry in logs] == [0, 1]
        acts = await eventually(lambda: _n_items(client, "/internal/activations", 1, account_id=account))
        assert [a["activation_id"] for a in acts] == [good_activation.activation_id]
        assert metric("fnbus_log_ingest_records_malformed_total", "log") - skipped_logs == 6
        assert metric("fnbus_log_ingest_records_malformed_total", "activation") - skipped_activations == 2
        health = await client.get("/healthz")
        assert health.json()["checks"]["faust_consumer"] == "ok"


async def test_errors_and_auth(ingest_settings: Settings) -> None:
    async with running(ingest_settings) as client:
        unknown = await client.get("/internal/activations/no-such-activation", headers=AUTH)
        assert unknown.status_code == 404, unknown.text
        assert unknown.json()["error"]["code"] == "not_found"
        assert "message" in unknown.json()["error"]

        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                        {"Authorization": "Bearer"}):
            for path in ("/internal/activations/x", "/internal/activations?account_id=a",
                         "/internal/logs?account_id=a", "/internal/logs"):
                response = await client.get(path, headers=headers)
                assert response.status_code == 401, (path, headers)
                assert response.json()["error"]["code"] == "service_token_required"

        # Lists are per account; without one the request is invalid.
        missing = await client.get("/internal/logs", headers=AUTH)
        assert missing.status_code == 422, missing.text
        too_many = await client.get("/internal/logs?account_id=a&limit=100000", headers=AUTH)
        assert too_many.status_code == 422, too_many.text


async def test_restart_loses_nothing(
    ingest_settings: Settings, topics: Topics, producer: Producer, account: str
) -> None:
    before = [log_line(account, f"{account}-r", seq) for seq in range(3)]
    async with running(ingest_settings) as client:
        await send_logs(producer, topics, *before)
        await eventually(lambda: _n_items(client, "/internal/logs", 3, account_id=account))
    # Stopped: everything it processed is committed.
    committed, end = await committed_and_end(ingest_settings.kafka_bootstrap, topics.logs)
    assert committed == end

    while_down = [log_line(account, f"{account}-r", seq) for seq in range(3, 8)]
    down_acts = [activation(account, f"{account}-down{i}") for i in range(3)]
    await send_logs(producer, topics, *while_down)
    await send_activations(producer, topics, *down_acts)

    async with running(ingest_settings) as client:
        logs = await eventually(lambda: _n_items(client, "/internal/logs", 8, account_id=account))
        assert [entry["seq"] for entry in logs] == list(range(8))
        await eventually(lambda: _n_items(client, "/internal/activations", 3, account_id=account))


async def test_nothing_is_acknowledged_before_it_is_stored(
    ingest_settings: Settings, topics: Topics, producer: Producer, db: asyncpg.Connection, account: str
) -> None:
    """A failing database write holds the batch: no commit, redelivered after restart."""
    failures = metric("fnbus_log_ingest_write_failures_total", "log")
    lines = [log_line(account, f"{account}-outage", seq) for seq in range(4)]
    renamed = False
    try:
        async with running(ingest_settings) as client:
            await db.execute("ALTER TABLE log_lines RENAME TO log_lines_away")
            renamed = True
            sent = await send_logs(producer, topics, *lines)

            async def failed_twice() -> bool:
                return metric("fnbus_log_ingest_write_failures_total", "log") - failures >= 2

            await eventually(failed_twice, timeout_s=INGEST_TIMEOUT_S, what="failed writes")
            health = await client.get("/healthz")
            assert health.json()["checks"]["faust_consumer"] == "ok"
            # Leaving the block stops the service while the write still fails.
    finally:
        if renamed:
            await db.execute("ALTER TABLE log_lines_away RENAME TO log_lines")

    committed, _ = await committed_and_end(ingest_settings.kafka_bootstrap, topics.logs)
    for meta in sent:
        assert committed[meta.partition] <= meta.offset, (committed, meta)
    assert await db.fetchval("SELECT count(*) FROM log_lines WHERE account_id = $1", account) == 0

    async with running(ingest_settings) as client:
        logs = await eventually(lambda: _n_items(client, "/internal/logs", 4, account_id=account))
        assert [entry["seq"] for entry in logs] == [0, 1, 2, 3]
    committed, end = await committed_and_end(ingest_settings.kafka_bootstrap, topics.logs)
    assert committed == end


async def test_topics_keep_the_platform_settings(ingest_settings: Settings, topics: Topics) -> None:
    """faust subscribes but never creates topics: they have the partitions fnbus.topics gives."""
    async with running(ingest_settings):
        pass
    admin = AIOKafkaAdminClient(bootstrap_servers=ingest_settings.kafka_bootstrap)
    await admin.start()
    try:
        specs = {s.name: s.partitions for s in topics.specs()}
        for name in (topics.activations, topics.logs):
            assert len(await partitions_of(admin, name)) == specs[name]
        # No leader, changelog or repartition topics of faust's own.
        group = Topics(ingest_settings.topic_prefix).group(GROUP_ID)
        assert not [t for t in await admin.list_topics() if t.startswith(group)]
    finally:
        await admin.close()
    # faust keeps its (table-less) data directory under FNBUS_HOME.
    assert (Path(ingest_settings.home) / "faust").is_dir()
