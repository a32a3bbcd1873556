"""Retention by daily partitions: old days are never searched and their partitions dropped."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta

import asyncpg
import pytest

from fnbus.config import Settings
from services.log_ingest.partitions import PartitionMaintainer
from tests.integration.mgmt_support import Account, create_account
from tests.integration.obs_support import activation, create_lambda, line, publish, stored

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("platform")]

DAY_MS = 24 * 3600 * 1000


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    assert p is not None
    yield p
    await p.close()


@pytest.fixture(scope="module")
async def account(settings: Settings, gateway_url: str, run_id: str) -> Account:
    return await create_account(settings, gateway_url, f"ret{run_id}")


def day_of(ms: int) -> date:
    return datetime.fromtimestamp(ms / 1000, UTC).date()


async def partitions(pool: asyncpg.Pool, parent: str) -> set[str]:
    rows = await pool.fetch("""SELECT c.relname FROM pg_inherits i JOIN pg_class c
                               ON c.oid = i.inhrelid WHERE i.inhparent = $1::regclass""", parent)
    return {r["relname"] for r in rows}


async def test_eight_day_old_lines_are_not_returned_and_their_partition_is_dropped(
    settings: Settings, account: Account, pool: asyncpg.Pool
) -> None:
    now = int(time.time() * 1000)
    old_ms = now - 8 * DAY_MS - 3600_000
    old_day = day_of(old_ms)
    # The partition that was "today" eight days ago, as the maintainer made it then.
    await pool.fetchval("SELECT fnbus_ensure_day_partition('log_lines', 'ts', $1)", old_day)
    await pool.fetchval("SELECT fnbus_ensure_day_partition('activations', 'finished_at', $1)",
                        old_day)
    old_part = f"log_lines_p{old_day:%Y%m%d}"
    today_part = f"log_lines_p{day_of(now):%Y%m%d}"
    async with account.client() as c:
        lam = await create_lambda(c, "retention")
    await publish(settings, [
        line(account.id, lam, "from eight days ago", old_ms),
        line(account.id, lam, "from today", now),
        activation(account.id, lam, old_ms),
    ])
    await stored(settings, "SELECT count(*) FROM log_lines WHERE lambda_id = $1", lam, expect=2)
    await stored(settings, "SELECT count(*) FROM activations WHERE lambda_id = $1", lam, expect=1)
    assert await pool.fetchval(f'SELECT count(*) FROM "{old_part}" WHERE lambda_id = $1',
                               lam) == 1

    # Stored but past the window: the search never shows it, even before the drop.
    async with account.client() as c:
        r = await c.get("/logs", params={"lambda_id": lam})
        assert [i["message"] for i in r.json()["items"]] == ["from today"]
        r = await c.get("/metrics", params={"lambda_id": lam, "last": "7d", "bucket": "day"})
        assert sum(i["total"] for i in r.json()["items"]) == 0

    dropped = await PartitionMaintainer(pool, retention_days=settings.retention_days).run_once()
    assert old_part in dropped and f"activations_p{old_day:%Y%m%d}" in dropped
    names = await partitions(pool, "log_lines")
    assert old_part not in names and today_part in names
    # Partitions exist ahead (today + 2) and the default stays as a safety net.
    assert f"log_lines_p{day_of(now + 2 * DAY_MS):%Y%m%d}" in names
    assert "log_lines_default" in names
    assert await pool.fetchval("SELECT count(*) FROM log_lines WHERE lambda_id = $1", lam) == 1
    async with account.client() as c:
        r = await c.get("/logs", params={"lambda_id": lam})
    assert [i["message"] for i in r.json()["items"]] == ["from today"]


async def test_old_rows_in_the_default_partition_are_deleted(
    settings: Settings, account: Account, pool: asyncpg.Pool
) -> None:
    now = int(time.time() * 1000)
    lam = str(uuid.uuid4())
    old_ms = now - 10 * DAY_MS  # no daily partition for that day: lands in the default
    await publish(settings, [line(account.id, lam, "very old", old_ms)])
    await stored(settings, "SELECT count(*) FROM log_lines_default WHERE lambda_id = $1", lam,
                 expect=1)
    await PartitionMaintainer(pool, retention_days=settings.retention_days).run_once()
    assert await pool.fetchval("SELECT count(*) FROM log_lines WHERE lambda_id = $1", lam) == 0


async def test_creating_a_day_moves_its_rows_out_of_the_default(
    settings: Settings, account: Account, pool: asyncpg.Pool
) -> None:
    ahead = datetime.now(UTC) + timedelta(days=20)  # beyond every partition made ahead
    lam = str(uuid.uuid4())
    await publish(settings, [line(account.id, lam, "from a fast clock",
                                  int(ahead.timestamp() * 1000))])
    await stored(settings, "SELECT count(*) FROM log_lines_default WHERE lambda_id = $1", lam,
                 expect=1)
    part = await pool.fetchval("SELECT fnbus_ensure_day_partition('log_lines', 'ts', $1)",
                               ahead.date())
    assert part == f"log_lines_p{ahead:%Y%m%d}"
    assert await pool.fetchval(f'SELECT count(*) FROM "{part}" WHERE lambda_id = $1', lam) == 1
    assert await pool.fetchval(
        "SELECT count(*) FROM log_lines_default WHERE lambda_id = $1", lam) == 0
    await pool.execute(f'DROP TABLE "{part}"')  # leave the session's database as it was
