"""Invoker service: invocation requests → warm container pool → results."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from aiokafka import ConsumerRecord
from fastapi import FastAPI

from fnbus import dockerutil, resources
from fnbus.config import Settings
from fnbus.schemas import InvocationRequest
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
                resources.producer(settings, health, "fnbus-invoker")
            )
            consumer = await stack.enter_async_context(
                resources.consumer(settings, health, [topics.invocations],
                                   group_id="fnbus-invoker", client_id="fnbus-invoker")
            )

            async def handle(record: ConsumerRecord) -> None:
                request = InvocationRequest.from_bytes(record.value)
                log.info("invocation request", extra={"lambda_id": request.lambda_id})

            tasks.spawn(consumer.run(handle), "invocations")
            health.add("loops", tasks.check)
            yield
            consumer.request_stop()
            await tasks.stop()

    return create_service_app("invoker", settings, lifespan)

