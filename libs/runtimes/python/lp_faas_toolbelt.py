"""fnbus toolbelt for Python lambdas (the counterpart of Node's "lp-faas-toolbelt").

Creating a client always works, so code that builds clients at its top level
still loads; calling a client this platform does not provide yet raises
:class:`NotAvailableError`, naming the client and the method. Clients the host
can serve will be implemented over :func:`call_async`, which sends a
``toolbelt_call`` frame through the runner (docs/runner-protocol.md). For now
the only method is the built-in ``ping``.

Also here: :class:`CustomFailure` — raise it from a handler to fail the
invocation as a *custom failure* (like passing an error to the callback)
rather than a runtime exception.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = [
    "CustomFailure",
    "NotAvailableError",
    "Toolbelt",
    "ToolbeltError",
    "call",
    "call_async",
    "ping",
    "ping_async",
]


class CustomFailure(Exception):
    """Raised by a handler: the invocation fails as ``custom-failure``."""


class ToolbeltError(Exception):
    """A toolbelt call failed; ``code`` says why (e.g. ``not_available``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class NotAvailableError(ToolbeltError):
    def __init__(self, what: str) -> None:
        super().__init__("not_available", f"lp_faas_toolbelt: {what} is not available on this platform yet")


# Set by the runner: a coroutine function (method, args) -> value, and the
# event loop it must run on.
_transport: Callable[[str, list[Any]], Awaitable[Any]] | None = None
_loop: asyncio.AbstractEventLoop | None = None


def _attach(transport: Callable[[str, list[Any]], Awaitable[Any]], loop: asyncio.AbstractEventLoop) -> None:
    global _transport, _loop
    _transport, _loop = transport, loop


async def call_async(method: str, args: list[Any] | None = None) -> Any:
    """Ask the host to run a toolbelt ``method``; for ``async def`` handlers."""
    if _transport is None:
        raise ToolbeltError("unavailable", "lp_faas_toolbelt: no runner is attached")
    return await _transport(method, list(args or []))


def call(method: str, args: list[Any] | None = None, timeout_s: float | None = None) -> Any:
    """Blocking :func:`call_async`, for plain ``def`` handlers (they run in a thread)."""
    if _transport is None or _loop is None:
        raise ToolbeltError("unavailable", "lp_faas_toolbelt: no runner is attached")
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is _loop:
        raise RuntimeError("lp_faas_toolbelt.call() blocks; from an async handler use `await call_async()`")
    future = asyncio.run_coroutine_threadsafe(call_async(method, args), _loop)
    return future.result(timeout_s)


def ping(payload: Any = None) -> Any:
    """Round trip to the host; returns ``{"pong": [payload]}``."""
    return call("ping", [] if payload is None else [payload])


async def ping_async(payload: Any = None) -> Any:
    return await call_async("ping", [] if payload is None else [payload])


class _UnavailableClient:
    """Every attribute is a method that raises :class:`NotAvailableError`."""

    def __init__(self, client: str) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("__"):
            raise AttributeError(name)

        def unavailable(*args: Any, **kwargs: Any) -> Any:
            raise NotAvailableError(f"Toolbelt.{self._client}().{name}()")

        return unavailable

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise NotAvailableError(f"Toolbelt.{self._client}()")

    def __repr__(self) -> str:
        return f"<lp_faas_toolbelt {self._client} (not available)>"


class Toolbelt:
    """Client factories, named after the Node toolbelt's in snake_case."""

    @staticmethod
    def http_client() -> Any:
        return _UnavailableClient("http_client")

    @staticmethod
    def lp_client() -> Any:
        return _UnavailableClient("lp_client")

    @staticmethod
    def secret_client() -> Any:
        return _UnavailableClient("secret_client")

    @staticmethod
    def mtls_client(**options: Any) -> Any:
        return _UnavailableClient("mtls_client")

    @staticmethod
    def context_service_client(**options: Any) -> Any:
        return _UnavailableClient("context_service_client")

    @staticmethod
    def conversation_util(**options: Any) -> Any:
        return _UnavailableClient("conversation_util")

    @staticmethod
    def sde_util(**options: Any) -> Any:
        return _UnavailableClient("sde_util")

    @staticmethod
    def gdpr_util(**options: Any) -> Any:
        return _UnavailableClient("gdpr_util")

    @staticmethod
    def sf_client(**options: Any) -> Any:
        return _UnavailableClient("sf_client")

    @staticmethod
    def orchestrator_client(**options: Any) -> Any:
        return _UnavailableClient("orchestrator_client")

    @staticmethod
    def csds_client(**options: Any) -> Any:
        return _UnavailableClient("csds_client")
