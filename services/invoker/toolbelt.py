"""The invoker's toolbelt: answers a running lambda's ``toolbelt_call`` frames.

The wire contract (methods, argument and value shapes, error codes) is in
docs/runner-protocol.md, "Toolbelt methods". :class:`Toolbelt` is built once
per invoker and is the engine's ``ToolbeltFactory``: called with an invocation
request and its deadline, it returns the handler for that invocation's calls.

Its contract:

1. The account is always the invocation's own (from the request the invoker
   runs); nothing a lambda sends can name another account.
2. ``http.request`` goes through the egress engine (:mod:`fnbus.egress`) with the
   account's allowlist as the registry has it *now* (fetched for each request,
   so a change applies to the next one), the lambda id as the rate-limit key and
   the invocation's deadline; ``mtls`` names one of the account's uploaded
   certificates, fetched from the registry for that request.
3. ``secret.read`` / ``secret.update`` go to the registry for every call: no
   value is cached, so a secret deleted through the API is unavailable to the
   next call. Values never appear in a log line, a metric or an error message.
4. At most :data:`MAX_CALLS_PER_INVOCATION` calls per invocation, whatever the
   runner does; later calls are refused with ``too_many_calls``.
5. ``context.*``, ``lp.*`` and ``csds.*`` are answered by
   :mod:`services.invoker.toolbelt_lp` (same account, deadline, registry and
   egress); ``ping`` answers ``{"pong": args}``; anything else is
   ``unknown_method``.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from prometheus_client import Counter

from fnbus.config import Settings
from fnbus.egress import ClientCertificate, Egress, EgressError
from fnbus.runner_protocol import ToolbeltCallError, ToolbeltHandler
from fnbus.schemas import InvocationRequest
from services.invoker import toolbelt_lp
from services.invoker.toolbelt_http import bad_request as _bad
from services.invoker.toolbelt_http import encode_response, parse_http_request

log = logging.getLogger(__name__)

#: Host-side bound on toolbelt calls of one invocation (rule 4).
MAX_CALLS_PER_INVOCATION = 200
#: Secret keys and values as on LivePerson Functions (LP-REFERENCE.md).
SECRET_KEY = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
MAX_SECRET_VALUE_CHARS = 16_384
#: Methods served by :mod:`services.invoker.toolbelt_lp`.
LP_PREFIXES = ("context.", "lp.", "csds.")
#: Room left in a ``toolbelt_result`` frame for everything but the response body.
#: Registry calls of the toolbelt are short; a slow registry must not eat the budget.
_REGISTRY_TIMEOUT_S = 5.0

CALLS = Counter("fnbus_toolbelt_calls_total", "Toolbelt calls answered by the invoker",
                ["method", "result"])

#: The signature of :func:`services.invoker.toolbelt_lp.handle`.
LpHandler = Callable[..., Awaitable[Any]]


def _metric_method(method: str) -> str:
    """A bounded label: the known method names, the LP families, or ``other``."""
    if method in ("ping", "http.request", "secret.read", "secret.update"):
        return method
    for prefix in LP_PREFIXES:
        if method.startswith(prefix):
            return prefix + "*"
    return "other"


class Toolbelt:
    """The invoker's toolbelt factory (``ToolbeltFactory``); contract in the module docstring."""

    def __init__(self, *, registry: httpx.AsyncClient, egress: Egress, settings: Settings,
                 max_calls: int = MAX_CALLS_PER_INVOCATION,
                 lp_handler: LpHandler | None = None) -> None:
        self.registry = registry
        self.egress = egress
        self.settings = settings
        self.max_calls = max_calls
        self.lp_handler = lp_handler or toolbelt_lp.handle

    def __call__(self, request: InvocationRequest, deadline: float) -> ToolbeltHandler:
        return _Invocation(self, request.account_id, request.lambda_id, request.activation_id,
                           deadline).handle

    # -- registry -------------------------------------------------------------------------
    async def _registry(self, method: str, path: str, deadline: float,
                        json: Any = None) -> httpx.Response:
        timeout_s = max(0.05, min(_REGISTRY_TIMEOUT_S, deadline - time.monotonic()))
        try:
            return await self.registry.request(method, path, json=json, timeout=timeout_s)
        except httpx.HTTPError as exc:
            raise ToolbeltCallError(
                "unavailable", f"the platform could not answer ({type(exc).__name__}); try again"
            ) from None

    async def allowlist(self, account_id: str, deadline: float) -> list[str]:
        r = await self._registry("GET", f"/internal/toolbelt/accounts/{account_id}/allowlist",
                                 deadline)
        if r.status_code != 200:
            raise ToolbeltCallError("unavailable", "the domain allowlist could not be read")
        return [str(d) for d in r.json()["domains"]]

    async def certificate(self, account_id: str, name: str, deadline: float) -> ClientCertificate:
        if not SECRET_KEY.match(name):
            raise ToolbeltCallError("certificate_not_found", f"certificate {name!r} not found")
        r = await self._registry(
            "GET", f"/internal/toolbelt/accounts/{account_id}/certificates/{name}", deadline)
        if r.status_code == 404:
            raise ToolbeltCallError(
                "certificate_not_found",
                f"certificate {name!r} not found; a FaaS-Admin uploads it under "
                f"/api/v1/accounts/{account_id}/certificates")
        if r.status_code != 200:
            raise ToolbeltCallError("unavailable", "the certificate could not be read")
        body = r.json()
        return ClientCertificate(cert_pem=body["cert_pem"], key_pem=body["key_pem"],
                                 ca_pem=body.get("ca_pem"), name=body["name"])

    async def read_secret(self, account_id: str, key: str, deadline: float) -> str:
        r = await self._registry("GET", f"/internal/toolbelt/accounts/{account_id}/secrets/{key}",
                                 deadline)
        if r.status_code == 404:
            raise ToolbeltCallError("secret_not_found", f"secret {key} not found")
        if r.status_code != 200:
            raise ToolbeltCallError("unavailable", f"secret {key} could not be read")
        return str(r.json()["value"])

    async def update_secret(self, account_id: str, key: str, value: str, deadline: float) -> None:
        r = await self._registry("PUT", f"/internal/toolbelt/accounts/{account_id}/secrets/{key}",
                                 deadline, json={"value": value})
        if r.status_code == 404:
            raise ToolbeltCallError(
                "secret_not_found",
                f"secret {key} not found; secrets are created through the API, then updated")
        if r.status_code != 200:
            raise ToolbeltCallError("unavailable", f"secret {key} could not be updated")


class _Invocation:
    """The toolbelt of one invocation: its identity, deadline and call count."""

    def __init__(self, toolbelt: Toolbelt, account_id: str, lambda_id: str, activation_id: str,
                 deadline: float) -> None:
        self.toolbelt = toolbelt
        self.account_id = account_id
        self.lambda_id = lambda_id
        self.activation_id = activation_id
        self.deadline = deadline
        self.calls = 0

    async def handle(self, method: str, args: list[Any]) -> Any:
        label = _metric_method(method)
        self.calls += 1
        try:
            if self.calls > self.toolbelt.max_calls:
                raise ToolbeltCallError(
                    "too_many_calls",
                    f"more than {self.toolbelt.max_calls} toolbelt calls in one invocation")
            value = await self._dispatch(method, args)
        except ToolbeltCallError as exc:
            CALLS.labels(label, exc.code).inc()
            log.info("toolbelt call refused", extra={
                "activation_id": self.activation_id, "account_id": self.account_id,
                "lambda_id": self.lambda_id, "method": label, "code": exc.code})
            raise
        CALLS.labels(label, "ok").inc()
        return value

    async def _dispatch(self, method: str, args: list[Any]) -> Any:
        if method == "ping":
            return {"pong": args}
        if method == "http.request":
            return await self._http(args)
        if method == "secret.read":
            return await self._secret_read(args)
        if method == "secret.update":
            return await self._secret_update(args)
        if method.startswith(LP_PREFIXES):
            toolbelt = self.toolbelt
            return await toolbelt.lp_handler(
                method, args, account_id=self.account_id, lambda_id=self.lambda_id,
                deadline=self.deadline, registry=toolbelt.registry, egress=toolbelt.egress,
                settings=toolbelt.settings)
        raise ToolbeltCallError("unknown_method", f"toolbelt method {method!r} does not exist")

    # -- http.request ---------------------------------------------------------------------
    async def _http(self, args: list[Any]) -> dict[str, Any]:
        request, response_encoding, mtls = parse_http_request(args)
        toolbelt = self.toolbelt
        certificate = None
        if mtls is not None:
            certificate = await toolbelt.certificate(self.account_id, mtls, self.deadline)
        allowlist = await toolbelt.allowlist(self.account_id, self.deadline)
        try:
            response = await toolbelt.egress.fetch(
                request, allowlist=allowlist, rate_key=self.lambda_id, deadline=self.deadline,
                certificate=certificate)
        except EgressError as exc:
            raise ToolbeltCallError(exc.code, exc.message) from None
        return encode_response(response.status, response.headers, response.body, response.url,
                               response_encoding)

    # -- secrets --------------------------------------------------------------------------
    async def _secret_read(self, args: list[Any]) -> dict[str, str]:
        if len(args) != 1:
            raise _bad("readSecret takes one argument, the key")
        key = _secret_key(args[0])
        value = await self.toolbelt.read_secret(self.account_id, key, self.deadline)
        return {"key": key, "value": value}

    async def _secret_update(self, args: list[Any]) -> dict[str, str]:
        if len(args) != 1 or not isinstance(args[0], dict):
            raise _bad("updateSecret takes one argument, {key, value}")
        key = _secret_key(args[0].get("key"))
        value = args[0].get("value")
        if not isinstance(value, str):
            raise _bad("the secret's value must be a string")
        if len(value) > MAX_SECRET_VALUE_CHARS:
            raise _bad(f"the secret's value is {len(value):,} characters; the limit is "
                       f"{MAX_SECRET_VALUE_CHARS:,}")
        await self.toolbelt.update_secret(self.account_id, key, value, self.deadline)
        return {"key": key, "value": value}


def _secret_key(key: Any) -> str:
    if not isinstance(key, str) or not SECRET_KEY.match(key):
        raise _bad("a secret key is 1 to 100 characters of A-Z, a-z, 0-9, - and _")
    return key
