"""The original platform's lambda list, as the npm ``liveperson-functions-client`` reads it.

``GET /api/account/{accountId}/lambdas/?userId=…&state=…&eventId=…&v=1`` answers a
JSON array of lambda objects in the original's shape (``getLambdas``): ``uuid,
version, name, description, state, runtime{uuid, name, baseImageName},
eventId, skills, samplePayload, createdAt, createdBy, updatedAt, updatedBy,
lastDeployment, implementation{code, dependencies, environmentVariables}``
(dependencies and environment variables as ``[{key, value}]``). Authenticated
like the original invocation route (``invoke.lp_invoke``): a Bearer JWT or API
key with ``lambda.read``.

Where this platform keeps less than the original: ``createdBy``/``updatedBy``
are null (versions do not keep user names), ``lastDeployment`` carries the
deployment state of the lambda rather than a full deployment record, and
``userId`` is accepted and ignored (the original uses it for auditing only).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from fnbus import catalog
from fnbus.config import Settings
from fnbus.errors import NotFound, Unprocessable
from fnbus.identity import Identity
from fnbus.permissions import Permission as P
from fnbus.schemas import LambdaState
from services.gateway.auth import require
from services.gateway.internal_client import InternalClient
from services.gateway.routes import ERRORS

router = APIRouter(tags=["compatibility"])

# Fixed ids for the runtimes (the original names them by uuid).
_RUNTIME_NS = uuid.UUID("6f1b2c1e-52a5-4c3e-9a43-1d7a1f3d0b11")
_RUNTIME_NAMES = {"nodejs": "Node.js", "python": "Python"}
# Lambdas whose code is read at once (each is one registry call).
_FETCH_CONCURRENCY = 8


def _iso(epoch_ms: int) -> str:
    when = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _pairs(mapping: dict[str, str] | None) -> list[dict[str, str]]:
    return [{"key": k, "value": v} for k, v in sorted((mapping or {}).items())]


def _sample_payload(event_id: str | None) -> Any:
    if not event_id:
        return {}
    for template in catalog.TEMPLATES.values():
        if template.event_id == event_id:
            return template.sample_payload
    return {}


def lp_lambda(body: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """One registry ``LambdaOut`` (with code) in the original's shape."""
    runtime = body["runtime"]
    image = settings.runtime_image_python if runtime == "python" else settings.runtime_image_node
    deployment: dict[str, Any] = {}
    if body.get("deployment_state"):
        deployment = {
            "lambdaUUID": body["id"],
            "lambdaVersion": body.get("deployed_version"),
            "deploymentState": body["deployment_state"],
            "deploymentError": ({"errorMsg": body["deployment_cause"]}
                                if body.get("deployment_cause") else None),
        }
    return {
        "uuid": body["id"],
        "version": body["version"],
        "name": body["name"],
        "description": body["description"],
        "state": body["state"],
        "runtime": {"uuid": str(uuid.uuid5(_RUNTIME_NS, runtime)),
                    "name": _RUNTIME_NAMES.get(runtime, runtime), "baseImageName": image},
        "eventId": body.get("event_id"),
        "skills": body.get("skills", []),
        "samplePayload": _sample_payload(body.get("event_id")),
        "createdAt": _iso(body["created_ms"]),
        "createdBy": None,
        "updatedAt": _iso(body["updated_ms"]),
        "updatedBy": None,
        "lastDeployment": deployment,
        "implementation": {
            "code": body.get("code") or "",
            "dependencies": _pairs(body.get("dependencies")),
            "environmentVariables": _pairs(body.get("env")),
        },
    }


@router.get("/api/account/{accountId}/lambdas/", responses=ERRORS,
            description=f"Requires permission `{P.LAMBDA_READ.value}`. The original platform's "
                        "lambda list (`getLambdas` of liveperson-functions-client), filtered by "
                        "`state` (repeatable: Draft, Productive, Modified) and `eventId`.",
            openapi_extra={"x-permission": P.LAMBDA_READ.value})
async def lp_list_lambdas(
    accountId: str, request: Request,  # noqa: N803 - the original's parameter names
    who: Identity = Depends(require(P.LAMBDA_READ)),
    state: Annotated[list[str] | None, Query()] = None,
    eventId: str | None = None,  # noqa: N803
    userId: str | None = None,  # noqa: N803
    v: str = "1",
) -> list[dict[str, Any]]:
    states = {s for value in state or [] for s in value.split(",") if s}
    valid = {s.value for s in LambdaState}
    if states - valid:
        raise Unprocessable(f"state must be one of {', '.join(sorted(valid))}",
                            code="invalid_state")
    registry: InternalClient = request.app.state.registry
    base = f"/internal/accounts/{accountId}/lambdas"
    params = {"event_id": eventId} if eventId else None
    listed = await registry.call("GET", base, identity=who, params=params)
    wanted = [item for item in listed if not states or item["state"] in states]
    gate = asyncio.Semaphore(_FETCH_CONCURRENCY)

    async def full(item: dict[str, Any]) -> dict[str, Any] | None:
        async with gate:
            try:
                return await registry.call(
                    "GET", f"{base}/{item['id']}", identity=who)
            except NotFound:  # deleted since the listing
                return None

    bodies = await asyncio.gather(*(full(item) for item in wanted))
    settings: Settings = request.app.state.settings
    return [lp_lambda(body, settings) for body in bodies if body is not None]
