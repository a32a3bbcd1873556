"""The gateway's invoke fast path (services/gateway/fast_invoke.py): which requests it
answers itself and which go on to FastAPI's router, with their body intact."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from fnbus.errors import ApiError, NotFound, Unauthorized
from fnbus.identity import Identity
from services.gateway import fast_invoke
from services.gateway.fast_invoke import FastInvoke, _query

PATH = "/api/v1/accounts/acc/lambdas/lam/invoke"


class Router:
    """Stands for FastAPI's router: records what reached it and the body it could read."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        self.bodies.append(b"".join(chunks))
        await JSONResponse({"router": True}, status_code=299)(scope, receive, send)


class App:
    """The app's exception handlers, as the fast path looks them up."""

    async def _api_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return JSONResponse(exc.body(), status_code=exc.status)

    @property
    def exception_handlers(self) -> dict[Any, Any]:
        return {ApiError: self._api_error}


async def call(layer: FastInvoke, *, method: str = "POST", path: str = PATH, query: bytes = b"",
               body: bytes = b'{"payload": {"n": 1}}', content_type: bytes | None = b"application/json",
               chunks: int = 1, authorization: bytes = b"Bearer key") -> tuple[int, list[dict[str, Any]]]:
    headers = [(b"authorization", authorization)]
    if content_type is not None:
        headers.append((b"content-type", content_type))
    scope = {"type": "http", "method": method, "path": path, "query_string": query, "headers": headers,
             "app": App()}
    size = max(1, len(body) // chunks)
    parts = [body[i:i + size] for i in range(0, len(body), size)] or [b""]
    messages = [{"type": "http.request", "body": p, "more_body": i < len(parts) - 1} for i, p in enumerate(parts)]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(message)

    await layer(scope, receive, send)
    return sent[0]["status"], sent


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []

    async def authorize(request: Request, authorization: str | None) -> Identity:
        if authorization != "Bearer key":
            raise Unauthorized("bad key")
        return Identity(account_id="acc", user_id="u", user_name="n", roles=frozenset())

    async def endpoint(**kwargs: Any) -> Response:
        seen.append(kwargs)
        if kwargs["lambda_id"] == "missing":
            raise NotFound("lambda missing not found", code="lambda_not_found")
        return JSONResponse({"fast": True})

    monkeypatch.setattr(fast_invoke, "_authorize", authorize)
    monkeypatch.setattr(fast_invoke.invoke, "invoke", endpoint)
    return seen


def test_query_strings_it_takes_and_leaves() -> None:
    assert _query(b"") == (False, None)
    assert _query(b"async=true") == (True, None)
    assert _query(b"async=0&timeout_ms=250") == (False, 250)
    for other in (b"async=maybe", b"async=True", b"timeout_ms=50", b"timeout_ms=abc", b"timeout_ms=-5",
                  b"async=true&async=false", b"v=1", b"async", b"timeout_ms=99999999999"):
        assert _query(other) is None, other


async def test_an_ordinary_invocation_is_answered_without_the_router(calls: list[dict[str, Any]]) -> None:
    router = Router()
    status, _ = await call(FastInvoke(router), query=b"async=true&timeout_ms=500", chunks=3)
    assert status == 200 and router.bodies == []
    (kwargs,) = calls
    assert (kwargs["account_id"], kwargs["lambda_id"], kwargs["run_async"], kwargs["timeout_ms"]) == (
        "acc", "lam", True, 500)
    assert kwargs["body"].payload == {"n": 1} and kwargs["who"].account_id == "acc"
    assert kwargs["request"].path_params == {"account_id": "acc", "lambda_id": "lam"}
    # A request without a content type is JSON to FastAPI too.
    status, _ = await call(FastInvoke(router), content_type=None)
    assert status == 200 and router.bodies == []


@pytest.mark.parametrize("case", [
    {"method": "GET"},
    {"path": "/api/v1/accounts/acc/lambdas/lam/test"},
    {"path": "/api/account/acc/lambdas/lam/invoke"},
    {"query": b"async=perhaps"},
    {"content_type": b"text/plain"},
    {"body": b"{not json"},
    {"body": b'{"headers": "not a list"}'},
    {"body": b"[1, 2]"},
    {"body": b""},
])
async def test_anything_else_goes_to_the_router_with_its_body(
        calls: list[dict[str, Any]], case: dict[str, Any]) -> None:
    router = Router()
    status, _ = await call(FastInvoke(router), chunks=2, **case)
    assert status == 299 and calls == []
    assert router.bodies == [case.get("body", b'{"payload": {"n": 1}}')]


async def test_errors_are_answered_by_the_apps_handlers(calls: list[dict[str, Any]]) -> None:
    router = Router()
    status, sent = await call(FastInvoke(router), path="/api/v1/accounts/acc/lambdas/missing/invoke")
    assert status == 404 and b"lambda_not_found" in sent[1]["body"]
    status, sent = await call(FastInvoke(router), authorization=b"Bearer other")
    assert status == 401 and b"bad key" in sent[1]["body"] and router.bodies == []


async def test_an_exception_without_a_handler_propagates(monkeypatch: pytest.MonkeyPatch,
                                                         calls: list[dict[str, Any]]) -> None:
    async def broken(**kwargs: Any) -> Response:
        raise RuntimeError("bug")

    monkeypatch.setattr(fast_invoke.invoke, "invoke", broken)
    with pytest.raises(RuntimeError):
        await call(FastInvoke(Router()))
