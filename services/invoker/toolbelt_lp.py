"""The toolbelt's ``context.*``, ``lp.*`` and ``csds.*`` methods, served on the host.

The invoker's dispatcher (:mod:`services.invoker.toolbelt`) hands every call of
these families to :func:`handle` with the invocation's account, lambda id and
deadline. Wire shapes: docs/runner-protocol.md ("Toolbelt methods").

Contract:

1. ``context.<method>`` maps one Conversation Context Service V1 client method
   onto the registry's context routes (:mod:`services.registry.context`) for
   the invocation's own account; a missing session id is ``__default__``.
   As on the original, deleting a namespace, property or session that is
   already gone is no error; a property operation on an unknown namespace is
   ``namespace_not_found``.
2. ``csds.resolve`` and ``lp.request`` resolve a LivePerson service's domain
   through CSDS at ``settings.csds_url``
   (``/api/account/{account}/service/baseURI.json?version=1.0``), cached per
   account for :data:`CSDS_TTL_S`; a service missing from a cached answer
   refetches it (at most every :data:`CSDS_MIN_REFETCH_S`). No CSDS configured
   is ``not_available``.
3. ``lp.request`` sends ``https://{domain}{path}`` (a baseURI that carries its
   own scheme keeps it) through the egress engine without the allowlist — the
   network policy, rate limit, size cap and deadline still apply — and does
   not follow redirects (an LP service must not become a way around the
   allowlist). Unless the lambda set its own ``Authorization``, the request is
   signed with OAuth 1.0 HMAC-SHA1 from the JSON of the account's
   ``lp-faas-default-app-key`` secret, read for every request, never logged.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from fnbus.config import Settings
from fnbus.context_models import (
    DEFAULT_SESSION,
    MAX_TTL_S,
    SESSION_PATTERN,
    check_namespace,
)
from fnbus.egress import Egress, EgressError, EgressRequest
from fnbus.runner_protocol import ToolbeltCallError
from services.invoker.oauth1 import Credentials, authorization_header
from services.invoker.toolbelt_http import encode_response

log = logging.getLogger(__name__)

APP_KEY_SECRET = "lp-faas-default-app-key"
CSDS_TTL_S = 600.0
CSDS_MIN_REFETCH_S = 10.0
CSDS_MAX_ACCOUNTS = 10_000
_REGISTRY_TIMEOUT_S = 5.0
_CSDS_TIMEOUT_S = 5.0
_SESSION = re.compile(SESSION_PATTERN)
_SERVICE = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
_HOST = re.compile(r"^[A-Za-z0-9.-]{1,253}$")
_LP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# The app key's fields, under the names the original's secret and its docs use.
_KEY_FIELDS = {
    "consumer_key": ("appKey", "consumerKey", "consumer_key"),
    "consumer_secret": ("secret", "consumerSecret", "appSecret", "consumer_secret"),
    "token": ("accessToken", "token", "access_token"),
    "token_secret": ("accessTokenSecret", "tokenSecret", "access_token_secret"),
}


def _bad(message: str) -> ToolbeltCallError:
    return ToolbeltCallError("bad_request", message)


@dataclass(frozen=True)
class _Call:
    """One toolbelt call: who makes it and what it may use."""

    account_id: str
    lambda_id: str
    deadline: float
    registry: httpx.AsyncClient
    egress: Egress
    settings: Settings

    def left_s(self, cap_s: float) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise ToolbeltCallError("timeout", "the invocation's time is up")
        return min(cap_s, left)


async def handle(method: str, args: list[Any], *, account_id: str, lambda_id: str,
                 deadline: float, registry: httpx.AsyncClient, egress: Egress,
                 settings: Settings) -> Any:
    """Answer one ``context.*``, ``lp.*`` or ``csds.*`` toolbelt call (module contract)."""
    call = _Call(account_id, lambda_id, deadline, registry, egress, settings)
    if not isinstance(args, list):
        raise _bad("toolbelt arguments must be a list")
    if method.startswith("context."):
        operation = _CONTEXT.get(method.removeprefix("context."))
        if operation is not None:
            return await operation(call, args)
    elif method == "lp.request":
        return await _lp_request(call, args)
    elif method == "csds.resolve":
        if len(args) != 1:
            raise _bad("csds.resolve takes one argument, the service name")
        service = _service(args[0])
        origin = await CSDS.origin(call, service)
        return {"service": service, "domain": urlsplit(origin).netloc}
    raise ToolbeltCallError("unknown_method", f"toolbelt method {method!r} does not exist")


# -- context.* -------------------------------------------------------------------------
def _arg(args: list[Any], index: int) -> Any:
    return args[index] if index < len(args) else None


def _namespace(value: Any, *, creating: bool = False) -> str:
    try:
        return check_namespace(value, creating=creating)
    except ValueError as exc:
        raise _bad(str(exc)) from None


def _session(value: Any) -> str:
    if value is None:
        return DEFAULT_SESSION
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not _SESSION.match(value):
        raise _bad("a session id is 1 to 256 characters without / ? # % \\ or control characters")
    return value


def _ttl(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TTL_S:
        raise _bad(f"{what} must be a whole number of seconds from 1 to {MAX_TTL_S}")
    return value


def _names(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
        raise _bad("property names must be a list of strings")
    return value


def _path(account_id: str, *segments: str) -> str:
    quoted = "/".join(quote(s, safe="") for s in segments)
    return f"/internal/accounts/{quote(account_id, safe='')}/context/{quoted}"


async def _registry(call: _Call, method: str, path: str, *, json_body: Any = None,
                    params: dict[str, Any] | None = None) -> httpx.Response:
    try:
        response = await call.registry.request(method, path, json=json_body, params=params,
                                               timeout=call.left_s(_REGISTRY_TIMEOUT_S))
    except httpx.HTTPError as exc:
        raise ToolbeltCallError(
            "unavailable", f"the context store could not answer ({type(exc).__name__}); try again"
        ) from None
    if response.status_code < 400:
        return response
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "", f"the context store answered {response.status_code}"
    if code == "namespace_not_found":
        raise ToolbeltCallError("namespace_not_found", message)
    if response.status_code in (400, 409, 413, 422):
        raise _bad(message)
    raise ToolbeltCallError("unavailable", message)


def _namespace_value(body: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": body["name"], "createdAt": body["created_ms"]}
    if body.get("ttl_s") is not None:
        out["ttl"] = out["ttlSecond"] = body["ttl_s"]  # ours, and the original's field name
    return out


async def _create_namespace(call: _Call, args: list[Any]) -> dict[str, Any]:
    name = _namespace(_arg(args, 0), creating=True)
    options = _arg(args, 1)
    if options is not None and not isinstance(options, dict):
        raise _bad("createNamespace options must be an object like {ttl: seconds}")
    ttl = _ttl((options or {}).get("ttl"), "options.ttl")
    r = await _registry(call, "POST", _path(call.account_id, "namespaces"),
                        json_body={"name": name, "ttl_s": ttl})
    return {"namespace": name, **_namespace_value(r.json())}


async def _delete_namespace(call: _Call, args: list[Any]) -> dict[str, bool]:
    name = _namespace(_arg(args, 0))
    try:
        await _registry(call, "DELETE", _path(call.account_id, "namespaces", name))
    except ToolbeltCallError as exc:
        if exc.code != "namespace_not_found":
            raise
    return {"deleted": True}


async def _list_namespaces(call: _Call, args: list[Any]) -> list[dict[str, Any]]:
    r = await _registry(call, "GET", _path(call.account_id, "namespaces"))
    return [_namespace_value(ns) for ns in r.json()]


def _write(http_method: str) -> Callable[[_Call, list[Any]], Awaitable[dict[str, bool]]]:
    async def write(call: _Call, args: list[Any]) -> dict[str, bool]:
        name = _namespace(_arg(args, 0))
        properties = _arg(args, 1)
        if not isinstance(properties, dict) or not properties:
            raise _bad("properties must be an object with at least one property")
        session = _session(_arg(args, 2))
        ttl = _ttl(_arg(args, 3), "ttlSecond")
        await _registry(call, http_method,
                        _path(call.account_id, "namespaces", name, "sessions", session,
                              "properties"),
                        json_body={"properties": properties, "ttl_s": ttl})
        return {"ok": True}

    return write


async def _read(call: _Call, name: str, session: str, names: list[str] | None) -> dict[str, Any]:
    r = await _registry(call, "GET",
                        _path(call.account_id, "namespaces", name, "sessions", session,
                              "properties"),
                        params={"name": names} if names is not None else None)
    return r.json()


async def _get_all(call: _Call, args: list[Any]) -> dict[str, Any]:
    return await _read(call, _namespace(_arg(args, 0)), _session(_arg(args, 1)), None)


async def _get_selected(call: _Call, args: list[Any]) -> dict[str, Any]:
    name = _namespace(_arg(args, 0))
    names = _names(_arg(args, 1))
    session = _session(_arg(args, 2))
    if not names:  # nothing to read, but an unknown namespace is still an error
        await _registry(call, "GET", _path(call.account_id, "namespaces", name))
        return {}
    return await _read(call, name, session, names)


async def _get_one(call: _Call, args: list[Any]) -> Any:
    name = _namespace(_arg(args, 0))
    prop = _arg(args, 1)
    if not isinstance(prop, str) or not prop:
        raise _bad("the property name must be a non-empty string")
    found = await _read(call, name, _session(_arg(args, 2)), [prop])
    return found.get(prop)


async def _delete_property(call: _Call, args: list[Any]) -> dict[str, bool]:
    name = _namespace(_arg(args, 0))
    prop = _arg(args, 1)
    if not isinstance(prop, str) or not prop:
        raise _bad("the property name must be a non-empty string")
    session = _session(_arg(args, 2))
    await _registry(call, "DELETE", _path(call.account_id, "namespaces", name, "sessions",
                                          session, "properties", prop))
    return {"deleted": True}


async def _delete_session(call: _Call, args: list[Any]) -> dict[str, bool]:
    name = _namespace(_arg(args, 0))
    session = _session(_arg(args, 1))
    await _registry(call, "DELETE", _path(call.account_id, "namespaces", name, "sessions", session))
    return {"deleted": True}


_CONTEXT: dict[str, Callable[[_Call, list[Any]], Awaitable[Any]]] = {
    "createNamespace": _create_namespace,
    "deleteNamespace": _delete_namespace,
    "getListOfNamespaces": _list_namespaces,
    "setPropertiesInNamespace": _write("PUT"),
    "updatePropertiesInNamespace": _write("PATCH"),
    "getAllPropertiesInSession": _get_all,
    "getSelectedPropertiesInSession": _get_selected,
    "getPropertyInSession": _get_one,
    "deletePropertyInSession": _delete_property,
    "deleteSession": _delete_session,
}


# -- CSDS --------------------------------------------------------------------------------
def _service(value: Any) -> str:
    if not isinstance(value, str) or not _SERVICE.match(value):
        raise _bad("a service name is 1 to 100 characters of A-Z, a-z, 0-9, _ . and - "
                   "(e.g. msgHist, agentVep; see LpServices)")
    return value


def _origin(base_uri: str) -> str:
    """``scheme://host[:port]`` of a CSDS baseURI; https unless it names its own scheme."""
    text = base_uri.strip()
    parts = urlsplit(text if "://" in text else f"https://{text}")
    host = parts.hostname or ""
    if (parts.scheme not in ("http", "https") or parts.username is not None
            or not (_HOST.match(host) or ":" in host)):
        raise ValueError(base_uri)
    parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    return f"{parts.scheme}://{parts.netloc}"


@dataclass
class _Entry:
    fetched_at: float
    origins: dict[str, str]
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class CsdsCache:
    """Service origins per (CSDS URL, account), fetched through the egress engine (rule 2)."""

    def __init__(self, ttl_s: float = CSDS_TTL_S, min_refetch_s: float = CSDS_MIN_REFETCH_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.min_refetch_s = min_refetch_s
        self.clock = clock
        self._entries: dict[tuple[str, str], _Entry] = {}

    def clear(self) -> None:
        self._entries.clear()

    async def origin(self, call: _Call, service: str) -> str:
        csds_url = call.settings.csds_url.strip()
        if not csds_url:
            raise ToolbeltCallError(
                "not_available", "LivePerson services are not available on this platform: no "
                "CSDS is configured (the operator sets FNBUS_CSDS_URL)")
        key = (csds_url, call.account_id)
        entry = self._entries.get(key)
        if entry is None:
            if len(self._entries) >= CSDS_MAX_ACCOUNTS:
                self._entries.clear()
            entry = self._entries[key] = _Entry(fetched_at=float("-inf"), origins={})
        async with entry.lock:
            age = self.clock() - entry.fetched_at
            stale = age >= self.ttl_s
            missing = service not in entry.origins and age >= self.min_refetch_s
            if stale or missing:
                entry.origins = await self._fetch(call, csds_url)
                entry.fetched_at = self.clock()
        found = entry.origins.get(service)
        if found is None:
            raise ToolbeltCallError(
                "service_not_found",
                f"CSDS knows no service {service!r} for account {call.account_id}")
        return found

    async def _fetch(self, call: _Call, csds_url: str) -> dict[str, str]:
        url = (f"{csds_url.rstrip('/')}/api/account/{quote(call.account_id, safe='')}"
               "/service/baseURI.json?version=1.0")
        request = EgressRequest(method="GET", url=url, headers={"accept": "application/json"},
                                body=None, timeout_s=call.left_s(_CSDS_TIMEOUT_S),
                                follow_redirects=False)
        try:
            response = await call.egress.fetch(request, allowlist=[], rate_key=call.lambda_id,
                                               deadline=call.deadline, check_allowlist=False)
        except EgressError as exc:
            raise ToolbeltCallError(exc.code, f"CSDS could not be reached: {exc.message}") from None
        if response.status == 404:
            raise ToolbeltCallError(
                "service_not_found", f"CSDS knows no services for account {call.account_id}")
        if response.status != 200:
            raise ToolbeltCallError("not_available", f"CSDS answered {response.status}")
        origins: dict[str, str] = {}
        try:
            entries = json.loads(response.body)["baseURIs"]
            for item in entries:
                try:
                    origins[str(item["service"])] = _origin(str(item["baseURI"]))
                except (KeyError, TypeError, ValueError):
                    continue  # one odd entry does not hide the others
        except (ValueError, KeyError, TypeError):
            raise ToolbeltCallError("not_available", "CSDS answered something other than "
                                    "{baseURIs: [...]}") from None
        return origins


#: One cache per invoker process (the toolbelt's calls come through :func:`handle`).
CSDS = CsdsCache()


# -- lp.request --------------------------------------------------------------------------
async def _credentials(call: _Call) -> Credentials:
    path = f"/internal/toolbelt/accounts/{quote(call.account_id, safe='')}/secrets/{APP_KEY_SECRET}"
    try:
        r = await call.registry.get(path, timeout=call.left_s(_REGISTRY_TIMEOUT_S))
    except httpx.HTTPError as exc:
        raise ToolbeltCallError(
            "unavailable", f"the platform could not answer ({type(exc).__name__}); try again"
        ) from None
    if r.status_code == 404:
        raise ToolbeltCallError(
            "secret_not_found", f"LpClient signs its requests with the secret {APP_KEY_SECRET}, "
            "which this account does not have")
    if r.status_code != 200:
        raise ToolbeltCallError("unavailable", f"secret {APP_KEY_SECRET} could not be read")
    shape = (f"the secret {APP_KEY_SECRET} must hold JSON with appKey, secret, accessToken "
             "and accessTokenSecret")
    try:
        data = json.loads(r.json()["value"])
    except (ValueError, KeyError, TypeError):
        raise _bad(shape) from None
    if not isinstance(data, dict):
        raise _bad(shape)
    found = {}
    for name, aliases in _KEY_FIELDS.items():
        found[name] = next((str(data[a]) for a in aliases if isinstance(data.get(a), str)), "")
    if not found["consumer_key"] or not found["consumer_secret"]:
        raise _bad(shape)
    return Credentials(**found)


def _lp_args(args: list[Any]) -> dict[str, Any]:
    if len(args) != 1 or not isinstance(args[0], dict):
        raise _bad("lp.request takes one argument, the request object")
    return args[0]


def _body(value: Any, encoding: Any) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _bad("body must be a string (the client serialises json and form bodies)")
    if encoding in (None, "utf8"):
        return value.encode()
    if encoding == "base64":
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise _bad("body is not valid base64") from None
    raise _bad("body_encoding must be utf8 or base64")


async def _lp_request(call: _Call, args: list[Any]) -> dict[str, Any]:
    req = _lp_args(args)
    method = req.get("method") or "GET"
    if not isinstance(method, str) or method.upper() not in _LP_METHODS:
        raise _bad(f"unsupported HTTP method {method!r}")
    method = method.upper()
    service = _service(req.get("service"))
    path = req.get("path") or "/"
    if not isinstance(path, str) or any(c in path for c in "\r\n\x00 "):
        raise _bad("path must be a string without spaces or line breaks")
    headers_in = req.get("headers") or {}
    if not isinstance(headers_in, dict):
        raise _bad("headers must be an object of names and values")
    headers = {}
    for name, value in headers_in.items():
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise _bad(f"header {str(name)[:100]!r} must have a string value")
        headers[str(name)] = str(value)
    body = _body(req.get("body"), req.get("body_encoding"))
    timeout_ms = req.get("timeout_ms")
    if timeout_ms is not None and (isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int)
                                   or timeout_ms <= 0):
        raise _bad("timeout_ms must be a positive integer")
    response_encoding = req.get("response_encoding") or "utf8"
    if response_encoding not in ("utf8", "base64"):
        raise _bad("response_encoding must be utf8 or base64")

    origin = await CSDS.origin(call, service)
    url = origin + (path if path.startswith("/") else "/" + path)
    if urlsplit(url).netloc != urlsplit(origin).netloc:  # e.g. a path that smuggles a host
        raise _bad(f"path {path[:200]!r} does not stay on the service's host")
    lowered = {k.lower(): v for k, v in headers.items()}
    if "authorization" not in lowered:
        credentials = await _credentials(call)
        content_type = lowered.get("content-type", "")
        form = (body.decode("utf-8", "replace")
                if body and content_type.startswith("application/x-www-form-urlencoded") else None)
        headers["Authorization"] = authorization_header(credentials, method, url, form_body=form)
    request = EgressRequest(method=method, url=url, headers=headers, body=body,
                            timeout_s=None if timeout_ms is None else timeout_ms / 1000,
                            follow_redirects=False)
    try:
        response = await call.egress.fetch(request, allowlist=[], rate_key=call.lambda_id,
                                           deadline=call.deadline, check_allowlist=False)
    except EgressError as exc:
        raise ToolbeltCallError(exc.code, exc.message) from None
    return encode_response(response.status, response.headers, response.body, response.url,
                           response_encoding)
