"""Deployer service: lambda version → image, smoke-init, Deploying → Deployed / Failed.

For each deploy request:
1. publish Deploying;
2. build the version's image (:mod:`services.deployer.build`);
3. smoke-initialise it in the sandbox: start a container, load the code; a
   syntax error (or a throw at load time) fails the deployment with its line, and
   code that does not finish loading within ``deploy_init_timeout_ms`` (an
   endless loop at the top level) fails it with that cause. The container is
   killed right after the init, whatever happened (nothing the code started at
   load time, such as a timer, outlives it);
4. on success, remove the lambda's images beyond the last ``keep_deployments``
   versions (:meth:`Builder.prune`), then publish Deployed (with the image);
   otherwise publish Failed (with the cause).
An undeploy request removes the lambda's images; the invoker retires its
containers when the registry publishes the undeployed state.

Up to ``deploy_concurrency`` requests run at once, in the order of
:class:`services.deployer.queue.DeployQueue` (one lambda at a time, a slot always
left for other accounts, round robin between accounts). Offsets are committed
only up to the oldest request not finished, so a deployer that dies redelivers
what it had in hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from aiokafka import ConsumerRecord, TopicPartition
from docker.errors import DockerException
from fastapi import FastAPI
from prometheus_client import Histogram
from pydantic import ValidationError

from fnbus import dockerutil, resources
from fnbus.config import Settings
from fnbus.dependencies import DependencyRefused, check_dependencies
from fnbus.kafka import Consumer, Producer
from fnbus.runner_protocol import RunnerConnection, RunnerError, RunnerInitError
from fnbus.sandbox import (
    LABEL_ACCOUNT,
    LABEL_LAMBDA,
    ContainerError,
    ContainerHandle,
    DockerRuntime,
    SandboxLimits,
)
from fnbus.schemas import DeploymentState, DeploymentStatus, DeployRequest
from fnbus.service import TaskGroup, create_service_app
from fnbus.topics import Topics, ensure_topics
from services.deployer.build import Builder, BuildFailed
from services.deployer.queue import DeployQueue, Job, OffsetTracker

log = logging.getLogger(__name__)

DEPLOY_SECONDS = Histogram("fnbus_deploy_seconds", "Deploy request → final state", ["outcome"],
                           buckets=(0.5, 1, 2, 3, 5, 8, 13, 30, 60, 120, 300))
_WIRE = {"nodejs": "node", "python": "python"}
#: On smoke-init containers: the deployment they check.
LABEL_SMOKE = "fnbus.smoke"
CONNECT_TIMEOUT_S = 20.0  # the runner's start, under load
DEFAULT_INIT_TIMEOUT_S = 10.0
DEFAULT_KEEP_DEPLOYMENTS = 5
#: Requests held (queued or running) before the deployer stops reading more.
MAX_PENDING = 256
RETRY_PAUSE_S = 1.0


class Deployer:
    def __init__(self, builder: Builder, sandbox: DockerRuntime, producer: Producer,
                 topics: Topics, *, init_timeout_s: float = DEFAULT_INIT_TIMEOUT_S,
                 keep_deployments: int = DEFAULT_KEEP_DEPLOYMENTS) -> None:
        self.builder = builder
        self.sandbox = sandbox
        self.producer = producer
        self.topics = topics
        self.init_timeout_s = init_timeout_s
        self.keep_deployments = keep_deployments
        self._cleanups: set[asyncio.Task[None]] = set()
        self._generation: dict[str, int] = {}

    async def _remove_images(self, lambda_id: str, extra: dict[str, object]) -> None:
        generation = self._generation.get(lambda_id, 0)
        removed = await self.builder.remove_images(
            lambda_id, still_wanted=lambda: self._generation.get(lambda_id, 0) == generation)
        log.info("undeployed", extra={**extra, "images_removed": removed})

    async def stop(self) -> None:
        for task in list(self._cleanups):
            task.cancel()
        await asyncio.gather(*self._cleanups, return_exceptions=True)

    async def _status(self, request: DeployRequest, state: DeploymentState,
                      image: str | None = None, cause: str | None = None) -> None:
        status = DeploymentStatus(deployment_id=request.deployment_id,
                                  account_id=request.account_id, lambda_id=request.lambda_id,
                                  version=request.version, state=state, image=image, cause=cause)
        await self.producer.send(self.topics.deployments, status.to_bytes(), key=request.lambda_id)

    async def _discard(self, handle: ContainerHandle) -> None:
        await self.sandbox.kill(handle)
        await self.sandbox.remove(handle)

    async def smoke_init(self, request: DeployRequest, image: str) -> None:
        """Load the code in a sandboxed container of the new image; raise BuildFailed if it fails.

        The container is killed and removed before this returns, whatever happened.
        """
        try:
            handle = await self.sandbox.start(image, {LABEL_SMOKE: request.deployment_id,
                                                      LABEL_ACCOUNT: request.account_id,
                                                      LABEL_LAMBDA: request.lambda_id})
        except ContainerError as exc:
            raise BuildFailed(f"the image does not start: {exc}") from exc
        try:
            async with RunnerConnection() as conn:
                await conn.connect(handle.socket_path, timeout_s=CONNECT_TIMEOUT_S)
                await self.sandbox.seal(handle)
                try:
                    async with asyncio.timeout(self.init_timeout_s):
                        await conn.init(code=request.code, runtime=_WIRE[request.runtime.value],
                                        account_id=request.account_id,
                                        lambda_id=request.lambda_id, env=request.env)
                except TimeoutError:
                    raise BuildFailed(
                        f"the code did not finish loading within {self.init_timeout_s:g} s "
                        "(an endless loop at the top level?); its container was killed") from None
        except RunnerInitError as exc:
            where = f" (line {exc.line})" if exc.line else ""
            raise BuildFailed(f"{exc}{where}") from exc
        except RunnerError as exc:
            reason = await self.sandbox.exit_reason(handle)
            raise BuildFailed(f"the runner did not start: {reason or exc}") from exc
        except OSError as exc:
            raise BuildFailed(f"the sandbox failed: {exc}") from exc
        finally:
            # Shielded: even a deployer shutting down kills what the code left running.
            await asyncio.shield(self._discard(handle))

    async def handle(self, request: DeployRequest) -> None:
        extra = {"lambda_id": request.lambda_id, "version": request.version,
                 "deployment_id": request.deployment_id}
        # A later request for the same lambda (a redeploy) cancels pending image cleanup.
        self._generation[request.lambda_id] = self._generation.get(request.lambda_id, 0) + 1
        if request.action == "undeploy":
            # In the background: removal waits for the invoker to retire the
            # containers, and must not hold up the next deploy request.
            task = asyncio.create_task(self._remove_images(request.lambda_id, extra))
            self._cleanups.add(task)
            task.add_done_callback(self._cleanups.discard)
            return
        started = time.perf_counter()
        await self._status(request, DeploymentState.DEPLOYING)
        artifact = None
        try:
            try:
                check_dependencies(request.dependencies)
            except DependencyRefused as exc:
                raise BuildFailed(str(exc)) from exc
            artifact = await self.builder.build(request)
            await self.smoke_init(request, artifact.image)
        except BuildFailed as exc:
            log.info("deployment failed", extra={**extra, "cause": str(exc)})
            DEPLOY_SECONDS.labels("failed").observe(time.perf_counter() - started)
            if artifact is not None and artifact.new_tag:
                # Never deployable, and no earlier deployment used this tag.
                await self.builder.remove_image(artifact.image)
            await self._status(request, DeploymentState.FAILED, cause=str(exc)[:2000])
            return
        # Before Deployed is announced: whoever sees it sees the lambda's images as they stay.
        try:
            removed = await self.builder.prune(request.lambda_id, self.keep_deployments,
                                               current=artifact.image)
        except DockerException as exc:  # the next deploy of the lambda prunes again
            removed = 0
            log.warning("old images not removed", extra={**extra, "error": str(exc)})
        DEPLOY_SECONDS.labels("deployed").observe(time.perf_counter() - started)
        log.info("deployed", extra={**extra, "image": artifact.image, "reused": artifact.reused,
                                    "old_images_removed": removed,
                                    "seconds": round(time.perf_counter() - started, 3)})
        await self._status(request, DeploymentState.DEPLOYED, image=artifact.image)


class DeployLoop:
    """Reads deploy requests and runs them side by side, in the order of a :class:`DeployQueue`.

    1. ``run()`` reads until ``request_stop()``; it stops reading while ``MAX_PENDING``
       requests are in hand.
    2. A request whose handling raises (the broker or the engine failed) is queued
       again after a pause; its offset stays uncommitted until it is done.
    3. On stop, running deploys get ``grace_s`` to finish, then are cancelled
       (uncommitted, they are redelivered to the next deployer).
    """

    def __init__(self, consumer: Consumer, deployer: Deployer, slots: int,
                 grace_s: float = 8.0) -> None:
        self.consumer = consumer
        self.deployer = deployer
        self.queue: DeployQueue[DeployRequest] = DeployQueue(slots)
        self.offsets: OffsetTracker[TopicPartition] = OffsetTracker()
        self.grace_s = grace_s
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._changed = asyncio.Event()
        self._commit_lock = asyncio.Lock()

    def request_stop(self) -> None:
        self._stopping.set()
        self._changed.set()

    async def run(self) -> None:
        raw = self.consumer.raw
        try:
            while not self._stopping.is_set():
                if len(self.queue) >= MAX_PENDING:
                    self._changed.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), timeout=1.0)
                    continue
                try:
                    batches = await raw.getmany(timeout_ms=200, max_records=MAX_PENDING)
                except Exception as exc:  # noqa: BLE001 - the broker comes back; keep the loop
                    if self._stopping.is_set():
                        break
                    log.warning("kafka poll failed", extra={"error": str(exc)})
                    await asyncio.sleep(RETRY_PAUSE_S)
                    continue
                for tp, records in batches.items():
                    for record in records:
                        await self._accept(tp, record)
                self._dispatch()
        finally:
            await self._drain()

    async def _accept(self, tp: TopicPartition, record: ConsumerRecord) -> None:
        self.offsets.began(tp, record.offset)
        try:
            request = DeployRequest.from_bytes(record.value)
        except ValidationError as exc:
            log.error("skipping malformed deploy request",
                      extra={"offset": record.offset, "error": str(exc)[:500]})
            await self._finished(tp, record.offset)
            return
        self.queue.push(Job(request.account_id, request.lambda_id, request,
                            {"tp": tp, "offset": record.offset}))

    def _dispatch(self) -> None:
        while not self._stopping.is_set() and (job := self.queue.take()) is not None:
            task = asyncio.create_task(self._run(job), name=f"deploy-{job.item.deployment_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, job: Job[DeployRequest]) -> None:
        ok = False
        try:
            await self.deployer.handle(job.item)
            ok = True
        except Exception:  # noqa: BLE001 - the request is retried, not lost
            log.exception("deploy request failed; retrying it",
                          extra={"deployment_id": job.item.deployment_id,
                                 "lambda_id": job.lambda_id})
            await asyncio.sleep(RETRY_PAUSE_S)
        finally:
            self.queue.done(job)
            self._changed.set()
        if ok:
            await self._finished(job.meta["tp"], job.meta["offset"])
        elif not self._stopping.is_set():
            self.queue.push(job)
        self._dispatch()

    async def _finished(self, tp: TopicPartition, offset: int) -> None:
        position = self.offsets.finished(tp, offset)
        if position is None:
            return
        async with self._commit_lock:
            try:
                if tp in self.consumer.raw.assignment():
                    await self.consumer.raw.commit({tp: position})
            except Exception as exc:  # noqa: BLE001 - uncommitted work is redelivered, not lost
                log.warning("offset commit failed", extra={"error": str(exc)})

    async def _drain(self) -> None:
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=self.grace_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


def create_app(settings: Settings) -> FastAPI:
    topics = Topics(settings.topic_prefix)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        health = app.state.health
        await ensure_topics(settings.kafka_bootstrap, topics.specs())
        tasks = TaskGroup()
        async with contextlib.AsyncExitStack() as stack:
            docker_client = dockerutil.client(settings.docker_host)
            stack.callback(docker_client.close)
            health.add("docker", dockerutil.health_check(docker_client))
            producer = await stack.enter_async_context(
                resources.producer(settings, health, "fnbus-deployer"))
            images = {"nodejs": settings.runtime_image_node, "python": settings.runtime_image_python}
            sandbox = DockerRuntime(
                docker_client, settings.sockets_path() / "deployer",
                SandboxLimits(settings.lambda_memory_mb, settings.lambda_cpus,
                              settings.lambda_pids_limit, settings.lambda_tmpfs_mb),
                # Not the invoker's owner label: each removes only its own leftovers.
                owner=f"deployer-{settings.instance_id or 'local'}")
            stale = await sandbox.cleanup()
            if stale:
                log.info("removed smoke-init containers of a previous run",
                         extra={"containers": stale})
            builder = Builder(docker_client, images,
                              max_dependencies_bytes=settings.max_dependencies_bytes)
            deployer = Deployer(builder, sandbox, producer, topics,
                                init_timeout_s=settings.deploy_init_timeout_ms / 1000,
                                keep_deployments=settings.keep_deployments)
            consumer = await stack.enter_async_context(resources.consumer(
                settings, health, [topics.deploy_requests], group_id=topics.group("deployer"),
                client_id="fnbus-deployer"))
            loop = DeployLoop(consumer, deployer, slots=max(1, settings.deploy_concurrency))
            tasks.spawn(loop.run(), "deploy-requests")
            health.add("loops", tasks.check)
            yield
            loop.request_stop()
            await tasks.stop()
            await deployer.stop()

    return create_service_app("deployer", settings, lifespan)
