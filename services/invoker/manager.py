"""The container pool: owns every proxy, applies the placement of :mod:`pool`.

Contract:
1. ``acquire()`` returns a proxy reserved for one invocation of one lambda
   version, initialised with its code; it waits while the pool is full.
2. ``release()`` returns it: a healthy container becomes free-warm for the same
   version; a removed one is forgotten. Either way waiters are woken.
3. Pre-warmed runners per runtime are kept at ``prewarm_per_runtime``; warm
   containers idle longer than ``idle_ttl_s`` are reaped; ``drop_lambda()``
   removes free containers of versions that are no longer deployed.
   Free warm containers running more processes than their runner had at start
   (a lambda left children behind, e.g. a fork bomb after its callback) are
   removed within one reap interval, so nothing a call started idles with them.
4. ``stop()`` removes every container this pool started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from prometheus_client import Counter, Gauge

from fnbus.runner_protocol import LogLimit
from fnbus.sandbox import LABEL_ACCOUNT, LABEL_LAMBDA, ContainerRuntime
from services.invoker.pool import (
    Placement,
    VersionKey,
    place,
    prewarm_deficit,
    reap_idle,
    stale_versions,
)
from services.invoker.proxy import ContainerProxy, ProxyState

log = logging.getLogger(__name__)

POOL_CONTAINERS = Gauge("fnbus_pool_containers", "Containers in the invoker's pool", ["state"])
DEAD_CONTAINERS = Counter("fnbus_pool_dead_containers_total", "Idle containers found dead and replaced")
QUEUED = Counter("fnbus_pool_queued_total",
                 "Calls that waited for a container of their version to free up because enough "
                 "new ones were already starting (pool.place QUEUE)")
LEFTOVER_CONTAINERS = Counter("fnbus_pool_leftover_process_containers_total",
                              "Idle warm containers removed because a lambda left processes running")


@dataclass(frozen=True)
class PoolConfig:
    images: dict[str, str]  # runtime → runtime image (pre-warmed runners)
    prewarm_per_runtime: int = 2
    max_containers: int = 32
    idle_ttl_s: float = 300.0
    reap_interval_s: float = 5.0
    log_limit: LogLimit = LogLimit()
    init_timeout_s: float = 10.0  # a cold container's code must load within this
    # New containers of one version being started at once (0: no limit); more calls wait
    # for one of its containers to free up (pool.place, QUEUE).
    max_starting_per_version: int = 2


@dataclass(frozen=True)
class Code:
    code: str
    env: dict[str, str]
    can_use_prewarmed: bool  # no declared dependencies: any runner of the runtime will do


class CodeCache:
    """The code of recently started versions, least recently used dropped beyond ``max_entries``.

    Only cold starts read it (a warm container has its code already); a miss costs one
    registry call. Bounded so that an invoker running for months over many versions does
    not keep every version's code (up to 100,000 characters each) forever.
    """

    def __init__(self, max_entries: int = 512) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, int], Code] = OrderedDict()

    def get(self, key: tuple[str, int]) -> Code | None:
        code = self._entries.get(key)
        if code is not None:
            self._entries.move_to_end(key)
        return code

    def put(self, key: tuple[str, int], code: Code) -> None:
        self._entries[key] = code
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class ContainerPool:
    def __init__(self, engine: ContainerRuntime, config: PoolConfig) -> None:
        self.engine = engine
        self.config = config
        self.proxies: dict[int, ContainerProxy] = {}  # keyed by id(proxy): names come late
        self._changed = asyncio.Condition()
        self._starting: dict[VersionKey, int] = {}  # new containers being started, per version
        self._starting_prewarm: dict[str, int] = {rt: 0 for rt in config.images}
        self._tasks: set[asyncio.Task[None]] = set()
        self._reaper: asyncio.Task[None] | None = None
        self._closed = False

    # -- lifecycle --------------------------------------------------------------------
    async def start(self) -> None:
        for runtime in self.config.images:
            self._fill_prewarm(runtime)
        self._reaper = asyncio.create_task(self._reap_loop(), name="pool-reaper")

    async def stop(self) -> None:
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(p.remove() for p in list(self.proxies.values())),
                             return_exceptions=True)
        self.proxies.clear()

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _update_gauges(self) -> None:
        counts = {s.value: 0 for s in ProxyState}
        for proxy in self.proxies.values():
            counts[proxy.state.value] += 1
        for state, n in counts.items():
            POOL_CONTAINERS.labels(state).set(n)

    async def _notify(self) -> None:
        self._update_gauges()
        async with self._changed:
            self._changed.notify_all()

    # -- pre-warming and reaping ------------------------------------------------------
    def _fill_prewarm(self, runtime: str) -> None:
        if self._closed or runtime not in self.config.images:
            return
        slots = [p.slot() for p in self.proxies.values()]
        room = self.config.max_containers - len(slots)
        need = min(room, prewarm_deficit(slots, runtime, self.config.prewarm_per_runtime,
                                         self._starting_prewarm[runtime]))
        for _ in range(max(0, need)):
            self._starting_prewarm[runtime] += 1
            self._spawn(self._start_prewarmed(runtime), f"prewarm-{runtime}")

    async def _start_prewarmed(self, runtime: str) -> None:
        proxy = ContainerProxy(self.engine, runtime, self.config.images[runtime],
                               {"fnbus.prewarmed": "true"})
        try:
            await proxy.start()
        except Exception as exc:  # noqa: BLE001 - logged; the next invocation goes cold
            log.warning("pre-warming failed", extra={"runtime": runtime, "error": str(exc)})
            return
        finally:
            self._starting_prewarm[runtime] -= 1
        if self._closed:
            await proxy.remove()
            return
        self.proxies[id(proxy)] = proxy
        await self._notify()

    async def _reap_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.reap_interval_s)
            now = time.monotonic()
            self._prune_dead()
            slots = [p.slot() for p in self.proxies.values()]
            for slot_id in reap_idle(slots, now, self.config.idle_ttl_s):
                await self._remove_by_slot(slot_id)
            await self._remove_leftovers()
            for runtime in self.config.images:
                self._fill_prewarm(runtime)

    def _prune_dead(self) -> None:
        """Forget idle containers whose runner went away (OOM killer, docker rm, a crash)."""
        for key, proxy in list(self.proxies.items()):
            if proxy.dead():
                del self.proxies[key]
                DEAD_CONTAINERS.inc()
                log.warning("an idle container died; replacing it",
                            extra={"container": proxy.id, "lambda_id": proxy.key.lambda_id if proxy.key else None})
                self._spawn(proxy.remove(), "remove-dead")
                self._fill_prewarm(proxy.runtime)

    async def _remove_leftovers(self) -> None:
        """Contract point 3: free warm containers with processes beyond their runner."""
        for key, proxy in list(self.proxies.items()):
            if proxy.state is not ProxyState.WARM or proxy.slot().busy or proxy.handle is None \
                    or proxy.baseline_processes is None:
                continue
            count = await self.engine.process_count(proxy.handle)
            if count is None or count <= proxy.baseline_processes:
                continue
            if self.proxies.get(key) is not proxy or proxy.slot().busy:
                continue  # taken by a call while we looked: checked again next round
            del self.proxies[key]
            LEFTOVER_CONTAINERS.inc()
            log.warning("a lambda left processes running after its invocation; removing its container",
                        extra={"container": proxy.id, "processes": count,
                               "account_id": proxy.key.account_id if proxy.key else None,
                               "lambda_id": proxy.key.lambda_id if proxy.key else None})
            self._spawn(proxy.remove(), "remove-leftover")
        await self._notify()

    async def _remove_by_slot(self, slot_id: str) -> None:
        for key, proxy in list(self.proxies.items()):
            if proxy.id == slot_id and not proxy.slot().busy:
                del self.proxies[key]
                await proxy.remove()
        await self._notify()

    async def drop_lambda(self, lambda_id: str, keep_version: int | None) -> None:
        """Remove free containers of ``lambda_id`` other than ``keep_version`` (undeploy, redeploy)."""
        slots = [p.slot() for p in self.proxies.values()]
        for slot_id in stale_versions(slots, lambda_id, keep_version):
            await self._remove_by_slot(slot_id)

    # -- acquire / release --------------------------------------------------------------
    async def acquire(self, key: VersionKey, runtime: str, image: str,
                      load_code: Callable[[], Awaitable[Code]]) -> tuple[ContainerProxy, bool]:
        """A reserved, initialised proxy for ``key`` and whether this was a cold start."""
        code: Code | None = None
        queued = False
        while True:
            self._prune_dead()
            if code is None and not any(p.key == key for p in self.proxies.values()):
                code = await load_code()
            slots = [p.slot() for p in self.proxies.values()]
            decision = place(slots, key, runtime,
                             can_use_prewarmed=code.can_use_prewarmed if code else False,
                             max_containers=self.config.max_containers,
                             starting=self._starting.get(key, 0),
                             max_starting=self.config.max_starting_per_version)
            if decision.placement is Placement.WARM:
                proxy = self._by_slot(decision.slot_id)
                proxy.reserved = True
                return proxy, False
            if decision.placement in (Placement.FULL, Placement.QUEUE):
                if decision.placement is Placement.QUEUE and not queued:
                    queued = True
                    QUEUED.inc()
                async with self._changed:
                    await self._wait_changed()
                continue
            if code is None:
                code = await load_code()
                continue  # re-place: loading took time
            if decision.placement is Placement.PREWARMED:
                proxy = self._by_slot(decision.slot_id)
                proxy.reserved = True
                self._fill_prewarm(runtime)
            else:
                for victim in decision.evict:
                    await self._remove_by_slot(victim)
                proxy = ContainerProxy(self.engine, runtime, image, {
                    LABEL_ACCOUNT: key.account_id, LABEL_LAMBDA: key.lambda_id})
                proxy.reserved = True
                self.proxies[id(proxy)] = proxy
                self._starting[key] = self._starting.get(key, 0) + 1
                try:
                    await proxy.start()
                except BaseException:
                    self.proxies.pop(id(proxy), None)
                    self._started(key)
                    await self._notify()
                    raise
                self._started(key)
                await self._notify()  # a queued call of this version may start the next one
            try:
                await proxy.initialize(key, code.code, code.env, self.config.log_limit,
                                       timeout_s=self.config.init_timeout_s)
            except BaseException:
                self.proxies.pop(id(proxy), None)
                await self._notify()
                raise
            self._update_gauges()
            return proxy, True

    def _started(self, key: VersionKey) -> None:
        """One start of ``key`` is over (a queued call may start the next: waiters re-place
        on the next release or within a second)."""
        left = self._starting.get(key, 0) - 1
        if left > 0:
            self._starting[key] = left
        else:
            self._starting.pop(key, None)

    async def _wait_changed(self) -> None:
        """Wait (holding the condition) for a release, at most a second."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout=1.0)

    def _by_slot(self, slot_id: str | None) -> ContainerProxy:
        for proxy in self.proxies.values():
            if proxy.id == slot_id:
                return proxy
        raise KeyError(slot_id)

    async def release(self, proxy: ContainerProxy) -> None:
        proxy.reserved = False
        if proxy.state is not ProxyState.WARM:
            self.proxies.pop(id(proxy), None)
            if proxy.state is not ProxyState.REMOVED:
                self._spawn(proxy.remove(), "remove")
        await self._notify()

    def stats(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for proxy in self.proxies.values():
            state = "prewarmed" if proxy.key is None and proxy.state is ProxyState.READY \
                else proxy.state.value
            counts[state] = counts.get(state, 0) + 1
        return counts
