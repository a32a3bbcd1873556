"""Deployer service: lambda version → image, smoke-init, Deploying → Deployed / Failed.

For each deploy request:
1. publish Deploying;
2. build the version's image (:mod:`services.deployer.build`);
3. smoke-initialise it in the sandbox: start a container, load the code; a
   syntax error (or a throw at load time) fails the deployment with its line;
4. publish Deployed (with the image) or Failed (with the cause).
An undeploy request removes the lambda's images; the invoker retires its
containers when the registry publishes the undeployed state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from aiokafka import ConsumerRecord
from fastapi import FastAPI
from prometheus_client import Histogram
from pydantic import ValidationError

from fnbus import dockerutil, resources
from fnbus.config import Settings
from fnbus.kafka import Producer
from fnbus.runner_protocol import RunnerConnection, RunnerError, RunnerInitError
from fnbus.sandbox import ContainerError, DockerRuntime, SandboxLimits
from fnbus.schemas import DeploymentState, DeploymentStatus, DeployRequest
from fnbus.service import TaskGroup, create_service_app
from fnbus.topics import Topics, ensure_topics
from services.deployer.build import Builder, BuildFailed

log = logging.getLogger(__name__)

DEPLOY_SECONDS = Histogram("fnbus_deploy_seconds", "Deploy request → final state", ["outcome"],
                           buckets=(0.5, 1, 2, 3, 5, 8, 13, 30, 60, 120, 300))
_WIRE = {"nodejs": "node", "python": "python"}


class Deployer:
    def __init__(self, builder: Builder, sandbox: DockerRuntime, producer: Producer,
                 topics: Topics) -> None:
        self.builder = builder
        self.sandbox = sandbox
        self.producer = producer
        self.topics = topics
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

    async def smoke_init(self, request: DeployRequest, image: str) -> None:
        """Load the code in a sandboxed container of the new image; raise BuildFailed if it fails."""
        try:
            handle = await self.sandbox.start(image, {"fnbus.smoke": request.deployment_id})
        except ContainerError as exc:
            raise BuildFailed(f"the image does not start: {exc}") from exc
        try:
            async with RunnerConnection() as conn:
                await conn.connect(handle.socket_path, timeout_s=20)
                await conn.init(code=request.code, runtime=_WIRE[request.runtime.value],
                                account_id=request.account_id, lambda_id=request.lambda_id,
                                env=request.env)
        except RunnerInitError as exc:
            where = f" (line {exc.line})" if exc.line else ""
            raise BuildFailed(f"{exc}{where}") from exc
        except RunnerError as exc:
            reason = await self.sandbox.exit_reason(handle)
            raise BuildFailed(f"the runner did not start: {reason or exc}") from exc
        finally:
            await self.sandbox.kill(handle)
            await self.sandbox.remove(handle)

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
        try:
            artifact = await self.builder.build(request)
            await self.smoke_init(request, artifact.image)
        except BuildFailed as exc:
            log.info("deployment failed", extra={**extra, "cause": str(exc)})
            DEPLOY_SECONDS.labels("failed").observe(time.perf_counter() - started)
            await self._status(request, DeploymentState.FAILED, cause=str(exc)[:2000])
            return
        DEPLOY_SECONDS.labels("deployed").observe(time.perf_counter() - started)
        log.info("deployed", extra={**extra, "image": artifact.image, "reused": artifact.reused,
                                    "seconds": round(time.perf_counter() - started, 3)})
        await self._status(request, DeploymentState.DEPLOYED, image=artifact.image)


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
                owner=(settings.instance_id or "deployer-local"))
            deployer = Deployer(Builder(docker_client, images), sandbox, producer, topics)
            consumer = await stack.enter_async_context(resources.consumer(
                settings, health, [topics.deploy_requests], group_id=topics.group("deployer"),
                client_id="fnbus-deployer"))

            async def handle(record: ConsumerRecord) -> None:
                try:
                    request = DeployRequest.from_bytes(record.value)
                except ValidationError as exc:
                    log.error("skipping malformed deploy request",
                              extra={"offset": record.offset, "error": str(exc)[:500]})
                    return
                await deployer.handle(request)

            tasks.spawn(consumer.run(handle), "deploy-requests")
            health.add("loops", tasks.check)
            yield
            consumer.request_stop()
            await tasks.stop()
            await deployer.stop()

    return create_service_app("deployer", settings, lifespan)
