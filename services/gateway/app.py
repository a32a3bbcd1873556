"""Gateway service: the only public ingress (REST API, auth, permissions, invocation)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware import Middleware

from fnbus import resources
from fnbus.api_models import MAX_MANAGEMENT_BODY_BYTES
from fnbus.config import Settings
from fnbus.lambda_cache import LambdaCache
from fnbus.service import allow_status, create_service_app
from fnbus.topics import Topics, ensure_topics
from services.gateway import (
    certificates,
    context,
    events,
    invoke,
    lp_compat,
    management,
    oauth,
    observe,
    quotas,
    reports,
    schedules,
)
from services.gateway.auth import Authenticator
from services.gateway.fast_invoke import FastInvoke
from services.gateway.internal_client import InternalClient
from services.gateway.limits import BodyLimit
from services.gateway.routes import document_compat_errors

# The console's bundle, built from console/src by deploy/stack.sh (console_build).
CONSOLE_DIR = Path(__file__).parent / "console" / "dist"


def create_app(settings: Settings) -> FastAPI:
    allow_status(invoke.LP_LAMBDA_ERROR_STATUS, "Lambda Failure")
    topics = Topics(settings.topic_prefix)
    instance = settings.instance_id or f"gateway-{settings.gateway_port}"

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        health = app.state.health
        reply_topic = topics.replies(instance)
        await ensure_topics(settings.kafka_bootstrap, [*topics.specs(), topics.reply_spec(instance)])
        async with contextlib.AsyncExitStack() as stack:
            registry = InternalClient(settings.registry_url, settings.service_token)
            stack.push_async_callback(registry.aclose)
            app.state.registry = registry
            scheduler = InternalClient(settings.scheduler_url, settings.service_token,
                                       name="scheduler")
            stack.push_async_callback(scheduler.aclose)
            app.state.scheduler = scheduler
            app.state.auth = Authenticator(registry, settings.jwt_secret)
            health.add("registry", registry.ping)
            log_ingest = httpx.AsyncClient(
                base_url=settings.log_ingest_url, timeout=10,
                headers={"Authorization": f"Bearer {settings.service_token}"})
            stack.push_async_callback(log_ingest.aclose)
            app.state.log_ingest = log_ingest
            producer = await stack.enter_async_context(
                resources.producer(settings, health, "fnbus-gateway"))
            cache = LambdaCache(settings.kafka_bootstrap, topics.lambda_changes)
            await cache.start()
            stack.push_async_callback(cache.stop)
            health.add("lambda_cache", cache.check)
            replies = invoke.ReplyWaiter(settings.kafka_bootstrap, reply_topic)
            await replies.start()
            stack.push_async_callback(replies.stop)
            health.add("replies", replies.check)
            feed = await stack.enter_async_context(
                quota.completions(settings.kafka_bootstrap, topics.activations))
            health.add("quota_completions", feed.check)
            app.state.reply_topic = reply_topic
            app.state.invocations = invoke.Invocations(
                cache, producer, replies, topics.invocations, settings.lambda_timeout_ms)
            yield

    app = create_service_app(
        "gateway", settings, lifespan,
        description="fnbus public API. Errors are `{\"error\": {\"code\", \"message\"}}`; "
                    "each operation names the permission it needs in `x-permission`.",
        version="1",
    )
    app.add_middleware(BodyLimit, max_bytes=MAX_MANAGEMENT_BODY_BYTES)
    # The invoke routes first: a request is matched against the routes in order, and
    # invocations are most of the traffic (no other route's pattern overlaps them).
    app.include_router(invoke.router)
    app.include_router(management.router)
    app.include_router(schedules.router)
    app.include_router(events.router)
    app.include_router(oauth.router)
    app.include_router(certificates.router)
    app.include_router(context.router)
    app.include_router(lp_compat.router)
    app.include_router(observe.router)  # log search, live tail, metrics (docs/observability.md)
    app.include_router(reports.router)  # email-report settings, send-now
    document_compat_errors(app)  # the original's {errorCode, errorMsg} where its paths answer it
    quota = quotas.install(app, settings)  # per-account rate limit and async backlog cap
    # Innermost (appended, where add_middleware would put it outermost): the invoke path's
    # ordinary requests skip FastAPI's router after the edge checks, body limit and quotas.
    app.user_middleware.append(Middleware(FastInvoke))
    # The web console: static files, talking to the same-origin API above.
    app.mount("/console", StaticFiles(directory=CONSOLE_DIR, html=True, check_dir=False),
              name="console")

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/console/")

    return app
