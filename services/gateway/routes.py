"""What every public endpoint module shares: the operation decorator and forwarding.

Each public operation names its permission once: in ``openapi_extra["x-permission"]``
(and its description) through :func:`operation`, and in its ``require(...)``
dependency; tests walk the routers to check that both agree.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from pydantic import BaseModel

from fnbus.api_models import ErrorOut
from fnbus.identity import Identity
from fnbus.permissions import Permission
from services.gateway.internal_client import InternalClient

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 403, 404, 409, 413, 422, 429, 503)
}


class LpErrorOut(BaseModel):
    """The original platform's error body on its invocation paths."""

    errorCode: str  # noqa: N815 - the original's field names
    errorMsg: str  # noqa: N815


# On the original platform's invocation paths these statuses carry its own body.
LP_ERROR_STATUSES = ("404", "500", "901")


def document_compat_errors(app: FastAPI) -> None:
    """Publish ``{errorCode, errorMsg}`` for the compatibility invocation paths' own errors.

    Auth and body validation still answer our envelope there; "not deployed" (404), a
    platform failure (500) and the lambda's own failure (901) answer the original's shape.
    """
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        schema.setdefault("components", {}).setdefault("schemas", {})["LpErrorOut"] = \
            LpErrorOut.model_json_schema()
        lp_error = {"description": "the original platform's error body", "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/LpErrorOut"}}}}
        for path, item in schema.get("paths", {}).items():
            if not (path.startswith("/api/account/") and path.endswith("/invoke")):
                continue
            for operation in item.values():
                for status in LP_ERROR_STATUSES:
                    operation.setdefault("responses", {})[status] = lp_error
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def operation(router: APIRouter, method: str, path: str, permission: Permission, *,
              status_code: int = 200, response_model: Any = None, summary: str = "",
              more: str = "", tags: list[Any] | None = None,
              responses: dict[int | str, dict[str, Any]] | None = None) -> Any:
    """Decorator registering one public operation with its permission documented.

    ``responses`` declares answers besides ``status_code`` and the errors, e.g. a 200
    of a create that finds the resource already there.
    """
    return router.api_route(
        path, methods=[method], status_code=status_code, response_model=response_model,
        responses={**ERRORS, **(responses or {})}, summary=summary or None, tags=tags,
        description=f"Requires permission `{permission.value}`. {more}".strip(),
        openapi_extra={"x-permission": permission.value},
    )


async def forward(client: InternalClient, request: Request, identity: Identity, body: Any = None,
                  params: dict[str, Any] | None = None) -> Response:
    """Pass the call to the same path under ``/internal`` of the owning service."""
    json = body.model_dump(mode="json", exclude_unset=True) if body is not None else None
    path = "/internal" + request.url.path.removeprefix("/api/v1")
    return await client.forward(request.method, path, identity=identity, json=json, params=params)
