"""Invoker service: invocation requests → warm container pool → results."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
from aiokafka import ConsumerRecord
from fastapi import FastAPI
from prometheus_client import Gauge

from fnbus import dockerutil, resources
from fnbus.config import Settings
from fnbus.egress import Egress, EgressPolicy
from fnbus.lambda_cache import LambdaCache
from fnbus.sandbox import (
    LABEL_LAMBDA,
    LABEL_OWNER,
    ContainerHandle,
    ContainerRuntime,
    ContainerStartError,
    DockerRuntime,
    SandboxLimits,
    userns_base,
)
from fnbus.schemas import LambdaChange
from fnbus.service import TaskGroup, create_service_app
from fnbus.topics import RETRY_DELAYS_S, Topics, ensure_topics
from services.invoker.dispatch import Dispatcher
from services.invoker.engine import Invoker
from services.invoker.manager import ContainerPool, PoolConfig
from services.invoker.retries import PolicyCache, Retries, RetryRelay
from services.invoker.toolbelt import Toolbelt

log = logging.getLogger(__name__)

USERNS_REMAP = Gauge("fnbus_invoker_userns_remap",
                     "1 when the Docker engine remaps container users (userns-remap), else 0")


def _ordering_key(record: ConsumerRecord) -> str | None:
    """Requests with a partition key (e.g. a conversation id) run in order per lambda."""
    for name, value in record.headers or ():
        if name == "fnbus-order-key" and value:
            return f"{record.key!r}/{value.decode()}"
    return None


def _account_of(record: ConsumerRecord) -> str | None:
    """The account a request belongs to: each gets a fair share of the invoker."""
    try:
        account = json.loads(record.value).get("account_id")
    except (ValueError, AttributeError, TypeError):
        return None  # malformed; the handler logs and drops it
    return account if isinstance(account, str) else None


def userns_remapped(info: dict[str, object]) -> bool:
    """Whether ``docker info`` says the engine runs with ``userns-remap``."""
    try:
        return userns_base(info) is not None
    except ContainerStartError:
        return True  # remapped, with a root dir the sandbox cannot read (it says so on start)


def _is_sync(record: ConsumerRecord) -> bool:
    """A caller waits for this request (it names a reply topic): it goes before async work."""
    try:
        return bool(json.loads(record.value).get("reply_to"))
    except (ValueError, AttributeError, TypeError):
        return False


class StartLimited:
    """A container runtime that runs at most ``limit`` container starts at once.

    After an invoker's relaunch (or any burst) an account's whole share of calls
    asks for cold containers together. On a small host a dozen starts at once take
    many times longer each than a few at a time (measured on 2 cores: 16 together,
    6-12 s each), and every one of those calls waits for its own. Bounded, the
    first containers are warm within a second and the calls queued behind them
    reuse them. Starts a call waits for (labelled with a lambda) go before
    pre-warming ones.
    """

    def __init__(self, runtime: ContainerRuntime, limit: int) -> None:
        self._runtime = runtime
        self._free = max(1, limit)
        # Pre-warming never holds every slot: a call's start need not wait behind it.
        self._background_max = max(1, limit - 1)
        self._background = 0
        self._queue: list[tuple[int, int, asyncio.Future[None]]] = []  # (priority, seq, turn)
        self._seq = itertools.count()

    async def start(self, image: str, labels: dict[str, str]) -> ContainerHandle:
        priority = 0 if LABEL_LAMBDA in labels else 1  # 1: pre-warming, nobody waits for it
        await self._acquire(priority)
        try:
            return await self._runtime.start(image, labels)
        finally:
            self._release(priority)

    async def _acquire(self, priority: int) -> None:
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._queue, (priority, next(self._seq), turn))
        self._grant()
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._release(priority)  # granted just as we were cancelled: pass it on
            raise

    def _release(self, priority: int) -> None:
        self._free += 1
        if priority:
            self._background -= 1
        self._grant()

    def _grant(self) -> None:
        """Hand free slots to waiting starts, calls' first, in arrival order."""
        while self._free and self._queue:
            priority, _, turn = self._queue[0]
            if turn.done():  # cancelled while waiting
                heapq.heappop(self._queue)
                continue
            if priority and self._background >= self._background_max:
                return  # only pre-warming waits, and it has its share
            heapq.heappop(self._queue)
            self._free -= 1
            if priority:
                self._background += 1
            turn.set_result(None)

    async def kill(self, handle: ContainerHandle) -> None:
        await self._runtime.kill(handle)

    async def remove(self, handle: ContainerHandle) -> None:
        await self._runtime.remove(handle)

    async def exit_reason(self, handle: ContainerHandle) -> str | None:
        return await self._runtime.exit_reason(handle)

    async def seal(self, handle: ContainerHandle) -> None:
        await self._runtime.seal(handle)

    async def process_count(self, handle: ContainerHandle) -> int | None:
        return await self._runtime.process_count(handle)


#: How long a starting invoker waits for its first pre-warmed runner before it joins.
PREWARM_WAIT_S = 10.0


async def _first_prewarmed(pool: ContainerPool, timeout_s: float) -> bool:
    """Wait until the pool holds a pre-warmed runner; False after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not pool.stats().get("prewarmed"):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def _stale_containers(client: Any, engine: DockerRuntime) -> list[ContainerHandle]:
    """Containers an earlier run with this instance id left behind (it crashed)."""
    found = await asyncio.to_thread(client.containers.list, all=True,
                                    filters={"label": [f"{LABEL_OWNER}={engine.owner}"]})
    return [ContainerHandle(id=c.id, name=c.name, image="", socket_dir=engine.sockets_dir / c.name)
            for c in found]


async def _remove_stale(engine: DockerRuntime, stale: list[ContainerHandle]) -> None:
    # One at a time: a burst of removals slows the engine's starts of new containers.
    began = time.monotonic()
    for handle in stale:
        with contextlib.suppress(Exception):
            await engine.remove(handle)
    log.info("removed containers left by a previous run",
             extra={"count": len(stale), "elapsed_s": round(time.monotonic() - began, 2)})


async def _settled(task: asyncio.Task[Any]) -> None:
    with contextlib.suppress(Exception):
        await task


def create_app(settings: Settings) -> FastAPI:
    topics = Topics(settings.topic_prefix)
    instance = settings.instance_id or "invoker-local"

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        health = app.state.health
        began = time.monotonic()
        images = {"nodejs": settings.runtime_image_node, "python": settings.runtime_image_python}
        tasks = TaskGroup()
        async with contextlib.AsyncExitStack() as stack:
            docker_client = dockerutil.client(settings.docker_host)
            stack.callback(docker_client.close)
            health.add("docker", dockerutil.health_check(docker_client))
            engine = DockerRuntime(
                docker_client, settings.sockets_path() / instance,
                SandboxLimits(settings.lambda_memory_mb, settings.lambda_cpus,
                              settings.lambda_pids_limit, settings.lambda_tmpfs_mb),
                owner=instance)
            # Containers a previous run with this id left behind (a crash) are listed
            # while the Kafka clients start, before the pool starts its own (same owner
            # label), and removed in the background: their removal takes seconds on a
            # busy host, and the invoker need not wait for it to take work.
            listing = asyncio.create_task(_stale_containers(docker_client, engine))
            stack.push_async_callback(_settled, listing)
            engine_info = asyncio.create_task(asyncio.to_thread(docker_client.info))
            stack.push_async_callback(_settled, engine_info)
            await ensure_topics(settings.kafka_bootstrap, topics.specs())
            producer = await stack.enter_async_context(
                resources.producer(settings, health, "fnbus-invoker"))
            registry = httpx.AsyncClient(
                base_url=settings.registry_url, timeout=10,
                headers={"Authorization": f"Bearer {settings.service_token}"})
            stack.push_async_callback(registry.aclose)
            # Lambdas' outbound HTTP (allowlist, network policy, limits) and the toolbelt
            # that brokers it, secrets and certificates for every invocation.
            egress = Egress(EgressPolicy.from_settings(settings))
            await stack.enter_async_context(egress)
            toolbelt = Toolbelt(registry=registry, egress=egress, settings=settings)
            cache = LambdaCache(settings.kafka_bootstrap, topics.lambda_changes)
            await cache.start()
            stack.push_async_callback(cache.stop)
            health.add("lambda_cache", cache.check)
            stale = await listing
            try:
                remapped = userns_remapped(await engine_info)
            except Exception as exc:  # noqa: BLE001 - the docker health check says why
                log.warning("cannot read the engine's security options", extra={"error": str(exc)})
            else:
                USERNS_REMAP.set(int(remapped))
            starts = settings.invoker_container_starts or os.cpu_count() or 2
            pool = ContainerPool(StartLimited(engine, starts), PoolConfig(
                images=images, prewarm_per_runtime=settings.prewarm_per_runtime,
                max_containers=settings.max_containers,
                max_starting_per_version=settings.max_starting_per_version,
                idle_ttl_s=settings.idle_container_ttl_s,
                init_timeout_s=settings.deploy_init_timeout_ms / 1000))
            await pool.start()
            stack.push_async_callback(pool.stop)
            app.state.pool = pool
            invoker = Invoker(
                pool=pool, producer=producer, cache=cache, registry=registry, topics=topics,
                instance=instance, default_timeout_ms=settings.lambda_timeout_ms,
                runtime_images=images, max_per_account=settings.max_concurrent_per_account,
                retries=Retries(producer, topics, PolicyCache(registry)), toolbelt=toolbelt,
                max_result_bytes=settings.max_result_bytes)
            app.state.invoker = invoker
            # Due retries go back to the invocations topic; a waiting partition is paused.
            relay = RetryRelay(
                settings.kafka_bootstrap, [topics.retry(d) for d in RETRY_DELAYS_S],
                group_id=topics.group("invoker-retries"), producer=producer,
                invocations_topic=topics.invocations, client_id=f"{instance}-retries")
            stack.push_async_callback(relay.stop)
            health.add("retry_relay", relay.ping)

            async def relay_loop() -> None:
                # Its group is a dynamic one: after a crash, start() waits for the dead
                # member's session to expire. The invoker answers meanwhile; due retries
                # wait those seconds.
                await relay.start()
                await relay.run()

            tasks.spawn(relay_loop(), "retry-relay")

            # Redeploys and undeploys retire the old versions' warm containers; a newly
            # deployed version's code is read ahead of its first call.
            changes: asyncio.Queue[LambdaChange] = asyncio.Queue()
            cache.listeners.append(changes)

            async def retire() -> None:
                while True:
                    change = await changes.get()
                    keep = None if change.deleted else change.deployed_version
                    await pool.drop_lambda(change.lambda_id, keep)
                    await invoker.prefetch_code(change)

            tasks.spawn(retire(), "retire-versions")
            # A static member of the invokers' group, named by the instance id: relaunched
            # after a crash it takes its partitions back at once; a second process with
            # the same id fences this one (docs/containers.md, scaling out).
            dispatcher = Dispatcher(
                settings.kafka_bootstrap, [topics.invocations], group_id=topics.group("invoker"),
                handler=invoker.handle_record, key_of=_ordering_key, group_of=_account_of,
                urgent_of=_is_sync,
                max_per_group=settings.max_concurrent_per_account,
                max_in_flight=settings.max_containers * 2, client_id=instance,
                drain_timeout_s=settings.lambda_timeout_ms / 1000 + 10,
                group_instance_id=instance,
                session_timeout_ms=settings.invoker_session_timeout_ms)
            # Join once a runner is ready: the first requests (after a crash, a backlog)
            # then run on it and on the warm containers it turns into, instead of each
            # waiting for a cold start of its own.
            if settings.prewarm_per_runtime and not await _first_prewarmed(pool, PREWARM_WAIT_S):
                log.warning("no pre-warmed runner yet; consuming anyway",
                            extra={"waited_s": PREWARM_WAIT_S})
            await dispatcher.start()  # returns once the group assigned its partitions
            if stale:
                reclaim = asyncio.create_task(_remove_stale(engine, stale), name="reclaim")
                stack.push_async_callback(_settled, reclaim)
            log.info("consuming invocation requests", extra={
                "instance": instance, "startup_s": round(time.monotonic() - began, 2)})
            stack.push_async_callback(dispatcher.stop)
            health.add("kafka_consumer", dispatcher.ping)
            dispatch_task = tasks.spawn(dispatcher.run(), "dispatch")
            health.add("loops", tasks.check)
            yield
            # Drain: stop fetching, let running invocations finish and commit.
            dispatcher.request_stop()
            relay.request_stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(dispatch_task),
                                       timeout=settings.lambda_timeout_ms / 1000 + 10)
            await tasks.stop(grace_s=0)

    app = create_service_app("invoker", settings, lifespan)

    @app.get("/internal/pool", include_in_schema=False)
    async def pool_stats() -> dict[str, int]:
        return app.state.pool.stats()

    return app

