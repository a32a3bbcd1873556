"""Registry service: accounts, lambdas and versions, deployments' state, secrets, allowlist."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from aiokafka import ConsumerRecord
from fastapi import FastAPI
from pydantic import ValidationError

from fnbus import resources
from fnbus.config import Settings
from fnbus.schemas import DeploymentStatus
from fnbus.service import TaskGroup, create_service_app
from fnbus.topics import Topics, ensure_topics
from services.registry.accounts import Accounts, platform_domain
from services.registry.api import router
from services.registry.crypto import SecretBox
from services.registry.lambdas import Lambdas

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> FastAPI:
    topics = Topics(settings.topic_prefix)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        health = app.state.health
        await ensure_topics(settings.kafka_bootstrap, topics.specs())
        tasks = TaskGroup()
        async with contextlib.AsyncExitStack() as stack:
            pool = await stack.enter_async_context(resources.database(settings, health))
            producer = await stack.enter_async_context(
                resources.producer(settings, health, "fnbus-registry"))
            app.state.db = pool
            app.state.accounts = Accounts(pool, SecretBox(settings.secrets_key),
                                          platform_domain(settings.public_url))
            lambdas = app.state.lambdas = Lambdas(pool, producer, topics)
            consumer = await stack.enter_async_context(resources.consumer(
                settings, health, [topics.deployments], group_id="fnbus-registry",
                client_id="fnbus-registry"))

            async def on_status(record: ConsumerRecord) -> None:
                try:
                    status = DeploymentStatus.from_bytes(record.value)
                except ValidationError as exc:
                    log.error("skipping malformed deployment status",
                              extra={"offset": record.offset, "error": str(exc)})
                    return
                await lambdas.on_deployment_status(status)

            tasks.spawn(consumer.run(on_status), "deployments")
            health.add("loops", tasks.check)
            yield
            consumer.request_stop()
            await tasks.stop()

    app = create_service_app("registry", settings, lifespan)
    app.include_router(router)
    return app
