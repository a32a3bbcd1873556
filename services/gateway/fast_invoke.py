"""``POST /api/v1/accounts/{account_id}/lambdas/{lambda_id}/invoke`` without FastAPI's router.

At saturation FastAPI's route matching, dependency resolution and request wrapper held
about a third of the gateway's profile (bench/README.md, "Broker round trips per
invocation"). This pure ASGI layer, the innermost of the gateway's middleware (inside
the edge checks, the body limit and the quotas), answers the invoke path itself when
the request is an ordinary one:

1. the body is JSON (no content type, or ``application/json``) that validates as the
   route's :class:`~services.gateway.invoke.InvokeBody`;
2. the query string holds at most ``async`` (``true``/``false``/``1``/``0``) and
   ``timeout_ms`` (digits), each once.

It then calls the route's own endpoint function, :func:`services.gateway.invoke.invoke`,
with what FastAPI would have passed (the identity from the same auth dependency), so
there is one implementation of the call. Anything else — a malformed or invalid body,
an unknown or invalid parameter, another method or path — goes on to the router with
the body replayed, and gets FastAPI's own answer. What the auth or the endpoint raise
(a bad key, a missing permission, an unknown lambda, the broker down) is answered by
the app's exception handlers, looked up as Starlette's exception middleware does;
anything without a handler propagates to the server-error handler, as before.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from fnbus.permissions import Permission as P
from services.gateway import invoke
from services.gateway.auth import require

_PATH = re.compile(r"/api/v1/accounts/([^/]+)/lambdas/([^/]+)/invoke")
_BOOLS = {"true": True, "1": True, "false": False, "0": False}
_authorize = require(P.LAMBDA_INVOKE)


def _query(raw: bytes) -> tuple[bool, int | None] | None:
    """(async, timeout_ms) when the query string is an ordinary one, else None."""
    if not raw:
        return False, None
    run_async: bool | None = None
    timeout_ms: int | None = None
    seen: set[str] = set()
    try:
        pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True, strict_parsing=True)
    except ValueError:
        return None
    for key, value in pairs:
        if key in seen:
            return None
        seen.add(key)
        if key == "async" and value in _BOOLS:
            run_async = _BOOLS[value]
        elif key == "timeout_ms" and value.isascii() and value.isdigit() and len(value) < 10:
            timeout_ms = int(value)
            if timeout_ms < 100:
                return None  # the router's 422 (ge=100)
        else:
            return None
    return bool(run_async), timeout_ms


def _json_body(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            return media == b"application/json"
    return True  # FastAPI reads a body without a content type as JSON too


def _handler_for(app: Any, exc: Exception) -> Callable[[Request, Exception], Awaitable[Response]] | None:
    """The app's handler for ``exc``, by class as Starlette's exception middleware finds it;
    ``Exception`` itself belongs to the server-error middleware further out."""
    handlers = getattr(app, "exception_handlers", {})
    for cls in type(exc).__mro__:
        if cls is Exception:
            return None
        handler = handlers.get(cls)
        if handler is not None:
            return handler
    return None


class FastInvoke:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = _PATH.fullmatch(scope["path"]) if scope["type"] == "http" \
            and scope["method"] == "POST" else None
        query = _query(scope.get("query_string", b"")) if match is not None else None
        if match is None or query is None or not _json_body(scope):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        request = Request(scope, receive)
        try:
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client went away
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    break
            body = b"".join(chunks)
            try:
                parsed = invoke.InvokeBody.model_validate_json(body)
            except ValidationError:
                await self.app(scope, _replay(body, receive), send)  # the router's own 4xx
                return
            account_id, lambda_id = match.group(1), match.group(2)
            scope["path_params"] = {"account_id": account_id, "lambda_id": lambda_id}
            scope[invoke.RECEIVED_NS] = time.time_ns()
            request = Request(scope, _replay(body, receive))
            who = await _authorize(request, request.headers.get("authorization"))
            run_async, timeout_ms = query
            response: Response = await invoke.invoke(
                account_id=account_id, lambda_id=lambda_id, body=parsed, request=request, who=who,
                run_async=run_async, timeout_ms=timeout_ms)
        except Exception as exc:
            handler = _handler_for(scope.get("app"), exc)
            if handler is None:
                raise
            response = await handler(request, exc)
        await response(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` for the app after the body was read here: the body once, then the
    connection's own messages (a disconnect when the client goes)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
