"""The leader lease and the exactly-once fire record on the real PostgreSQL, with an injected clock."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from fnbus import db
from services.scheduler.lease import Lease
from services.scheduler.options import SchedulerOptions
from services.scheduler.store import Schedules

pytestmark = pytest.mark.integration


class FakeClock:
    def __init__(self, now_ms: int) -> None:
        self.now = now_ms

    def now_ms(self) -> int:
        return self.now

    def real_delay_s(self, until_ms: int) -> float:
        return (until_ms - self.now) / 1000


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await db.create_pool(database_url, max_size=4)
    yield p
    await p.close()


async def test_acquire_renew_and_steal_only_after_expiry(pool: asyncpg.Pool) -> None:
    clock = FakeClock(1_000_000)
    name = f"lease-{uuid.uuid4()}"
    a = Lease(pool, "a", clock, ttl_ms=10_000, renew_ms=3_000, name=name)
    b = Lease(pool, "b", clock, ttl_ms=10_000, renew_ms=3_000, name=name)
    assert await a.acquire() and a.is_leader() and a.term == 1
    assert not await b.acquire() and not b.is_leader()
    clock.now += 8_000  # a renews before expiry: still a, same term
    assert await a.acquire() and a.term == 1
    clock.now += 9_000  # 1 s before the renewed expiry: b still cannot steal
    assert not await b.acquire()
    # a trusts its lease only until expiry minus one renew period
    assert not a.is_leader()
    clock.now += 1_001  # a died: the lease expired, b takes it with a new term
    assert await b.acquire() and b.term == 2
    assert await a.current() == ("b", clock.now + 10_000)
    assert not await a.acquire() and a.term is None
    await b.release()  # graceful hand-over: a can take it at once
    assert await a.acquire() and a.term == 3


async def test_a_due_minute_is_recorded_once_even_with_two_leaders(pool: asyncpg.Pool) -> None:
    clock = FakeClock(1_740_000_000_000)  # a whole minute
    sid, lid = uuid.uuid4(), uuid.uuid4()
    await pool.execute(
        """INSERT INTO schedules (id, account_id, lambda_id, cron, payload, enabled, next_due_ms,
                                  created_ms, updated_ms)
           VALUES ($1, 'acc', $2, '* * * * *', $3::jsonb, true, $4, $4, $4)""",
        sid, lid, {"n": 1}, clock.now)
    opts = SchedulerOptions()
    one, two = Schedules(pool, None, clock, opts), Schedules(pool, None, clock, opts)
    fires, _ = await one.claim_due(clock.now + 5)
    mine = [f for f in fires if f.schedule_id == str(sid)]
    assert len(mine) == 1 and mine[0].due_ms == clock.now and mine[0].payload == {"n": 1}
    # A second (stale) leader at the same moment finds nothing due any more.
    again, _ = await two.claim_due(clock.now + 6)
    assert not [f for f in again if f.schedule_id == str(sid)]
    row = await pool.fetchrow("SELECT next_due_ms, last_invocation_ms FROM schedules WHERE id = $1",
                              sid)
    assert row["next_due_ms"] == clock.now + 60_000 and row["last_invocation_ms"] == clock.now
    # Even if next_due were rewound, the unique fire key refuses the same minute again.
    await pool.execute("UPDATE schedules SET next_due_ms = $2 WHERE id = $1", sid, clock.now)
    replay, _ = await two.claim_due(clock.now + 7)
    assert not [f for f in replay if f.schedule_id == str(sid)]
    unproduced = await one.unproduced(clock.now + 8, clock.now + 8)
    assert [f.activation_id for f in unproduced if f.schedule_id == str(sid)] == [mine[0].activation_id]
    await one.mark_produced(mine, clock.now + 9)
    assert not [f for f in await one.unproduced(clock.now + 10, clock.now + 10)
                if f.schedule_id == str(sid)]
