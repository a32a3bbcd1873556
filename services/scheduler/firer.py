"""The leader loop: hold the lease, fire due schedules once per due minute, produce requests.

Contract of :class:`Firer`:
1. Every instance runs the loop; only the lease holder fires (``lease.py``).
2. The loop wakes at each scheduler-minute boundary (that is when schedules
   become due) and every ``lease_renew_ms`` to renew or try to take the lease.
3. A fire is first recorded and its schedule advanced in one transaction
   (``Schedules.claim_due``); then the InvocationRequest is produced (keyed by
   lambda id, ``source=scheduler``, activation id derived from schedule id and
   due minute) and, once the broker acknowledged it, marked produced.
4. ``prepare_ahead_ms`` before a minute boundary the leader already records
   (step 3's transaction) the fires of that minute and keeps them in memory;
   at the boundary it only produces them — that is what keeps the fire lag of
   10,000 schedules under a second. A schedule changed or deleted in those last
   seconds before its minute still fires that minute with its previous state.
5. Recorded but unacknowledged fires (the leader died or the broker failed in
   between) are produced again by the leader after ``reproduce_after_ms``, as
   long as their minute is within the catch-up window. The same activation id
   makes the repeat recognisable downstream.
6. ``stop()`` stops firing, waits for the batch in hand, and releases the lease
   so a standby takes over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from fnbus.kafka import Producer
from fnbus.schemas import EventSource, InvocationRequest
from services.scheduler.clock import MINUTE_MS, Clock, minute_floor
from services.scheduler.lease import Lease
from services.scheduler.options import SchedulerOptions
from services.scheduler.store import Fire, Schedules

log = logging.getLogger(__name__)

FIRES = Counter("fnbus_scheduler_fires_total", "Scheduled invocations produced")
FIRE_LAG = Histogram(
    "fnbus_scheduler_fire_lag_seconds", "Due minute → request acknowledged by the broker",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 15, 60))
LEADER = Gauge("fnbus_scheduler_leader", "1 while this instance holds the lease")
WAKE_SLACK_S = 0.002  # wake just after the boundary, never just before it
PRUNE_EVERY_MS = 10 * MINUTE_MS


class Firer:
    def __init__(self, schedules: Schedules, producer: Producer, lease: Lease, clock: Clock,
                 options: SchedulerOptions, invocations_topic: str) -> None:
        self.schedules = schedules
        self.producer = producer
        self.lease = lease
        self.clock = clock
        self.options = options
        self.topic = invocations_topic
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_prune_ms = 0
        self._prepared: dict[int, list[Fire]] = {}  # due minute → fires recorded ahead
        self.last_error: str | None = None

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("firer already started")
        self._stop.clear()
        self._task = asyncio.create_task(self._run(), name="scheduler-firer")

    async def stop(self) -> None:
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(task, timeout=10)
            except (TimeoutError, asyncio.CancelledError):
                pass
        if self.lease.term is not None:
            with contextlib.suppress(Exception):
                await self.lease.release()
        LEADER.set(0)

    async def check(self) -> bool:
        return self._task is not None and not self._task.done()

    # -- the loop ------------------------------------------------------------------------
    async def _run(self) -> None:
        renew_s = self.options.lease_renew_ms / 1000
        next_renew = 0.0
        while not self._stop.is_set():
            try:
                if time.monotonic() >= next_renew:
                    was = self.lease.term
                    leading = await self.lease.acquire()
                    LEADER.set(1 if leading else 0)
                    next_renew = time.monotonic() + renew_s
                    if leading and was is None:
                        await self.reproduce(fresh_leader=True)
                    if not leading:
                        self._prepared.clear()  # recorded fires: the new leader produces them
                if self.lease.is_leader():
                    await self.tick()
                self.last_error = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the loop must outlive a database or broker hiccup
                self.last_error = repr(exc)
                log.exception("scheduler tick failed; retrying")
                next_renew = min(next_renew, time.monotonic() + renew_s)
            await self._sleep(min(max(next_renew - time.monotonic(), 0.0), self._until_boundary_s()))

    def _until_boundary_s(self) -> float:
        now = self.clock.now_ms()
        boundary = minute_floor(now) + MINUTE_MS
        prepare_at = boundary - self.options.prepare_ahead_ms
        target = prepare_at if now < prepare_at and boundary not in self._prepared else boundary
        return max(self.clock.real_delay_s(target), 0.0) + WAKE_SLACK_S

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)

    async def tick(self) -> int:
        """Fire everything due now, prepare the coming minute; return how many were produced."""
        produced = 0
        confirming: list[asyncio.Task[None]] = []
        now = self.clock.now_ms()
        for due in sorted(d for d in self._prepared if d <= now):
            fires = self._prepared.pop(due)
            if fires and self.lease.is_leader():  # a lost lease: the new leader produces them
                confirming.append(asyncio.create_task(
                    self._confirm(fires, await self._enqueue(fires))))
                produced += len(fires)
        try:
            while self.lease.is_leader() and not self._stop.is_set():
                now = self.clock.now_ms()
                fires, seen = await self.schedules.claim_due(now)
                if fires:
                    # Pipelined: the next batch is claimed while the broker acknowledges this one.
                    futures = await self._enqueue(fires)
                    confirming.append(asyncio.create_task(self._confirm(fires, futures)))
                    produced += len(fires)
                if seen < self.options.fire_batch:
                    break
        finally:
            await asyncio.gather(*confirming)
        await self.prepare()
        await self.reproduce(fresh_leader=False)
        now = self.clock.now_ms()
        if now - self._last_prune_ms >= PRUNE_EVERY_MS:
            self._last_prune_ms = now
            await self.schedules.prune_fires(now)
        return produced

    async def prepare(self) -> None:
        """Record the fires of the coming minute if it starts within ``prepare_ahead_ms``."""
        now = self.clock.now_ms()
        boundary = minute_floor(now) + MINUTE_MS
        if boundary - now > self.options.prepare_ahead_ms or boundary in self._prepared:
            return
        fires: list[Fire] = []
        while self.lease.is_leader() and not self._stop.is_set():
            batch, seen = await self.schedules.claim_due(boundary, self.clock.now_ms())
            fires.extend(batch)
            if seen < self.options.fire_batch:
                break
        self._prepared[boundary] = fires

    async def reproduce(self, *, fresh_leader: bool) -> None:
        now = self.clock.now_ms()
        # A fresh leader takes over whatever the previous one left unacknowledged;
        # the running leader only what it failed to produce itself a while ago.
        before = now if fresh_leader else now - self._scheduler_ms(self.options.reproduce_after_ms)
        fires = await self.schedules.unproduced(now, before)
        if fires:
            log.warning("producing fires again that were never acknowledged",
                        extra={"count": len(fires)})
            await self.produce(fires)

    def _scheduler_ms(self, real_ms: int) -> int:
        return int(real_ms * 60 / self.options.seconds_per_minute)

    async def produce(self, fires: Sequence[Fire]) -> None:
        await self._confirm(fires, await self._enqueue(fires))

    async def _enqueue(self, fires: Sequence[Fire]) -> list[asyncio.Future[Any]]:
        futures = []
        for fire in fires:
            request = InvocationRequest(
                activation_id=fire.activation_id, account_id=fire.account_id,
                lambda_id=fire.lambda_id, source=EventSource.SCHEDULER, headers=[],
                payload=fire.payload, reply_to=None)
            futures.append(await self.producer.send_nowait(
                self.topic, request.to_bytes(), key=fire.lambda_id))
        return futures

    async def _confirm(self, fires: Sequence[Fire], futures: list[asyncio.Future[Any]]) -> None:
        await asyncio.gather(*futures)
        acked = self.clock.now_ms()
        for fire in fires:
            lag_s = (acked - fire.due_ms) / 1000 * self.options.seconds_per_minute / 60
            FIRE_LAG.observe(max(lag_s, 0.0))
        FIRES.inc(len(fires))
        await self.schedules.mark_produced(fires, acked)
        log.info("fired schedules", extra={"count": len(fires),
                                           "due_ms": min(f.due_ms for f in fires)})
