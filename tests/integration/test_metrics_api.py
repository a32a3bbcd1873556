"""Invocation metrics through the gateway: rollups kept by log-ingest from real records."""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer

from fnbus.config import Settings
from fnbus.schemas import ActivationRecord, DeadLetter, InvocationOutcome, InvocationRequest
from fnbus.topics import Topics
from services.log_ingest import rollups
from tests.integration.mgmt_support import Account, create_account
from tests.integration.obs_support import (
    activation,
    create_lambda,
    invoke_scope_token,
    publish,
    stored,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("platform")]

MIN_MS = 60_000
HOUR_MS = 60 * MIN_MS
# Minute-aligned reference 3 minutes ago, so "now - 3 min" stays inside the last hour.
T0_MS = (int(time.time() * 1000) // MIN_MS - 3) * MIN_MS
OUT = InvocationOutcome


@dataclass
class World:
    account: Account
    other: Account
    l1: str
    l2: str
    idle: str
    foreign: str
    records: list[ActivationRecord]


@pytest.fixture(scope="module")
async def world(settings: Settings, gateway_url: str, run_id: str) -> World:
    account = await create_account(settings, gateway_url, f"metr{run_id}")
    other = await create_account(settings, gateway_url, f"metro{run_id}")
    async with account.client() as c:
        l1, l2, idle = [await create_lambda(c, f"metrics-{n}") for n in ("one", "two", "idle")]
    async with other.client() as c:
        foreign = await create_lambda(c, "metrics-foreign")
    a = account.id
    records = [
        # One minute of l1: three outcomes, a cold start, a retry, durations in three buckets.
        activation(a, l1, T0_MS + 1_000, duration_ms=10, cold=True),
        activation(a, l1, T0_MS + 2_000, duration_ms=120, outcome=OUT.CODING_FAILURE),
        activation(a, l1, T0_MS + 3_000, duration_ms=3_000, outcome=OUT.TIMEOUT, attempt=2),
        activation(a, l1, T0_MS + MIN_MS + 5, duration_ms=7, outcome=OUT.PLATFORM_FAILURE),
        activation(a, l2, T0_MS + 4_000, duration_ms=40, outcome=OUT.UNKNOWN),
        # Hours and days back: only in the 24 h and 7 d windows.
        activation(a, l1, T0_MS - 3 * HOUR_MS, duration_ms=600),
        activation(a, l1, T0_MS - 2 * 24 * HOUR_MS, duration_ms=900),
        # Another account's lambda: never in these figures.
        activation(other.id, foreign, T0_MS + 1_500, duration_ms=5),
    ]
    # Every record twice: redelivery must not count twice.
    await publish(settings, records + records)
    await stored(settings, "SELECT count(*) FROM activations WHERE account_id = ANY($1::text[])",
                 [a, other.id], expect=len(records))
    # One dead letter of l1, through the DLQ topic (the registry mirrors it).
    letter = DeadLetter(request=InvocationRequest(account_id=a, lambda_id=l1, attempt=3),
                        reason="attempts exhausted", dead_ms=T0_MS + 2_500)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(Topics(settings.topic_prefix).dlq, letter.to_bytes(),
                                     key=a.encode())
    finally:
        await producer.stop()
    await stored(settings, "SELECT count(*) FROM dead_letters WHERE account_id = $1", a, expect=1)
    # A moment for the second copies (same partition, later offsets) to pass through too.
    await publish(settings, [activation(other.id, "marker", T0_MS)])
    await stored(settings, "SELECT count(*) FROM activations WHERE lambda_id = 'marker'", expect=1)
    return World(account, other, l1, l2, idle, foreign, records)


async def metrics(world: World, headers: dict[str, str] | None = None, **params: Any
                  ) -> httpx.Response:
    async with world.account.client() as c:
        return await c.get("/metrics", params=params, headers=headers or {})


def bucket(items: list[dict[str, Any]], start_ms: int) -> dict[str, Any]:
    [found] = [i for i in items if i["bucket_start_ms"] == start_ms]
    return found


async def test_minute_buckets_of_the_last_hour(world: World) -> None:
    r = await metrics(world, lambda_id=world.l1, last="1h", bucket="minute")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["bucket"] == "minute" and body["last"] == "1h"
    assert len(body["items"]) == 61
    first = bucket(body["items"], T0_MS)
    assert first["invocations"] == {"SUCCEEDED": 1, "CODING_FAILURE": 1, "PLATFORM_FAILURE": 0,
                                    "TIMEOUT": 1, "UNKNOWN": 0}
    assert first["total"] == 3 and first["cold_starts"] == 1 and first["retries"] == 1
    # 10 ms, 120 ms, 3 s: the median's bucket ends at 200 ms; p95/p99 are the slowest (3 s).
    assert first["duration_ms"] == {"p50": 200, "p95": 3000, "p99": 3000}
    assert first["dead_letters"] == 1
    second = bucket(body["items"], T0_MS + MIN_MS)
    assert second["invocations"]["PLATFORM_FAILURE"] == 1 and second["total"] == 1
    assert sum(i["total"] for i in body["items"]) == 4


async def test_hour_and_day_buckets(world: World) -> None:
    r = await metrics(world, lambda_id=world.l1, last="24h", bucket="hour")
    items = r.json()["items"]
    assert len(items) == 25 and sum(i["total"] for i in items) == 5
    three_hours_ago = (T0_MS - 3 * HOUR_MS) // HOUR_MS * HOUR_MS
    assert bucket(items, three_hours_ago)["invocations"]["SUCCEEDED"] == 1
    r = await metrics(world, lambda_id=world.l1, last="7d", bucket="day")
    items = r.json()["items"]
    assert len(items) == 8 and sum(i["total"] for i in items) == 6
    day_ms = 24 * HOUR_MS
    assert bucket(items, (T0_MS - 2 * day_ms) // day_ms * day_ms)["total"] == 1
    # All lambdas of the account together; never the other account's.
    r = await metrics(world, last="1h", bucket="hour")
    assert sum(i["total"] for i in r.json()["items"]) == 5


async def test_empty_range(world: World) -> None:
    r = await metrics(world, lambda_id=world.idle, last="1h", bucket="minute")
    assert r.status_code == 200
    items = r.json()["items"]
    assert len(items) == 61
    assert all(i["total"] == 0 and i["duration_ms"] == {"p50": None, "p95": None, "p99": None}
               for i in items)


async def test_unknown_or_foreign_lambda_is_404(world: World) -> None:
    for lambda_id in (world.foreign, "00000000-0000-0000-0000-000000000000", "not-a-uuid"):
        r = await metrics(world, lambda_id=lambda_id, last="1h", bucket="minute")
        assert r.status_code == 404, r.text
        assert r.json()["error"]["code"] == "lambda_not_found"
        assert "items" not in r.text


async def test_bad_parameters_are_422(world: World) -> None:
    assert (await metrics(world, last="2h")).status_code == 422
    assert (await metrics(world, bucket="week")).status_code == 422


async def test_csv(world: World) -> None:
    r = await metrics(world, {"Accept": "text/csv"}, lambda_id=world.l1, last="1h",
                      bucket="minute")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == 61 and list(rows[0]) == list(rollups.CSV_COLUMNS)
    start = datetime.fromtimestamp(T0_MS / 1000, UTC).isoformat().replace("+00:00", "Z")
    [row] = [x for x in rows if x["bucket_start"] == start]
    assert (row["SUCCEEDED"], row["TIMEOUT"], row["total"], row["duration_p50_ms"],
            row["dead_letters"], row["lambda_id"]) == ("1", "1", "3", "200", "1", world.l1)
    assert rows[-1]["duration_p50_ms"] == ""  # an empty bucket has no percentile


async def test_rollups_equal_counts_from_raw_rows(world: World, settings: Settings) -> None:
    conn = await asyncpg.connect(settings.database_url)
    try:
        for grain, table in (("minute", "activation_rollups_minute"),
                             ("hour", "activation_rollups_hour")):
            raw = await conn.fetch(
                """SELECT lambda_id, date_trunc($2, finished_at, 'UTC') AS b,
                          count(*) FILTER (WHERE outcome = 'SUCCEEDED') AS succeeded,
                          count(*) FILTER (WHERE outcome = 'CODING_FAILURE') AS coding_failure,
                          count(*) FILTER (WHERE outcome = 'TIMEOUT') AS timeout,
                          count(*) FILTER (WHERE cold_start) AS cold_starts,
                          count(*) FILTER (WHERE attempt > 1) AS retries,
                          array_agg(duration_ms) AS durations
                   FROM activations WHERE account_id = $1 GROUP BY 1, 2 ORDER BY 1, 2""",
                world.account.id, grain)
            rolled = await conn.fetch(
                f"""SELECT lambda_id, bucket_start AS b, succeeded, coding_failure, timeout,
                           cold_starts, retries, duration_hist
                    FROM {table} WHERE account_id = $1 ORDER BY 1, 2""", world.account.id)
            assert len(raw) == len(rolled) > 0
            for x, y in zip(raw, rolled, strict=True):
                assert (x["lambda_id"], x["b"]) == (y["lambda_id"], y["b"])
                for column in ("succeeded", "coding_failure", "timeout", "cold_starts",
                               "retries"):
                    assert x[column] == y[column], (grain, column)
                hist = rollups.empty_hist()
                for d in x["durations"]:
                    hist[rollups.bucket_index(d)] += 1
                assert hist == list(y["duration_hist"])
    finally:
        await conn.close()


async def test_internal_route_for_reports(world: World, settings: Settings) -> None:
    public = (await metrics(world, lambda_id=world.l1, last="1h", bucket="minute")).json()
    async with httpx.AsyncClient(base_url=settings.log_ingest_url) as c:
        params = {"account_id": world.account.id, "lambda_id": world.l1, "last": "1h",
                  "bucket": "minute"}
        assert (await c.get("/internal/metrics", params=params)).status_code == 401
        r = await c.get("/internal/metrics", params=params,
                        headers={"Authorization": f"Bearer {settings.service_token}"})
    assert r.status_code == 200
    # The same figures (bucket lists may differ by the minute that passed between calls).
    inner = {i["bucket_start_ms"]: i for i in r.json()["items"]}
    for item in public["items"]:
        if item["bucket_start_ms"] in inner:
            assert inner[item["bucket_start_ms"]] == item


async def test_without_reporting_read_403(world: World, gateway_url: str) -> None:
    token = await invoke_scope_token(world.account, gateway_url, "metrics-invoke-client")
    async with world.account.client(token) as c:
        r = await c.get("/metrics")
    assert r.status_code == 403, r.text
    async with httpx.AsyncClient(
            base_url=f"{gateway_url}/api/v1/accounts/{world.account.id}",
            headers={"Authorization": f"Bearer {world.other.admin_key}"}) as c:
        r = await c.get("/metrics")
    assert r.status_code == 403

