"""What every service shares: app factory, /healthz, /metrics, error responses, serving.

A service module provides ``create_app(settings) -> FastAPI`` built with
:func:`create_service_app` and a lifespan that starts its resources, registers
their health checks on :class:`Health`, and stops them in reverse on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from fnbus.config import Settings
from fnbus.errors import ApiError

log = logging.getLogger(__name__)

HealthCheck = Callable[[], Awaitable[bool]]

HTTP_REQUESTS = Counter(
    "fnbus_http_requests_total", "HTTP requests served", ["service", "method", "status"]
)
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


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            malformed = {"error": {"code": "malformed_json", "message": "request body is not valid JSON"}}
            return JSONResponse(malformed, status_code=400)
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

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"path": request.url.path})
        body = {"error": {"code": "internal_error", "message": "internal error"}}
        return JSONResponse(body, status_code=500)


def create_service_app(
    name: str,
    settings: Settings,
    lifespan: Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]] | None = None,
    **fastapi_kwargs: Any,
) -> FastAPI:
    app = FastAPI(title=f"fnbus {name}", lifespan=lifespan, **fastapi_kwargs)
    app.state.settings = settings
    app.state.health = Health()
    app.state.service_name = name
    install_error_handlers(app)

    @app.middleware("http")
    async def _metrics(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        HTTP_LATENCY.labels(name).observe(time.perf_counter() - started)
        HTTP_REQUESTS.labels(name, request.method, str(response.status_code)).inc()
        return response

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        ok, checks = await app.state.health.report()
        return JSONResponse(
            {"service": name, "status": "ok" if ok else "failing", "checks": checks},
            status_code=200 if ok else 503,
        )

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


def serve(app: FastAPI, host: str, port: int) -> None:
    """Run until SIGTERM/SIGINT; uvicorn then runs the lifespan shutdown (drain)."""
    import uvicorn

    config = uvicorn.Config(
        app, host=host, port=port, log_config=None, access_log=False,
        timeout_graceful_shutdown=20, lifespan="on",
    )
    uvicorn.Server(config).run()
