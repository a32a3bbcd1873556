"""What every public endpoint module shares: the operation decorator and forwarding.

Each public operation names its permission once: in ``openapi_extra["x-permission"]``
(and its description) through :func:`operation`, and in its ``require(...)``
dependency; tests walk the routers to check that both agree.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from fnbus.api_models import ErrorOut
from fnbus.identity import Identity
from fnbus.permissions import Permission
from services.gateway.internal_client import InternalClient

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 403, 404, 409, 413, 422, 503)
}


def operation(router: APIRouter, method: str, path: str, permission: Permission, *,
              status_code: int = 200, response_model: Any = None, summary: str = "",
              more: str = "", tags: list[Any] | None = None) -> Any:
    """Decorator registering one public operation with its permission documented."""
    return router.api_route(
        path, methods=[method], status_code=status_code, response_model=response_model,
        responses=ERRORS, summary=summary or None, tags=tags,
        description=f"Requires permission `{permission.value}`. {more}".strip(),
        openapi_extra={"x-permission": permission.value},
    )


async def forward(client: InternalClient, request: Request, identity: Identity, body: Any = None,
                  params: dict[str, Any] | None = None) -> Response:
    """Pass the call to the same path under ``/internal`` of the owning service."""
    json = body.model_dump(mode="json", exclude_unset=True) if body is not None else None
    path = "/internal" + request.url.path.removeprefix("/api/v1")
    return await client.forward(request.method, path, identity=identity, json=json, params=params)
