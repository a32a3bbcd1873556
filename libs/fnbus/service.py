"""What every service shares: app factory, /healthz, /metrics, error responses, serving.

A service module provides ``create_app(settings) -> FastAPI`` built with
:func:`create_service_app` and a lifespan that starts its resources, registers
their health checks on :class:`Health`, and stops them in reverse on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import inspect
import ipaddress
import json
import logging
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, MutableMapping
from typing import Any

import asyncpg
import orjson
import pydantic_core
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException

from fnbus.config import Settings
from fnbus.errors import ApiError
from fnbus.identity import constant_time_equal
from fnbus.secrets_check import check_secrets

log = logging.getLogger(__name__)

HealthCheck = Callable[[], Awaitable[bool]]

HTTP_REQUESTS = Counter(
    "fnbus_http_requests_total", "HTTP requests served", ["service", "method", "status"]
)
METRIC_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
HTTP_LATENCY = Histogram(
    "fnbus_http_request_seconds",
    "HTTP request latency",
    ["service"],
    buckets=(0.002, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 5, 30),
)


class Health:
    """Named checks; /healthz answers 200 only when all pass."""

    def __init__(self) -> None:
        self._checks: dict[str, HealthCheck] = {}

    def add(self, name: str, check: HealthCheck) -> None:
        self._checks[name] = check

    async def report(self) -> tuple[bool, dict[str, str]]:
        results: dict[str, str] = {}
        for name, check in self._checks.items():
            try:
                ok = await asyncio.wait_for(check(), timeout=3)
            except Exception:  # noqa: BLE001 - a failing check is an unhealthy answer
                ok = False
            results[name] = "ok" if ok else "failing"
        return all(v == "ok" for v in results.values()), results


async def every(interval_s: float, action: Callable[[], Awaitable[int]], *, done: str,
                failed: str) -> None:
    """Run a housekeeping ``action`` every ``interval_s``, forever (cancel to stop).

    ``action`` answers how many rows it removed; a non-zero count is logged as ``done``.
    A failure is logged as ``failed`` and tried again the next round.
    """
    while True:
        try:
            count = await action()
            if count:
                log.info(done, extra={"count": count})
        except Exception as exc:  # noqa: BLE001 - try again next round
            log.warning(failed, extra={"error": str(exc)})
        await asyncio.sleep(interval_s)


class TaskGroup:
    """Long-running background loops of a service, cancelled on shutdown."""

    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[Any]] = []

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._report)
        self._tasks.append(task)
        return task

    @staticmethod
    def _report(task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("background task died", extra={"task": task.get_name()},
                      exc_info=task.exception())

    def all_alive(self) -> bool:
        return all(not t.done() for t in self._tasks)

    async def check(self) -> bool:
        """Health check: every loop is still running."""
        return self.all_alive()

    async def stop(self, grace_s: float = 10.0) -> None:
        """Wait for loops that were asked to stop, then cancel what is left."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(self._tasks, timeout=grace_s)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()


# Framework errors that do not come from our code (routing, body parsing) get our codes too.
_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 406: "not_acceptable", 413: "payload_too_large",
               415: "unsupported_media_type", 422: "unprocessable", 429: "too_many_requests"}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None
                   ) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status,
                        headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Every error a service answers is ``{"error": {"code", "message"}}``, whoever raised it."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(400, "malformed_json", "request body is not valid JSON")
        details = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
            for e in errors
        ]
        first = details[0] if details else {"loc": [], "msg": "invalid"}
        where = ".".join(str(p) for p in first["loc"][1:]) or "body"
        body: dict[str, Any] = {
            "error": {
                "code": "invalid_request",
                "message": f"{where}: {first['msg']}",
                "details": details,
            }
        }
        return JSONResponse(body, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI raises 400 "There was an error parsing the body" for a body that is not
        # UTF-8 (json.loads fails before it can say json_invalid): that is malformed JSON too.
        detail = str(exc.detail)
        code = _HTTP_CODES.get(exc.status_code, "error")
        if exc.status_code == 400 and "parsing the body" in detail:
            code, detail = "malformed_json", "request body is not valid UTF-8 JSON"
        status = exc.status_code if exc.status_code < 500 else 500
        return error_response(status, code, detail, headers=getattr(exc, "headers", None))

    # PostgreSQL cannot store NUL in text (nor \u0000 in jsonb): that is the client's input.
    @app.exception_handler(asyncpg.exceptions.CharacterNotInRepertoireError)
    @app.exception_handler(asyncpg.exceptions.UntranslatableCharacterError)
    async def _unstorable(_: Request, exc: Exception) -> JSONResponse:
        return error_response(400, "invalid_characters",
                              "a value contains a character that cannot be stored (NUL)")

    # The database is down or restarting: the caller may retry, nothing is wrong with the request.
    @app.exception_handler(ConnectionRefusedError)
    @app.exception_handler(asyncpg.exceptions.PostgresConnectionError)
    @app.exception_handler(asyncpg.exceptions.ConnectionDoesNotExistError)
    @app.exception_handler(asyncpg.exceptions.CannotConnectNowError)
    @app.exception_handler(asyncpg.exceptions.TooManyConnectionsError)
    async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable: %r", exc, extra={"path": request.url.path})
        return error_response(503, "database_unavailable",
                              "the platform's database is not reachable; retry shortly",
                              headers={"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"path": request.url.path})
        return error_response(500, "internal_error", "internal error")


# -- JSON on the invoke path: Rust parsers, the standard library where they refuse --------
def loads_json(body: bytes) -> Any:
    """pydantic-core's parser (Rust, like orjson, ~5x the standard library here).

    Not orjson: it reads integers beyond 64 bits as floats, which would change a payload.
    What pydantic-core refuses (lone surrogates, non-UTF-8) is json.loads's call, so the
    answers, errors included, stay the standard library's.
    """
    try:
        return pydantic_core.from_json(body)
    except ValueError:
        return json.loads(body)


class FastJSONResponse(JSONResponse):
    """A JSONResponse encoded by orjson: the same compact UTF-8 bytes, a fraction of the time."""

    def render(self, content: Any) -> bytes:
        try:
            return orjson.dumps(content)
        except TypeError:  # integers beyond 64 bits, non-str keys: the standard library's rules
            return super().render(content)


class _FastJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads_json(await self.body())
        return self._json


class FastJSONRoute(APIRoute):
    """Route class whose JSON request bodies are parsed by :func:`loads_json`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def fast_handler(request: Request) -> Response:
            return await handler(_FastJSONRequest(request.scope, request.receive))

        return fast_handler


# -- the edge every request passes ----------------------------------------------------------
# Unicode's category Cc, exactly: C0 (U+0000-U+001F), DEL and C1 (U+007F-U+009F).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def has_control_characters(text: str) -> bool:
    """C0/C1 controls and DEL: never part of an id, a name or a key, and unsafe to forward."""
    return _CONTROL.search(text) is not None


def _is_loopback_client(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _has_service_token(request: Request, settings: Settings) -> bool:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and constant_time_equal(token.strip(), settings.service_token)


# Pages a browser renders (console, API docs): nothing from elsewhere, no inline script,
# no framing. The console sends the same policy in a meta tag; a header also covers framing.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
BROWSER_PATHS = ("/console", "/docs")


BROWSER_HEADERS = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
)


def docs_page(app: FastAPI) -> str:
    """The operations as one static page: no script, no CDN (most installations are offline)."""
    schema = app.openapi()
    rows = []
    for path, item in schema.get("paths", {}).items():
        for method, op in item.items():
            rows.append(
                f"<tr><td>{html.escape(method.upper())}</td><td><code>{html.escape(path)}</code>"
                f"</td><td>{html.escape(str(op.get('summary') or ''))}</td>"
                f"<td>{html.escape(str(op.get('x-permission') or ''))}</td></tr>")
    title = html.escape(str(schema.get("info", {}).get("title", "API")))
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{title}</title>"
        "</head><body>"
        f"<h1>{title}</h1><p>The machine-readable description is "
        "<a href='/openapi.json'>/openapi.json</a> (OpenAPI 3); load it into any OpenAPI "
        "viewer or client generator. Errors are <code>{\"error\": {\"code\", \"message\"}}"
        "</code>.</p><table><thead><tr><th>method</th><th>path</th><th>summary</th>"
        f"<th>permission</th></tr></thead><tbody>{''.join(rows)}</tbody></table></body></html>")


def edge_refusal(request: Request, settings: Settings) -> JSONResponse | None:
    """What the service answers before routing, or None to route the request.

    1. A path with control characters (``%00``–``%1F``, ``%7F``, C1) names nothing: 400.
    2. ``/internal/*`` needs the service token, on every service, whatever its routers say.
    3. ``/metrics`` answers loopback clients and the service token; anyone only when the
       operator sets ``metrics_public`` (compose does, on its private network).
    """
    path = request.scope.get("path", "")
    if has_control_characters(path):
        return error_response(400, "invalid_path",
                              "the request path contains control characters")
    if (path == "/internal" or path.startswith("/internal/")) and not _has_service_token(
            request, settings):
        return error_response(401, "service_token_required",
                              "internal API: service token required")
    if path == "/metrics" and not (settings.metrics_public
                                   or _is_loopback_client(request)
                                   or _has_service_token(request, settings)):
        return error_response(403, "metrics_not_public",
                              "metrics answer loopback clients and the service token only")
    return None


class EdgeMiddleware:
    """Pure ASGI: :func:`edge_refusal`, browser headers, request count and latency.

    Not ``BaseHTTPMiddleware``, which runs the rest of the app in a task and
    streams the response through memory channels on every request.
    """

    def __init__(self, app: Any, service: str, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.latency = HTTP_LATENCY.labels(service)
        self.service = service

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        browser = scope.get("path", "").startswith(BROWSER_PATHS)
        status = 500  # what the outer error handler answers if the app raises

        async def send_wrapper(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if browser:
                    headers = MutableHeaders(scope=message)
                    for key, value in BROWSER_HEADERS:
                        headers[key] = value
            await send(message)

        try:
            refused = edge_refusal(Request(scope), self.settings)
            if refused is not None:
                await refused(scope, receive, send_wrapper)
            else:
                await self.app(scope, receive, send_wrapper)
        finally:
            self.latency.observe(time.perf_counter() - started)
            # any token is a method to the HTTP parser: label only the standard ones
            method = scope["method"] if scope["method"] in METRIC_METHODS else "other"
            HTTP_REQUESTS.labels(self.service, method, str(status)).inc()


def create_service_app(
    name: str,
    settings: Settings,
    lifespan: Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]] | None = None,
    **fastapi_kwargs: Any,
) -> FastAPI:
    check_secrets(settings, name)
    # FastAPI's /docs and /redoc load their scripts from a CDN: replaced by docs_page below.
    fastapi_kwargs.setdefault("docs_url", None)
    fastapi_kwargs.setdefault("redoc_url", None)
    # FastAPI's own OpenTelemetry hooks (newer releases) look up the global providers on
    # every request; the platform traces and measures itself (fnbus.tracing, /metrics).
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters:
        fastapi_kwargs.setdefault("telemetry", {"tracing": False, "metrics": False, "logs": False})
    app = FastAPI(title=f"fnbus {name}", lifespan=lifespan, **fastapi_kwargs)
    app.state.settings = settings
    app.state.health = Health()
    app.state.service_name = name
    install_error_handlers(app)

    app.add_middleware(EdgeMiddleware, service=name, settings=settings)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        ok, checks = await app.state.health.report()
        return JSONResponse(
            {"service": name, "status": "ok" if ok else "failing", "checks": checks},
            status_code=200 if ok else 503,
        )

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(docs_page(app))

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


@contextlib.asynccontextmanager
async def no_lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield


def allow_status(status: int, phrase: str) -> None:
    """Let uvicorn send a status outside 100–599 (the original platform's 901).

    uvicorn precomputes its status lines for 100–599 only and fails on others;
    HTTP itself allows any three-digit code.
    """
    from uvicorn.protocols.http import h11_impl

    h11_impl.STATUS_PHRASES.setdefault(status, phrase.encode())
    try:
        from uvicorn.protocols.http import httptools_impl
    except ImportError:  # httptools not installed
        return
    httptools_impl.STATUS_LINE.setdefault(status, f"HTTP/1.1 {status} {phrase}\r\n".encode())


# uvloop and the httptools parser (both C): on the gateway's invoke path they replace
# the pure-Python asyncio loop and h11 (figures in bench/README.md, "Gateway front").
FAST_SERVER: dict[str, Any] = {"loop": "uvloop", "http": "httptools"}


def listening_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A bound TCP socket for uvicorn to serve (it listens on it).

    ``reuse_port`` sets SO_REUSEPORT: several processes of the same user may then
    bind the same address, and the kernel spreads new connections over them (each
    connection stays with the process that accepted it). A process that binds the
    port without the option (an older single gateway, a stranger) makes the bind
    fail, as it should.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def serve(app: FastAPI, host: str, port: int, *, shared_port: int | None = None) -> None:
    """Run until SIGTERM/SIGINT; uvicorn then runs the lifespan shutdown (drain).

    ``port`` is this process's own; with ``shared_port`` the same app is also served on
    that port, bound with SO_REUSEPORT so that several replicas share it
    (:func:`listening_socket`). The own port then answers for this replica alone
    (health, metrics), the shared one for whichever replica the kernel picks.
    """
    import uvicorn

    config = uvicorn.Config(
        app, host=host, port=port, log_config=None, access_log=False,
        timeout_graceful_shutdown=20, lifespan="on", **FAST_SERVER,
    )
    sockets = [listening_socket(host, port)]
    if shared_port is not None:
        sockets.append(listening_socket(host, shared_port, reuse_port=True))
    try:
        uvicorn.Server(config).run(sockets=sockets)
    finally:
        for sock in sockets:
            sock.close()
