"""Deployer service: lambda version → image, smoke-init, Deploying → Deployed / Failed."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from aiokafka import ConsumerRecord
from fastapi import FastAPI

from fnbus import dockerutil, resources
from fnbus.config import Settings
from fnbus.schemas import DeployRequest
from fnbus.service import TaskGroup, create_service_app
from fnbus.topics import Topics, ensure_topics

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> FastAPI:
    topics = Topics(settings.topic_prefix)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        health = app.state.health
        await ensure_topics(settings.kafka_bootstrap, topics.specs())
        docker_client = dockerutil.client(settings.docker_host)
        health.add("docker", dockerutil.health_check(docker_client))
        tasks = TaskGroup()
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(docker_client.close)
            app.state.producer = await stack.enter_async_context(
                resources.producer(settings, health, "fnbus-deployer")
            )
            consumer = await stack.enter_async_context(
                resources.consumer(settings, health, [topics.deploy_requests],
                                   group_id="fnbus-deployer", client_id="fnbus-deployer")
            )

            async def handle(record: ConsumerRecord) -> None:
                request = DeployRequest.from_bytes(record.value)
                log.info("deploy request", extra={"lambda_id": request.lambda_id})

            tasks.spawn(consumer.run(handle), "deploy-requests")
            health.add("loops", tasks.check)
            yield
            consumer.request_stop()
            await tasks.stop()

    return create_service_app("deployer", settings, lifespan)

