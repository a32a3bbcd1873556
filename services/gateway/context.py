"""The Conversation Context store on the public API, forwarded to the registry.

The same store lambdas reach through ``Toolbelt.ContextServiceClient``, so bots
and external systems share conversation context with them. Rules and limits:
:mod:`fnbus.context_models`; the store's contract: ``services/registry/context.py``.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from fnbus.context_models import (
    DEFAULT_SESSION,
    NamespaceCreate,
    NamespaceOut,
    NamespacePath,
    PropertiesWrite,
    PropertyOut,
    PropertyPath,
    SessionPath,
)
from fnbus.identity import Identity
from fnbus.permissions import Permission as P
from services.gateway.auth import require
from services.gateway.routes import forward, operation

router = APIRouter(prefix="/api/v1/accounts/{account_id}/context", tags=["context"])
op = functools.partial(operation, router)
NS = "/namespaces/{namespace}"
SESSION = NS + "/sessions/{session_id}"
_SESSION_NOTE = f"The default session is `{DEFAULT_SESSION}`."


async def _forward(request: Request, identity: Identity, body: Any = None,
                   params: dict[str, Any] | None = None) -> Response:
    return await forward(request.app.state.registry, request, identity, body, params)


@op("GET", "/namespaces", P.CONTEXT_READ, response_model=list[NamespaceOut],
    summary="List context namespaces")
async def list_namespaces(account_id: str, request: Request,
                          who: Identity = Depends(require(P.CONTEXT_READ))) -> Response:
    return await _forward(request, who)


@op("POST", "/namespaces", P.CONTEXT_WRITE, status_code=201, response_model=NamespaceOut,
    summary="Create a namespace (200 with the existing one when it exists)",
    more="With `ttl_s`, properties written without their own TTL expire after it.",
    responses={200: {"model": NamespaceOut, "description": "the namespace existed"}})
async def create_namespace(account_id: str, body: NamespaceCreate, request: Request,
                           who: Identity = Depends(require(P.CONTEXT_WRITE))) -> Response:
    return await _forward(request, who, body)


@op("GET", NS, P.CONTEXT_READ, response_model=NamespaceOut, summary="One namespace")
async def get_namespace(account_id: str, namespace: NamespacePath, request: Request,
                        who: Identity = Depends(require(P.CONTEXT_READ))) -> Response:
    return await _forward(request, who)


@op("DELETE", NS, P.CONTEXT_WRITE, status_code=204,
    summary="Delete a namespace with all its sessions and properties")
async def delete_namespace(account_id: str, namespace: NamespacePath, request: Request,
                           who: Identity = Depends(require(P.CONTEXT_WRITE))) -> Response:
    return await _forward(request, who)


@op("GET", NS + "/sessions", P.CONTEXT_READ, response_model=list[str],
    summary="Session ids that hold live properties")
async def list_sessions(account_id: str, namespace: NamespacePath, request: Request,
                        who: Identity = Depends(require(P.CONTEXT_READ))) -> Response:
    return await _forward(request, who)


@op("GET", SESSION + "/properties", P.CONTEXT_READ, response_model=dict[str, Any],
    summary="All properties of a session, or the ones named by `name`",
    more=f"Repeat `name` to select several; unknown names are left out. {_SESSION_NOTE}")
async def get_properties(account_id: str, namespace: NamespacePath, session_id: SessionPath,
                         request: Request, who: Identity = Depends(require(P.CONTEXT_READ)),
                         name: Annotated[list[str] | None, Query()] = None) -> Response:
    return await _forward(request, who, params={"name": name} if name else None)


@op("PUT", SESSION + "/properties", P.CONTEXT_WRITE, response_model=dict[str, Any],
    summary="Set properties (the session's properties after the write)",
    more=f"Properties not named stay, as on the original. {_SESSION_NOTE}")
async def set_properties(account_id: str, namespace: NamespacePath, session_id: SessionPath,
                         body: PropertiesWrite, request: Request,
                         who: Identity = Depends(require(P.CONTEXT_WRITE))) -> Response:
    return await _forward(request, who, body)


@op("PATCH", SESSION + "/properties", P.CONTEXT_WRITE, response_model=dict[str, Any],
    summary="Update properties (the session's properties after the write)",
    more=f"Missing properties are created. {_SESSION_NOTE}")
async def update_properties(account_id: str, namespace: NamespacePath, session_id: SessionPath,
                            body: PropertiesWrite, request: Request,
                            who: Identity = Depends(require(P.CONTEXT_WRITE))) -> Response:
    return await _forward(request, who, body)


@op("GET", SESSION + "/properties/{name}", P.CONTEXT_READ, response_model=PropertyOut,
    summary="One property (404 property_not_found when absent or expired)")
async def get_property(account_id: str, namespace: NamespacePath, session_id: SessionPath,
                       name: PropertyPath, request: Request,
                       who: Identity = Depends(require(P.CONTEXT_READ))) -> Response:
    return await _forward(request, who)


@op("DELETE", SESSION + "/properties/{name}", P.CONTEXT_WRITE, status_code=204,
    summary="Delete one property (no error when it is already gone)")
async def delete_property(account_id: str, namespace: NamespacePath, session_id: SessionPath,
                          name: PropertyPath, request: Request,
                          who: Identity = Depends(require(P.CONTEXT_WRITE))) -> Response:
    return await _forward(request, who)


@op("DELETE", SESSION, P.CONTEXT_WRITE, status_code=204,
    summary="Delete a session with its properties (no error when it is already gone)")
async def delete_session(account_id: str, namespace: NamespacePath, session_id: SessionPath,
                         request: Request,
                         who: Identity = Depends(require(P.CONTEXT_WRITE))) -> Response:
    return await _forward(request, who)
