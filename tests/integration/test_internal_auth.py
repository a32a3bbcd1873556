"""Internals answer only the platform: ``/internal/*`` needs the service token on every
service, ``/metrics`` answers loopback clients and the token unless ``metrics_public``.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from fnbus.config import Settings
from fnbus.service import create_service_app

TOKEN = "t" * 43
# One internal route per service (the invoker's pool answered anyone before).
INTERNAL = {
    "registry": ("POST", "/internal/auth/api-key"),
    "invoker": ("GET", "/internal/pool"),
    "log_ingest": ("GET", "/internal/activations/x"),
    "scheduler": ("GET", "/internal/accounts/a/schedules"),
    "deployer": ("GET", "/internal/anything"),
}


@pytest.mark.integration
async def test_internal_routes_need_the_service_token_on_every_service(
        settings: Settings, platform: dict[str, str], scheduler_url: str) -> None:
    urls = {**platform, "scheduler": scheduler_url}
    async with httpx.AsyncClient(timeout=10) as c:
        for service, (method, path) in INTERNAL.items():
            for headers in ({}, {"Authorization": "Bearer wrong"},
                            {"Authorization": f"Basic {settings.service_token}"}):
                r = await c.request(method, urls[service] + path, headers=headers, json={})
                assert r.status_code == 401, (service, headers, r.text)
                assert r.json()["error"]["code"] == "service_token_required"
        r = await c.get(urls["invoker"] + "/internal/pool",
                        headers={"Authorization": f"Bearer {settings.service_token}"})
        assert r.status_code == 200, r.text
        # Loopback clients (Prometheus next to the service) read metrics without a token.
        for service, url in urls.items():
            r = await c.get(url + "/metrics")
            assert r.status_code == 200, (service, r.text)
            assert "fnbus_http_requests_total" in r.text


# -- metrics exposure, with a client address other than loopback --------------------------------
def _client(host: str, **changes: Any) -> httpx.AsyncClient:
    settings = Settings(_env_file=None, service_token=TOKEN, jwt_secret="j" * 43,  # type: ignore[call-arg]
                        secrets_key="k" * 43, **changes)
    transport = httpx.ASGITransport(app=create_service_app("invoker", settings), client=(host, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://invoker")


async def test_metrics_refuse_remote_clients_by_default() -> None:
    async with _client("10.1.2.3") as client:
        r = await client.get("/metrics")
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "metrics_not_public"
        r = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200


async def test_metrics_public_opens_them_but_never_the_internals() -> None:
    async with _client("10.1.2.3", metrics_public=True) as client:
        assert (await client.get("/metrics")).status_code == 200
        assert (await client.get("/internal/pool")).status_code == 401


async def test_loopback_clients_read_metrics() -> None:
    for host in ("127.0.0.1", "::1"):
        async with _client(host) as client:
            assert (await client.get("/metrics")).status_code == 200
