"""Gateway service: the only public ingress (REST API, auth, permissions, invocation)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from fnbus.api_models import MAX_MANAGEMENT_BODY_BYTES
from fnbus.config import Settings
from fnbus.service import create_service_app
from services.gateway import management, oauth
from services.gateway.auth import Authenticator
from services.gateway.limits import BodyLimit
from services.gateway.registry_client import RegistryClient


def create_app(settings: Settings) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        health = app.state.health
        registry = RegistryClient(settings.registry_url, settings.service_token)
        app.state.registry = registry
        app.state.auth = Authenticator(registry, settings.jwt_secret)
        health.add("registry", registry.ping)
        try:
            yield
        finally:
            await registry.aclose()

    app = create_service_app(
        "gateway", settings, lifespan,
        description="fnbus public API. Errors are `{\"error\": {\"code\", \"message\"}}`; "
                    "each operation names the permission it needs in `x-permission`.",
        version="1",
    )
    app.add_middleware(BodyLimit, max_bytes=MAX_MANAGEMENT_BODY_BYTES)
    app.include_router(management.router)
    app.include_router(oauth.router)
    return app
