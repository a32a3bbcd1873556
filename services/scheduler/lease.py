"""Leader election: one row in ``scheduler_lease``, held by at most one instance at a time.

Contract of :class:`Lease`:
1. ``acquire()`` is one UPDATE (or the first INSERT): it succeeds when the row
   is expired or already ours, and then extends it to ``now + ttl``. It returns
   whether this instance leads now.
2. The leader calls ``acquire()`` every ``renew_ms``; it trusts its leadership
   only until ``valid_until_ms`` (the expiry it wrote, minus one renew period as
   a margin for clock skew and slow round trips).
3. A standby calls ``acquire()`` at the same pace, so a dead leader is replaced
   at most ``ttl + renew`` after its last renewal.
4. ``release()`` expires the row if it is ours (graceful shutdown hands over at once).
Leadership is an optimisation, not the safety net: a fire is recorded under a
unique (schedule, due minute) key, so even two leaders could not fire twice.
"""

from __future__ import annotations

import logging
from typing import Any

from services.scheduler.clock import Clock

log = logging.getLogger(__name__)

LEASE_NAME = "scheduler"


class Lease:
    def __init__(self, pool: Any, holder: str, clock: Clock, *, ttl_ms: int, renew_ms: int,
                 name: str = LEASE_NAME) -> None:
        self.pool = pool
        self.holder = holder
        self.clock = clock
        self.ttl_ms = ttl_ms
        self.renew_ms = renew_ms
        self.name = name
        self.valid_until_ms = 0
        self.term: int | None = None

    def is_leader(self) -> bool:
        return self.clock.now_ms() < self.valid_until_ms

    async def acquire(self) -> bool:
        now = self.clock.now_ms()
        expires = now + self.ttl_ms
        row = await self.pool.fetchrow(
            """INSERT INTO scheduler_lease (name, holder, expires_ms, term)
               VALUES ($1, $2, $3, 1)
               ON CONFLICT (name) DO UPDATE
                  SET holder = EXCLUDED.holder, expires_ms = EXCLUDED.expires_ms,
                      term = scheduler_lease.term
                             + CASE WHEN scheduler_lease.holder = EXCLUDED.holder THEN 0 ELSE 1 END
                WHERE scheduler_lease.expires_ms < $4 OR scheduler_lease.holder = EXCLUDED.holder
               RETURNING term""",
            self.name, self.holder, expires, now)
        was_leader = self.is_leader()
        if row is None:
            if was_leader:
                log.warning("lost the scheduler lease", extra={"holder": self.holder})
            self.valid_until_ms = 0
            self.term = None
            return False
        self.valid_until_ms = expires - self.renew_ms
        if self.term != row["term"]:
            log.info("leading the scheduler", extra={"holder": self.holder, "term": row["term"]})
        self.term = int(row["term"])
        return True

    async def release(self) -> None:
        self.valid_until_ms = 0
        self.term = None
        await self.pool.execute(
            "UPDATE scheduler_lease SET expires_ms = 0 WHERE name = $1 AND holder = $2",
            self.name, self.holder)

    async def current(self) -> tuple[str, int] | None:
        row = await self.pool.fetchrow(
            "SELECT holder, expires_ms FROM scheduler_lease WHERE name = $1", self.name)
        return None if row is None else (row["holder"], int(row["expires_ms"]))
