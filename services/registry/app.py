"""Registry service: accounts, lambdas and versions, deployments' state, secrets, allowlist."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiokafka import ConsumerRecord
from fastapi import FastAPI
from pydantic import ValidationError

from fnbus import resources
from fnbus.config import Settings
from fnbus.schemas import DeploymentStatus
from fnbus.service import TaskGroup, create_service_app, every
from fnbus.topics import Topics, ensure_topics
from services.registry.accounts import Accounts, platform_domain
from services.registry.api import router
from services.registry.certificates import Certificates
from services.registry.certificates import router as certificates_router
from services.registry.context import ContextStore, purge_loop
from services.registry.context import router as context_router
from services.registry.crypto import SecretBox
from services.registry.dlq import DeadLetters, RetryPolicies
from services.registry.events import EventRouter
from services.registry.lambdas import Lambdas
from services.registry.reports import router as reports_router
from services.registry.toolbelt_api import router as toolbelt_router

log = logging.getLogger(__name__)


PRUNE_INTERVAL_S = 3600.0


async def _prune_loop(events: EventRouter) -> None:
    """Forget routed event ids after a week (far beyond any redelivery)."""
    await every(PRUNE_INTERVAL_S, events.prune, done="pruned processed events",
                failed="pruning processed events failed")


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
            app.state.accounts = Accounts(pool, SecretBox.from_settings(settings),
                                          platform_domain(settings.public_url))
            app.state.certificates = Certificates(pool, app.state.accounts.box)
            lambdas = app.state.lambdas = Lambdas(pool, producer, topics)
            consumer = await stack.enter_async_context(resources.consumer(
                settings, health, [topics.deployments], group_id=topics.group("registry"),
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

            # Platform events → invocation requests; bad input goes to quarantine.
            events = app.state.events = EventRouter(pool, producer, topics)
            event_consumer = await stack.enter_async_context(resources.consumer(
                settings, health, [topics.platform_events], group_id=topics.group("registry-events"),
                client_id="fnbus-registry-events", check_name="kafka_events_consumer"))
            tasks.spawn(event_consumer.run(events.on_record), "platform-events")
            # The dead-letter topic, mirrored for listing, replay and purge.
            dead_letters = app.state.dead_letters = DeadLetters(pool, producer, topics)
            app.state.retry_policies = RetryPolicies(pool)
            dlq_consumer = await stack.enter_async_context(resources.consumer(
                settings, health, [topics.dlq], group_id=topics.group("registry-dlq"),
                client_id="fnbus-registry-dlq", check_name="kafka_dlq_consumer"))
            tasks.spawn(dlq_consumer.run(dead_letters.on_record), "dead-letters")
            pruner = asyncio.create_task(_prune_loop(events), name="prune-processed-events")
            context = app.state.context = ContextStore(pool)
            context_purger = asyncio.create_task(purge_loop(context), name="purge-context")
            health.add("loops", tasks.check)
            yield
            for loop_task in (pruner, context_purger):
                loop_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await loop_task
            for c in (consumer, event_consumer, dlq_consumer):
                c.request_stop()
            await tasks.stop()

    app = create_service_app("registry", settings, lifespan)
    app.include_router(router)
    app.include_router(certificates_router)
    app.include_router(toolbelt_router)
    app.include_router(context_router)
    app.include_router(reports_router)  # email-report settings, send-now
    return app
