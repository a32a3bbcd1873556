"""The error envelope for failures that are nobody's input: the database going away."""

from __future__ import annotations

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from fnbus.service import install_error_handlers


def _app(exc: Exception) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise exc

    return app


@pytest.mark.parametrize("exc", [
    ConnectionRefusedError(111, "Connect call failed"),
    asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
    asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
    asyncpg.exceptions.TooManyConnectionsError("too many clients"),
])
async def test_database_unavailable_is_503_with_retry_after(exc: Exception) -> None:
    transport = httpx.ASGITransport(app=_app(exc), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        r = await client.get("/boom")
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "5"
    assert r.json()["error"]["code"] == "database_unavailable"


async def test_other_failures_stay_500() -> None:
    transport = httpx.ASGITransport(app=_app(RuntimeError("bug")), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        r = await client.get("/boom")
    assert r.status_code == 500
    assert r.json() == {"error": {"code": "internal_error", "message": "internal error"}}
