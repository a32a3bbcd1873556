"""The gateway's HTTP client for the internal APIs of the registry and the scheduler.

Callers pass paths as text, with the path parameters as the public request
carried them (already percent-decoded). The client encodes each character that
is not safe in a path segment, so an id like ``a?b`` or ``ü`` reaches the
service as that id, never as a query string or an invalid URL.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
from fastapi.responses import JSONResponse, Response

from fnbus.errors import BadRequest, UpstreamUnavailable, from_body
from fnbus.identity import Identity
from fnbus.service import has_control_characters


def encode_path(path: str) -> str:
    """Percent-encode a decoded path for the wire; refuse control characters (never an id)."""
    if has_control_characters(path):
        raise BadRequest("the request path contains control characters", code="invalid_path")
    return quote(path, safe="/")


class InternalClient:
    """Forwards calls with the service token and the caller's identity."""

    def __init__(self, base_url: str, service_token: str, timeout_s: float = 30.0,
                 name: str = "registry") -> None:
        self.name = name
        self._client = httpx.AsyncClient(
            base_url=base_url, timeout=timeout_s,
            headers={"Authorization": f"Bearer {service_token}"},
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def request(self, method: str, path: str, *, identity: Identity | None = None,
                      json: Any = None, params: dict[str, Any] | None = None) -> httpx.Response:
        headers = identity.headers() if identity else {}
        url = encode_path(path)
        try:
            return await self._client.request(method, url, json=json, params=params,
                                              headers=headers)
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable(f"{self.name} unavailable: {type(exc).__name__}",
                                      code=f"{self.name}_unavailable") from None

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """Return the decoded body of a 2xx answer; raise the service's error otherwise."""
        response = await self.request(method, path, **kwargs)
        body = self._json(response)
        if response.status_code >= 400:
            raise from_body(response.status_code, body)
        return body

    async def forward(self, method: str, path: str, **kwargs: Any) -> Response:
        """Pass the service's answer (status and body) through unchanged."""
        response = await self.request(method, path, **kwargs)
        if response.status_code == 204 or not response.content:
            return Response(status_code=response.status_code)
        return JSONResponse(self._json(response), status_code=response.status_code)

    def _json(self, response: httpx.Response) -> Any:
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise UpstreamUnavailable(f"{self.name} answered {response.status_code} without JSON",
                                      code=f"{self.name}_unavailable") from None

    async def ping(self) -> bool:
        try:
            r = await self._client.get("/healthz", timeout=2)
            return r.status_code == 200
        except httpx.HTTPError:
            return False
