"""Scheduler service: cron schedules → invocation requests (one leader at a time)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from fnbus import resources
from fnbus.config import Settings
from fnbus.service import create_service_app
from fnbus.topics import Topics, ensure_topics


def create_app(settings: Settings) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        health = app.state.health
        await ensure_topics(settings.kafka_bootstrap, Topics(settings.topic_prefix).specs())
        async with contextlib.AsyncExitStack() as stack:
            app.state.db = await stack.enter_async_context(resources.database(settings, health))
            app.state.producer = await stack.enter_async_context(
                resources.producer(settings, health, "fnbus-scheduler")
            )
            yield

    return create_service_app("scheduler", settings, lifespan)
